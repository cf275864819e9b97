//! Signing roots: what every Urbis key actually signs.
//!
//! A signing root binds purpose, protocol version, federation id (the genesis hash) and the
//! hash of the object, so a signature made for one purpose or federation is worthless in any
//! other (docs/protocol.md, "Signing roots").

use crate::encoding::encode;
use crate::hash::{Domain, Hash32};
use borsh::{BorshDeserialize, BorshSerialize};

/// The protocol version bound into every signing root.
pub const PROTOCOL_VERSION: u16 = 1;

/// What a signature is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum Purpose {
    /// A city's sealing key signs a shard header.
    ShardHeader = 1,
    /// A validator precommits a beacon header (aggregated into the commit certificate).
    BeaconPrecommit = 2,
    /// A validator prevotes a beacon header.
    BeaconPrevote = 3,
    /// A validator's operator approves a validator-set change.
    ValidatorSetChange = 4,
    /// A validator proposes a beacon block.
    BeaconProposal = 5,
}

/// The signed message's structure; its hash is the signing root.
#[derive(BorshSerialize, BorshDeserialize)]
struct SigningDomain {
    purpose: Purpose,
    protocol_version: u16,
    federation_id: Hash32,
    object: Hash32,
}

/// `H_SigningRoot(encode(purpose, version, federation_id, object))`.
pub fn signing_root(purpose: Purpose, federation_id: &Hash32, object: &Hash32) -> Hash32 {
    Domain::SigningRoot.hash(&encode(&SigningDomain {
        purpose,
        protocol_version: PROTOCOL_VERSION,
        federation_id: *federation_id,
        object: *object,
    }))
}
