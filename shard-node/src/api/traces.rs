//! The trace context of each outbound packet, so that its trace runs on through the bridges:
//! recorded when the submission that made the packet is sealed, served beside the packet on
//! the outbound page. Kept in memory only and bounded (the oldest are forgotten first): a
//! packet whose context was lost, or that outlived a restart, starts a trace of its own at the
//! bridge. Trace context is never part of a proof and never checked by anyone.

/// (destination city, sequence) → W3C `traceparent`.
pub type PacketTraces = super::recent::Recent<(u32, u64), String>;
