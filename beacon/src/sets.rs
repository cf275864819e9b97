//! Which validator set is in force at each beacon height, as the decided chain says: the genesis
//! set from height 1, changed by the approved set changes blocks carry, each from its effective
//! height. Pure: the node feeds it decided blocks (and replays the stored chain at start).
//!
//! A change that no longer applies when it takes effect (its validator was removed or rotated
//! by an earlier change) is skipped, the same way by every validator.

use std::collections::BTreeMap;
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::Hash32;
use urbis_core::set_change::{SetChange, SignedSetChange, apply};
use urbis_core::validators::{KeyCache, Quorum, TrustedSet, ValidatorSet};

/// Most set changes one block carries.
pub const SET_CHANGES_MAX: usize = 8;

/// The validator sets of a chain.
#[derive(Clone, Debug)]
pub struct Sets {
    federation_id: Hash32,
    quorum: Quorum,
    cache: KeyCache,
    /// Sets by the first height they are in force at (the genesis set at 1).
    epochs: BTreeMap<u64, (ValidatorSet, TrustedSet)>,
    /// Changes carried by decided blocks and not yet in force, by effective height.
    scheduled: BTreeMap<u64, Vec<SetChange>>,
    /// Every change the chain carried, with the height of the block that carried it.
    history: Vec<(u64, SignedSetChange)>,
    /// The highest height whose set is materialised in `epochs`.
    known: u64,
}

impl Sets {
    /// The genesis set in force from height 1.
    pub fn from_genesis(genesis: &ValidGenesis) -> Self {
        let mut epochs = BTreeMap::new();
        epochs.insert(1, (genesis.genesis().validators.clone(), genesis.validators().clone()));
        Sets {
            federation_id: genesis.federation_id(),
            quorum: genesis.quorum(),
            cache: KeyCache::default(),
            epochs,
            scheduled: BTreeMap::new(),
            history: vec![],
            known: 1,
        }
    }

    /// The set in force at `height` (as far as the decided chain knows: call
    /// [`Sets::advance`] first for heights beyond it).
    pub fn at(&self, height: u64) -> (&ValidatorSet, &TrustedSet) {
        let (_, (set, trusted)) = self
            .epochs
            .range(..=height.max(1))
            .next_back()
            .unwrap_or_else(|| unreachable!("the genesis set is in force from height 1"));
        (set, trusted)
    }

    /// Records a decided block at `height` carrying `changes` (each already verified by the
    /// validators that decided it), then materialises the sets up to `height + 2` — the set of
    /// the next block and the one its header announces.
    pub fn record(&mut self, height: u64, changes: &[SignedSetChange]) {
        for c in changes {
            self.history.push((height, c.clone()));
            self.scheduled
                .entry(c.proposal.effective_height)
                .or_default()
                .push(c.proposal.change.clone());
        }
        self.advance(height + 2);
    }

    /// Materialises the sets up to `height`.
    pub fn advance(&mut self, height: u64) {
        while self.known < height {
            let h = self.known + 1;
            if let Some(changes) = self.scheduled.remove(&h) {
                let mut next = self.at(h - 1).0.clone();
                for change in &changes {
                    match apply(&next, change, self.quorum, &mut self.cache) {
                        Ok(s) => next = s,
                        Err(e) => tracing::warn!(height = h, error = %e, "set change skipped"),
                    }
                }
                // `apply` checked every intermediate set, so this one passes too.
                if let Ok(trusted) = TrustedSet::new(&next, self.quorum, &mut self.cache) {
                    self.epochs.insert(h, (next, trusted));
                }
            }
            self.known = h;
        }
    }

    /// Checks a change a shard-independent party offers for a block at `height`: approved by
    /// the set in force there, effective at least two heights later.
    pub fn check(
        &self,
        height: u64,
        change: &SignedSetChange,
    ) -> Result<(), urbis_core::set_change::SetChangeError> {
        change.verify(&self.federation_id, self.at(height).1, height)
    }

    /// Every change the chain carried up to `height`, with the height of the carrying block.
    pub fn history(&self, height: u64) -> Vec<(u64, SignedSetChange)> {
        self.history.iter().filter(|(h, _)| *h <= height).cloned().collect()
    }

    /// Whether a set other than the one before takes force at `height` (as far as known).
    pub fn takes_force_at(&self, height: u64) -> bool {
        height > 1 && self.epochs.contains_key(&height)
    }

    /// The heights after genesis at which a new set took force (the block before each one
    /// announced it), up to `height`.
    pub fn changed_at(&self, height: u64) -> Vec<u64> {
        self.epochs.keys().copied().filter(|h| *h > 1 && *h <= height).collect()
    }

    /// Whether the chain already carried this proposal.
    pub fn carried(&self, change: &SignedSetChange) -> bool {
        self.history.iter().any(|(_, c)| c.proposal == change.proposal)
    }
}
