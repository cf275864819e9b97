//! Hashes and domain separation: every BLAKE3 hash Urbis computes names its purpose.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::OnceLock;

/// A 32-byte digest (BLAKE3 unless stated otherwise). Serialised as 64 lowercase hex digits in JSON.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The all-zero value. It is never a valid root by itself: roots are trusted only because a
    /// verified header carries them.
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        crate::hexfmt::encode(&self.0)
    }

    /// Parses exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        crate::hexfmt::decode_to(s.as_bytes(), &mut out)?;
        Ok(Hash32(out))
    }

    /// The 64 lowercase hex digits, on the stack.
    fn hex_digits(&self) -> [u8; 64] {
        let mut hex = [0u8; 64];
        crate::hexfmt::encode_to(&self.0, &mut hex);
        hex
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex_digits();
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl From<[u8; 32]> for Hash32 {
    fn from(value: [u8; 32]) -> Self {
        Hash32(value)
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Hex on the stack: proofs hold hundreds of hashes, each was an allocation.
        let hex = self.hex_digits();
        s.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(d)?;
        Hash32::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Every purpose for which Urbis hashes bytes. Each has its own BLAKE3 key, derived from the
/// context string `"urbis v1 " + name` (see `docs/protocol.md`, "Domain hashes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Domain {
    /// Record id: hash of a record's canonical encoding.
    RecordId = 0,
    /// Shard header hash.
    ShardHeader = 1,
    /// Beacon header hash.
    BeaconHeader = 2,
    /// Validator-set hash.
    ValidatorSet = 3,
    /// Genesis document hash (the federation id).
    Genesis = 4,
    /// Salted commitment to an off-chain payload.
    PayloadCommitment = 5,
    /// Signing roots (what Ed25519 and BLS keys sign).
    SigningRoot = 6,
    /// Records Merkle tree (one per shard block).
    RecordsTree = 7,
    /// History Merkle tree (all earlier header hashes of a shard).
    HistoryTree = 8,
    /// Crosslinks Merkle tree (one per beacon block).
    CrosslinksTree = 9,
    /// Authenticated state (Jellyfish Merkle tree under `state_root`).
    StateTree = 10,
    /// Beacon block body hash.
    BeaconBody = 11,
    /// Derivation of batch-verification coefficients.
    BatchCoefficients = 12,
    /// The running digest of a subject's records in a shard's subject index.
    SubjectIndex = 13,
    /// Consensus messages other than a precommit for a block (prevotes, nil precommits,
    /// proposals): the object their signing root binds.
    ConsensusMessage = 14,
    /// The Merkle tree over the record ids of the packets one block sends on one channel.
    OutboundBatch = 15,
}

impl Domain {
    const ALL: [Domain; 16] = [
        Domain::RecordId,
        Domain::ShardHeader,
        Domain::BeaconHeader,
        Domain::ValidatorSet,
        Domain::Genesis,
        Domain::PayloadCommitment,
        Domain::SigningRoot,
        Domain::RecordsTree,
        Domain::HistoryTree,
        Domain::CrosslinksTree,
        Domain::StateTree,
        Domain::BeaconBody,
        Domain::BatchCoefficients,
        Domain::SubjectIndex,
        Domain::ConsensusMessage,
        Domain::OutboundBatch,
    ];

    /// The BLAKE3 `derive_key` context string of this domain.
    pub fn context(self) -> &'static str {
        match self {
            Domain::RecordId => "urbis v1 record id",
            Domain::ShardHeader => "urbis v1 shard header",
            Domain::BeaconHeader => "urbis v1 beacon header",
            Domain::ValidatorSet => "urbis v1 validator set",
            Domain::Genesis => "urbis v1 genesis",
            Domain::PayloadCommitment => "urbis v1 payload commitment",
            Domain::SigningRoot => "urbis v1 signing root",
            Domain::RecordsTree => "urbis v1 records tree",
            Domain::HistoryTree => "urbis v1 history tree",
            Domain::CrosslinksTree => "urbis v1 crosslinks tree",
            Domain::StateTree => "urbis v1 state tree",
            Domain::BeaconBody => "urbis v1 beacon body",
            Domain::BatchCoefficients => "urbis v1 batch coefficients",
            Domain::SubjectIndex => "urbis v1 subject index",
            Domain::ConsensusMessage => "urbis v1 consensus message",
            Domain::OutboundBatch => "urbis v1 outbound batch",
        }
    }

    /// The 32-byte key of this domain: `BLAKE3-derive_key(context, "")`.
    pub fn key(self) -> &'static [u8; 32] {
        static KEYS: OnceLock<[[u8; 32]; 16]> = OnceLock::new();
        let keys = KEYS.get_or_init(|| Domain::ALL.map(|d| blake3::derive_key(d.context(), b"")));
        &keys[self as usize]
    }

    /// A keyed BLAKE3 hasher for this domain, ready for input.
    pub fn hasher(self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(self.key())
    }

    /// `BLAKE3-keyed(key(domain), bytes)`.
    pub fn hash(self, bytes: &[u8]) -> Hash32 {
        Hash32(*blake3::keyed_hash(self.key(), bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_keys_are_distinct() {
        let mut keys: Vec<_> = Domain::ALL.iter().map(|d| *d.key()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), Domain::ALL.len());
        for (i, d) in Domain::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "Domain::ALL must be in discriminant order");
        }
    }

    #[test]
    fn hash32_hex_round_trip() {
        let h = Domain::RecordId.hash(b"x");
        assert_eq!(Hash32::from_hex(&h.to_hex()).unwrap(), h);
        assert!(Hash32::from_hex("00").is_err());
    }
}
