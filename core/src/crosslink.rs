//! Crosslink entries: what a shard pushes to the beacon and what a beacon block body carries
//! for each city — the city's latest sealed header and the proof that it extends the header
//! the beacon crosslinked before (no fork, no rewritten history). Validators, shards and tests
//! all check an entry with [`verify_entry`].
//!
//! docs/protocol.md, "Crosslink entries".

use crate::beacon::Crosslink;
use crate::genesis::ValidGenesis;
use crate::hash::Hash32;
use crate::header::{SHARD_HEADER_VERSION, SignedShardHeader};
use crate::merkle::{Blake3Tree, ConsistencyProof, InclusionProof, MerkleError, TreeHasher};
use crate::record::CityId;
use crate::sealing::Ed25519Error;
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// A city's header offered for crosslinking.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CrosslinkEntry {
    /// The sealed header M.
    pub header: SignedShardHeader,
    /// How M extends the city's previously crosslinked header P; absent for a city's first
    /// crosslink.
    pub extension: Option<Extension>,
}

/// The proof that header M extends header P (heights p < m): P's history is a prefix of M's
/// and P itself is leaf p of M's history tree.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Extension {
    /// Consistency of the history tree from size p (P's `history_root`) to size m.
    pub consistency: ConsistencyProof,
    /// Path of P's header hash: leaf index p in the tree of size m.
    pub inclusion: InclusionProof,
}

/// What the beacon remembers of a city's last crosslinked header.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct CrosslinkedHead {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: Hash32,
    /// Its history root.
    pub history_root: Hash32,
}

impl CrosslinkEntry {
    /// The city.
    pub fn city(&self) -> CityId {
        self.header.header.city
    }

    /// The leaf this entry contributes to the crosslinks tree.
    pub fn crosslink(&self) -> Crosslink {
        Crosslink { city: self.city(), header_hash: self.header.header.hash() }
    }

    /// What the beacon remembers once this entry is crosslinked.
    pub fn head(&self) -> CrosslinkedHead {
        let h = &self.header.header;
        CrosslinkedHead { height: h.height, hash: h.hash(), history_root: h.history_root }
    }
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrosslinkError {
    /// The city is not in genesis.
    #[error("city {0} is not a member of this federation")]
    UnknownCity(CityId),
    /// The beacon height precedes the city's first height.
    #[error("city {city} joins at beacon height {first_height}")]
    NotYetJoined {
        /// City.
        city: CityId,
        /// Its first beacon height.
        first_height: u64,
    },
    /// Unknown header version.
    #[error("shard header version {0} is not supported")]
    HeaderVersion(u8),
    /// The seal does not verify under the city's key at that height.
    #[error("shard header seal: {0}")]
    Seal(Ed25519Error),
    /// The header is not later than the one already crosslinked.
    #[error("header {height} is not later than the crosslinked header {crosslinked}")]
    NotNewer {
        /// The entry's height.
        height: u64,
        /// The crosslinked height.
        crosslinked: u64,
    },
    /// The extension is missing, present for a first crosslink, or from another base.
    #[error(
        "the extension must start at the crosslinked height {expected:?}, it starts at {actual:?}"
    )]
    Base {
        /// The crosslinked height (none for a first crosslink).
        expected: Option<u64>,
        /// The extension's base (none without an extension).
        actual: Option<u64>,
    },
    /// The consistency proof does not hold.
    #[error("history consistency: {0}")]
    Consistency(MerkleError),
    /// The crosslinked header is not in the new header's history.
    #[error("history inclusion of the crosslinked header: {0}")]
    Inclusion(MerkleError),
    /// Two headers offered as conflicting are of different cities or heights, or the same.
    #[error("the two headers do not conflict")]
    NotConflicting,
}

/// Two validly sealed, different headers of one city at one height: proof that the city's
/// sealing key signed a fork. Anyone with genesis can check it ([`verify_equivocation`]).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ShardEquivocation {
    /// The header seen first.
    pub first: SignedShardHeader,
    /// The conflicting one.
    pub second: SignedShardHeader,
}

/// Checks a header's version and its seal under its city's key at its height.
pub fn verify_seal(
    genesis: &ValidGenesis,
    signed: &SignedShardHeader,
) -> Result<(), CrosslinkError> {
    let h = &signed.header;
    if h.version != SHARD_HEADER_VERSION {
        return Err(CrosslinkError::HeaderVersion(h.version));
    }
    let key = genesis.sealing_key(h.city, h.height).ok_or(CrosslinkError::UnknownCity(h.city))?;
    signed.verify(&genesis.federation_id(), key).map_err(CrosslinkError::Seal)
}

/// Checks that `e` proves an equivocation; returns the city and height.
pub fn verify_equivocation(
    genesis: &ValidGenesis,
    e: &ShardEquivocation,
) -> Result<(CityId, u64), CrosslinkError> {
    let (a, b) = (&e.first.header, &e.second.header);
    if a.city != b.city || a.height != b.height || a.hash() == b.hash() {
        return Err(CrosslinkError::NotConflicting);
    }
    verify_seal(genesis, &e.first)?;
    verify_seal(genesis, &e.second)?;
    Ok((a.city, a.height))
}

/// Checks `entry` for a block at `beacon_height` whose chain last crosslinked `previous` for
/// the entry's city. On success returns the head the chain will remember.
pub fn verify_entry(
    genesis: &ValidGenesis,
    beacon_height: u64,
    previous: Option<&CrosslinkedHead>,
    entry: &CrosslinkEntry,
) -> Result<CrosslinkedHead, CrosslinkError> {
    let m = &entry.header.header;
    let city = genesis.city(m.city).ok_or(CrosslinkError::UnknownCity(m.city))?;
    if beacon_height < city.first_height {
        return Err(CrosslinkError::NotYetJoined { city: m.city, first_height: city.first_height });
    }
    verify_seal(genesis, &entry.header)?;
    if let Some(p) = previous
        && m.height <= p.height
    {
        return Err(CrosslinkError::NotNewer { height: m.height, crosslinked: p.height });
    }
    match (previous, &entry.extension) {
        (None, None) => {}
        (Some(p), Some(ext)) => {
            if ext.consistency.size1 != p.height
                || ext.consistency.size2 != m.height
                || ext.inclusion.leaf_index != p.height
                || ext.inclusion.tree_size != m.height
            {
                return Err(CrosslinkError::Base {
                    expected: Some(p.height),
                    actual: Some(ext.inclusion.leaf_index),
                });
            }
            let tree = Blake3Tree::history();
            ext.consistency
                .verify(&tree, &p.history_root, &m.history_root)
                .map_err(CrosslinkError::Consistency)?;
            ext.inclusion
                .verify(&tree, &tree.leaf(p.hash.as_bytes()), &m.history_root)
                .map_err(CrosslinkError::Inclusion)?;
        }
        (expected, actual) => {
            return Err(CrosslinkError::Base {
                expected: expected.map(|p| p.height),
                actual: actual.as_ref().map(|e| e.inclusion.leaf_index),
            });
        }
    }
    Ok(entry.head())
}
