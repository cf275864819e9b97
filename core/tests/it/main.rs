//! Integration tests of the proof chain: published vectors, honest and hostile proofs, the
//! light client, decoders on arbitrary bytes, the worked example of docs/protocol.md, and the
//! crate's dependency rules.

mod decoders;
mod fixture;
mod light_client;
mod proof_chain;
mod properties;
mod threats;
mod tidy;
mod vectors;
mod worked_example;
