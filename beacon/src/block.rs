//! Beacon blocks: the header (`urbis-core`) and the body it commits to, how a proposer builds
//! one and what every validator checks before voting for it.

use crate::consensus::evidence::Evidence;
use crate::consensus::{Bls, ValidatorSet};
use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeMap;
use urbis_core::beacon::{BEACON_HEADER_VERSION, BeaconHeader, Crosslink};
use urbis_core::crosslink::{
    CrosslinkEntry, CrosslinkError, CrosslinkedHead, ShardEquivocation, verify_entry,
    verify_equivocation,
};
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::{Domain, Hash32};
use urbis_core::merkle::{Blake3Tree, InclusionProof, MerkleError, root_from_leaf_hashes};
use urbis_core::record::CityId;
use urbis_core::set_change::{SetChangeError, SignedSetChange};

/// The body of a beacon block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BeaconBody {
    /// Cities' sealed headers with their extension proofs, at most one per city, in ascending
    /// city order.
    pub crosslinks: Vec<CrosslinkEntry>,
    /// Misbehaviour evidence not recorded in an earlier block, at most [`EVIDENCE_MAX`].
    pub evidence: Vec<EvidenceItem>,
    /// Approved validator-set changes no earlier block carried, at most
    /// [`crate::sets::SET_CHANGES_MAX`].
    pub set_changes: Vec<SignedSetChange>,
}

/// Most evidence items one block records.
pub const EVIDENCE_MAX: usize = 16;

/// One piece of self-verifying misbehaviour evidence, as a block records it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EvidenceItem {
    /// Two conflicting signed votes or proposals of one validator.
    Votes(Evidence),
    /// Two sealed headers of one city at one height.
    ShardHeaders(Box<ShardEquivocation>),
}

impl EvidenceItem {
    /// `H_consensus_message(borsh(item))`: the item's identity on chain.
    pub fn hash(&self) -> Hash32 {
        Domain::ConsensusMessage.hash(&borsh::to_vec(self).unwrap_or_default())
    }

    /// Whether the item proves misbehaviour under `genesis` and the consensus `set` in force.
    pub fn verify(&self, genesis: &ValidGenesis, set: &ValidatorSet<Bls>) -> bool {
        match self {
            EvidenceItem::Votes(e) => e.verify::<Bls>(&genesis.federation_id(), set),
            EvidenceItem::ShardHeaders(e) => verify_equivocation(genesis, e).is_ok(),
        }
    }
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
    /// An evidence item does not verify, repeats one in the block, or too many are carried.
    #[error("evidence item {0} is invalid, repeated or beyond the limit")]
    Evidence(usize),
    /// A set change is not approved, too soon, repeated, or beyond the limit.
    #[error("set change {index}: {}", error.as_ref().map_or("repeated, carried before or beyond the limit".to_string(), ToString::to_string))]
    SetChange {
        /// Its position in the body.
        index: usize,
        /// Why (`None`: repeated or beyond the limit).
        error: Option<SetChangeError>,
    },
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
    pub fn build(
        tip: &Tip,
        time_ms: u64,
        mut crosslinks: Vec<CrosslinkEntry>,
        mut evidence: Vec<EvidenceItem>,
        mut set_changes: Vec<SignedSetChange>,
    ) -> Block {
        crosslinks.sort_by_key(CrosslinkEntry::city);
        crosslinks.dedup_by_key(|c| c.city());
        let mut seen = std::collections::BTreeSet::new();
        evidence.retain(|e| seen.insert(e.hash()));
        evidence.truncate(EVIDENCE_MAX);
        let mut seen = std::collections::BTreeSet::new();
        set_changes.retain(|c| seen.insert(c.proposal.hash()));
        set_changes.truncate(crate::sets::SET_CHANGES_MAX);
        let body = BeaconBody { crosslinks, evidence, set_changes };
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

    /// Checks every evidence item verifies, none repeats within the block, at most
    /// [`EVIDENCE_MAX`], and none is `recorded` already on the chain.
    pub fn check_evidence(
        &self,
        genesis: &ValidGenesis,
        set: &ValidatorSet<Bls>,
        recorded: impl Fn(&Hash32) -> bool,
    ) -> Result<(), BlockError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, item) in self.body.evidence.iter().enumerate() {
            let hash = item.hash();
            if i >= EVIDENCE_MAX
                || !seen.insert(hash)
                || recorded(&hash)
                || !item.verify(genesis, set)
            {
                return Err(BlockError::Evidence(i));
            }
        }
        Ok(())
    }

    /// Checks every set change: approved under `sets` at this block's height, effective at
    /// least two heights later, not carried before, not repeated, at most
    /// [`crate::sets::SET_CHANGES_MAX`].
    pub fn check_set_changes(&self, sets: &crate::sets::Sets) -> Result<(), BlockError> {
        let mut seen = std::collections::BTreeSet::new();
        for (index, c) in self.body.set_changes.iter().enumerate() {
            if index >= crate::sets::SET_CHANGES_MAX
                || !seen.insert(c.proposal.hash())
                || sets.carried(c)
            {
                return Err(BlockError::SetChange { index, error: None });
            }
            sets.check(self.header.height, c)
                .map_err(|e| BlockError::SetChange { index, error: Some(e) })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::genesis_set;
    use urbis_core::testkit::{Federation, ShardChain, information_record};

    fn equivocation(fed: &Federation, city: u32) -> ShardEquivocation {
        let mut a = ShardChain::new(CityId(city));
        let mut b = ShardChain::new(CityId(city));
        a.seal(fed, vec![information_record(CityId(city), 1)], &[]);
        b.seal(fed, vec![information_record(CityId(city), 2)], &[]);
        ShardEquivocation { first: a.headers[0].clone(), second: b.headers[0].clone() }
    }

    #[test]
    fn a_block_records_evidence_only_when_it_verifies_once() {
        let fed = Federation::new("evidence", 2, 4);
        let set = genesis_set(&fed.genesis).unwrap();
        let tip = Tip {
            height: 1,
            previous: Hash32::ZERO,
            set_hash: Hash32::ZERO,
            next_set_hash: Hash32::ZERO,
        };
        let good = EvidenceItem::ShardHeaders(Box::new(equivocation(&fed, 0)));
        let other = EvidenceItem::ShardHeaders(Box::new(equivocation(&fed, 1)));
        let none = |_: &Hash32| false;
        let block =
            Block::build(&tip, 1, vec![], vec![good.clone(), other.clone(), good.clone()], vec![]);
        assert_eq!(block.body.evidence.len(), 2, "build drops repeats");
        block.check(&tip).unwrap();
        block.check_evidence(&fed.genesis, &set, none).unwrap();
        // Already recorded on the chain.
        let recorded = good.hash();
        assert_eq!(
            block.check_evidence(&fed.genesis, &set, |h| *h == recorded),
            Err(BlockError::Evidence(0))
        );
        // Repeated within a block (a proposer that does not use `build`).
        let mut twice = block.clone();
        twice.body.evidence.push(good.clone());
        assert_eq!(twice.check_evidence(&fed.genesis, &set, none), Err(BlockError::Evidence(2)));
        // Not evidence: the same header twice, or a forged seal.
        let EvidenceItem::ShardHeaders(mut forged) = good.clone() else { unreachable!() };
        forged.second.signature[40] ^= 1;
        let mut bad = block.clone();
        bad.body.evidence = vec![other, EvidenceItem::ShardHeaders(forged)];
        assert_eq!(bad.check_evidence(&fed.genesis, &set, none), Err(BlockError::Evidence(1)));
        // And the header commits to the evidence: changing it breaks the body hash.
        let mut swapped = block.clone();
        swapped.body.evidence.reverse();
        assert_eq!(swapped.check(&tip), Err(BlockError::BodyMismatch));
    }
}
