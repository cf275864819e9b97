//! The height of the block that received each recent packet, and the acknowledgement it
//! wrote, remembered when the shard answers its delivery. A relay asks for the acknowledgements of the same packets round after
//! round until their block is final; this answers whether a receipt is final without a store
//! lookup. Kept in memory only and bounded (the oldest are forgotten first): a packet not
//! remembered (received before a restart, or long ago) is looked up in the store. Never
//! wrong: a receipt is written once, by the block at that height, and never changed.

/// Packet → height of the block that wrote its receipt, and the receipt's acknowledgement.
pub type RecentReceipts =
    super::recent::Recent<urbis_core::packet::PacketId, (u64, urbis_core::packet::Acknowledgement)>;
