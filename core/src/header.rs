//! Shard block headers and their Ed25519 seal.

use crate::encoding::{encode, hex_bytes};
use crate::hash::{Domain, Hash32};
use crate::record::CityId;
use crate::sealing::{Ed25519Error, SealingKey, SealingPublicKey};
use crate::signing::{Purpose, signing_root};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Header format version.
pub const SHARD_HEADER_VERSION: u8 = 1;

/// A shard block header.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ShardHeader {
    /// [`SHARD_HEADER_VERSION`].
    pub version: u8,
    /// The city whose shard this is.
    pub city: CityId,
    /// Block height, from 0.
    pub height: u64,
    /// Seal time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Hash of the header at `height - 1` (zero at height 0).
    pub previous: Hash32,
    /// Root of the records tree (leaves are record ids).
    pub records_root: Hash32,
    /// Number of records in the block (the records tree's size).
    pub records_count: u64,
    /// Root of the authenticated state after the block.
    pub state_root: Hash32,
    /// Root of the history tree over the hashes of headers `0..height` (size = `height`).
    pub history_root: Hash32,
}

impl ShardHeader {
    /// `H_ShardHeader(encode(header))`.
    pub fn hash(&self) -> Hash32 {
        Domain::ShardHeader.hash(&encode(self))
    }

    /// The message the city's sealing key signs.
    pub fn signing_root(&self, federation_id: &Hash32) -> Hash32 {
        signing_root(Purpose::ShardHeader, federation_id, &self.hash())
    }

    /// Seals the header.
    pub fn seal(self, federation_id: &Hash32, key: &SealingKey) -> SignedShardHeader {
        let signature = key.sign(self.signing_root(federation_id).as_bytes());
        SignedShardHeader { header: self, signature }
    }
}

/// A header with its seal.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SignedShardHeader {
    /// The header.
    pub header: ShardHeader,
    /// Ed25519 signature of the city's sealing key over the header's signing root.
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 64],
}

impl SignedShardHeader {
    /// Checks the seal against `key`.
    pub fn verify(
        &self,
        federation_id: &Hash32,
        key: &SealingPublicKey,
    ) -> Result<(), Ed25519Error> {
        key.verify(self.header.signing_root(federation_id).as_bytes(), &self.signature)
    }
}
