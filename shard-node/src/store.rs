//! The shard's RocksDB store: the only module that knows RocksDB exists.
//!
//! Every sealed block is one `WriteBatch`, written with sync: header, record ids, records,
//! subject index, state-tree nodes and values, off-chain payloads, idempotency entries and the
//! tip move together or not at all.

use borsh::{BorshDeserialize, BorshSerialize};
use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Version};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use std::path::Path;
use urbis_core::beacon::{BeaconHeader, CommitCertificate};
use urbis_core::encoding::{decode, encode};
use urbis_core::hash::Hash32;
use urbis_core::header::SignedShardHeader;
use urbis_core::light_client::LightClientUpdate;
use urbis_core::merkle::InclusionProof;
use urbis_core::record::{Record, SubjectId};

const CF_META: &str = "meta";
const CF_HEADERS: &str = "headers";
const CF_BLOCKS: &str = "blocks";
const CF_RECORDS: &str = "records";
const CF_SUBJECTS: &str = "subjects";
const CF_JMT_NODES: &str = "jmt_nodes";
const CF_JMT_VALUES: &str = "jmt_values";
const CF_IDEMPOTENCY: &str = "idempotency";
const CF_PAYLOADS: &str = "payloads";
const CF_HISTORY: &str = "history";
/// Crosslinked shard height (big-endian) → the certified beacon block that crosslinked it.
const CF_FINALITY: &str = "finality";
/// Beacon height (big-endian) → the light-client update of a block that changed the set.
const CF_SET_UPDATES: &str = "set_updates";
/// Shard height (big-endian) → the state tree's version after that block (`Option<u64>`), so
/// state proofs can be made against any sealed header.
const CF_STATE_VERSIONS: &str = "state_versions";
/// Received packets: `(source u32 BE, sequence u64 BE)` → the record and the off-chain payload
/// that travelled beside a credit or talent packet.
const CF_INBOUND: &str = "inbound";
/// Capital totals (`GET /v1/capital/totals`): `[0]` → the height they are as of, `[1] ‖
/// borsh(TotalKey)` → `u128`.
const CF_TOTALS: &str = "capital_totals";
/// Received packets by record id → `(source u32 BE, sequence u64 BE)`.
const CF_INBOUND_BY_RECORD: &str = "inbound_by_record";
/// Erasures of records this city sent to another: `destination u32 BE ‖ height u64 BE ‖
/// record id` → nothing. What a bridge carries to erase the copies.
const CF_OUTBOUND_ERASURES: &str = "outbound_erasures";
/// Records whose source proved their payload erased while no copy was held here: record id →
/// source `u32 BE`. A copy that arrives later (a delivery that was in flight, or a relay that
/// held it back) is not kept.
const CF_ERASED_INBOUND: &str = "erased_inbound";
/// Each state key's newest value, written in the same batch as the versioned value: key hash
/// → `version u64 BE ‖ borsh(Option<value>)`. A read at or above that version (almost every
/// read: the tip's state) is one point lookup instead of a backward seek through
/// `jmt_values`, and a key missing from it was never written (in a store created with the
/// index, [`LATEST_COMPLETE_KEY`]); an older read, or a key last written before this index
/// existed, seeks.
const CF_JMT_LATEST: &str = "jmt_latest";
/// The packets this city sent: `destination u32 BE ‖ sequence u64 BE` → borsh([`SentPacket`]),
/// written with the block whose batch holds them. The source's own record of each packet (the
/// state keeps only each channel's newest batch).
const CF_OUTBOUND: &str = "outbound";
const ALL_CFS: [&str; 20] = [
    CF_OUTBOUND,
    CF_JMT_LATEST,
    CF_ERASED_INBOUND,
    CF_INBOUND_BY_RECORD,
    CF_OUTBOUND_ERASURES,
    CF_TOTALS,
    CF_STATE_VERSIONS,
    CF_INBOUND,
    CF_META,
    CF_HEADERS,
    CF_BLOCKS,
    CF_RECORDS,
    CF_SUBJECTS,
    CF_JMT_NODES,
    CF_JMT_VALUES,
    CF_IDEMPOTENCY,
    CF_PAYLOADS,
    CF_HISTORY,
    CF_FINALITY,
    CF_SET_UPDATES,
];
const TIP_KEY: &[u8] = b"tip";
/// The next beacon height the shard's light client will follow.
const BEACON_NEXT_KEY: &[u8] = b"beacon-next";
const FORMAT_KEY: &[u8] = b"format";
/// Set when the store is created: every state value it holds was written with its entry in
/// `jmt_latest`, so a key missing from that index was never written (no backward seek through
/// `jmt_values` to find that out). A store created before the index lacks it and seeks.
const LATEST_COMPLETE_KEY: &[u8] = b"latest-index-complete";
/// Set in the batch that erases payloads, cleared once their bytes are purged from the files.
const PURGE_KEY: &[u8] = b"purge-pending";
/// 4: a receipt holds its acknowledgement (no `PacketOutcome` or `PacketAcknowledgement`
/// keys; the state keys after them renumbered).
/// 5: a packet's commitment is written once and never changed; outcomes are kept per range of
/// sequences under `PacketSettlements`.
/// 6: a block's packets on a channel share one `OutboundBatch` key (no `PacketCommitment` or
/// `NextSequence` keys; the state keys after them renumbered), and the source's own record of
/// each packet is the `outbound` column family.
const FORMAT_VERSION: u32 = 6;

/// Storage failures. Corruption is reported, never papered over.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Stored bytes do not decode: the data directory is damaged or from another version.
    #[error("corrupt {what} in the store")]
    Corrupt {
        /// What could not be decoded.
        what: &'static str,
    },
    /// The data directory belongs to another format version.
    #[error("store format {found} is not {FORMAT_VERSION}")]
    Format {
        /// Version found.
        found: u32,
    },
}

/// The chain tip: last sealed height, its header hash, and the state tree's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Tip {
    /// Height of the last sealed block.
    pub height: u64,
    /// Its header hash.
    pub header_hash: Hash32,
    /// Latest state-tree version (`None` while the state is empty).
    pub state_version: Option<u64>,
    /// The largest `time_ms` of any sealed record (0 before the first).
    pub newest_record_ms: u64,
}

/// A record as stored: where it sits.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct StoredRecord {
    /// The record.
    pub record: Record,
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u64,
}

/// An off-chain payload and its salt (credit and talent); erased on request.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct StoredPayload {
    /// 32-byte salt of the commitment.
    pub salt: [u8; 32],
    /// The payload bytes (canonical JSON).
    pub bytes: Vec<u8>,
    /// `(service, Idempotency-Key)` of the request that carried it, whose entry holds a hash of
    /// the request body and is scrubbed on erasure.
    pub idempotency: Option<(String, String)>,
}

/// A stored answer to an idempotent request.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct IdempotencyEntry {
    /// BLAKE3 of the request body; `None` once a payload of the request was erased (the hash
    /// of a body that held personal data is not kept).
    pub request_hash: Option<Hash32>,
    /// The response body that was returned.
    pub response: Vec<u8>,
}

/// A subject-index entry: position (height, index) and record id.
pub type SubjectEntry = ((u64, u64), Hash32);

/// A block's `WriteBatch` without the parts that read the store (see [`Store::block_batch`]).
pub struct BlockBatch {
    batch: WriteBatch,
    height: u64,
    /// The block's new state-tree nodes, remembered for proofs once the batch is durable.
    nodes: Vec<(NodeKey, Node)>,
    /// The packets the block sends and their records, remembered once the batch is durable:
    /// their pages and settlements read them again within seconds.
    sent: SentParts,
}

/// Everything one sealed block writes.
pub struct BlockWrite<'a> {
    /// The sealed header.
    pub header: &'a SignedShardHeader,
    /// Records in block order.
    pub records: &'a [Record],
    /// Their ids.
    pub ids: &'a [Hash32],
    /// Their canonical encodings (as computed for their ids).
    pub encoded: &'a [&'a [u8]],
    /// Off-chain payloads by record index.
    pub payloads: &'a [(Hash32, StoredPayload)],
    /// State-tree node batch (empty when the block changes no state).
    pub state_nodes: Option<&'a NodeBatch>,
    /// The new tip.
    pub tip: Tip,
    /// Idempotency entries `(service, key) → entry`.
    pub idempotency: &'a [(String, String, IdempotencyEntry)],
    /// Records whose off-chain payload this block erases.
    pub erased: &'a [Hash32],
    /// Perfect subtrees of the history tree completed by this block's header hash:
    /// `(level, index, root)`.
    pub history: &'a [(u32, u64, Hash32)],
    /// Packets received in this block, by `(source, sequence)`.
    pub inbound: &'a [((u32, u64), InboundRecord)],
    /// Received packets `(source, sequence)` whose payload copy is erased with this block.
    pub erase_inbound: &'a [(u32, u64)],
    /// The packets this block sends, one batch per channel.
    pub sent: &'a [crate::ledger::SentBatch],
}

/// A packet this city sent, as its index keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SentPacket {
    /// Its record and timeout.
    pub packet: urbis_core::packet::OutboundPacket,
    /// Height of the block whose batch holds it.
    pub height: u64,
}

/// A received packet's record and the off-chain payload that travelled beside it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct InboundRecord {
    /// The record, as proven by its source.
    pub record: Record,
    /// Its off-chain payload (credit and talent), if it travelled and is not erased.
    pub payload: Option<StoredPayload>,
}

/// The capital totals as of a height.
#[derive(Clone, Debug, Default)]
pub struct CapitalTotals {
    /// The height they are as of (`None` before any block).
    pub height: Option<u64>,
    /// Every non-zero total.
    pub totals: Vec<(crate::ledger::TotalKey, u128)>,
}

/// The store.
pub struct Store {
    db: DB,
    recent: Generations<NodeKey, Node>,
    recent_records: Generations<Hash32, StoredRecord>,
    recent_packets: Generations<(u32, u64), SentPacket>,
    /// Whether `jmt_latest` holds every state key ever written ([`LATEST_COMPLETE_KEY`]).
    latest_complete: bool,
}

/// A bounded memory of values that never change under their keys. Two generations bound it:
/// when what the newer one holds would weigh more than the limit, it becomes the older one and
/// the older one is dropped. Only what durable blocks wrote enters it (after their synced
/// write), so a block that failed to write and was sealed again differently leaves nothing
/// behind.
struct Generations<K, V> {
    generations: std::sync::Mutex<[(ahash::AHashMap<K, V>, usize); 2]>,
    limit: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> Generations<K, V> {
    fn new(limit: usize) -> Self {
        Generations { generations: Default::default(), limit }
    }

    fn get(&self, key: &K) -> Option<V> {
        let g = self.generations.lock().ok()?;
        g[0].0.get(key).or_else(|| g[1].0.get(key)).cloned()
    }

    /// Remembers `(key, value, weight)`; a value heavier than the limit still enters.
    fn remember(&self, items: impl IntoIterator<Item = (K, V, usize)>) {
        let Ok(mut g) = self.generations.lock() else { return };
        for (key, value, weight) in items {
            if g[0].1 + weight > self.limit && g[0].1 > 0 {
                // The retired generation's table becomes the new one, emptied but keeping its
                // capacity: no table is grown from nothing again, nor its memory touched fresh.
                g.swap(0, 1);
                g[0].0.clear();
                g[0].1 = 0;
            }
            g[0].0.insert(key, value);
            g[0].1 += weight;
        }
    }
}

/// The state-tree nodes of the latest blocks, and internal nodes read since, kept for proofs:
/// every packet and acknowledgement is proven a block or two after its key was written,
/// through a path of nodes those blocks wrote, and reading each from RocksDB (a memtable
/// search and a decode per node) was the largest part of building a proof. Each node weighs
/// one: an internal node takes up to about 1.1 KB (16 child slots), so both generations stay
/// under about 75 MB; a block of 500 packets writes about 2 000 nodes, so the newer generation
/// alone spans over a dozen such blocks.
const RECENT_NODES: usize = 32_768;

/// The records the latest durable blocks sent to other cities, weighed by their encoded size:
/// an outbound page carries each again and settling its packet reads it again, within seconds
/// of its block, where a store lookup reads and decodes it from a table. Records of about 300
/// bytes fill a generation with over 20 000, the seconds a packet takes to be settled at
/// several thousand packets a second; a record of up to `record_bytes_max` weighs its size.
const RECENT_SENT_RECORD_BYTES: usize = 8 << 20;

/// The packets the latest durable blocks sent, each weighing one (about 64 bytes in memory),
/// read again by the same pages and settlements.
const RECENT_SENT_PACKETS: usize = 65_536;

/// What one block sent, remembered once it is durable: `(record id, record, its encoded
/// size)` and `((destination, sequence), packet)`.
#[derive(Default)]
struct SentParts {
    records: Vec<(Hash32, StoredRecord, usize)>,
    packets: Vec<((u32, u64), SentPacket)>,
}

fn height_key(h: u64) -> [u8; 8] {
    h.to_be_bytes()
}

fn idempotency_key(service: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.len() + 1 + key.len());
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// How a crosslinked header of this shard is certified: the beacon block that crosslinked it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Crosslinked {
    /// The beacon header, checked by the shard's light client.
    pub beacon_header: BeaconHeader,
    /// Its certificate.
    pub certificate: CommitCertificate,
    /// The header's leaf path in the block's crosslinks tree.
    pub path: InclusionProof,
}

impl Store {
    /// Opens (or creates) the store under `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf = Options::default();
            if *name == CF_JMT_NODES || *name == CF_JMT_LATEST {
                // Point lookups only: Bloom filters skip the tables without the key.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                table.set_cache_index_and_filter_blocks(true);
                cf.set_block_based_table_factory(&table);
            }
            if *name == CF_JMT_LATEST {
                // Most keys a block reads are new (a new subject, a first receipt): the
                // memtable's Bloom filter answers that without searching its skip list.
                cf.set_memtable_whole_key_filtering(true);
                cf.set_memtable_prefix_bloom_ratio(0.1);
            }
            if *name == CF_RECORDS {
                // Every submitted record is looked up (duplicate check) and almost always
                // missing: whole-key Bloom filters answer that without reading table blocks.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                table.set_cache_index_and_filter_blocks(true);
                cf.set_block_based_table_factory(&table);
                cf.set_memtable_whole_key_filtering(true);
                cf.set_memtable_prefix_bloom_ratio(0.1);
            }
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let mut store = Store {
            db,
            recent: Generations::new(RECENT_NODES),
            recent_records: Generations::new(RECENT_SENT_RECORD_BYTES),
            recent_packets: Generations::new(RECENT_SENT_PACKETS),
            latest_complete: false,
        };
        match store.get(CF_META, FORMAT_KEY)? {
            None => {
                // A new store: its index of newest values starts complete.
                let mut batch = WriteBatch::default();
                batch.put_cf(store.cf(CF_META), FORMAT_KEY, FORMAT_VERSION.to_le_bytes());
                batch.put_cf(store.cf(CF_META), LATEST_COMPLETE_KEY, []);
                store.write(batch)?;
            }
            Some(v) => {
                let found = u32::from_le_bytes(
                    v.as_slice().try_into().map_err(|_| StoreError::Corrupt { what: "format" })?,
                );
                if found != FORMAT_VERSION {
                    return Err(StoreError::Format { found });
                }
            }
        }
        store.latest_complete = store.get(CF_META, LATEST_COMPLETE_KEY)?.is_some();
        if store.get(CF_META, PURGE_KEY)?.is_some() {
            // Erased before a crash, not yet purged from the files.
            store.purge_erased()?;
        }
        Ok(store)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every column family in ALL_CFS is opened in `open`.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is opened at start"))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    fn get_decoded<T: BorshDeserialize + BorshSerialize>(
        &self,
        cf: &str,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self.get(cf, key)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some).map_err(|_| StoreError::Corrupt { what }),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// The tip, `None` before the first block.
    pub fn tip(&self) -> Result<Option<Tip>, StoreError> {
        self.get_decoded(CF_META, TIP_KEY, "tip")
    }

    /// The part of a block's `WriteBatch` that depends on the block alone: everything but
    /// what [`Store::write_block`] reads from the store (erasures and capital totals). The
    /// sealer builds it while the block before is still being written.
    pub fn block_batch(&self, block: &BlockWrite<'_>) -> BlockBatch {
        // Reserved up front: growing a batch of megabytes by doubling copies it again and again.
        // Per record: its encoding, its position, the record and subject-index entries' keys,
        // the subject entry's value and the batch's per-entry framing.
        let records_bytes: usize =
            block.encoded.iter().map(|e| e.len() + 16 + 32 + 48 + 32 + 16).sum();
        let mut batch = WriteBatch::with_capacity_bytes(records_bytes + 64 * 1024);
        let height = block.header.header.height;
        batch.put_cf(self.cf(CF_HEADERS), height_key(height), encode(block.header));
        batch.put_cf(self.cf(CF_BLOCKS), height_key(height), encode(&block.ids.to_vec()));
        // Each column family's entries in key order: RocksDB inserts a batch's entries into a
        // memtable (a skip list) one after the other and starts each search from where the
        // previous one ended, so sorted keys cost a few levels of the list each instead of a
        // search from the top.
        let mut order: Vec<usize> = (0..block.records.len().min(block.ids.len())).collect();
        order.sort_unstable_by(|&a, &b| block.ids[a].0.cmp(&block.ids[b].0));
        let mut value = Vec::new();
        for &index in &order {
            let (Some(id), Some(encoded)) = (block.ids.get(index), block.encoded.get(index)) else {
                continue;
            };
            // borsh(StoredRecord { record, height, index }) = borsh(record) ‖ height ‖ index,
            // built from the encoding the request already made.
            value.clear();
            value.extend_from_slice(encoded);
            value.extend_from_slice(&height.to_le_bytes());
            value.extend_from_slice(&(index as u64).to_le_bytes());
            batch.put_cf(self.cf(CF_RECORDS), id.as_bytes(), &value);
        }
        // A subject's records in block order.
        order.sort_unstable_by(|&a, &b| {
            block.records[a].subject.0.0.cmp(&block.records[b].subject.0.0).then(a.cmp(&b))
        });
        for &index in &order {
            batch.put_cf(
                self.cf(CF_SUBJECTS),
                subject_key(&block.records[index].subject, height, index as u64),
                block.ids[index].as_bytes(),
            );
        }
        for (id, payload) in block.payloads {
            batch.put_cf(self.cf(CF_PAYLOADS), id.as_bytes(), encode(payload));
        }
        let mut new_nodes = Vec::new();
        if let Some(nodes) = block.state_nodes {
            self.put_state(&mut batch, nodes);
            new_nodes = nodes.nodes().iter().map(|(k, n)| (k.clone(), n.clone())).collect();
        }
        for (service, key, entry) in block.idempotency {
            batch.put_cf(self.cf(CF_IDEMPOTENCY), idempotency_key(service, key), encode(entry));
        }
        if !block.erased.is_empty() || !block.erase_inbound.is_empty() {
            batch.put_cf(self.cf(CF_META), PURGE_KEY, []);
        }
        for (level, index, root) in block.history {
            batch.put_cf(self.cf(CF_HISTORY), history_key(*level, *index), root.as_bytes());
        }
        batch.put_cf(
            self.cf(CF_STATE_VERSIONS),
            height_key(height),
            encode(&block.tip.state_version),
        );
        for ((source, sequence), inbound) in block.inbound {
            batch.put_cf(self.cf(CF_INBOUND), inbound_key(*source, *sequence), encode(inbound));
            batch.put_cf(
                self.cf(CF_INBOUND_BY_RECORD),
                inbound.record.id().as_bytes(),
                inbound_key(*source, *sequence),
            );
        }
        let mut sent = SentParts::default();
        for batch_sent in block.sent {
            for (sequence, packet) in batch_sent.packets() {
                let packet = SentPacket { packet, height };
                batch.put_cf(
                    self.cf(CF_OUTBOUND),
                    inbound_key(batch_sent.destination.0, sequence),
                    encode(&packet),
                );
                sent.packets.push(((batch_sent.destination.0, sequence), packet));
            }
        }
        batch.put_cf(self.cf(CF_TOTALS), [0u8], height.to_be_bytes());
        batch.put_cf(self.cf(CF_META), TIP_KEY, encode(&block.tip));
        sent.records = block
            .records
            .iter()
            .zip(block.ids)
            .zip(block.encoded)
            .enumerate()
            .filter(|(_, ((r, _), _))| r.destination.is_some())
            .map(|(index, ((record, id), encoded))| {
                let stored = StoredRecord { record: record.clone(), height, index: index as u64 };
                (*id, stored, encoded.len())
            })
            .collect();
        BlockBatch { batch, height, nodes: new_nodes, sent }
    }

    /// Writes a state-tree batch alone (tests of the readers above the store).
    #[cfg(test)]
    pub(crate) fn write_state(&self, nodes: &NodeBatch) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put_state(&mut batch, nodes);
        self.write(batch)
    }

    /// A state-tree batch's nodes and values, and each value's key in the newest-value index.
    fn put_state(&self, batch: &mut WriteBatch, nodes: &NodeBatch) {
        for (key, node) in nodes.nodes() {
            batch.put_cf(self.cf(CF_JMT_NODES), encode(key), encode(node));
        }
        // In (version, key) order: where a batch holds two versions of a key, the newer one is
        // put last and is what the index keeps.
        for ((version, key_hash), value) in nodes.values() {
            let encoded = encode(value);
            let mut latest = Vec::with_capacity(8 + encoded.len());
            latest.extend_from_slice(&version.to_be_bytes());
            latest.extend_from_slice(&encoded);
            batch.put_cf(self.cf(CF_JMT_VALUES), value_key(key_hash, *version), encoded);
            batch.put_cf(self.cf(CF_JMT_LATEST), key_hash.0, latest);
        }
    }

    /// Writes one sealed block atomically and durably (sync): its [`Store::block_batch`] and
    /// what depends on the store as it is now, after every earlier block — the erasures (the
    /// idempotency entries and received packets that held an erased payload) and the capital
    /// totals. One `WriteBatch`, one synced write.
    pub fn write_block(
        &self,
        block: BlockBatch,
        erased: &[Hash32],
        erase_inbound: &[(u32, u64)],
        capital: &[(crate::ledger::TotalKey, i128)],
    ) -> Result<(), StoreError> {
        let BlockBatch { mut batch, height, nodes, sent } = block;
        for id in erased {
            if let Some(payload) = self.payload(id)?
                && let Some((service, key)) = &payload.idempotency
                && let Some(mut entry) = self.idempotency(service, key)?
            {
                entry.request_hash = None;
                batch.put_cf(
                    self.cf(CF_IDEMPOTENCY),
                    idempotency_key(service, key),
                    encode(&entry),
                );
            }
            batch.delete_cf(self.cf(CF_PAYLOADS), id.as_bytes());
        }
        for (source, sequence) in erase_inbound {
            let key = inbound_key(*source, *sequence);
            if let Some(mut inbound) =
                self.get_decoded::<InboundRecord>(CF_INBOUND, &key, "inbound")?
            {
                inbound.payload = None;
                batch.put_cf(self.cf(CF_INBOUND), key, encode(&inbound));
            }
        }
        for id in erased {
            if let Some(stored) = self.record(id)?
                && let Some(destination) = stored.record.destination
            {
                let mut k = Vec::with_capacity(44);
                k.extend_from_slice(&destination.0.to_be_bytes());
                k.extend_from_slice(&height.to_be_bytes());
                k.extend_from_slice(id.as_bytes());
                batch.put_cf(self.cf(CF_OUTBOUND_ERASURES), k, []);
            }
        }
        for (key, delta) in capital {
            let mut k = vec![1u8];
            k.extend_from_slice(&encode(key));
            let old: u128 = self.get_decoded(CF_TOTALS, &k, "capital total")?.unwrap_or(0);
            let new = i128::try_from(old)
                .ok()
                .and_then(|o| o.checked_add(*delta))
                .and_then(|n| u128::try_from(n).ok())
                .ok_or(StoreError::Corrupt { what: "capital total below zero" })?;
            if new == 0 {
                batch.delete_cf(self.cf(CF_TOTALS), &k);
            } else {
                batch.put_cf(self.cf(CF_TOTALS), &k, encode(&new));
            }
        }
        self.write(batch)?;
        self.recent.remember(nodes.into_iter().map(|(k, n)| (k, n, 1)));
        self.recent_records.remember(sent.records);
        self.recent_packets.remember(sent.packets.into_iter().map(|(k, p)| (k, p, 1)));
        Ok(())
    }

    /// The root of the history tree's perfect subtree of `2^level` header hashes from
    /// `index << level` (see `urbis_core::merkle::subtree_root`).
    pub fn history_node(&self, level: u32, index: u64) -> Result<Hash32, StoreError> {
        let bytes = self
            .get(CF_HISTORY, &history_key(level, index))?
            .ok_or(StoreError::Corrupt { what: "missing history node" })?;
        let root: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt { what: "history node" })?;
        Ok(Hash32(root))
    }

    /// Makes erased payloads physically gone: flushes every memtable (so the write-ahead log
    /// that held them becomes obsolete and is deleted), then compacts the payload and
    /// idempotency column families down to the last level, dropping the deleted values.
    /// Called after a block that erases, and at start when a purge was interrupted.
    pub fn purge_erased(&self) -> Result<(), StoreError> {
        let cfs: Vec<&rocksdb::ColumnFamily> = ALL_CFS.iter().map(|n| self.cf(n)).collect();
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        opts.set_exclusive_manual_compaction(true);
        for name in [CF_PAYLOADS, CF_IDEMPOTENCY, CF_INBOUND] {
            self.db.compact_range_cf_opt(self.cf(name), None::<&[u8]>, None::<&[u8]>, &opts);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_META), PURGE_KEY);
        self.write(batch)?;
        // The purge marker's own write is the last thing in the log; flush it out too, so the
        // log left behind holds nothing from before the erasure.
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    /// The next beacon height to follow (1 before any).
    pub fn beacon_next(&self) -> Result<u64, StoreError> {
        match self.get(CF_META, BEACON_NEXT_KEY)? {
            None => Ok(1),
            Some(v) => Ok(u64::from_be_bytes(
                v.as_slice().try_into().map_err(|_| StoreError::Corrupt { what: "beacon next" })?,
            )),
        }
    }

    /// Records that the light client followed beacon block `beacon_height`, and, when that block
    /// crosslinked this shard's header, the link to it.
    pub fn follow_beacon(
        &self,
        beacon_height: u64,
        crosslinked: Option<(u64, &Crosslinked)>,
        set_update: Option<&LightClientUpdate>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        if let Some(u) = set_update {
            batch.put_cf(self.cf(CF_SET_UPDATES), height_key(beacon_height), encode(u));
        }
        if let Some((height, link)) = crosslinked {
            batch.put_cf(self.cf(CF_FINALITY), height_key(height), encode(link));
        }
        batch.put_cf(self.cf(CF_META), BEACON_NEXT_KEY, (beacon_height + 1).to_be_bytes());
        self.write(batch)
    }

    /// The first crosslinked header at or above `height`, with its beacon link: what makes a
    /// record of block `height` final.
    pub fn covering(&self, height: u64) -> Result<Option<(u64, Crosslinked)>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_FINALITY));
        it.seek(height_key(height));
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            let m = u64::from_be_bytes(
                k.try_into().map_err(|_| StoreError::Corrupt { what: "finality key" })?,
            );
            let link = decode(v).map_err(|_| StoreError::Corrupt { what: "finality" })?;
            return Ok(Some((m, link)));
        }
        it.status()?;
        Ok(None)
    }

    /// Every set-changing block the shard followed, in height order.
    pub fn set_updates(&self) -> Result<Vec<LightClientUpdate>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SET_UPDATES), IteratorMode::Start) {
            let (_, v) = item?;
            out.push(decode(&v).map_err(|_| StoreError::Corrupt { what: "set update" })?);
        }
        Ok(out)
    }

    /// The highest crosslinked height, if any.
    pub fn last_crosslinked(&self) -> Result<Option<u64>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_FINALITY));
        it.seek_to_last();
        if let Some(k) = it.key() {
            return Ok(Some(u64::from_be_bytes(
                k.try_into().map_err(|_| StoreError::Corrupt { what: "finality key" })?,
            )));
        }
        it.status()?;
        Ok(None)
    }

    /// The state tree's version after the block at `height` (`Some(None)`: the state was still
    /// empty); `None` when no such block is sealed.
    pub fn state_version_at(&self, height: u64) -> Result<Option<Option<u64>>, StoreError> {
        self.get_decoded(CF_STATE_VERSIONS, &height_key(height), "state version")
    }

    /// The capital totals, read at one point in time.
    pub fn capital_totals(&self) -> Result<CapitalTotals, StoreError> {
        let mut out = CapitalTotals::default();
        for item in self.db.iterator_cf(self.cf(CF_TOTALS), IteratorMode::Start) {
            let (k, v) = item?;
            match k.first() {
                Some(0) => {
                    out.height = Some(u64::from_be_bytes(
                        v.as_ref()
                            .try_into()
                            .map_err(|_| StoreError::Corrupt { what: "totals height" })?,
                    ));
                }
                Some(1) => out.totals.push((
                    decode(&k[1..]).map_err(|_| StoreError::Corrupt { what: "total key" })?,
                    decode(&v).map_err(|_| StoreError::Corrupt { what: "total" })?,
                )),
                _ => return Err(StoreError::Corrupt { what: "capital totals" }),
            }
        }
        Ok(out)
    }

    /// Erasures of records sent to `destination`, sealed above height `after` (at most
    /// `limit`): `(height, record id)` in height order.
    pub fn outbound_erasures(
        &self,
        destination: u32,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash32)>, StoreError> {
        let mut start = destination.to_be_bytes().to_vec();
        start.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_OUTBOUND_ERASURES),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            if k.len() != 44 || k[..4] != destination.to_be_bytes() {
                break;
            }
            let corrupt = || StoreError::Corrupt { what: "outbound erasure" };
            let height = u64::from_be_bytes(k[4..12].try_into().map_err(|_| corrupt())?);
            let id: [u8; 32] = k[12..].try_into().map_err(|_| corrupt())?;
            out.push((height, Hash32(id)));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Where a received record sits: `(source, sequence)`.
    pub fn inbound_by_record(&self, id: &Hash32) -> Result<Option<(u32, u64)>, StoreError> {
        let Some(v) = self.get(CF_INBOUND_BY_RECORD, id.as_bytes())? else { return Ok(None) };
        let corrupt = || StoreError::Corrupt { what: "inbound index" };
        if v.len() != 12 {
            return Err(corrupt());
        }
        Ok(Some((
            u32::from_be_bytes(v[..4].try_into().map_err(|_| corrupt())?),
            u64::from_be_bytes(v[4..].try_into().map_err(|_| corrupt())?),
        )))
    }

    /// Remembers (synced) that `source` proved the payload of record `id` erased, so a copy
    /// arriving afterwards is not kept.
    pub fn mark_erased_inbound(&self, id: &Hash32, source: u32) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_ERASED_INBOUND), id.as_bytes(), source.to_be_bytes());
        self.write(batch)
    }

    /// Whether `source` proved the payload of record `id` erased.
    pub fn erased_inbound(&self, id: &Hash32, source: u32) -> Result<bool, StoreError> {
        Ok(self
            .get(CF_ERASED_INBOUND, id.as_bytes())?
            .is_some_and(|v| v.as_slice() == source.to_be_bytes()))
    }

    /// A received packet's record and payload.
    pub fn inbound(&self, source: u32, sequence: u64) -> Result<Option<InboundRecord>, StoreError> {
        self.get_decoded(CF_INBOUND, &inbound_key(source, sequence), "inbound record")
    }

    /// Packet `sequence` this city sent to `destination`, if it did.
    pub fn sent_packet(
        &self,
        destination: u32,
        sequence: u64,
    ) -> Result<Option<SentPacket>, StoreError> {
        if let Some(sent) = self.recent_packets.get(&(destination, sequence)) {
            return Ok(Some(sent));
        }
        self.get_decoded(CF_OUTBOUND, &inbound_key(destination, sequence), "sent packet")
    }

    /// The record ids of packets `first..first + count` this city sent to `destination`, in
    /// sequence order (one batch's leaves); `Corrupt` unless every one is there.
    pub fn sent_record_ids(
        &self,
        destination: u32,
        first: u64,
        count: u64,
    ) -> Result<Vec<Hash32>, StoreError> {
        let corrupt = StoreError::Corrupt { what: "sent packets" };
        let mut ids = Vec::with_capacity(count as usize);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_OUTBOUND));
        it.seek(inbound_key(destination, first));
        for sequence in first..first.saturating_add(count) {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                it.status()?;
                return Err(corrupt);
            };
            if k != inbound_key(destination, sequence) {
                return Err(corrupt);
            }
            let sent: SentPacket =
                decode(v).map_err(|_| StoreError::Corrupt { what: "sent packet" })?;
            ids.push(sent.packet.record_id);
            it.next();
        }
        Ok(ids)
    }

    /// The sealed header at `height`.
    pub fn header(&self, height: u64) -> Result<Option<SignedShardHeader>, StoreError> {
        self.get_decoded(CF_HEADERS, &height_key(height), "header")
    }

    /// The record ids of the block at `height`.
    pub fn block_records(&self, height: u64) -> Result<Option<Vec<Hash32>>, StoreError> {
        self.get_decoded(CF_BLOCKS, &height_key(height), "block")
    }

    /// Whether a record with this id is stored (no decoding).
    pub fn has_record(&self, id: &Hash32) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_RECORDS), id.as_bytes())?.is_some())
    }

    /// A record by id.
    pub fn record(&self, id: &Hash32) -> Result<Option<StoredRecord>, StoreError> {
        if let Some(stored) = self.recent_records.get(id) {
            return Ok(Some(stored));
        }
        self.get_decoded(CF_RECORDS, id.as_bytes(), "record")
    }

    /// An off-chain payload by record id.
    pub fn payload(&self, id: &Hash32) -> Result<Option<StoredPayload>, StoreError> {
        self.get_decoded(CF_PAYLOADS, id.as_bytes(), "payload")
    }

    /// The stored answer to an idempotent request.
    pub fn idempotency(
        &self,
        service: &str,
        key: &str,
    ) -> Result<Option<IdempotencyEntry>, StoreError> {
        self.get_decoded(CF_IDEMPOTENCY, &idempotency_key(service, key), "idempotency entry")
    }

    /// Record ids of `subject` after position `after` (height, index), in chain order.
    pub fn subject_records(
        &self,
        subject: &SubjectId,
        after: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<SubjectEntry>, StoreError> {
        let start = match after {
            Some((h, i)) => subject_key(subject, h, i.saturating_add(1)),
            None => subject_key(subject, 0, 0),
        };
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(self.cf(CF_SUBJECTS), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if k.len() != 48 || k[..32] != subject.0.0 {
                break;
            }
            let h = u64::from_be_bytes(
                k[32..40].try_into().map_err(|_| StoreError::Corrupt { what: "subject key" })?,
            );
            let i = u64::from_be_bytes(
                k[40..48].try_into().map_err(|_| StoreError::Corrupt { what: "subject key" })?,
            );
            let id: [u8; 32] =
                v.as_ref().try_into().map_err(|_| StoreError::Corrupt { what: "subject entry" })?;
            out.push(((h, i), Hash32(id)));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A state key's newest write: the version that wrote it and the value (`None`: deleted),
    /// from the newest-value index alone (one point lookup); `None` if the index has no entry.
    pub fn state_newest(
        &self,
        key_hash: KeyHash,
    ) -> Result<Option<(Version, Option<OwnedValue>)>, StoreError> {
        let Some(latest) = self.db.get_pinned_cf(self.cf(CF_JMT_LATEST), key_hash.0)? else {
            return Ok(None);
        };
        let (at, value) =
            latest.split_at_checked(8).ok_or(StoreError::Corrupt { what: "latest state value" })?;
        let at = u64::from_be_bytes(
            at.try_into().map_err(|_| StoreError::Corrupt { what: "latest state value" })?,
        );
        let value = decode(value).map_err(|_| StoreError::Corrupt { what: "state value" })?;
        Ok(Some((at, value)))
    }

    /// The latest value of a state key hash at or below `version`.
    pub fn state_value(
        &self,
        version: Version,
        key_hash: KeyHash,
    ) -> Result<Option<OwnedValue>, StoreError> {
        match self.state_newest(key_hash)? {
            // The key's newest version is at or below `version`: it is the answer.
            Some((at, value)) if at <= version => return Ok(value),
            // Never written (most keys a block reads are new: a first receipt, a new subject).
            None if self.latest_complete => return Ok(None),
            _ => {}
        }
        let seek = value_key(&key_hash, version);
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_JMT_VALUES));
        iter.seek_for_prev(seek);
        if let (Some(k), Some(v)) = (iter.key(), iter.value())
            && k.len() == 40
            && k[..32] == key_hash.0
        {
            let value: Option<Vec<u8>> =
                decode(v).map_err(|_| StoreError::Corrupt { what: "state value" })?;
            return Ok(value);
        }
        iter.status()?;
        Ok(None)
    }
}

fn subject_key(subject: &SubjectId, height: u64, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(subject.0.as_bytes());
    k.extend_from_slice(&height.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn inbound_key(source: u32, sequence: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&source.to_be_bytes());
    k[4..].copy_from_slice(&sequence.to_be_bytes());
    k
}

fn history_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level as u8;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn value_key(key_hash: &KeyHash, version: Version) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&key_hash.0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

impl TreeReader for Store {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(node) = self.recent.get(node_key) {
            return Ok(Some(node));
        }
        match self.get(CF_JMT_NODES, &encode(node_key))? {
            None => Ok(None),
            Some(bytes) => {
                let node: Node =
                    decode(&bytes).map_err(|_| StoreError::Corrupt { what: "state node" })?;
                if let Node::Internal(_) = node {
                    // Internal nodes are on many paths; a leaf is mostly read once.
                    self.recent.remember([(node_key.clone(), node.clone(), 1)]);
                }
                Ok(Some(node))
            }
        }
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self.state_value(max_version, key_hash)?)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("state-tree restore is not supported by the shard store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet the block sends and its record are read back from memory once the block is
    /// durable (what the tables hold), not before; a record kept at home is read from the
    /// table.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn records_sent_to_other_cities_are_remembered_once_durable() {
        use urbis_core::record::CityId;
        use urbis_core::testkit::{Federation, information_record, seed};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fed = Federation::new("store", 2, 4);
        let (a, b) = (CityId(0), CityId(1));
        let mut sent = information_record(a, 1);
        sent.destination = Some(b);
        let records = vec![information_record(a, 2), sent];
        let encoded: Vec<Vec<u8>> = records.iter().map(encode).collect();
        let encoded: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let ids: Vec<Hash32> = records.iter().map(Record::id).collect();
        let key = urbis_core::sealing::SealingKey::from_seed(&seed("store/city0"));
        let history = urbis_core::merkle::Frontier::default();
        let header = crate::ledger::header(a, 0, 1, Hash32::ZERO, &ids, Hash32::ZERO, &history)
            .seal(&fed.genesis.federation_id(), &key);
        let sent_batches = [crate::ledger::SentBatch {
            destination: b,
            batch: urbis_core::packet::OutboundBatch::new(0, 7, 20, &ids[1..]),
            record_ids: ids[1..].to_vec(),
        }];
        let tip = Tip {
            height: 0,
            header_hash: header.header.hash(),
            state_version: None,
            newest_record_ms: 1,
        };
        let block = store.block_batch(&BlockWrite {
            header: &header,
            records: &records,
            ids: &ids,
            encoded: &encoded,
            payloads: &[],
            state_nodes: None,
            tip,
            idempotency: &[],
            erased: &[],
            history: &[],
            inbound: &[],
            erase_inbound: &[],
            sent: &sent_batches,
        });
        assert!(store.recent_records.get(&ids[1]).is_none(), "remembered before the write");
        assert!(store.recent_packets.get(&(1, 7)).is_none(), "remembered before the write");
        store.write_block(block, &[], &[], &[]).unwrap();
        let table = |id: &Hash32| -> StoredRecord {
            store.get_decoded(CF_RECORDS, id.as_bytes(), "record").unwrap().unwrap()
        };
        let remembered = store.recent_records.get(&ids[1]).unwrap();
        assert_eq!(remembered, table(&ids[1]));
        assert_eq!((remembered.height, remembered.index), (0, 1));
        assert_eq!(store.record(&ids[1]).unwrap(), Some(table(&ids[1])));
        let packet: SentPacket =
            store.get_decoded(CF_OUTBOUND, &inbound_key(1, 7), "sent packet").unwrap().unwrap();
        assert_eq!(packet.packet.record_id, ids[1]);
        assert_eq!(store.recent_packets.get(&(1, 7)), Some(packet));
        assert_eq!(store.sent_packet(1, 7).unwrap(), Some(packet));
        assert_eq!(store.sent_packet(1, 8).unwrap(), None);
        assert!(store.recent_records.get(&ids[0]).is_none(), "a record kept at home");
        assert_eq!(store.record(&ids[0]).unwrap(), Some(table(&ids[0])));
    }

    /// A memory weighed by size holds two generations of at most its limit: a record three
    /// generations old is forgotten, the newest ones are kept, and one record heavier than the
    /// limit still enters.
    #[test]
    fn the_memory_of_sent_records_is_bounded_by_their_size() {
        use urbis_core::record::CityId;
        let recent = Generations::new(1_000);
        let stored = |n: u64| StoredRecord {
            record: urbis_core::testkit::information_record(CityId(0), n),
            height: n,
            index: 0,
        };
        let id = |n: u64| Hash32([n as u8; 32]);
        recent.remember((0..30).map(|n| (id(n), stored(n), 100)));
        assert!(recent.get(&id(0)).is_none(), "three generations old");
        assert!(recent.get(&id(15)).is_some());
        assert!(recent.get(&id(29)).is_some());
        recent.remember([(id(99), stored(99), 5_000)]);
        assert_eq!(recent.get(&id(99)).map(|s| s.height), Some(99));
        let g = recent.generations.lock().unwrap();
        assert!(g.iter().all(|(m, weight)| m.len() <= 10 || *weight > 1_000));
    }

    /// State reads answer the same whether they take the newest-value index or seek: at every
    /// version, for keys written before and after the index existed, and for deleted keys.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn state_reads_see_each_version_through_the_index_or_the_seek() {
        let dir = tempfile::tempdir().unwrap();
        // A store from before the index: without the mark that it is complete.
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.delete_cf(store.cf(CF_META), LATEST_COMPLETE_KEY);
            store.write(batch).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.latest_complete);
        let (k1, k2, old) = (KeyHash([1; 32]), KeyHash([2; 32]), KeyHash([3; 32]));
        // A key written as a store from before the index would have it: the value only.
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(CF_JMT_VALUES), value_key(&old, 0), encode(&Some(b"o".to_vec())));
        store.write(batch).unwrap();
        let sets: [Vec<(KeyHash, Option<Vec<u8>>)>; 3] = [
            vec![(k1, Some(b"a".to_vec()))],
            vec![(k1, Some(b"b".to_vec())), (k2, Some(b"c".to_vec()))],
            vec![(k1, None)],
        ];
        for (version, set) in sets.into_iter().enumerate() {
            let tree = jmt::JellyfishMerkleTree::<_, urbis_core::state::StateHasher>::new(&store);
            let (_, update) = tree.put_value_set(set, version as u64).unwrap();
            let mut batch = WriteBatch::default();
            store.put_state(&mut batch, &update.node_batch);
            store.write(batch).unwrap();
        }
        let read = |k: KeyHash, v: u64| store.state_value(v, k).unwrap();
        assert_eq!(read(k1, 0), Some(b"a".to_vec()));
        assert_eq!(read(k1, 1), Some(b"b".to_vec()));
        assert_eq!(read(k1, 2), None);
        assert_eq!(read(k1, 9), None);
        assert_eq!(read(k2, 0), None);
        assert_eq!(read(k2, 1), Some(b"c".to_vec()));
        assert_eq!(read(k2, 9), Some(b"c".to_vec()));
        assert_eq!(read(old, 0), Some(b"o".to_vec()));
        assert_eq!(read(old, 9), Some(b"o".to_vec()));
        assert_eq!(read(KeyHash([4; 32]), 9), None);
        // The index holds each key's newest version.
        let latest = store.db.get_cf(store.cf(CF_JMT_LATEST), k1.0).unwrap().unwrap();
        assert_eq!(latest[..8], 2u64.to_be_bytes());
        assert_eq!(store.state_newest(k1).unwrap(), Some((2, None)));
        assert_eq!(store.state_newest(k2).unwrap(), Some((1, Some(b"c".to_vec()))));
        assert_eq!(store.state_newest(KeyHash([4; 32])).unwrap(), None);
    }

    #[test]
    fn a_new_store_answers_a_never_written_key_from_its_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (k, never) = (KeyHash([1; 32]), KeyHash([2; 32]));
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.latest_complete);
            let tree = jmt::JellyfishMerkleTree::<_, urbis_core::state::StateHasher>::new(&store);
            let (_, update) = tree.put_value_set([(k, Some(b"a".to_vec()))], 0).unwrap();
            let mut batch = WriteBatch::default();
            store.put_state(&mut batch, &update.node_batch);
            store.write(batch).unwrap();
        }
        // The mark is kept: a reopened store still trusts its index.
        let store = Store::open(dir.path()).unwrap();
        assert!(store.latest_complete);
        assert_eq!(store.state_value(0, k).unwrap(), Some(b"a".to_vec()));
        assert_eq!(store.state_value(0, never).unwrap(), None);
        // A value outside the index is not looked for: with the mark set, only the index
        // says whether a key was ever written (a seek would have found this one).
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(CF_JMT_VALUES), value_key(&never, 0), encode(&Some(b"x".to_vec())));
        store.write(batch).unwrap();
        assert_eq!(store.state_value(0, never).unwrap(), None);
    }

    /// The store's nodes read from RocksDB alone, without the recent nodes.
    struct Disk<'a>(&'a Store);

    impl TreeReader for Disk<'_> {
        fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
            Ok(self.0.get(CF_JMT_NODES, &encode(node_key))?.map(|b| decode(&b).unwrap()))
        }
        fn get_value_option(&self, v: Version, k: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
            self.0.get_value_option(v, k)
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            self.0.get_rightmost_leaf()
        }
    }

    fn root_remembered(store: &Store, version: Version) -> bool {
        #[allow(clippy::unwrap_used)]
        let g = store.recent.generations.lock().unwrap();
        g.iter()
            .flat_map(|(g, _)| g.keys())
            .any(|k| k.version() == version && k.nibble_path().is_empty())
    }

    /// Proofs through the recent nodes are the proofs RocksDB alone gives, at every version,
    /// while the generations turn over many times (a cache far smaller than the tree), and the
    /// recent nodes do answer most reads.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn proofs_through_recent_nodes_match_the_store_alone() {
        use urbis_core::state::StateHasher;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.recent = Generations::new(24);
        let key = |i: u64| KeyHash(*blake3::hash(&i.to_le_bytes()).as_bytes());
        let versions = 40u64;
        for version in 0..versions {
            // Each version writes new keys and overwrites older ones.
            let set: Vec<(KeyHash, Option<Vec<u8>>)> = (0..8)
                .map(|j| {
                    let k = if j % 2 == 0 { version * 8 + j } else { (version * 3 + j) % 64 };
                    (key(k), Some(format!("{version}/{j}").into_bytes()))
                })
                .collect();
            let tree = jmt::JellyfishMerkleTree::<_, StateHasher>::new(&store);
            let (_, update) = tree.put_value_set(set, version).unwrap();
            let mut batch = WriteBatch::default();
            store.put_state(&mut batch, &update.node_batch);
            store.write(batch).unwrap();
            store
                .recent
                .remember(update.node_batch.nodes().iter().map(|(k, n)| (k.clone(), n.clone(), 1)));
        }
        // The newest roots are in memory; the oldest were forgotten (and are read from RocksDB).
        let remembered = (0..versions).filter(|v| root_remembered(&store, *v)).count() as u64;
        assert!(root_remembered(&store, versions - 1));
        assert!(remembered > 0 && remembered < versions, "{remembered}");
        let disk = Disk(&store);
        for version in 0..versions {
            for i in 0..versions * 8 {
                let through = jmt::JellyfishMerkleTree::<_, StateHasher>::new(&store)
                    .get_with_proof(key(i), version)
                    .unwrap();
                let alone = jmt::JellyfishMerkleTree::<_, StateHasher>::new(&disk)
                    .get_with_proof(key(i), version)
                    .unwrap();
                assert_eq!(through.0, alone.0, "value of key {i} at version {version}");
                assert_eq!(
                    borsh::to_vec(&through.1).unwrap(),
                    borsh::to_vec(&alone.1).unwrap(),
                    "proof of key {i} at version {version}"
                );
            }
        }
        assert!(store.recent.generations.lock().unwrap().iter().all(|(g, _)| g.len() <= 24));
    }
}
