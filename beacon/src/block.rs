//! Beacon blocks: the header (`urbis-core`) and the body it commits to, how a proposer builds
//! one and what every validator checks before voting for it.

use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeMap;
use urbis_core::beacon::{BEACON_HEADER_VERSION, BeaconHeader, Crosslink};
use urbis_core::crosslink::{CrosslinkEntry, CrosslinkError, CrosslinkedHead, verify_entry};
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::{Domain, Hash32};
use urbis_core::merkle::{Blake3Tree, InclusionProof, MerkleError, root_from_leaf_hashes};
use urbis_core::record::CityId;

/// The body of a beacon block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BeaconBody {
    /// Cities' sealed headers with their extension proofs, at most one per city, in ascending
    /// city order.
    pub crosslinks: Vec<CrosslinkEntry>,
}

/// Each city's last crosslinked header, as the chain up to some height says.
pub type Heads = BTreeMap<CityId, CrosslinkedHead>;

impl BeaconBody {
    /// `H_beacon_body(borsh(body))`.
    pub fn hash(&self) -> Hash32 {
        Domain::BeaconBody.hash(&borsh::to_vec(self).unwrap_or_default())
    }

    /// The root of the crosslinks tree over this body's crosslinks.
    pub fn crosslinks_root(&self) -> Hash32 {
        root_from_leaf_hashes(&Blake3Tree::crosslinks(), &self.leaf_hashes())
    }

    /// The crosslinks tree's leaves, in order.
    pub fn leaves(&self) -> Vec<Crosslink> {
        self.crosslinks.iter().map(CrosslinkEntry::crosslink).collect()
    }

    fn leaf_hashes(&self) -> Vec<Hash32> {
        self.crosslinks.iter().map(|e| e.crosslink().leaf_hash()).collect()
    }

    /// The crosslink path of `city`'s entry, with the entry.
    pub fn crosslink_path(
        &self,
        city: CityId,
    ) -> Option<Result<(&CrosslinkEntry, InclusionProof), MerkleError>> {
        let index = self.crosslinks.iter().position(|e| e.city() == city)?;
        let proof =
            InclusionProof::build(&Blake3Tree::crosslinks(), &self.leaf_hashes(), index as u64);
        Some(proof.map(|p| (&self.crosslinks[index], p)))
    }
}

/// A beacon block: what validators agree on.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    /// The header (its hash is the block's id).
    pub header: BeaconHeader,
    /// The body.
    pub body: BeaconBody,
}

impl PartialOrd for Block {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Blocks are ordered by header hash (consensus only needs some total order).
impl Ord for Block {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.header.hash().cmp(&other.header.hash())
    }
}

/// What the next block must continue from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    /// Height of the next block.
    pub height: u64,
    /// Hash of the last block's header (zero before the first).
    pub previous: Hash32,
    /// The set in force at the next height.
    pub set_hash: Hash32,
    /// The set in force after it.
    pub next_set_hash: Hash32,
}

/// Why a proposed block is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Wrong version, height, previous hash or validator-set hashes.
    #[error("block does not continue the chain: {0}")]
    Continuity(&'static str),
    /// Crosslinks not in strictly ascending city order.
    #[error("crosslinks are not in strictly ascending city order")]
    CrosslinkOrder,
    /// The header does not commit to this body.
    #[error("header does not commit to the body")]
    BodyMismatch,
    /// A crosslink entry does not verify against the chain.
    #[error("crosslink of city {city}: {error}")]
    Crosslink {
        /// The entry's city.
        city: CityId,
        /// Why.
        error: CrosslinkError,
    },
}

impl Block {
    /// The block at `tip` carrying `crosslinks` (sorted and deduplicated by city here).
    pub fn build(tip: &Tip, time_ms: u64, mut crosslinks: Vec<CrosslinkEntry>) -> Block {
        crosslinks.sort_by_key(CrosslinkEntry::city);
        crosslinks.dedup_by_key(|c| c.city());
        let body = BeaconBody { crosslinks };
        let header = BeaconHeader {
            version: BEACON_HEADER_VERSION,
            height: tip.height,
            time_ms,
            previous: tip.previous,
            body_hash: body.hash(),
            crosslinks_root: body.crosslinks_root(),
            crosslinks_count: body.crosslinks.len() as u64,
            validator_set_hash: tip.set_hash,
            next_validator_set_hash: tip.next_set_hash,
        };
        Block { header, body }
    }

    /// Checks the block continues `tip` and its header commits to its body.
    pub fn check(&self, tip: &Tip) -> Result<(), BlockError> {
        let h = &self.header;
        if h.version != BEACON_HEADER_VERSION {
            return Err(BlockError::Continuity("version"));
        }
        if h.height != tip.height {
            return Err(BlockError::Continuity("height"));
        }
        if h.previous != tip.previous {
            return Err(BlockError::Continuity("previous header"));
        }
        if h.validator_set_hash != tip.set_hash || h.next_validator_set_hash != tip.next_set_hash {
            return Err(BlockError::Continuity("validator set"));
        }
        if self.body.crosslinks.windows(2).any(|w| w[0].city() >= w[1].city()) {
            return Err(BlockError::CrosslinkOrder);
        }
        if h.body_hash != self.body.hash()
            || h.crosslinks_root != self.body.crosslinks_root()
            || h.crosslinks_count != self.body.crosslinks.len() as u64
        {
            return Err(BlockError::BodyMismatch);
        }
        Ok(())
    }

    /// Checks every crosslink entry against `heads` (the chain before this block): sealed by
    /// its city, newer than and extending the city's last crosslinked header. Returns the heads
    /// after this block.
    pub fn check_crosslinks(
        &self,
        genesis: &ValidGenesis,
        heads: &Heads,
    ) -> Result<Heads, BlockError> {
        let mut after = heads.clone();
        for entry in &self.body.crosslinks {
            let city = entry.city();
            let head = verify_entry(genesis, self.header.height, heads.get(&city), entry)
                .map_err(|error| BlockError::Crosslink { city, error })?;
            after.insert(city, head);
        }
        Ok(after)
    }
}
