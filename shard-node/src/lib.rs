//! A city's durable ledger: municipal services submit records, the node seals them into signed
//! blocks on RocksDB (group commit, one synced `WriteBatch` per block), and anyone reads them
//! back with proofs that `urbis verify` checks offline.
//!
//! `ledger` is the pure rule book; `sealer` the group-commit loop; `store` the only module
//! that knows RocksDB; `api` the axum shell; `follower` offers sealed headers to the beacon
//! and follows it with the core light client; `node` configuration and lifecycle.

pub mod api;
pub mod follower;
pub mod ledger;
pub mod metrics;
pub mod node;
pub mod sealer;
pub mod state_proof;
pub mod store;
pub mod tokens;
