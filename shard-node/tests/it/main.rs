//! The shard's store and sealer on real RocksDB, without HTTP: blocks are durable and
//! linked, state proofs from the RocksDB-backed tree verify with the core verifier, and
//! submissions are all-or-nothing.

mod sealing;
