//! The load generator lives in `benches/ingest.rs`; this library is empty.
