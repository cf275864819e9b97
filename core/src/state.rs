//! Authenticated state: keys, the Jellyfish Merkle tree hasher, and pure verification of
//! membership and non-membership proofs against `state_root`.
//!
//! The tree is the `jmt` crate's, with keyed BLAKE3 under [`Domain::StateTree`] as its hash,
//! so no node of the state tree passes for a node of any other Urbis tree. Proofs travel in
//! Urbis's own encoding ([`StateProof`]: sibling hashes only, one canonical form) and are
//! checked here without the `jmt` crate.

use crate::encoding::{decode, encode};
use crate::hash::{Domain, Hash32};
use crate::record::{CityId, SubjectId};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Prefix of JMT leaf hashes.
pub const LEAF_DOMAIN_SEPARATOR: &[u8] = b"JMT::LeafNode";
/// Prefix of JMT internal-node hashes.
pub const INTERNAL_DOMAIN_SEPARATOR: &[u8] = b"JMT::IntrnalNode";
/// The hash of an empty subtree (and the root of the empty state).
pub const PLACEHOLDER_HASH: Hash32 = Hash32(*b"SPARSE_MERKLE_PLACEHOLDER_HASH__");

/// The state tree's hash for `jmt`: keyed BLAKE3 under [`Domain::StateTree`].
#[derive(Clone)]
pub struct StateHasher(blake3::Hasher);

impl jmt::SimpleHasher for StateHasher {
    fn new() -> Self {
        StateHasher(Domain::StateTree.hasher())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

fn state_hash(parts: &[&[u8]]) -> Hash32 {
    let mut h = Domain::StateTree.hasher();
    for p in parts {
        h.update(p);
    }
    Hash32(*h.finalize().as_bytes())
}

/// Every kind of fact kept under `state_root`. The verifier builds the key it asks about; it
/// never takes a key from the proof.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StateKey {
    /// Balance of an account in an asset.
    Balance {
        /// Asset id.
        asset: String,
        /// Account.
        account: String,
    },
    /// Escrow held at a source city for an asset sent to a destination.
    Escrow {
        /// Asset id.
        asset: String,
        /// Destination city.
        destination: CityId,
    },
    /// Vouchers of an asset issued by another city, outstanding at this city.
    Voucher {
        /// Asset id.
        asset: String,
        /// Account.
        account: String,
    },
    /// Revocation of a talent credential.
    Revocation {
        /// Credential id.
        credential_id: Hash32,
    },
    /// The packets the newest block that sent any on a channel sent (value:
    /// [`crate::packet::OutboundBatch`]: that block's height, the first sequence and count, the
    /// timeout, and the root of the tree over their record ids). Rewritten by each block that
    /// sends on the channel; the next sequence is `first_sequence + count`.
    OutboundBatch {
        /// Source city.
        source: CityId,
        /// Destination city.
        destination: CityId,
    },
    /// Receipt of an inbound packet, with the destination's answer (value:
    /// [`crate::packet::Receipt`]).
    PacketReceipt {
        /// Source city.
        source: CityId,
        /// Destination city.
        destination: CityId,
        /// Sequence.
        sequence: u64,
    },
    /// The subject index: a digest of every record about a subject in this shard.
    SubjectIndex {
        /// Subject.
        subject: SubjectId,
    },
    /// The erasure of a record's off-chain payload (value: [`ErasureNote`]).
    Erasure {
        /// The record whose payload and salt were erased.
        record_id: Hash32,
    },
    /// The highest certified beacon height the shard had followed when it sealed the block
    /// (value: `u64`). Timeouts are judged against it, at the destination and in timeout proofs.
    BeaconView,
    /// Packets from a city are refused here: two validly sealed headers of that city at one
    /// height were seen (value: the evidence, [`crate::crosslink::ShardEquivocation`]).
    FrozenChannel {
        /// The city whose packets are refused.
        source: CityId,
    },
    /// How the outbound packets of one range of sequences on a channel ended at their source
    /// (value: [`crate::packet::Settlements`]). Range `bucket` holds the sequences `q` with
    /// `q / SETTLEMENT_BUCKET_SIZE = bucket` ([`crate::packet::SETTLEMENT_BUCKET_SIZE`]).
    PacketSettlements {
        /// Source city.
        source: CityId,
        /// Destination city.
        destination: CityId,
        /// The range of sequences.
        bucket: u64,
    },
}

/// The state value under [`StateKey::Erasure`]: when and by whom a payload was erased.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ErasureNote {
    /// Height of the block that records the erasure.
    pub height: u64,
    /// That block's time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who asked: the issuing service's name, or `operator:<token id>`.
    pub by: String,
}

impl StateKey {
    /// The 32-byte key hash the tree is indexed by: `H_StateTree(encode(key))`.
    pub fn key_hash(&self) -> Hash32 {
        state_hash(&[&encode(self)])
    }
}

/// The hash of a value stored in the state: `H_StateTree(value)`.
pub fn value_hash(value: &[u8]) -> Hash32 {
    state_hash(&[value])
}

/// The leaf of a JMT proof: the only key in the subtree the path leads to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct StateLeaf {
    /// Key hash of the leaf.
    pub key_hash: Hash32,
    /// Value hash of the leaf.
    pub value_hash: Hash32,
}

impl StateLeaf {
    fn hash(&self) -> Hash32 {
        state_hash(&[LEAF_DOMAIN_SEPARATOR, &self.key_hash.0, &self.value_hash.0])
    }
}

/// A membership or non-membership proof against a `state_root`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct StateProof {
    /// The leaf the path ends in (`None`: the path ends in an empty subtree).
    pub leaf: Option<StateLeaf>,
    /// Sibling hashes from the bottom of the path up to the root.
    pub siblings: Vec<Hash32>,
}

/// Why a state proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateProofError {
    /// More than 256 siblings.
    #[error("{0} siblings, at most 256 are possible")]
    TooManySiblings(usize),
    /// A value was expected but the proof shows absence.
    #[error("proof shows absence but membership was claimed")]
    ExpectedMembership,
    /// The proof's leaf is for another key while membership was claimed.
    #[error("proof leaf is for another key")]
    KeyMismatch,
    /// The value does not hash to the leaf's value hash.
    #[error("value does not match the proven value hash")]
    ValueMismatch,
    /// Absence was claimed but the key is present.
    #[error("key is present but absence was claimed")]
    KeyPresent,
    /// The proof's leaf is not in the subtree where the key would be.
    #[error("proof leaf does not share the key's path prefix: not an absence proof")]
    NotInSubtree,
    /// The recomputed root is not the trusted `state_root`.
    #[error("recomputed state root does not match the trusted state root")]
    RootMismatch,
    /// A `jmt` proof that could not be converted.
    #[error("malformed tree proof")]
    Malformed,
}

impl StateProof {
    /// Converts a proof produced by the `jmt` tree into the Urbis encoding.
    pub fn from_jmt(
        proof: &jmt::proof::SparseMerkleProof<StateHasher>,
    ) -> Result<Self, StateProofError> {
        // The jmt proof's borsh layout: Option<leaf>, Vec<sibling node>, where a sibling is
        // Null | Internal(left, right) | Leaf(key_hash, value_hash). We keep sibling hashes only.
        #[derive(BorshDeserialize, BorshSerialize)]
        enum Node {
            Null,
            Internal { left: [u8; 32], right: [u8; 32] },
            Leaf { key_hash: [u8; 32], value_hash: [u8; 32] },
        }
        #[derive(BorshDeserialize, BorshSerialize)]
        struct Mirror {
            leaf: Option<StateLeaf>,
            siblings: Vec<Node>,
        }
        let bytes = borsh::to_vec(proof).map_err(|_| StateProofError::Malformed)?;
        let mirror: Mirror = decode(&bytes).map_err(|_| StateProofError::Malformed)?;
        let siblings = mirror
            .siblings
            .iter()
            .map(|n| match n {
                Node::Null => PLACEHOLDER_HASH,
                Node::Internal { left, right } => {
                    state_hash(&[INTERNAL_DOMAIN_SEPARATOR, left, right])
                }
                Node::Leaf { key_hash, value_hash } => {
                    state_hash(&[LEAF_DOMAIN_SEPARATOR, key_hash, value_hash])
                }
            })
            .collect();
        Ok(StateProof { leaf: mirror.leaf, siblings })
    }

    /// Verifies that under `root`, `key` holds `value` (`Some`) or is absent (`None`).
    pub fn verify(
        &self,
        root: &Hash32,
        key: &StateKey,
        value: Option<&[u8]>,
    ) -> Result<(), StateProofError> {
        self.verify_key_hash(root, &key.key_hash(), value)
    }

    /// As [`StateProof::verify`] with the key already hashed.
    pub fn verify_key_hash(
        &self,
        root: &Hash32,
        key_hash: &Hash32,
        value: Option<&[u8]>,
    ) -> Result<(), StateProofError> {
        let depth = self.siblings.len();
        if depth > 256 {
            return Err(StateProofError::TooManySiblings(depth));
        }
        match (value, &self.leaf) {
            (Some(v), Some(leaf)) => {
                if leaf.key_hash != *key_hash {
                    return Err(StateProofError::KeyMismatch);
                }
                if leaf.value_hash != value_hash(v) {
                    return Err(StateProofError::ValueMismatch);
                }
            }
            (Some(_), None) => return Err(StateProofError::ExpectedMembership),
            (None, Some(leaf)) => {
                if leaf.key_hash == *key_hash {
                    return Err(StateProofError::KeyPresent);
                }
                if common_prefix_bits(&leaf.key_hash.0, &key_hash.0) < depth {
                    return Err(StateProofError::NotInSubtree);
                }
            }
            (None, None) => {}
        }
        let mut current = self.leaf.map_or(PLACEHOLDER_HASH, |l| l.hash());
        // Siblings run bottom-up; the key bit at depth d-1-i says which side we are on.
        for (i, sibling) in self.siblings.iter().enumerate() {
            let bit_index = depth - 1 - i;
            let bit = (key_hash.0[bit_index / 8] >> (7 - bit_index % 8)) & 1 == 1;
            current = if bit {
                state_hash(&[INTERNAL_DOMAIN_SEPARATOR, &sibling.0, &current.0])
            } else {
                state_hash(&[INTERNAL_DOMAIN_SEPARATOR, &current.0, &sibling.0])
            };
        }
        if current == *root { Ok(()) } else { Err(StateProofError::RootMismatch) }
    }
}

fn common_prefix_bits(a: &[u8; 32], b: &[u8; 32]) -> usize {
    for i in 0..32 {
        let x = a[i] ^ b[i];
        if x != 0 {
            return i * 8 + x.leading_zeros() as usize;
        }
    }
    256
}

/// An in-memory state tree (the shard node keeps the same tree in RocksDB). Used by tests,
/// benchmarks and tools that build proofs.
pub mod memory {
    use super::*;
    use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader, TreeWriter};
    use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, Version};
    use std::collections::BTreeMap;
    use std::sync::RwLock;

    /// Nodes and values of every version.
    #[derive(Default)]
    pub struct MemoryTree {
        nodes: RwLock<BTreeMap<NodeKey, Node>>,
        values: RwLock<BTreeMap<(KeyHash, Version), Option<OwnedValue>>>,
        version: Option<Version>,
    }

    impl TreeReader for MemoryTree {
        fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
            Ok(self.nodes.read().map_err(|_| poisoned())?.get(node_key).cloned())
        }
        fn get_value_option(
            &self,
            max_version: Version,
            key_hash: KeyHash,
        ) -> anyhow::Result<Option<OwnedValue>> {
            let values = self.values.read().map_err(|_| poisoned())?;
            Ok(values
                .range((key_hash, 0)..=(key_hash, max_version))
                .next_back()
                .and_then(|(_, v)| v.clone()))
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            let nodes = self.nodes.read().map_err(|_| poisoned())?;
            let mut best: Option<(NodeKey, LeafNode)> = None;
            for (k, n) in nodes.iter() {
                if let Node::Leaf(leaf) = n
                    && best.as_ref().is_none_or(|(_, b)| leaf.key_hash() > b.key_hash())
                {
                    best = Some((k.clone(), leaf.clone()));
                }
            }
            Ok(best)
        }
    }

    impl TreeWriter for MemoryTree {
        fn write_node_batch(&self, batch: &NodeBatch) -> anyhow::Result<()> {
            let mut nodes = self.nodes.write().map_err(|_| poisoned())?;
            for (k, n) in batch.nodes() {
                nodes.insert(k.clone(), n.clone());
            }
            let mut values = self.values.write().map_err(|_| poisoned())?;
            for ((version, key), v) in batch.values() {
                values.insert((*key, *version), v.clone());
            }
            Ok(())
        }
    }

    impl MemoryTree {
        /// Applies a set of writes (`None` deletes) as the next version; returns the new root.
        pub fn apply(
            &mut self,
            writes: &[(StateKey, Option<Vec<u8>>)],
        ) -> Result<Hash32, StateProofError> {
            let version = self.version.map_or(0, |v| v + 1);
            let tree = JellyfishMerkleTree::<_, StateHasher>::new(&*self);
            let set = writes.iter().map(|(k, v)| (KeyHash(k.key_hash().0), v.clone()));
            let (root, batch) =
                tree.put_value_set(set, version).map_err(|_| StateProofError::Malformed)?;
            self.write_node_batch(&batch.node_batch).map_err(|_| StateProofError::Malformed)?;
            self.version = Some(version);
            Ok(Hash32(root.0))
        }

        /// The current root (the placeholder hash while empty).
        pub fn root(&self) -> Hash32 {
            match self.version {
                None => PLACEHOLDER_HASH,
                Some(v) => JellyfishMerkleTree::<_, StateHasher>::new(self)
                    .get_root_hash(v)
                    .map_or(PLACEHOLDER_HASH, |r| Hash32(r.0)),
            }
        }

        /// The value under `key` at the current version and its proof.
        pub fn prove(
            &self,
            key: &StateKey,
        ) -> Result<(Option<Vec<u8>>, StateProof), StateProofError> {
            let version = self.version.ok_or(StateProofError::Malformed)?;
            let tree = JellyfishMerkleTree::<_, StateHasher>::new(self);
            let (value, proof) = tree
                .get_with_proof(KeyHash(key.key_hash().0), version)
                .map_err(|_| StateProofError::Malformed)?;
            Ok((value, StateProof::from_jmt(&proof)?))
        }
    }

    fn poisoned() -> anyhow::Error {
        anyhow::anyhow!("state tree lock poisoned")
    }
}
