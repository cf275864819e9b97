//! Crosslink entries pushed by shards and waiting for a block: at most one per city, each
//! checked against the decided chain when offered and again when a block is proposed.

use crate::block::Heads;
use crate::store::{BeaconStore, StoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use urbis_core::crosslink::{CrosslinkEntry, CrosslinkError, verify_entry};
use urbis_core::genesis::ValidGenesis;
use urbis_core::record::CityId;

/// The pool shared by the API (which offers) and the consensus application (which takes).
pub struct Pool {
    genesis: Arc<ValidGenesis>,
    entries: Mutex<BTreeMap<CityId, CrosslinkEntry>>,
}

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
    /// Reading the chain failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Pool {
    /// An empty pool.
    pub fn new(genesis: Arc<ValidGenesis>) -> Self {
        Pool { genesis, entries: Mutex::new(BTreeMap::new()) }
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
        if let Err(error) = verify_entry(&self.genesis, next_height, previous.as_ref(), &entry) {
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

    /// The entry waiting for `city`, if any.
    pub fn waiting(&self, city: CityId) -> Option<CrosslinkEntry> {
        self.lock().get(&city).cloned()
    }
}
