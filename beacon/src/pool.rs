//! Crosslink entries pushed by shards and waiting for a block: at most one per city, each
//! checked against the decided chain when offered and again when a block is proposed.

use crate::block::Heads;
use crate::sets::Sets;
use crate::store::{BeaconStore, StoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use urbis_core::crosslink::{CrosslinkEntry, CrosslinkError, ShardEquivocation, verify_entry};
use urbis_core::genesis::ValidGenesis;
use urbis_core::record::CityId;
use urbis_core::set_change::{SetChangeError, SignedSetChange};

/// The pool shared by the API (which offers) and the consensus application (which takes).
pub struct Pool {
    genesis: Arc<ValidGenesis>,
    entries: Mutex<BTreeMap<CityId, CrosslinkEntry>>,
    set_changes: Mutex<Vec<SignedSetChange>>,
}

/// Most set changes waiting at once.
const SET_CHANGES_WAITING_MAX: usize = 64;

/// What became of an offered entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// It waits for the next block.
    Pending,
    /// A newer header of the city already waits; this one is not needed.
    Superseded,
}

/// Why an offer was refused.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The entry does not verify against the decided chain.
    #[error("{error}")]
    Invalid {
        /// Why.
        error: CrosslinkError,
        /// The city's last crosslinked height, for the shard to build its extension from.
        crosslinked_height: Option<u64>,
    },
    /// The entry's header conflicts with a sealed header of the same city and height that the
    /// chain crosslinked or that waits here: the evidence was kept.
    #[error("city {} sealed two different headers at height {}", .0.first.header.city, .0.first.header.height)]
    Conflict(Box<ShardEquivocation>),
    /// Reading the chain failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Pool {
    /// An empty pool.
    pub fn new(genesis: Arc<ValidGenesis>) -> Self {
        Pool { genesis, entries: Mutex::new(BTreeMap::new()), set_changes: Mutex::new(vec![]) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CityId, CrosslinkEntry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks `entry` against the chain in `store` and keeps it unless a newer header of its
    /// city already waits.
    pub fn offer(&self, store: &BeaconStore, entry: CrosslinkEntry) -> Result<Offered, OfferError> {
        let city = entry.city();
        let head = store.head(city)?;
        let next_height = store.latest_height()?.unwrap_or(0) + 1;
        let previous = head.map(|h| h.head);
        let verdict = verify_entry(&self.genesis, next_height, previous.as_ref(), &entry);
        // Past these refusals the seal was checked and holds: a different header at a height
        // already known is evidence. (A city that has not joined yet has nothing known.)
        let sealed = !matches!(
            verdict,
            Err(CrosslinkError::UnknownCity(_)
                | CrosslinkError::NotYetJoined { .. }
                | CrosslinkError::HeaderVersion(_)
                | CrosslinkError::Seal(_))
        );
        if sealed && let Some(evidence) = self.conflict(store, &entry)? {
            store.add_shard_evidence(&evidence)?;
            tracing::warn!(%city, height = entry.header.header.height, "conflicting shard headers: evidence kept");
            return Err(OfferError::Conflict(Box::new(evidence)));
        }
        if let Err(error) = verdict {
            return Err(OfferError::Invalid {
                error,
                crosslinked_height: previous.map(|p| p.height),
            });
        }
        let mut entries = self.lock();
        if let Some(waiting) = entries.get(&city) {
            let still_valid =
                verify_entry(&self.genesis, next_height, previous.as_ref(), waiting).is_ok();
            if still_valid && waiting.header.header.height >= entry.header.header.height {
                return Ok(Offered::Superseded);
            }
        }
        entries.insert(city, entry);
        Ok(Offered::Pending)
    }

    /// A header (whose seal the caller checked) that differs from the one the chain
    /// crosslinked, or from the one waiting, at the same city and height.
    fn conflict(
        &self,
        store: &BeaconStore,
        entry: &CrosslinkEntry,
    ) -> Result<Option<ShardEquivocation>, StoreError> {
        let (city, height, hash) =
            (entry.city(), entry.header.header.height, entry.header.header.hash());
        let known = match store.crosslinked_header(city, height)? {
            Some(h) => Some(h),
            None => self
                .lock()
                .get(&city)
                .filter(|w| w.header.header.height == height)
                .map(|w| w.header.clone()),
        };
        Ok(known
            .filter(|k| k.header.hash() != hash)
            .map(|first| ShardEquivocation { first, second: entry.header.clone() }))
    }

    /// The entries that extend `heads` for a block at `beacon_height`, in city order.
    pub fn take(&self, beacon_height: u64, heads: &Heads) -> Vec<CrosslinkEntry> {
        self.lock()
            .values()
            .filter(|e| verify_entry(&self.genesis, beacon_height, heads.get(&e.city()), e).is_ok())
            .cloned()
            .collect()
    }

    /// Drops entries no newer than what `heads` crosslinked.
    pub fn prune(&self, heads: &Heads) {
        self.lock()
            .retain(|city, e| heads.get(city).is_none_or(|h| e.header.header.height > h.height));
    }

    /// Keeps an approved set change for the next blocks: approved by the set in force at
    /// `next_height` and effective at least two heights after it. Returns false when the same
    /// proposal already waits or was carried.
    pub fn offer_set_change(
        &self,
        sets: &Sets,
        next_height: u64,
        change: SignedSetChange,
    ) -> Result<bool, SetChangeError> {
        sets.check(next_height, &change)?;
        let mut waiting =
            self.set_changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sets.carried(&change) || waiting.iter().any(|c| c.proposal == change.proposal) {
            return Ok(false);
        }
        if waiting.len() >= SET_CHANGES_WAITING_MAX {
            waiting.remove(0);
        }
        waiting.push(change);
        Ok(true)
    }

    /// The waiting set changes a block at `height` may carry.
    pub fn take_set_changes(&self, height: u64, sets: &Sets) -> Vec<SignedSetChange> {
        let mut waiting =
            self.set_changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Carried ones, and ones whose effective height is now too near, are dropped.
        waiting.retain(|c| !sets.carried(c) && c.proposal.effective_height >= height + 2);
        waiting.iter().filter(|c| sets.check(height, c).is_ok()).cloned().collect()
    }

    /// The entry waiting for `city`, if any.
    pub fn waiting(&self, city: CityId) -> Option<CrosslinkEntry> {
        self.lock().get(&city).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urbis_core::crosslink::verify_equivocation;
    use urbis_core::testkit::{Federation, ShardChain, information_record};

    #[test]
    fn offers_wait_newest_first_and_a_second_header_at_one_height_is_kept_as_evidence() {
        let fed = Federation::new("pool", 2, 4);
        let dir = tempfile::tempdir().unwrap();
        let store = BeaconStore::open(dir.path()).unwrap();
        let pool = Pool::new(Arc::new(fed.genesis.clone()));
        let mut honest = ShardChain::new(CityId(0));
        let mut fork = ShardChain::new(CityId(0));
        for h in 0..4u64 {
            honest.seal(&fed, vec![information_record(CityId(0), h)], &[]);
            fork.seal(&fed, vec![information_record(CityId(0), 100 + h)], &[]);
        }
        assert_eq!(pool.offer(&store, honest.crosslink_entry(2, None)).unwrap(), Offered::Pending);
        assert_eq!(
            pool.offer(&store, honest.crosslink_entry(1, None)).unwrap(),
            Offered::Superseded
        );
        // The city's key sealed another header 2: refused, and the pair is evidence.
        let e = pool.offer(&store, fork.crosslink_entry(2, None)).unwrap_err();
        let OfferError::Conflict(evidence) = e else { panic!("{e}") };
        assert_eq!(verify_equivocation(&fed.genesis, &evidence), Ok((CityId(0), 2)));
        assert_eq!(store.shard_evidence(10).unwrap(), vec![*evidence]);
        // A forged header is no evidence, only a refusal.
        let mut forged = fork.crosslink_entry(2, None);
        forged.header.signature[5] ^= 1;
        assert!(matches!(
            pool.offer(&store, forged),
            Err(OfferError::Invalid { error: CrosslinkError::Seal(_), .. })
        ));
        assert_eq!(store.shard_evidence(10).unwrap().len(), 1);
        // The newer honest header replaces the waiting one.
        assert_eq!(pool.offer(&store, honest.crosslink_entry(3, None)).unwrap(), Offered::Pending);
        assert_eq!(pool.waiting(CityId(0)).unwrap().header.header.height, 3);
    }
}
