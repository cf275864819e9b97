//! Urbis protocol core: what a record is and what "verified" means.
//!
//! Pure functions and state machines only: no I/O, no clocks, no threads. The shard node, the
//! beacon, the bridge, the CLI and the tests all run this same code.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod bls;
pub mod encoding;
pub mod hash;
pub mod merkle;
pub mod sealing;
