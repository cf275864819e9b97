//! A validator's durable state on RocksDB: the decided chain (block, the aggregate certificate
//! light clients check, and the consensus certificate that serves sync) and the write-ahead log
//! of the height in progress. Every write is one synced `WriteBatch`.

use crate::block::{Block, EvidenceItem};
use crate::consensus::evidence::Evidence;
use borsh::{BorshDeserialize, BorshSerialize};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use std::path::Path;
use urbis_core::beacon::CommitCertificate;
use urbis_core::crosslink::{CrosslinkedHead, ShardEquivocation};
use urbis_core::encoding::{decode, encode};
use urbis_core::hash::Hash32;
use urbis_core::header::SignedShardHeader;
use urbis_core::record::CityId;

const CF_META: &str = "meta";
const CF_BLOCKS: &str = "blocks";
const CF_WAL: &str = "wal";
const CF_EVIDENCE: &str = "evidence";
/// `city ‖ shard height` (big-endian) → `beacon height ‖ header hash ‖ history root`.
const CF_CROSSLINKS: &str = "crosslinks";
/// `city ‖ shard height` → two conflicting sealed headers (the first pair seen is kept).
const CF_SHARD_EVIDENCE: &str = "shard_evidence";
/// Evidence item hash → `beacon height ‖ borsh(item)`: evidence recorded on chain.
const CF_RECORDED: &str = "recorded_evidence";
const FORMAT_KEY: &[u8] = b"format";
const FORMAT_VERSION: u32 = 2;

/// Storage failures; corruption is reported, never papered over.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Stored bytes do not decode.
    #[error("corrupt {0} in the store")]
    Corrupt(&'static str),
    /// Another format version.
    #[error("store format {0} is not {FORMAT_VERSION}")]
    Format(u32),
}

/// A decided block as kept.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DecidedBlock {
    /// The block.
    pub block: Block,
    /// Its aggregate commit certificate (what light clients verify).
    pub certificate: CommitCertificate,
    /// The consensus commit certificate, in wire form (served to validators that sync).
    pub commit: Vec<u8>,
}

/// The validator's store.
pub struct BeaconStore {
    db: DB,
    /// The highest decided height (0 before the first), for readers that wait for the next.
    latest: tokio::sync::watch::Sender<u64>,
}

/// Where a city's header was crosslinked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrosslinkedAt {
    /// The header.
    pub head: CrosslinkedHead,
    /// The beacon block that crosslinked it.
    pub beacon_height: u64,
}

fn crosslink_key(city: CityId, shard_height: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&city.0.to_be_bytes());
    k[4..].copy_from_slice(&shard_height.to_be_bytes());
    k
}

fn crosslink_value(beacon_height: u64, head: &CrosslinkedHead) -> [u8; 72] {
    let mut v = [0u8; 72];
    v[..8].copy_from_slice(&beacon_height.to_be_bytes());
    v[8..40].copy_from_slice(head.hash.as_bytes());
    v[40..].copy_from_slice(head.history_root.as_bytes());
    v
}

fn parse_crosslink(k: &[u8], v: &[u8]) -> Result<(CityId, CrosslinkedAt), StoreError> {
    let bad = || StoreError::Corrupt("crosslink index");
    if k.len() != 12 || v.len() != 72 {
        return Err(bad());
    }
    let city = CityId(u32::from_be_bytes(k[..4].try_into().map_err(|_| bad())?));
    let height = u64::from_be_bytes(k[4..].try_into().map_err(|_| bad())?);
    let beacon_height = u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?);
    let hash = Hash32(v[8..40].try_into().map_err(|_| bad())?);
    let history_root = Hash32(v[40..].try_into().map_err(|_| bad())?);
    Ok((
        city,
        CrosslinkedAt { head: CrosslinkedHead { height, hash, history_root }, beacon_height },
    ))
}

fn height_key(h: u64) -> [u8; 8] {
    h.to_be_bytes()
}

fn wal_key(height: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&height.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl BeaconStore {
    /// Opens (or creates) the store under `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [
            CF_META,
            CF_BLOCKS,
            CF_WAL,
            CF_EVIDENCE,
            CF_CROSSLINKS,
            CF_SHARD_EVIDENCE,
            CF_RECORDED,
        ]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let store = BeaconStore { db, latest: tokio::sync::watch::Sender::new(0) };
        match store.db.get_cf(store.cf(CF_META), FORMAT_KEY)? {
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(store.cf(CF_META), FORMAT_KEY, FORMAT_VERSION.to_le_bytes());
                store.write(batch)?;
            }
            Some(v) => {
                let found = u32::from_le_bytes(
                    v.as_slice().try_into().map_err(|_| StoreError::Corrupt("format"))?,
                );
                if found != FORMAT_VERSION {
                    return Err(StoreError::Format(found));
                }
            }
        }
        store.latest.send_replace(store.latest_height()?.unwrap_or(0));
        Ok(store)
    }

    /// A receiver of the highest decided height, updated after each commit.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is opened at start"))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        Ok(self.db.write_opt(batch, &opts)?)
    }

    /// Appends entries to the log of `height`, durably, after those already there. Returns once
    /// they are on disk: only then may what follows them be sent.
    pub fn append_wal(&self, height: u64, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = self.next_seq(CF_WAL, height)?;
        let mut batch = WriteBatch::default();
        for (seq, e) in (first..).zip(entries) {
            batch.put_cf(self.cf(CF_WAL), wal_key(height, seq), e);
        }
        self.write(batch)
    }

    /// The log of `height`, in order.
    pub fn wal(&self, height: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let start = wal_key(height, 0);
        let mut out = Vec::new();
        for item in
            self.db.iterator_cf(self.cf(CF_WAL), IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if k.len() != 16 || k[..8] != height.to_be_bytes() {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Keeps a decided block and drops the logs of its height and below, in one synced batch.
    pub fn commit(&self, height: u64, decided: &DecidedBlock) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_BLOCKS), height_key(height), encode(decided));
        for entry in &decided.block.body.crosslinks {
            let head = entry.head();
            batch.put_cf(
                self.cf(CF_CROSSLINKS),
                crosslink_key(entry.city(), head.height),
                crosslink_value(height, &head),
            );
        }
        for item in &decided.block.body.evidence {
            let mut v = height.to_be_bytes().to_vec();
            v.extend(encode(item));
            batch.put_cf(self.cf(CF_RECORDED), item.hash().as_bytes(), v);
        }
        batch.delete_range_cf(self.cf(CF_WAL), wal_key(0, 0), wal_key(height + 1, 0));
        self.write(batch)?;
        self.latest.send_if_modified(|h| {
            let newer = height > *h;
            *h = (*h).max(height);
            newer
        });
        Ok(())
    }

    /// The header of `city` at `shard_height` if the chain crosslinked exactly that height.
    pub fn crosslinked_header(
        &self,
        city: CityId,
        shard_height: u64,
    ) -> Result<Option<SignedShardHeader>, StoreError> {
        let Some(v) = self.db.get_cf(self.cf(CF_CROSSLINKS), crosslink_key(city, shard_height))?
        else {
            return Ok(None);
        };
        let (_, at) = parse_crosslink(&crosslink_key(city, shard_height), &v)?;
        let block =
            self.block(at.beacon_height)?.ok_or(StoreError::Corrupt("crosslinked block"))?;
        Ok(block.block.body.crosslinks.into_iter().find(|e| e.city() == city).map(|e| e.header))
    }

    /// Keeps evidence of two sealed headers of one city at one height (synced; the first pair
    /// seen for a (city, height) is kept, later ones add nothing).
    pub fn add_shard_evidence(&self, e: &ShardEquivocation) -> Result<bool, StoreError> {
        let h = &e.first.header;
        let key = crosslink_key(h.city, h.height);
        if self.db.get_cf(self.cf(CF_SHARD_EVIDENCE), key)?.is_some() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_SHARD_EVIDENCE), key, encode(e));
        self.write(batch)?;
        Ok(true)
    }

    /// Evidence of conflicting shard headers, at most `limit`, by city and height.
    pub fn shard_evidence(&self, limit: usize) -> Result<Vec<ShardEquivocation>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SHARD_EVIDENCE), IteratorMode::Start).take(limit)
        {
            let (_, v) = item?;
            out.push(decode(&v).map_err(|_| StoreError::Corrupt("shard evidence"))?);
        }
        Ok(out)
    }

    /// Whether the chain recorded the evidence item with this hash.
    pub fn is_recorded(&self, hash: &Hash32) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_RECORDED), hash.as_bytes())?.is_some())
    }

    /// Evidence the chain recorded, with the beacon height of the block that did, at most
    /// `limit`.
    pub fn recorded_evidence(&self, limit: usize) -> Result<Vec<(u64, EvidenceItem)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_RECORDED), IteratorMode::Start).take(limit) {
            let (_, v) = item?;
            let bad = || StoreError::Corrupt("recorded evidence");
            let height =
                u64::from_be_bytes(v.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            out.push((height, decode(&v[8..]).map_err(|_| bad())?));
        }
        out.sort_by_key(|(h, _)| *h);
        Ok(out)
    }

    /// Evidence this validator kept that no block recorded yet, at most `limit`.
    pub fn unrecorded_evidence(&self, limit: usize) -> Result<Vec<EvidenceItem>, StoreError> {
        let mut out = Vec::new();
        let votes = self.evidence(1_000)?.into_iter().map(EvidenceItem::Votes);
        let headers = self
            .shard_evidence(1_000)?
            .into_iter()
            .map(|e| EvidenceItem::ShardHeaders(Box::new(e)));
        for item in votes.chain(headers) {
            if out.len() >= limit {
                break;
            }
            if !self.is_recorded(&item.hash())? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// `city`'s last crosslinked header, if any.
    pub fn head(&self, city: CityId) -> Result<Option<CrosslinkedAt>, StoreError> {
        self.crosslink_of(city, u64::MAX, Direction::Reverse)
    }

    /// The first crosslink of `city` at or above `shard_height`: the first beacon block that
    /// covers that header (directly or through the history tree).
    pub fn covering(
        &self,
        city: CityId,
        shard_height: u64,
    ) -> Result<Option<CrosslinkedAt>, StoreError> {
        self.crosslink_of(city, shard_height, Direction::Forward)
    }

    /// `city`'s crosslink nearest `shard_height` in `direction` (at or past it), if any.
    fn crosslink_of(
        &self,
        city: CityId,
        shard_height: u64,
        direction: Direction,
    ) -> Result<Option<CrosslinkedAt>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_CROSSLINKS));
        let key = crosslink_key(city, shard_height);
        match direction {
            Direction::Forward => it.seek(key),
            Direction::Reverse => it.seek_for_prev(key),
        }
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (c, at) = parse_crosslink(k, v)?;
            if c == city {
                return Ok(Some(at));
            }
        }
        it.status()?;
        Ok(None)
    }

    /// Keeps evidence seen while deciding `height` (synced; kept forever, never pruned).
    pub fn add_evidence(&self, height: u64, evidence: &[Evidence]) -> Result<(), StoreError> {
        let first = self.next_seq(CF_EVIDENCE, height)?;
        let mut batch = WriteBatch::default();
        for (seq, e) in (first..).zip(evidence) {
            batch.put_cf(self.cf(CF_EVIDENCE), wal_key(height, seq), encode(e));
        }
        self.write(batch)
    }

    /// The sequence number after the last entry of `height` in `cf` (keys `height ‖ seq`):
    /// one seek, however long the log already is.
    fn next_seq(&self, cf: &str, height: u64) -> Result<u64, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        it.seek_for_prev(wal_key(height, u64::MAX));
        if let Some(k) = it.key()
            && k.len() == 16
            && k[..8] == height.to_be_bytes()
        {
            let seq: [u8; 8] = k[8..].try_into().map_err(|_| StoreError::Corrupt("log key"))?;
            return Ok(u64::from_be_bytes(seq) + 1);
        }
        it.status()?;
        Ok(0)
    }

    /// The most recent evidence, newest first, at most `limit`.
    pub fn evidence(&self, limit: usize) -> Result<Vec<Evidence>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_EVIDENCE), IteratorMode::End).take(limit) {
            let (_, v) = item?;
            out.push(decode(&v).map_err(|_| StoreError::Corrupt("evidence"))?);
        }
        Ok(out)
    }

    /// The decided block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<DecidedBlock>, StoreError> {
        match self.db.get_cf(self.cf(CF_BLOCKS), height_key(height))? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|_| StoreError::Corrupt("block")),
        }
    }

    /// The highest decided height, if any.
    pub fn latest_height(&self) -> Result<Option<u64>, StoreError> {
        let mut it = self.db.iterator_cf(self.cf(CF_BLOCKS), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (k, _) = item?;
                let h: [u8; 8] =
                    k.as_ref().try_into().map_err(|_| StoreError::Corrupt("height"))?;
                Ok(Some(u64::from_be_bytes(h)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Tip;
    use urbis_core::hash::Hash32;

    fn decided(height: u64) -> DecidedBlock {
        let tip = Tip {
            height,
            previous: Hash32::ZERO,
            set_hash: Hash32::ZERO,
            next_set_hash: Hash32::ZERO,
        };
        DecidedBlock {
            block: Block::build(&tip, 1, vec![], vec![], vec![]),
            certificate: CommitCertificate { signature: [7; 96], signers: vec![0b1111] },
            commit: vec![1, 2, 3],
        }
    }

    #[test]
    fn the_log_survives_reopening_in_order_and_a_commit_drops_it_with_the_block_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = BeaconStore::open(dir.path()).unwrap();
            assert_eq!(s.latest_height().unwrap(), None);
            s.append_wal(1, &[b"a".to_vec(), b"b".to_vec()]).unwrap();
            s.append_wal(1, &[b"c".to_vec()]).unwrap();
            s.append_wal(2, &[b"next".to_vec()]).unwrap();
        }
        let s = BeaconStore::open(dir.path()).unwrap();
        assert_eq!(s.wal(1).unwrap(), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        s.commit(1, &decided(1)).unwrap();
        assert!(s.wal(1).unwrap().is_empty());
        assert_eq!(s.wal(2).unwrap(), vec![b"next".to_vec()], "a later height's log is kept");
        assert_eq!(s.block(1).unwrap(), Some(decided(1)));
        assert_eq!(s.latest_height().unwrap(), Some(1));
        s.commit(2, &decided(2)).unwrap();
        assert_eq!(s.latest_height().unwrap(), Some(2));
        assert!(s.wal(2).unwrap().is_empty());
        // Evidence is kept across heights, newest first.
        use crate::consensus::evidence::{EvidenceKind, Signed};
        let e = |height, round| Evidence {
            kind: EvidenceKind::DoublePrevote,
            validator: Hash32([1; 32]),
            height,
            round,
            first: Signed { value: None, pol_round: None, signature: vec![1] },
            second: Signed { value: Some(Hash32([2; 32])), pol_round: None, signature: vec![2] },
        };
        s.add_evidence(1, &[e(1, 0), e(1, 1)]).unwrap();
        s.add_evidence(2, &[e(2, 0)]).unwrap();
        s.add_evidence(1, &[e(1, 2)]).unwrap();
        assert_eq!(s.evidence(10).unwrap(), vec![e(2, 0), e(1, 2), e(1, 1), e(1, 0)]);
        assert_eq!(s.evidence(1).unwrap(), vec![e(2, 0)]);
    }
}
