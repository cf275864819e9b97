//! The sealing loop: group commit. A block is cut as soon as the previous one is sealed and
//! submissions are waiting, bounded by count and bytes, so latency stays low when idle and
//! batches grow under load. A submission is answered only once its block is durable.
//!
//! Two threads, one block apart: the sealer applies the ledger rules, builds the state tree and
//! signs block N+1 while the writer writes block N in one synced `WriteBatch`. Block N+1 reads
//! the state through a view that puts block N's not-yet-durable effects (state values and
//! nodes, records, idempotency keys) over the store, and is handed to the writer only once
//! block N is durable, so at most one block is ever in flight and blocks reach the disk in
//! order. Nothing of block N is visible to any reader before its synced write returns.

use crate::ledger::{self, BlockBuilder, Rejection, StateView};
use crate::store::{BlockWrite, IdempotencyEntry, Store, StoreError, StoredPayload, Tip};
use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, Version};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::Hash32;
use urbis_core::header::SignedShardHeader;
use urbis_core::merkle::{Blake3Tree, Frontier, TreeHasher};
use urbis_core::packet::{OutboundPacket, PacketId};
use urbis_core::record::{CityId, Record};
use urbis_core::sealing::SealingKey;
use urbis_core::state::{PLACEHOLDER_HASH, StateHasher, StateKey};

/// Where a record landed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    /// Record id.
    pub id: Hash32,
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u64,
    /// The packet sequence of a record addressed to another city.
    pub sequence: Option<u64>,
}

/// One request's records, sealed together or refused together.
pub struct Submission {
    /// The records.
    pub records: Vec<Record>,
    /// Their ids (`Record::id`), computed off the sealing thread.
    pub ids: Vec<Hash32>,
    /// Their canonical encodings, from which the ids were computed (stored as they are).
    pub encoded: Vec<Vec<u8>>,
    /// Off-chain payloads, by position in `records`.
    pub payloads: Vec<Option<StoredPayload>>,
    /// Encoded size, for the block byte limit.
    pub bytes: usize,
    /// An erasure instead of records: `(record id, who asked)`.
    pub erasure: Option<(Hash32, String)>,
    /// A packet operation instead of records (a received packet's off-chain payload, if any,
    /// is `payloads[0]` under `ids[0]`, the record id).
    pub packet: Option<crate::ledger::PacketOp>,
    /// `(service, key, request hash)` when the request carried an `Idempotency-Key`.
    pub idempotency: Option<(String, String, Hash32)>,
    /// Builds the response body stored for idempotent retries.
    pub render: fn(&[Receipt]) -> Vec<u8>,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Outcome>,
}

impl Submission {
    /// A packet operation (no records); a received packet's off-chain payload goes with it.
    pub fn packet(
        op: crate::ledger::PacketOp,
        payload: Option<StoredPayload>,
        reply: oneshot::Sender<Outcome>,
    ) -> Self {
        let ids = match &op {
            crate::ledger::PacketOp::Receive(p) => vec![p.record_id],
            _ => vec![],
        };
        Submission {
            records: vec![],
            ids,
            encoded: vec![],
            payloads: if payload.is_some() { vec![payload] } else { vec![] },
            bytes: 0,
            erasure: None,
            packet: Some(op),
            idempotency: None,
            render: |_| Vec::new(),
            reply,
        }
    }

    /// An empty block's worth: it only records the current beacon view.
    pub fn tick(reply: oneshot::Sender<Outcome>) -> Self {
        Submission {
            records: vec![],
            ids: vec![],
            encoded: vec![],
            payloads: vec![],
            bytes: 0,
            erasure: None,
            packet: None,
            idempotency: None,
            render: |_| Vec::new(),
            reply,
        }
    }

    /// What it counts for against the block's record limit.
    fn weight(&self) -> usize {
        self.records.len()
            + usize::from(self.erasure.is_some())
            + usize::from(self.packet.is_some())
    }
}

/// What happened to a submission.
#[derive(Debug)]
pub enum Outcome {
    /// Durable in a sealed block.
    Sealed(Vec<Receipt>),
    /// A packet operation durable in the block at `height`; a receive's acknowledgement.
    PacketSealed {
        /// Block height.
        height: u64,
        /// What a receive acknowledged (None for a settlement).
        acknowledgement: Option<urbis_core::packet::Acknowledgement>,
    },
    /// Refused by the ledger rules; nothing written.
    Rejected(Rejection),
    /// An earlier request with the same idempotency key was sealed: its stored response.
    Replayed(IdempotencyEntry),
    /// The store failed; nothing of this submission is acknowledged.
    Failed(String),
}

/// A stopwatch for the phase statistics (durations only; never protocol time).
struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Time since the start (durations only).
    #[allow(clippy::disallowed_methods)]
    fn elapsed(&self) -> std::time::Duration {
        self.0.elapsed()
    }

    #[allow(clippy::disallowed_methods)]
    fn start() -> Self {
        Stopwatch(std::time::Instant::now())
    }
    /// Adds the time since the last lap to the shard's `phase` and starts a new lap.
    #[allow(clippy::disallowed_methods)]
    fn lap(&mut self, metrics: &crate::metrics::ShardMetrics, phase: &'static str) {
        let now = std::time::Instant::now();
        metrics.seal_phase(phase, (now - self.0).as_secs_f64());
        self.0 = now;
    }
}

/// Limits of one block.
#[derive(Clone, Copy, Debug)]
pub struct BlockLimits {
    /// Most records per block.
    pub records_max: usize,
    /// Most encoded record bytes per block.
    pub bytes_max: usize,
}

/// Handle to the sealing thread.
#[derive(Clone)]
pub struct Sealer {
    tx: mpsc::Sender<Submission>,
    tip: watch::Receiver<Option<Tip>>,
    healthy: Arc<AtomicBool>,
}

/// Why a submission could not be queued.
pub enum QueueError {
    /// The queue is full; retry later.
    Full(Box<Submission>),
    /// The sealer has stopped (shutdown, or a fatal storage error).
    Stopped(Box<Submission>),
}

impl Sealer {
    /// Queues a submission without waiting; the reply arrives once its block is durable.
    pub fn submit(&self, s: Submission) -> Result<(), QueueError> {
        self.tx.try_send(s).map_err(|e| match e {
            mpsc::error::TrySendError::Full(s) => QueueError::Full(Box::new(s)),
            mpsc::error::TrySendError::Closed(s) => QueueError::Stopped(Box::new(s)),
        })
    }

    /// Queues a submission, waiting for room in the queue.
    pub async fn submit_wait(&self, s: Submission) -> Result<(), Submission> {
        self.tx.send(s).await.map_err(|e| e.0)
    }

    /// False once the sealing thread stopped on a fatal error or panicked.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The latest durable tip.
    pub fn tip(&self) -> Option<Tip> {
        *self.tip.borrow()
    }

    /// Watches the tip.
    pub fn watch_tip(&self) -> watch::Receiver<Option<Tip>> {
        self.tip.clone()
    }
}

/// Everything the sealing thread owns.
pub struct SealerParts {
    /// The store.
    pub store: Arc<Store>,
    /// The federation.
    pub genesis: Arc<ValidGenesis>,
    /// This shard's city.
    pub city: CityId,
    /// The city's sealing key.
    pub key: SealingKey,
    /// Block limits.
    pub limits: BlockLimits,
    /// The wall clock, in milliseconds since the Unix epoch.
    pub clock: fn() -> u64,
    /// Where sealing is counted.
    pub metrics: Arc<crate::metrics::ShardMetrics>,
    /// The highest certified beacon height the follower has durably followed.
    pub beacon_view: Arc<AtomicU64>,
    /// Timeout of outbound packets, in beacon blocks.
    pub packet_timeout_blocks: u64,
}

/// A block handed to the writer and not yet durable: what sealing the next block must see of
/// it before the store has it.
struct Pending {
    /// Its state-tree version and batch (nodes and values), when it changed state.
    nodes: Option<(Version, Arc<NodeBatch>)>,
    /// Its records, and their positions by id.
    records: Arc<Vec<Record>>,
    by_id: HashMap<Hash32, usize>,
    /// The idempotency keys it stores.
    idempotency: HashSet<(String, String)>,
    /// Whether it erases a payload.
    erases: bool,
    /// The packets it sends.
    sent: Arc<Vec<ledger::SentBatch>>,
}

impl Pending {
    /// The value the pending block wrote under `key_hash` at a version `max_version` covers:
    /// `Some(None)` for a deletion, `None` when it did not write the key.
    fn value(&self, max_version: Version, key_hash: KeyHash) -> Option<Option<OwnedValue>> {
        let (version, batch) = self.nodes.as_ref()?;
        if *version > max_version {
            return None;
        }
        batch.values().get(&(*version, key_hash)).cloned()
    }

    /// Packet `id` if the pending block sends it.
    fn sent_packet(&self, id: &PacketId) -> Option<OutboundPacket> {
        let b = self
            .sent
            .iter()
            .find(|b| b.destination == id.destination && b.batch.contains(id.sequence))?;
        let record_id = *b.record_ids.get((id.sequence - b.batch.first_sequence) as usize)?;
        Some(OutboundPacket { record_id, timeout_height: b.batch.timeout_height })
    }
}

/// The part of the state tree the sealer keeps in memory: the nodes it wrote or read, and
/// each key's newest value it wrote or read at the tip (an absent key as absent), so that the
/// next blocks' rules and tree updates rarely reach RocksDB (every update reads the path from
/// the root down, a channel's batch is read back by the next block that sends on it, and
/// every received packet reads its channel's frozen mark).
///
/// Never wrong: a node never changes under its key (version and path), and the sealer is the
/// only writer of state, so the newest value it wrote, or read at the tip since, is the value
/// at the tip. Nodes the tree marks stale leave at once (only the tip's tree is read here).
/// Two generations bound the memory: when the newer one is full it becomes the older one, and
/// an entry found in the older one moves back into the newer one, so the paths every block
/// walks stay.
pub(crate) struct HotState {
    nodes: [ahash::AHashMap<NodeKey, Node>; 2],
    values: [ahash::AHashMap<KeyHash, Option<OwnedValue>>; 2],
    limits: (usize, usize),
}

impl HotState {
    /// Entries per generation. An internal node takes about 1.1 KB (its 16 child slots), so
    /// both generations of nodes hold under 40 MB, and of values about 15 MB; the top three
    /// levels of the tree (4 369 internal nodes), which every block walks, fit many times.
    const NODES: usize = 16_384;
    const VALUES: usize = 65_536;

    pub(crate) fn new() -> Self {
        Self::with_limits(Self::NODES, Self::VALUES)
    }

    fn with_limits(nodes: usize, values: usize) -> Self {
        HotState { nodes: Default::default(), values: Default::default(), limits: (nodes, values) }
    }

    fn node(&mut self, key: &NodeKey) -> Option<Node> {
        if let Some(n) = self.nodes[0].get(key) {
            return Some(n.clone());
        }
        let n = self.nodes[1].remove(key)?;
        self.put_node(key.clone(), n.clone());
        Some(n)
    }

    fn put_node(&mut self, key: NodeKey, node: Node) {
        if self.nodes[0].len() >= self.limits.0 {
            retire(&mut self.nodes);
        }
        self.nodes[1].remove(&key);
        self.nodes[0].insert(key, node);
    }

    fn value(&mut self, key: &KeyHash) -> Option<Option<OwnedValue>> {
        if let Some(v) = self.values[0].get(key) {
            return Some(v.clone());
        }
        let v = self.values[1].remove(key)?;
        self.put_value(*key, v.clone());
        Some(v)
    }

    fn put_value(&mut self, key: KeyHash, value: Option<OwnedValue>) {
        if self.values[0].len() >= self.limits.1 {
            retire(&mut self.values);
        }
        // An older value must not outlive this one in the older generation.
        self.values[1].remove(&key);
        self.values[0].insert(key, value);
    }

    /// What a sealed block changed: its new nodes, the nodes it made stale, its values.
    fn apply(&mut self, update: &TreeUpdateBatch) {
        for stale in &update.stale_node_index_batch {
            for generation in &mut self.nodes {
                generation.remove(&stale.node_key);
            }
        }
        for (key, node) in update.node_batch.nodes() {
            self.put_node(key.clone(), node.clone());
        }
        for ((_, key), value) in update.node_batch.values() {
            // A key is written once per version: this is its newest value.
            self.put_value(*key, value.clone());
        }
    }
}

/// Makes the newer generation the older one, and the older one's table, emptied but keeping
/// its capacity, the newer one: no table is grown from nothing again, nor its memory touched
/// fresh.
fn retire<K, V>(generations: &mut [ahash::AHashMap<K, V>; 2]) {
    generations.swap(0, 1);
    generations[0].clear();
}

/// The store as the block being sealed sees it: the pending block's effects and the sealer's
/// hot state over it.
struct View<'a> {
    store: &'a Store,
    pending: Option<&'a Pending>,
    hot: &'a RefCell<HotState>,
    version: Option<u64>,
    newest_record_ms: Option<u64>,
}

impl StateView for View<'_> {
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, String> {
        let Some(v) = self.version else { return Ok(None) };
        let key_hash = KeyHash(key.key_hash().0);
        // The hot state holds the newest values; the pending block's are among them.
        if let Some(value) = self.hot.borrow_mut().value(&key_hash) {
            return Ok(value);
        }
        let value = match self.pending.and_then(|p| p.value(v, key_hash)) {
            Some(value) => value,
            None => self.store.state_value(v, key_hash).map_err(|e| e.to_string())?,
        };
        // Read at the tip, so it is the newest value (absent included) until a block writes
        // the key, which puts the new one: keys every block reads (a channel's frozen mark,
        // an account) are read from the store once, not once per record.
        self.hot.borrow_mut().put_value(key_hash, value.clone());
        Ok(value)
    }
    fn has_record(&self, id: &Hash32, time_ms: Option<u64>) -> Result<bool, String> {
        if let (Some(t), Some(newest)) = (time_ms, self.newest_record_ms)
            && t > newest
        {
            return Ok(false);
        }
        if self.pending.is_some_and(|p| p.by_id.contains_key(id)) {
            return Ok(true);
        }
        self.store.has_record(id).map_err(|e| e.to_string())
    }
    fn record(&self, id: &Hash32) -> Result<Option<Record>, String> {
        if let Some(p) = self.pending
            && let Some(i) = p.by_id.get(id)
        {
            return Ok(p.records.get(*i).cloned());
        }
        Ok(self.store.record(id).map_err(|e| e.to_string())?.map(|s| s.record))
    }
    fn sent_packet(&self, id: &PacketId) -> Result<Option<OutboundPacket>, String> {
        if let Some(p) = self.pending.and_then(|p| p.sent_packet(id)) {
            return Ok(Some(p));
        }
        Ok(self
            .store
            .sent_packet(id.destination.0, id.sequence)
            .map_err(|e| e.to_string())?
            .map(|s| s.packet))
    }
}

impl TreeReader for View<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(node) = self.hot.borrow_mut().node(node_key) {
            return Ok(Some(node));
        }
        if let Some((_, batch)) = self.pending.and_then(|p| p.nodes.as_ref())
            && let Some(node) = batch.nodes().get(node_key)
        {
            return Ok(Some(node.clone()));
        }
        let node = self.store.get_node_option(node_key)?;
        if let Some(n @ Node::Internal(_)) = &node {
            // Internal nodes are on every path; leaves mostly are read once.
            self.hot.borrow_mut().put_node(node_key.clone(), n.clone());
        }
        Ok(node)
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        if let Some(value) = self.pending.and_then(|p| p.value(max_version, key_hash)) {
            return Ok(value);
        }
        self.store.get_value_option(max_version, key_hash)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        self.store.get_rightmost_leaf()
    }
}

/// Starts the sealing thread (and its writer). It stops after the last `Sealer` handle is
/// dropped and the queue is drained, so pending submissions are sealed on shutdown.
pub fn start(
    parts: SealerParts,
    queue: usize,
) -> Result<(Sealer, std::thread::JoinHandle<()>), StoreError> {
    let tip = parts.store.tip()?;
    let size = tip.map_or(0, |t| t.height + 1);
    let history =
        Frontier::from_subtrees(size, &mut |level, index| parts.store.history_node(level, index))?;
    let (tx, mut rx) = mpsc::channel::<Submission>(queue);
    let (tip_tx, tip_rx) = watch::channel(tip);
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let writer_flag = healthy.clone();
    let handle = std::thread::Builder::new()
        .name("sealer".into())
        .spawn(move || {
            // Marks the sealer unhealthy however the thread ends early, panics included.
            let guard = HealthGuard(flag);
            // The writer: one block at a time, in order, each durable before its answers.
            let (write_tx, write_rx) = std::sync::mpsc::sync_channel::<Prepared>(1);
            let (done_tx, done_rx) = std::sync::mpsc::channel::<bool>();
            let (store, metrics) = (parts.store.clone(), parts.metrics.clone());
            let writer = std::thread::Builder::new().name("block-writer".into()).spawn(move || {
                let _unready_on_panic = PanicGuard(writer_flag.clone());
                for block in write_rx {
                    let ok = commit(&store, &metrics, block, &tip_tx).is_ok();
                    if !ok {
                        // Unready at once, not only when the next block finds out.
                        writer_flag.store(false, Ordering::Relaxed);
                    }
                    let _ = done_tx.send(ok);
                    if !ok {
                        return;
                    }
                }
            });
            let Ok(writer) = writer else {
                tracing::error!("could not start the block writer thread");
                return;
            };
            let mut writing = Writing { tx: write_tx, done: done_rx, pending: None };
            let mut state = SealState { tip, history, hot: RefCell::new(HotState::new()) };
            let mut fatal = false;
            while let Some(first) = rx.blocking_recv() {
                // Sized for what is queued: grown by doubling, a block's thousands of
                // submissions would be copied again and again into freshly touched memory.
                let mut batch = Vec::with_capacity(1 + rx.len().min(parts.limits.records_max));
                batch.push(first);
                let mut records = batch[0].weight();
                let mut bytes = batch[0].bytes;
                while records < parts.limits.records_max && bytes < parts.limits.bytes_max {
                    match rx.try_recv() {
                        Ok(s) => {
                            records += s.weight();
                            bytes += s.bytes;
                            batch.push(s);
                        }
                        Err(_) => break,
                    }
                }
                // Submissions that do not fit go back to the front of the next block.
                let mut carry = Vec::new();
                let mut count = 0;
                let mut size = 0;
                let mut kept = Vec::with_capacity(batch.len());
                for s in batch {
                    if !kept.is_empty()
                        && (count + s.weight() > parts.limits.records_max
                            || size + s.bytes > parts.limits.bytes_max)
                    {
                        carry.push(s);
                    } else {
                        count += s.weight();
                        size += s.bytes;
                        kept.push(s);
                    }
                }
                fatal = seal_block(&parts, &mut state, kept, &mut writing).is_err();
                for s in carry {
                    if fatal {
                        let _ = s.reply.send(Outcome::Failed(
                            "the sealer stopped after a storage failure".into(),
                        ));
                        continue;
                    }
                    fatal = seal_block(&parts, &mut state, vec![s], &mut writing).is_err();
                }
                if fatal {
                    break;
                }
            }
            // The last block must be durable (and answered) before the store may close.
            fatal = !writing.finish() || fatal;
            // Closing the channel ends the writer.
            drop(writing);
            if writer.join().is_err() {
                tracing::error!("the block writer thread panicked");
                fatal = true;
            }
            if fatal {
                // After a failed synced write the log may still hold the batch: only a
                // restart, which rebuilds the tip from disk, can tell. Stop sealing.
                tracing::error!("sealer stopped after a storage failure; restart the node");
                rx.close();
                while let Ok(s) = rx.try_recv() {
                    let _ = s
                        .reply
                        .send(Outcome::Failed("the sealer stopped after a storage failure".into()));
                }
                return;
            }
            drop(guard);
            tracing::info!("sealer stopped: queue closed and drained");
        })
        .map_err(|_| StoreError::Corrupt { what: "sealer thread" })?;
    Ok((Sealer { tx, tip: tip_rx, healthy }, handle))
}

struct HealthGuard(Arc<AtomicBool>);

impl Drop for HealthGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Marks the node unhealthy when the thread holding it panics.
struct PanicGuard(Arc<AtomicBool>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(false, Ordering::Relaxed);
        }
    }
}

struct SealState {
    tip: Option<Tip>,
    history: Frontier,
    hot: RefCell<HotState>,
}

/// The sealer's side of the writer: the block in flight, if any.
struct Writing {
    tx: std::sync::mpsc::SyncSender<Prepared>,
    done: std::sync::mpsc::Receiver<bool>,
    pending: Option<Pending>,
}

impl Writing {
    /// Forgets the block in flight if its write already finished; false if it failed.
    fn poll(&mut self) -> bool {
        if self.pending.is_none() {
            return true;
        }
        match self.done.try_recv() {
            Ok(ok) => {
                self.pending = None;
                ok
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => true,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => false,
        }
    }

    /// Waits until the block in flight is durable; false if its write failed.
    fn finish(&mut self) -> bool {
        if self.pending.take().is_none() {
            return true;
        }
        self.done.recv().unwrap_or(false)
    }
}

/// A block's state root, its tree batch (at its version) if it changed state, and the state
/// version after it.
type StateUpdate = (Hash32, Option<(Version, NodeBatch)>, Option<u64>);

/// Where each record of a submission landed: index in the block and packet sequence.
type Placed = Vec<(u64, Option<u64>)>;

/// A sealed block on its way to the disk, with everything its answers need.
struct Prepared {
    height: u64,
    signed: SignedShardHeader,
    records: Arc<Vec<Record>>,
    ids: Vec<Hash32>,
    nodes: Option<(Version, Arc<NodeBatch>)>,
    tip: Tip,
    payloads: Vec<(Hash32, StoredPayload)>,
    idempotency: Vec<(String, String, IdempotencyEntry)>,
    erased: Vec<Hash32>,
    completed: Vec<(u32, u64, Hash32)>,
    inbound: Vec<((u32, u64), crate::store::InboundRecord)>,
    capital: Vec<(ledger::TotalKey, i128)>,
    erase_inbound: Vec<(u32, u64)>,
    sent: Arc<Vec<ledger::SentBatch>>,
    accepted: Vec<(Submission, Placed)>,
    acks: Vec<Option<urbis_core::packet::Acknowledgement>>,
    started: Stopwatch,
    /// The block's `WriteBatch` as far as it depends on the block alone, built on the sealer
    /// thread while the block before is written.
    batch: Option<crate::store::BlockBatch>,
}

impl Prepared {
    /// What the next block must see of this one until it is durable.
    fn pending(&self) -> Pending {
        Pending {
            nodes: self.nodes.clone(),
            records: self.records.clone(),
            by_id: self.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            idempotency: self.idempotency.iter().map(|(s, k, _)| (s.clone(), k.clone())).collect(),
            erases: !self.erased.is_empty() || !self.erase_inbound.is_empty(),
            sent: self.sent.clone(),
        }
    }

    /// Builds the block's `WriteBatch` (all but what the writer reads from the store).
    fn build_batch(
        &mut self,
        store: &Store,
        metrics: &crate::metrics::ShardMetrics,
    ) -> crate::store::BlockBatch {
        let mut watch = Stopwatch::start();
        let encoded: Vec<&[u8]> =
            self.accepted.iter().flat_map(|(s, _)| s.encoded.iter().map(Vec::as_slice)).collect();
        let batch = store.block_batch(&BlockWrite {
            header: &self.signed,
            records: &self.records,
            ids: &self.ids,
            encoded: &encoded,
            payloads: &self.payloads,
            state_nodes: self.nodes.as_ref().map(|(_, b)| &**b),
            tip: self.tip,
            idempotency: &self.idempotency,
            erased: &self.erased,
            history: &self.completed,
            inbound: &self.inbound,
            erase_inbound: &self.erase_inbound,
            sent: &self.sent,
        });
        // What the batch holds a copy of is not needed again.
        self.payloads = Vec::new();
        self.inbound = Vec::new();
        watch.lap(metrics, "batch");
        batch
    }

    /// Answers every submission of the block with a failure.
    fn fail(self, detail: &str) {
        for (s, _) in self.accepted {
            let _ = s.reply.send(Outcome::Failed(detail.into()));
        }
    }
}

/// Seals one block and hands it to the writer; `Err` means a storage or key failure after
/// which sealing must stop.
fn seal_block(
    parts: &SealerParts,
    state: &mut SealState,
    batch: Vec<Submission>,
    writing: &mut Writing,
) -> Result<(), ()> {
    if !writing.poll() {
        fail_all(batch, "the sealer stopped after a storage failure");
        return Err(());
    }
    // A retry of a request in the block in flight is answered from the store once that
    // block is durable, not sealed a second time.
    // So is any idempotent request while the block in flight erases a payload (the erasure
    // rewrites the idempotency entry of the request that brought it).
    let retries_in_flight = writing.pending.as_ref().is_some_and(|p| {
        batch.iter().any(|s| {
            s.idempotency.as_ref().is_some_and(|(svc, key, _)| {
                p.erases || p.idempotency.contains(&(svc.clone(), key.clone()))
            })
        })
    });
    if retries_in_flight && !writing.finish() {
        fail_all(batch, "the sealer stopped after a storage failure");
        return Err(());
    }
    let mut answers = Vec::new();
    let mut prepared = prepare(parts, state, batch, writing.pending.as_ref(), &mut answers);
    if let Ok(Some(p)) = &mut prepared {
        p.batch = Some(p.build_batch(&parts.store, &parts.metrics));
    }
    // Refusals and replays may rest on the block in flight (a duplicate of one of its records,
    // a packet it received): they are answered only once that block is durable.
    let durable = writing.finish();
    for (reply, outcome) in answers {
        let _ = reply.send(if durable {
            outcome
        } else {
            Outcome::Failed("the sealer stopped after a storage failure".into())
        });
    }
    let Some(prepared) = prepared? else {
        return if durable { Ok(()) } else { Err(()) };
    };
    if !durable {
        prepared.fail("the sealer stopped after a storage failure");
        return Err(());
    }
    writing.pending = Some(prepared.pending());
    if let Err(e) = writing.tx.send(prepared) {
        e.0.fail("the sealer stopped after a storage failure");
        writing.pending = None;
        return Err(());
    }
    Ok(())
}

fn fail_all(batch: Vec<Submission>, detail: &str) {
    for s in batch {
        let _ = s.reply.send(Outcome::Failed(detail.into()));
    }
}

/// Applies the ledger rules to a batch and seals the block: rules, state tree, header and
/// signature. Refused submissions are answered here; `Ok(None)` when none was accepted.
fn prepare(
    parts: &SealerParts,
    state: &mut SealState,
    batch: Vec<Submission>,
    pending: Option<&Pending>,
    answers: &mut Vec<(oneshot::Sender<Outcome>, Outcome)>,
) -> Result<Option<Prepared>, ()> {
    let height = state.tip.map_or(0, |t| t.height + 1);
    if parts.genesis.sealing_key(parts.city, height) != Some(&parts.key.public_key()) {
        tracing::error!(
            height,
            "genesis names another sealing key from this height; load the rotated key"
        );
        fail_all(batch, "the sealing key in force at this height is not loaded");
        return Err(());
    }
    let version = state.tip.and_then(|t| t.state_version);
    let view = View {
        store: &parts.store,
        pending,
        hot: &state.hot,
        version,
        newest_record_ms: Some(state.tip.map_or(0, |t| t.newest_record_ms)),
    };
    let mut builder = BlockBuilder::new(&view, &parts.genesis, parts.city, height, (parts.clock)())
        .with_beacon(parts.beacon_view.load(Ordering::Acquire), parts.packet_timeout_blocks);
    // Every block records the certified beacon view it was sealed under (timeouts need it).
    if let Err(e) = builder.view() {
        tracing::error!(height, error = %e, "reading the beacon view; nothing sealed");
        fail_all(batch, &e.to_string());
        return Err(());
    }
    let mut watch = Stopwatch::start();
    let started = Stopwatch::start();
    let mut accepted: Vec<(Submission, Placed)> = Vec::with_capacity(batch.len());
    let mut acks: Vec<Option<urbis_core::packet::Acknowledgement>> = Vec::new();
    let mut seen_keys: Vec<(String, String)> = Vec::new();
    for s in batch {
        if let Some((service, key, request_hash)) = &s.idempotency {
            // A retry racing its original: answer from the store or from this block.
            match parts.store.idempotency(service, key) {
                Ok(Some(entry)) => {
                    let outcome = if entry.request_hash.is_none_or(|h| h == *request_hash) {
                        Outcome::Replayed(entry)
                    } else {
                        Outcome::Rejected(Rejection::State(
                            "idempotency key reused with a different request".into(),
                        ))
                    };
                    answers.push((s.reply, outcome));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    answers.push((s.reply, Outcome::Failed(e.to_string())));
                    continue;
                }
            }
            if seen_keys.iter().any(|(a, b)| a == service && b == key) {
                // Same key twice in one block: the second waits for the first's answer.
                answers.push((
                    s.reply,
                    Outcome::Failed(
                        "a request with this idempotency key is in progress; retry".into(),
                    ),
                ));
                continue;
            }
            seen_keys.push((service.clone(), key.clone()));
        }
        if let Some(op) = &s.packet {
            match builder.packet(op) {
                Ok(ack) => {
                    acks.push(ack);
                    accepted.push((s, vec![]));
                }
                Err(rejection) => {
                    parts.metrics.reject(&rejection);
                    answers.push((s.reply, Outcome::Rejected(rejection)));
                }
            }
            continue;
        }
        if let Some((id, by)) = &s.erasure {
            match builder.erase(id, by) {
                Ok(()) => accepted.push((s, vec![])),
                Err(rejection) => {
                    parts.metrics.reject(&rejection);
                    answers.push((s.reply, Outcome::Rejected(rejection)));
                }
            }
            continue;
        }
        match builder.add(&s.records, &s.ids) {
            Ok(indexes) => accepted.push((s, indexes)),
            Err(rejection) => {
                parts.metrics.reject(&rejection);
                answers.push((s.reply, Outcome::Rejected(rejection)));
            }
        }
    }
    if accepted.is_empty() {
        return Ok(None);
    }
    let time_ms = builder.time_ms();
    let capital = match builder.capital_deltas() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(height, error = %e, "reading capital totals; nothing sealed");
            fail_all(accepted.into_iter().map(|(s, _)| s).collect(), &e.to_string());
            return Err(());
        }
    };
    let (records, ids, writes, sent) = builder.finish();
    watch.lap(&parts.metrics, "rules");
    let erased: Vec<Hash32> =
        accepted.iter().filter_map(|(s, _)| s.erasure.as_ref().map(|e| e.0)).collect();
    let erase_inbound: Vec<(u32, u64)> = accepted
        .iter()
        .filter_map(|(s, _)| match &s.packet {
            Some(crate::ledger::PacketOp::EraseCopy { source, sequence }) => {
                Some((source.0, *sequence))
            }
            _ => None,
        })
        .collect();
    let tree = (|| -> Result<StateUpdate, String> {
        if writes.is_empty() {
            let root = match version {
                None => PLACEHOLDER_HASH,
                Some(v) => JellyfishMerkleTree::<_, StateHasher>::new(&view)
                    .get_root_hash(v)
                    .map(|r| Hash32(r.0))
                    .map_err(|e| e.to_string())?,
            };
            Ok((root, None, version))
        } else {
            let next = version.map_or(0, |v| v + 1);
            let tree = JellyfishMerkleTree::<_, StateHasher>::new(&view);
            // A block that deletes nothing (all but thawing a frozen channel) is inserted in
            // one pass, which hashes each node it touches once; key by key, every node on each
            // key's path is hashed again for every key below it. Both give the same tree
            // (`batched_insertion_matches_sequential_insertion`); only the sequential pass
            // deletes.
            let inserts: Option<Vec<(KeyHash, OwnedValue)>> =
                writes.iter().map(|(k, v)| Some((KeyHash(k.key_hash().0), v.clone()?))).collect();
            let (root, batch) = match inserts {
                Some(set) => {
                    let (roots, batch) = tree
                        .batch_put_value_sets(vec![set], None, next)
                        .map_err(|e| e.to_string())?;
                    let root = roots.first().copied().ok_or("the state tree gave no root")?;
                    (root, batch)
                }
                None => {
                    let set = writes.iter().map(|(k, v)| (KeyHash(k.key_hash().0), v.clone()));
                    tree.put_value_set(set, next).map_err(|e| e.to_string())?
                }
            };
            // Nothing after this point fails: the block becomes the tip (or sealing stops).
            state.hot.borrow_mut().apply(&batch);
            Ok((Hash32(root.0), Some((next, batch.node_batch)), Some(next)))
        }
    })();
    let (state_root, nodes, new_version) = match tree {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(height, error = %e, "building the state tree; nothing sealed");
            fail_all(accepted.into_iter().map(|(s, _)| s).collect(), &e);
            return Err(());
        }
    };
    watch.lap(&parts.metrics, "state_tree");
    let previous = state.tip.map_or(Hash32::ZERO, |t| t.header_hash);
    let header =
        ledger::header(parts.city, height, time_ms, previous, &ids, state_root, &state.history);
    let signed = header.seal(&parts.genesis.federation_id(), &parts.key);
    let mut history = state.history.clone();
    let completed = history.push_completed(
        &Blake3Tree::history(),
        Blake3Tree::history().leaf(signed.header.hash().as_bytes()),
    );
    let newest = records.iter().map(|r| r.time_ms).max().unwrap_or(0);
    let tip = Tip {
        height,
        header_hash: signed.header.hash(),
        state_version: new_version,
        newest_record_ms: newest.max(state.tip.map_or(0, |t| t.newest_record_ms)),
    };
    let mut payloads = Vec::new();
    let mut inbound = Vec::new();
    let mut idempotency = Vec::new();
    for (s, indexes) in &accepted {
        if let Some(crate::ledger::PacketOp::Receive(p)) = &s.packet {
            let payload = s.payloads.first().cloned().flatten();
            inbound.push((
                (p.id.source.0, p.id.sequence),
                crate::store::InboundRecord { record: p.record.clone(), payload },
            ));
            continue;
        }
        for (i, p) in s.payloads.iter().enumerate() {
            if let Some(p) = p {
                let mut p = p.clone();
                p.idempotency =
                    s.idempotency.as_ref().map(|(svc, key, _)| (svc.clone(), key.clone()));
                payloads.push((s.ids[i], p));
            }
        }
        if let Some((service, key, request_hash)) = &s.idempotency {
            let receipts = receipts(&s.ids, indexes, height);
            idempotency.push((
                service.clone(),
                key.clone(),
                IdempotencyEntry {
                    request_hash: Some(*request_hash),
                    response: (s.render)(&receipts),
                },
            ));
        }
    }
    watch.lap(&parts.metrics, "header");
    // The next block builds on this one from now on.
    state.history = history;
    state.tip = Some(tip);
    Ok(Some(Prepared {
        height,
        signed,
        records: Arc::new(records),
        ids,
        nodes: nodes.map(|(v, b)| (v, Arc::new(b))),
        tip,
        payloads,
        idempotency,
        erased,
        completed,
        inbound,
        capital,
        erase_inbound,
        sent: Arc::new(sent),
        accepted,
        acks,
        started,
        batch: None,
    }))
}

/// Writes a sealed block in one synced `WriteBatch`, then publishes the tip and answers its
/// submissions; `Err` means the write failed (nothing of the block is acknowledged).
fn commit(
    store: &Store,
    metrics: &crate::metrics::ShardMetrics,
    mut block: Prepared,
    tip_tx: &watch::Sender<Option<Tip>>,
) -> Result<(), ()> {
    let mut watch = Stopwatch::start();
    let height = block.height;
    let written = (|| -> Result<(), String> {
        let batch = match block.batch.take() {
            Some(batch) => batch,
            None => block.build_batch(store, metrics),
        };
        store
            .write_block(batch, &block.erased, &block.erase_inbound, &block.capital)
            .map_err(|e| e.to_string())?;
        watch.lap(metrics, "write");
        metrics.fsyncs.inc();
        if !block.erased.is_empty() || !block.erase_inbound.is_empty() {
            // Answered only once the erased bytes are gone from the files, not just deleted.
            store.purge_erased().map_err(|e| e.to_string())?;
            metrics.fsyncs.inc();
        }
        Ok(())
    })();
    if let Err(e) = written {
        tracing::error!(height, error = %e, "sealing failed; nothing acknowledged");
        block.fail(&e);
        return Err(());
    }
    let _ = tip_tx.send(Some(block.tip));
    tracing::debug!(height, records = block.records.len(), "sealed");
    metrics.height.set(height as i64);
    metrics.seal_seconds.observe(block.started.elapsed().as_secs_f64());
    let mut by_kind = [0u64; 4];
    for r in block.records.iter() {
        by_kind[match r.kind() {
            urbis_core::record::RecordKind::Information => 0,
            urbis_core::record::RecordKind::Capital => 1,
            urbis_core::record::RecordKind::Talent => 2,
            urbis_core::record::RecordKind::Credit => 3,
        }] += 1;
    }
    for (n, kind) in by_kind.into_iter().zip(["information", "capital", "talent", "credit"]) {
        if n > 0 {
            metrics
                .ingested
                .get_or_create(&crate::metrics::KindLabel { kind: kind.into() })
                .inc_by(n);
        }
    }
    let mut acks = block.acks.into_iter();
    for (s, indexes) in block.accepted {
        if s.packet.is_some() {
            let acknowledgement = acks.next().flatten();
            let _ = s.reply.send(Outcome::PacketSealed { height, acknowledgement });
            continue;
        }
        let r = receipts(&s.ids, &indexes, height);
        let _ = s.reply.send(Outcome::Sealed(r));
    }
    Ok(())
}

fn receipts(ids: &[Hash32], indexes: &[(u64, Option<u64>)], height: u64) -> Vec<Receipt> {
    ids.iter()
        .zip(indexes)
        .map(|(id, (i, sequence))| Receipt { id: *id, height, index: *i, sequence: *sequence })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The sealer's view reads a key from the store or the block in flight once: the value (or
    /// its absence) it read at the tip is answered from memory until a block writes the key,
    /// and then the written value is.
    #[test]
    fn the_view_reads_a_key_from_the_store_once_and_sees_the_blocks_that_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (present, frozen) =
            (StateKey::BeaconView, StateKey::FrozenChannel { source: CityId(1) });
        let hash = |k: &StateKey| KeyHash(k.key_hash().0);
        let write = |version: Version, set: Vec<(KeyHash, Option<OwnedValue>)>| {
            let tree = JellyfishMerkleTree::<_, StateHasher>::new(&store);
            let (_, update) = tree.put_value_set(set, version).unwrap();
            store.write_state(&update.node_batch).unwrap();
            update
        };
        write(0, vec![(hash(&present), Some(b"a".to_vec()))]);
        let hot = RefCell::new(HotState::new());
        let view = |version| View {
            store: &store,
            pending: None,
            hot: &hot,
            version: Some(version),
            newest_record_ms: None,
        };
        assert_eq!(view(0).get(&present).unwrap(), Some(b"a".to_vec()));
        assert_eq!(view(0).get(&frozen).unwrap(), None);
        // Changed in the store behind the hot state's back (the sealer never does this): the
        // view still answers what it read, so the second reads did not reach the store.
        write(1, vec![(hash(&present), Some(b"z".to_vec())), (hash(&frozen), Some(vec![1]))]);
        assert_eq!(view(1).get(&present).unwrap(), Some(b"a".to_vec()));
        assert_eq!(view(1).get(&frozen).unwrap(), None);
        // A block the sealer seals puts what it wrote.
        let update = write(2, vec![(hash(&frozen), Some(vec![2]))]);
        hot.borrow_mut().apply(&update);
        assert_eq!(view(2).get(&frozen).unwrap(), Some(vec![2]));
        // A fresh hot state reads the store again.
        let hot2 = RefCell::new(HotState::new());
        let fresh = View { hot: &hot2, ..view(2) };
        assert_eq!(fresh.get(&present).unwrap(), Some(b"z".to_vec()));
        // A block in flight (not yet in the store) answers for the keys it wrote, and what it
        // answered is kept: read again without it, the view still gives the block's value,
        // where the store has none yet.
        let tree = JellyfishMerkleTree::<_, StateHasher>::new(&store);
        let (_, update) = tree.put_value_set([(hash(&frozen), None)], 3).unwrap();
        let pending = Pending {
            nodes: Some((3, Arc::new(update.node_batch))),
            records: Arc::new(Vec::new()),
            by_id: HashMap::new(),
            idempotency: HashSet::new(),
            erases: false,
            sent: Arc::new(Vec::new()),
        };
        let hot3 = RefCell::new(HotState::new());
        let in_flight = View { hot: &hot3, pending: Some(&pending), ..view(3) };
        assert_eq!(in_flight.get(&frozen).unwrap(), None);
        assert_eq!(in_flight.get(&present).unwrap(), Some(b"z".to_vec()));
        let after = View { hot: &hot3, ..view(3) };
        assert_eq!(after.get(&frozen).unwrap(), None);
        assert_eq!(store.state_value(3, hash(&frozen)).unwrap(), Some(vec![2]));
    }

    /// A tree store in memory, read through a hot state the way the sealer's view reads the
    /// store through one.
    #[derive(Default)]
    struct Memory {
        nodes: HashMap<NodeKey, Node>,
        values: BTreeMap<(KeyHash, Version), Option<OwnedValue>>,
    }

    impl TreeReader for Memory {
        fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
            Ok(self.nodes.get(key).cloned())
        }
        fn get_value_option(
            &self,
            max: Version,
            key: KeyHash,
        ) -> anyhow::Result<Option<OwnedValue>> {
            Ok(self.values.range((key, 0)..=(key, max)).next_back().and_then(|(_, v)| v.clone()))
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            anyhow::bail!("not used")
        }
    }

    struct Through<'a> {
        memory: &'a Memory,
        hot: &'a RefCell<HotState>,
    }

    impl TreeReader for Through<'_> {
        fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
            if let Some(n) = self.hot.borrow_mut().node(key) {
                return Ok(Some(n));
            }
            let n = self.memory.get_node_option(key)?;
            if let Some(n @ Node::Internal(_)) = &n {
                self.hot.borrow_mut().put_node(key.clone(), n.clone());
            }
            Ok(n)
        }
        fn get_value_option(
            &self,
            max: Version,
            key: KeyHash,
        ) -> anyhow::Result<Option<OwnedValue>> {
            self.memory.get_value_option(max, key)
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            anyhow::bail!("not used")
        }
    }

    /// Updates computed through a hot state far smaller than the tree (so both generations
    /// turn over many times, and stale nodes leave) give the roots and values computed from
    /// the store alone, version after version, through inserts, updates and deletions.
    #[test]
    fn updates_through_the_hot_state_match_the_store_alone() {
        let hot = RefCell::new(HotState::with_limits(40, 16));
        let mut memory = Memory::default();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let key = |n: u64| KeyHash(*blake3::hash(&n.to_le_bytes()).as_bytes());
        for version in 0..300u64 {
            let mut set = BTreeMap::new();
            for _ in 0..1 + next() % 12 {
                let k = key(next() % 400);
                let v = (next() % 5 != 0).then(|| next().to_le_bytes().to_vec());
                set.insert(k, v);
            }
            let through = Through { memory: &memory, hot: &hot };
            let (root, batch) = JellyfishMerkleTree::<_, StateHasher>::new(&through)
                .put_value_set(set.clone(), version)
                .unwrap();
            let (plain_root, plain) = JellyfishMerkleTree::<_, StateHasher>::new(&memory)
                .put_value_set(set.clone(), version)
                .unwrap();
            assert_eq!(root, plain_root, "version {version}");
            assert_eq!(batch.node_batch, plain.node_batch, "version {version}");
            hot.borrow_mut().apply(&batch);
            for (k, v) in &set {
                assert_eq!(hot.borrow_mut().value(k), Some(v.clone()), "version {version}");
            }
            for (k, n) in batch.node_batch.nodes() {
                memory.nodes.insert(k.clone(), n.clone());
            }
            for ((v, k), value) in batch.node_batch.values() {
                memory.values.insert((*k, *v), value.clone());
            }
            let h = hot.borrow();
            assert!(
                h.nodes.iter().all(|g| g.len() <= 40) && h.values.iter().all(|g| g.len() <= 16)
            );
            // Only nodes of the newest tree stay.
            for stale in &batch.stale_node_index_batch {
                assert!(h.nodes.iter().all(|g| !g.contains_key(&stale.node_key)));
            }
            // Every value the hot state holds is the newest one.
            for (k, v) in h.values.iter().flat_map(|g| g.iter()) {
                assert_eq!(v, &memory.get_value_option(version, *k).unwrap());
            }
        }
    }

    /// A block's writes inserted in one batch (read through a hot state, as the sealer reads)
    /// give the sequential insertion's root, nodes and stale nodes (read from the store alone),
    /// version after version: from an empty tree and from a single leaf, in trees of a few keys
    /// and of thousands, through inserts, updates and unchanged rewrites, with blocks that
    /// delete (which take the sequential pass) in between, one of them emptying the tree.
    #[test]
    fn batched_insertion_matches_sequential_insertion() {
        let key = |n: u64| KeyHash(*blake3::hash(&n.to_le_bytes()).as_bytes());
        let stale = |b: &jmt::storage::TreeUpdateBatch| {
            let mut s: Vec<_> =
                b.stale_node_index_batch.iter().map(|i| i.node_key.clone()).collect();
            s.sort();
            s
        };
        // (seed, distinct keys, most writes in a block, versions)
        for (seed, keys, widest, versions) in
            [(0x9e37_79b9_7f4a_7c15u64, 5_000, 300, 120u64), (7, 16, 6, 200), (11, 64, 40, 200)]
        {
            let hot = RefCell::new(HotState::with_limits(64, 32));
            let mut memory = Memory::default();
            let mut present = std::collections::BTreeSet::new();
            let mut seed = seed;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for version in 0..versions {
                let mut set: BTreeMap<KeyHash, Option<OwnedValue>> = BTreeMap::new();
                if version == versions / 2 {
                    // Every key deleted: the next block starts from an empty tree again.
                    set.extend(present.iter().map(|k| (*k, None)));
                } else {
                    // The first block writes one key: the next finds a single leaf as root.
                    let writes = if version == 0 { 1 } else { 1 + next() % widest };
                    let deleting = version % 8 == 5;
                    for _ in 0..writes {
                        let k = key(next() % keys);
                        // Values from a small domain: many writes rewrite a value unchanged.
                        let v = (!deleting || next() % 2 == 0)
                            .then(|| (next() % 4).to_le_bytes().to_vec());
                        set.insert(k, v);
                    }
                }
                let through = Through { memory: &memory, hot: &hot };
                let plain = JellyfishMerkleTree::<_, StateHasher>::new(&memory);
                let (root, update) = match set
                    .iter()
                    .map(|(k, v)| Some((*k, v.clone()?)))
                    .collect::<Option<Vec<_>>>()
                {
                    Some(inserts) => {
                        let (roots, batched) = JellyfishMerkleTree::<_, StateHasher>::new(&through)
                            .batch_put_value_sets(vec![inserts], None, version)
                            .unwrap();
                        let (root, sequential) = plain.put_value_set(set.clone(), version).unwrap();
                        assert_eq!(roots, vec![root], "seed {seed}, version {version}");
                        assert_eq!(batched.node_batch, sequential.node_batch, "version {version}");
                        assert_eq!(stale(&batched), stale(&sequential), "version {version}");
                        (root, batched)
                    }
                    None => JellyfishMerkleTree::<_, StateHasher>::new(&through)
                        .put_value_set(set.clone(), version)
                        .unwrap(),
                };
                hot.borrow_mut().apply(&update);
                for (k, n) in update.node_batch.nodes() {
                    memory.nodes.insert(k.clone(), n.clone());
                }
                for ((v, k), value) in update.node_batch.values() {
                    memory.values.insert((*k, *v), value.clone());
                }
                for (k, v) in &set {
                    if v.is_some() {
                        present.insert(*k);
                    } else {
                        present.remove(k);
                    }
                }
                let reread = JellyfishMerkleTree::<_, StateHasher>::new(&memory);
                assert_eq!(reread.get_root_hash(version).unwrap(), root, "version {version}");
                for (k, v) in &set {
                    assert_eq!(&reread.get(*k, version).unwrap(), v, "version {version}");
                }
            }
        }
    }
}
