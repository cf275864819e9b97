//! Urbis protocol core: what a record is and what "verified" means.
//!
//! Pure functions and state machines only: no I/O, no clocks, no threads. The shard node, the
//! beacon, the bridge, the CLI and the tests all run this same code.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod beacon;
pub mod bls;
pub mod crosslink;
pub mod encoding;
pub mod genesis;
pub mod hash;
pub mod header;
pub mod hexfmt;
pub mod light_client;
pub mod merkle;
pub mod packet;
pub mod proof;
pub mod record;
pub mod sealing;
pub mod set_change;
pub mod signing;
pub mod state;
pub mod subject;
pub mod validators;

pub use hash::{Domain, Hash32};
pub use proof::{Level, verify_record_proof, verify_state_proof};
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
