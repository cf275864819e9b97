//! A running validator: the consensus host wired to its RocksDB store (decided chain and
//! write-ahead log) and its QUIC transport, with timers on the tokio clock. The write-ahead
//! log is synced before anything that follows it is sent.

use crate::block::{Block, EVIDENCE_MAX, Heads, Tip};
use crate::consensus::{
    Action, Address, App, Bls, Ctx, Host, LinearTimeouts, Message, Timeout, Validator,
    ValidatorSet, fold_certificate, wire,
};
use crate::pool::Pool;
use crate::sets::Sets;
use crate::store::{BeaconStore, DecidedBlock};
use crate::transport::{Allowed, Fingerprint, TlsIdentity, Transport};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio::time::Instant;
use urbis_core::bls;
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::Hash32;

/// What a validator needs to run.
pub struct ValidatorConfig {
    /// The federation.
    pub genesis: Arc<ValidGenesis>,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// This validator's BLS key (its public key is in the genesis set).
    pub bls_key: Arc<bls::SecretKey>,
    /// This validator's TLS identity (its fingerprint is in its set entry).
    pub tls: TlsIdentity,
    /// The other validators: where they listen and the TLS key expected there.
    pub peers: Vec<(SocketAddr, Fingerprint)>,
    /// Consensus timeouts.
    pub timeouts: LinearTimeouts,
    /// The wall clock, milliseconds since the Unix epoch (block times).
    pub clock: fn() -> u64,
    /// Crosslink entries pushed by shards (shared with the API).
    pub pool: Arc<Pool>,
    /// The validator sets in force by height (shared with the API; `run` replays the stored
    /// chain into it).
    pub sets: Arc<RwLock<Sets>>,
    /// Where the validator counts (shared with the API, which serves them).
    pub metrics: Arc<crate::metrics::BeaconMetrics>,
}

/// A decision, as the validator reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Beacon height.
    pub height: u64,
    /// Header hash.
    pub block: Hash32,
}

/// The beacon application: blocks continue the decided chain and carry the crosslink entries
/// shards pushed, each extending its city's last crosslinked header.
pub struct BeaconApp {
    tip: Tip,
    clock: fn() -> u64,
    genesis: Arc<ValidGenesis>,
    /// Each city's last crosslinked header, as of the decided chain.
    heads: Heads,
    pool: Arc<Pool>,
    /// The validator's store (evidence to record, evidence already recorded).
    store: Arc<BeaconStore>,
    /// The consensus set (evidence is checked against it).
    set: ValidatorSet<Bls>,
    /// Evidence recorded by blocks this app committed (the store learns of them a moment
    /// later, when the decision is written).
    recorded: std::collections::HashSet<Hash32>,
    /// The validator sets the chain put in force (shared with the node and the API).
    sets: Arc<RwLock<Sets>>,
}

fn read(sets: &RwLock<Sets>) -> std::sync::RwLockReadGuard<'_, Sets> {
    sets.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl App for BeaconApp {
    fn propose(&mut self, height: u64, _round: u32) -> Block {
        let crosslinks = self.pool.take(height, &self.heads);
        let mut evidence = self.store.unrecorded_evidence(EVIDENCE_MAX).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading evidence to record");
            vec![]
        });
        evidence.retain(|e| !self.recorded.contains(&e.hash()));
        let set_changes = self.pool.take_set_changes(height, &read(&self.sets));
        Block::build(&self.tip, (self.clock)(), crosslinks, evidence, set_changes)
    }
    fn validate(&self, block: &Block) -> bool {
        // A store that cannot say whether evidence was recorded refuses the block: recording
        // an item twice would be a second, different chain rule.
        let recorded =
            |h: &Hash32| self.recorded.contains(h) || self.store.is_recorded(h).unwrap_or(true);
        let checked = block
            .check(&self.tip)
            .and_then(|()| block.check_crosslinks(&self.genesis, &self.heads))
            .and_then(|_| block.check_evidence(&self.genesis, &self.set, recorded))
            .and_then(|()| block.check_set_changes(&read(&self.sets)));
        if let Err(e) = &checked {
            tracing::warn!(height = block.header.height, error = %e, "proposed block refused");
        }
        checked.is_ok()
    }
    fn commit(&mut self, block: &Block) {
        self.tip.height = block.header.height + 1;
        self.tip.previous = block.header.hash();
        // A decided block was checked by more than 2/3 of the weight; its entries are the
        // chain's heads whatever this validator thought of them.
        for entry in &block.body.crosslinks {
            self.heads.insert(entry.city(), entry.head());
        }
        self.pool.prune(&self.heads);
        self.recorded.extend(block.body.evidence.iter().map(|e| e.hash()));
        let h = block.header.height;
        let mut sets = self.sets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        sets.record(h, &block.body.set_changes);
        self.tip.set_hash = sets.at(h + 1).0.hash();
        self.tip.next_set_hash = sets.at(h + 2).0.hash();
        if sets.takes_force_at(h + 1) {
            self.set = consensus_set(sets.at(h + 1).1);
        }
    }
    fn validators(&self, height: u64) -> Option<Vec<(Vec<u8>, u64)>> {
        // Only a height where a new set takes force changes the host's set.
        let sets = read(&self.sets);
        if !sets.takes_force_at(height) {
            return None;
        }
        let (set, _) = sets.at(height);
        Some(set.validators.iter().map(|v| (v.bls_key.to_vec(), v.weight)).collect())
    }
}

/// Why a validator stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// Configuration or stored state is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// The consensus set of the genesis validators, in bitfield order.
pub fn genesis_set(genesis: &ValidGenesis) -> Result<ValidatorSet<Bls>, NodeError> {
    Ok(consensus_set(genesis.validators()))
}

/// The consensus set of a checked validator set, in bitfield order (its keys were validated
/// when the set was checked, so nothing is decoded again).
pub fn consensus_set(set: &urbis_core::validators::TrustedSet) -> ValidatorSet<Bls> {
    let validators = set.keys().iter().zip(set.weights()).map(|(k, w)| Validator::new(*k, *w));
    ValidatorSet::new(validators.collect())
}

/// Runs a validator until `shutdown` completes. Decisions are reported on `decisions`.
pub async fn run(
    config: ValidatorConfig,
    store: Arc<BeaconStore>,
    shutdown: impl std::future::Future<Output = ()>,
    decisions: mpsc::UnboundedSender<Decision>,
) -> Result<(), NodeError> {
    let latest = store.latest_height()?;
    // The sets in force: genesis, changed by every set change the stored chain carried.
    let (set, tip, next_set) = {
        let mut sets = config.sets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *sets = Sets::from_genesis(&config.genesis);
        sets.advance(2);
        let mut tip = Tip {
            height: 1,
            previous: Hash32::ZERO,
            set_hash: Hash32::ZERO,
            next_set_hash: Hash32::ZERO,
        };
        for h in 1..=latest.unwrap_or(0) {
            let d = store.block(h)?.ok_or(NodeError::Invalid(format!("block {h} missing")))?;
            sets.record(h, &d.block.body.set_changes);
            tip.previous = d.block.header.hash();
            tip.height = h + 1;
        }
        tip.set_hash = sets.at(tip.height).0.hash();
        tip.next_set_hash = sets.at(tip.height + 1).0.hash();
        let set = consensus_set(sets.at(tip.height).1);
        let next = consensus_set(sets.at(tip.height + 1).1);
        // This validator's entry in the set in force (or the next) names its TLS key.
        let own_key = config.bls_key.public_key().to_bytes();
        let entry = sets
            .at(tip.height)
            .0
            .validators
            .iter()
            .chain(&sets.at(tip.height + 1).0.validators)
            .find(|v| v.bls_key == own_key);
        if let Some(v) = entry
            && v.tls_fingerprint.0 != config.tls.fingerprint()
        {
            return Err(NodeError::Invalid(format!(
                "the TLS key is not the one the validator set names for {}",
                v.name
            )));
        }
        (set, tip, next)
    };
    let own = Validator::<Bls>::new(config.bls_key.public_key(), 1).address;
    if set.index_of(&own).is_none() && next_set.index_of(&own).is_none() {
        return Err(NodeError::Invalid(
            "this validator's BLS key is not in the set in force (nor the next)".into(),
        ));
    }
    let mut heads = Heads::new();
    for city in &config.genesis.genesis().cities {
        if let Some(at) = store.head(city.id)? {
            heads.insert(city.id, at.head);
        }
    }
    let app = BeaconApp {
        tip,
        clock: config.clock,
        genesis: config.genesis.clone(),
        heads,
        pool: config.pool.clone(),
        store: store.clone(),
        set: set.clone(),
        recorded: Default::default(),
        sets: config.sets.clone(),
    };
    let ctx = Ctx::<Bls>::new(config.genesis.federation_id());
    // Blocks are paced by the genesis interval: a decision is final at once, the next height
    // starts one interval after the previous one started.
    let interval = std::time::Duration::from_millis(
        config.genesis.genesis().parameters.beacon_block_interval_ms,
    );
    let mut host =
        Host::new(ctx, config.bls_key.clone(), own, set.clone(), config.timeouts, tip.height, app)
            .with_block_interval(interval);
    // Recent decided blocks, to serve validators that fall behind.
    if let Some(h) = latest {
        for height in h.saturating_sub(64)..=h {
            if let Some(d) = store.block(height)? {
                let commit = wire::decode_commit::<Bls>(&d.commit)
                    .map_err(|e| NodeError::Invalid(format!("stored certificate: {e}")))?;
                host.restore_decided(height, d.block, commit);
            }
        }
    }
    let mut log = Vec::new();
    for entry in store.wal(tip.height)? {
        log.push(
            wire::decode_entry::<Bls>(&entry)
                .map_err(|e| NodeError::Invalid(format!("write-ahead log: {e}")))?,
        );
    }
    let allowed: Allowed = Arc::new(RwLock::new(Default::default()));
    let (transport, mut inbox) = Transport::bind(&config.tls, config.listen, allowed.clone())?;
    let transport = Arc::new(transport);
    // Peers are configured by address and key; their names (kept by key rotations) let the
    // node follow a peer whose keys rotate.
    let peer_names: Vec<(SocketAddr, Option<String>)> = {
        let sets = read(&config.sets);
        let known: Vec<&urbis_core::validators::Validator> = config
            .genesis
            .genesis()
            .validators
            .validators
            .iter()
            .chain(sets.at(tip.height).0.validators.iter())
            .collect();
        config
            .peers
            .iter()
            .map(|(a, f)| {
                (*a, known.iter().find(|v| v.tls_fingerprint.0 == *f).map(|v| v.name.clone()))
            })
            .collect()
    };
    let mut node = Node {
        store,
        transport,
        peers: config.peers.clone(),
        by_key: HashMap::new(),
        timers: BTreeMap::new(),
        armed: HashMap::new(),
        seq: 0,
        decisions,
        banned: HashMap::new(),
        sets: config.sets.clone(),
        allowed,
        peer_names,
        metrics: config.metrics.clone(),
        genesis: config.genesis.clone(),
    };
    node.follow_sets(tip.height);
    drop(set);
    let first = if log.is_empty() { host.start() } else { host.recover(&log) };
    node.execute(first, None)?;
    tokio::pin!(shutdown);
    loop {
        let next_timer = node.timers.keys().next().map(|(at, _)| *at);
        tokio::select! {
            _ = &mut shutdown => break,
            received = inbox.recv() => {
                let Some((from, bytes)) = received else { break };
                if node.banned.get(&from).is_some_and(|until| Instant::now() < *until) {
                    continue;
                }
                // A message that does not decode is dropped; its sender is still a validator.
                let Ok(message) = wire::decode_message::<Bls>(&bytes) else {
                    tracing::debug!("undecodable message dropped");
                    continue;
                };
                let actions = host.on_message(message);
                let reply_to = node.by_key.get(&from).copied().map(|a| (a, from));
                node.execute(actions, reply_to)?;
            }
            _ = async { tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)).await }, if next_timer.is_some() => {
                if let Some(((_, _), timeout)) = node.timers.pop_first() {
                    node.armed.remove(&timeout);
                    let step = match timeout.kind {
                        crate::consensus::TimeoutKind::Propose => "propose",
                        crate::consensus::TimeoutKind::Prevote => "prevote",
                        crate::consensus::TimeoutKind::Precommit => "precommit",
                        crate::consensus::TimeoutKind::Rebroadcast => "rebroadcast",
                        _ => "other",
                    };
                    node.metrics.timeouts.get_or_create(&crate::metrics::KindLabel { kind: step }).inc();
                    let actions = host.on_timeout(timeout);
                    node.execute(actions, None)?;
                }
            }
        }
    }
    node.transport.shutdown().await;
    Ok(())
}

struct Node {
    store: Arc<BeaconStore>,
    metrics: Arc<crate::metrics::BeaconMetrics>,
    genesis: Arc<ValidGenesis>,
    sets: Arc<RwLock<Sets>>,
    allowed: Allowed,
    peer_names: Vec<(SocketAddr, Option<String>)>,
    transport: Arc<Transport>,
    peers: Vec<(SocketAddr, Fingerprint)>,
    by_key: HashMap<Fingerprint, SocketAddr>,
    timers: BTreeMap<(Instant, u64), Timeout>,
    armed: HashMap<Timeout, (Instant, u64)>,
    seq: u64,
    decisions: mpsc::UnboundedSender<Decision>,
    /// Peers whose messages are ignored until the instant given (they sent bad signatures).
    banned: HashMap<Fingerprint, Instant>,
}

/// How long a peer that sent a bad signature is ignored.
pub const BAN: std::time::Duration = std::time::Duration::from_secs(30);

impl Node {
    /// Carries out the host's actions in order; log entries are made durable before anything
    /// after them leaves the node.
    fn execute(
        &mut self,
        actions: Vec<Action<Bls>>,
        reply_to: Option<(SocketAddr, Fingerprint)>,
    ) -> Result<(), NodeError> {
        let mut unsynced: Vec<(u64, Vec<u8>)> = Vec::new();
        for action in actions {
            match action {
                Action::Persist(height, input) => {
                    let bytes = wire::encode_entry(&input)
                        .map_err(|e| NodeError::Invalid(format!("log entry: {e}")))?;
                    unsynced.push((height.0, bytes));
                }
                Action::Broadcast(message) => {
                    self.flush(&mut unsynced)?;
                    let bytes = encode(&message)?;
                    for (addr, key) in &self.peers {
                        self.send(*addr, *key, bytes.clone());
                    }
                }
                Action::Reply(message) => {
                    self.flush(&mut unsynced)?;
                    if let Some((addr, key)) = reply_to {
                        self.send(addr, key, encode(&message)?);
                    }
                }
                Action::Schedule(timeout, after) => {
                    self.cancel(&timeout);
                    self.seq += 1;
                    let at = (Instant::now() + after, self.seq);
                    self.timers.insert(at, timeout);
                    self.armed.insert(timeout, at);
                }
                Action::Cancel(timeout) => self.cancel(&timeout),
                Action::Misbehaved => {
                    if let Some((addr, key)) = reply_to {
                        tracing::warn!(%addr, "peer sent a bad signature; ignoring it for a while");
                        self.banned.insert(key, Instant::now() + BAN);
                    }
                }
                Action::CancelAll => {
                    self.timers.clear();
                    self.armed.clear();
                }
                Action::Evidence(evidence) => {
                    self.flush(&mut unsynced)?;
                    for e in &evidence {
                        let kind = match e.kind {
                            crate::consensus::evidence::EvidenceKind::DoublePrevote => {
                                "double_prevote"
                            }
                            crate::consensus::evidence::EvidenceKind::DoubleProposal => {
                                "double_proposal"
                            }
                        };
                        self.metrics
                            .evidence
                            .get_or_create(&crate::metrics::KindLabel { kind })
                            .inc();
                    }
                    let height = evidence.first().map_or(0, |e| e.height);
                    tracing::warn!(count = evidence.len(), height, "misbehaviour evidence kept");
                    self.store.add_evidence(height, &evidence)?;
                }
                Action::Decided(height, block, commit) => {
                    self.flush(&mut unsynced)?;
                    let set = consensus_set(read(&self.sets).at(height.0).1);
                    let certificate = fold_certificate(&set, &commit)
                        .ok_or(NodeError::Invalid("a decision that does not fold".into()))?;
                    let commit = wire::encode_commit::<Bls>(&commit)
                        .map_err(|e| NodeError::Invalid(format!("certificate: {e}")))?;
                    let hash = block.header.hash();
                    self.store
                        .commit(height.0, &DecidedBlock { block: *block, certificate, commit })?;
                    tracing::debug!(height = height.0, "decided");
                    self.follow_sets(height.0 + 1);
                    self.count_decision(height.0);
                    let _ = self.decisions.send(Decision { height: height.0, block: hash });
                }
            }
        }
        self.flush(&mut unsynced)
    }

    /// Counts a decided block: height, round, crosslinks and each city's finality lag.
    fn count_decision(&self, height: u64) {
        let m = &self.metrics;
        m.height.set(height as i64);
        let Ok(Some(d)) = self.store.block(height) else { return };
        if let Ok(commit) = wire::decode_commit::<Bls>(&d.commit) {
            m.decision_round.set(i64::from(commit.round.as_u32().unwrap_or(0)));
        }
        m.crosslinks.inc_by(d.block.body.crosslinks.len() as u64);
        m.set_changes.inc_by(d.block.body.set_changes.len() as u64);
        for e in &d.block.body.crosslinks {
            if let Some(city) = self.genesis.city(e.city()) {
                let lag = d.block.header.time_ms.saturating_sub(e.header.header.time_ms);
                m.finality_lag
                    .get_or_create(&crate::metrics::CityLabel { city: city.name.clone() })
                    .set(lag as f64 / 1e3);
            }
        }
    }

    /// Allows the keys of the sets in force at `height` and the one after, and expects each
    /// configured peer's current key at its address.
    fn follow_sets(&mut self, height: u64) {
        let sets = read(&self.sets);
        let (now, next) = (sets.at(height).0, sets.at(height + 1).0);
        let keys: std::collections::BTreeSet<Fingerprint> =
            now.validators.iter().chain(&next.validators).map(|v| v.tls_fingerprint.0).collect();
        *self.allowed.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        for ((_, key), (_, name)) in self.peers.iter_mut().zip(&self.peer_names) {
            if let Some(v) =
                name.as_ref().and_then(|n| now.validators.iter().find(|v| &v.name == n))
            {
                *key = v.tls_fingerprint.0;
            }
        }
        self.by_key = self.peers.iter().map(|(a, f)| (*f, *a)).collect();
    }

    fn flush(&mut self, unsynced: &mut Vec<(u64, Vec<u8>)>) -> Result<(), NodeError> {
        // Entries of one call belong to consecutive heights; append each height's run.
        let mut start = 0;
        while start < unsynced.len() {
            let height = unsynced[start].0;
            let end = unsynced[start..]
                .iter()
                .position(|(h, _)| *h != height)
                .map_or(unsynced.len(), |p| start + p);
            let entries: Vec<Vec<u8>> =
                unsynced[start..end].iter().map(|(_, b)| b.clone()).collect();
            self.store.append_wal(height, &entries)?;
            start = end;
        }
        unsynced.clear();
        Ok(())
    }

    fn cancel(&mut self, timeout: &Timeout) {
        if let Some(at) = self.armed.remove(timeout) {
            self.timers.remove(&at);
        }
    }

    /// Sends without waiting: a slow or absent peer never stalls consensus.
    fn send(&self, addr: SocketAddr, key: Fingerprint, bytes: Vec<u8>) {
        let transport = self.transport.clone();
        tokio::spawn(async move {
            if let Err(e) = transport.send(addr, &key, &bytes).await {
                tracing::debug!(%addr, error = %e, "send failed");
            }
        });
    }
}

fn encode(message: &Message<Bls>) -> Result<Vec<u8>, NodeError> {
    wire::encode_message(message).map_err(|e| NodeError::Invalid(format!("message: {e}")))
}

/// The address of a BLS key in consensus.
pub fn address_of(key: &bls::PublicKey) -> Address {
    Validator::<Bls>::new(*key, 1).address
}
