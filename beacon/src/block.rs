//! Beacon blocks: the header (`urbis-core`) and the body it commits to, how a proposer builds
//! one and what every validator checks before voting for it.

use borsh::{BorshDeserialize, BorshSerialize};
use urbis_core::beacon::{BEACON_HEADER_VERSION, BeaconHeader, Crosslink};
use urbis_core::hash::{Domain, Hash32};
use urbis_core::merkle::{Blake3Tree, root_from_leaf_hashes};

/// The body of a beacon block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BeaconBody {
    /// Each city's latest sealed header, at most one per city, in ascending city order.
    pub crosslinks: Vec<Crosslink>,
}

impl BeaconBody {
    /// `H_beacon_body(borsh(body))`.
    pub fn hash(&self) -> Hash32 {
        Domain::BeaconBody.hash(&borsh::to_vec(self).unwrap_or_default())
    }

    /// The root of the crosslinks tree over this body's crosslinks.
    pub fn crosslinks_root(&self) -> Hash32 {
        let leaves: Vec<Hash32> = self.crosslinks.iter().map(Crosslink::leaf_hash).collect();
        root_from_leaf_hashes(&Blake3Tree::crosslinks(), &leaves)
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
}

impl Block {
    /// The block at `tip` carrying `crosslinks` (sorted and deduplicated by city here).
    pub fn build(tip: &Tip, time_ms: u64, mut crosslinks: Vec<Crosslink>) -> Block {
        crosslinks.sort();
        crosslinks.dedup_by_key(|c| c.city);
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
        if self.body.crosslinks.windows(2).any(|w| w[0].city >= w[1].city) {
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
}
