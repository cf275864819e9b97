//! The beacon validator: validators from every city agree on beacon blocks that crosslink the
//! shards' latest headers, and certify each with one aggregate BLS signature.
//!
//! `consensus` hosts Malachite's sans-IO Tendermint core (nothing else in the crate names
//! Malachite); `block` holds the beacon block's rules.

pub mod api;
pub mod block;
pub mod consensus;
pub mod metrics;
pub mod node;
pub mod pool;
pub mod sets;
pub mod store;
pub mod transport;
