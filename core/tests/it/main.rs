//! Integration tests of the proof chain: published vectors, honest and hostile proofs, the
//! light client, decoders on arbitrary bytes, the worked example of docs/protocol.md, and the
//! crate's dependency rules.

mod crosslink;
mod decoders;
mod fixture;
mod light_client;
mod packets;
mod proof_chain;
mod properties;
mod set_change;
mod threats;
mod tidy;
mod vectors;
mod worked_example;

/// This crate's directory, read at run time (cargo sets it when it runs tests), so a test
/// binary built in another checkout of the same target directory reads this checkout's files.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
