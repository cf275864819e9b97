//! Deterministic simulation of beacon consensus: N validators run the real host and Malachite
//! core in virtual time over a fake network with random delays, drops, duplicates, reordering,
//! partitions that heal and crash-restarts that keep the write-ahead log; one validator may be
//! Byzantine (equivocating votes and proposals, forged and garbage messages).
//!
//! Checked on every run: no two honest validators decide different blocks at one height
//! (safety), and once the faults stop every honest validator makes progress (liveness).
//!
//! `URBIS_SIM_SEEDS=n` runs n seeds (default 1 000 with the stand-in scheme); `URBIS_SIM_SEED=s`
//! reruns one seed, which reproduces its run exactly.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod scheme;

use malachitebft_core_types::{SignedMessage, Timeout};
use scheme::Mac;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use urbis_beacon::block::{Block, Tip};
use urbis_beacon::consensus::wire;
use urbis_beacon::consensus::{
    Action, Address, App, BlockId, Ctx, Host, Input, LinearTimeouts, Message, Scheme, Validator,
    ValidatorSet,
};
use urbis_core::crosslink::CrosslinkEntry;
use urbis_core::hash::{Domain, Hash32};
use urbis_core::header::{SHARD_HEADER_VERSION, ShardHeader, SignedShardHeader};
use urbis_core::record::CityId;

/// SplitMix64: small, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() as f64 / u64::MAX as f64) < p
    }
}

/// The application: builds and checks blocks against the chain it has committed.
struct SimApp {
    tip: Tip,
    now_ms: u64,
}

impl App for SimApp {
    fn propose(&mut self, height: u64, _round: u32) -> Block {
        // Entries the structural check accepts (the simulator is about agreement; crosslink
        // entries are checked by urbis-core's tests and the process tests).
        let crosslinks = (0..3u32)
            .map(|c| CrosslinkEntry {
                header: SignedShardHeader {
                    header: ShardHeader {
                        version: SHARD_HEADER_VERSION,
                        city: CityId(c),
                        height,
                        time_ms: self.now_ms,
                        previous: Hash32::ZERO,
                        records_root: Domain::ShardHeader
                            .hash(&[height.to_le_bytes(), u64::from(c).to_le_bytes()].concat()),
                        records_count: 0,
                        state_root: Hash32::ZERO,
                        history_root: Hash32::ZERO,
                    },
                    signature: [0; 64],
                },
                extension: None,
            })
            .collect();
        Block::build(&self.tip, self.now_ms, crosslinks, vec![], vec![])
    }
    fn validate(&self, block: &Block) -> bool {
        block.check(&self.tip).is_ok()
    }
    fn commit(&mut self, block: &Block) {
        self.tip.height = block.header.height + 1;
        self.tip.previous = block.header.hash();
    }
}

enum Event<S: Scheme> {
    Deliver { from: usize, to: usize, message: Box<Message<S>> },
    Timer { node: usize, timeout: Timeout, generation: u64 },
    Crash(usize),
    Restart(usize),
}

struct Node<S: Scheme> {
    host: Option<Host<S, SimApp>>,
    key: S::PrivateKey,
    address: Address,
    timers: HashMap<Timeout, u64>,
    /// Durable: the write-ahead log by height, and the decided chain.
    wal: BTreeMap<u64, Vec<Input<Ctx<S>>>>,
    chain: BTreeMap<u64, (Block, urbis_beacon::consensus::MalachiteCertificate<Ctx<S>>)>,
}

/// How a run misbehaves.
#[derive(Clone, Copy, Debug)]
struct Faults {
    drop: f64,
    duplicate: f64,
    max_delay_ms: u64,
    partitions: bool,
    crashes: bool,
    byzantine: bool,
    /// Faults stop here; liveness is judged after.
    until: Duration,
    end: Duration,
}

struct Sim<S: Scheme> {
    rng: Rng,
    now: Duration,
    seq: u64,
    queue: BTreeMap<(Duration, u64), Event<S>>,
    nodes: Vec<Node<S>>,
    ctx: Ctx<S>,
    set: ValidatorSet<S>,
    timeouts: LinearTimeouts,
    genesis_tip: Tip,
    faults: Faults,
    /// Nodes on side A of the current partition (none: no partition).
    partition: Option<Vec<bool>>,
    /// The first block decided at each height by an honest validator.
    decided: BTreeMap<u64, BlockId>,
    byzantine: Option<usize>,
    deliveries: u64,
    /// Honest validators' heights when the faults stopped.
    heights_at_heal: Option<Vec<u64>>,
    /// Check that every message sent and entry logged survives its wire encoding, and that
    /// mutated bytes decode without panicking; counts the checks.
    check_wire: Option<u64>,
    /// Messages refused as misbehaviour (all from the Byzantine validator).
    blamed: u64,
    /// Evidence kept by honest validators (all against the Byzantine one, all verifying).
    evidence: u64,
}

impl<S: Scheme> Sim<S> {
    fn push(&mut self, at: Duration, event: Event<S>) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn new(
        seed: u64,
        keys: Vec<(S::PrivateKey, S::PublicKey)>,
        faults: Faults,
        tip: Tip,
        federation_id: Hash32,
    ) -> Self {
        let validators: Vec<Validator<S>> =
            keys.iter().map(|(_, pk)| Validator::new(pk.clone(), 1)).collect();
        let set = ValidatorSet::new(validators.clone());
        let ctx = Ctx::new(federation_id);
        // Timeouts sized to the network's delay bound (the partial-synchrony assumption under
        // which Tendermint is live): a round can complete once the faults stop.
        let d = faults.max_delay_ms;
        let timeouts = LinearTimeouts {
            propose: Duration::from_millis(2 * d + 100),
            propose_delta: Duration::from_millis(d / 2 + 20),
            prevote: Duration::from_millis(d + 50),
            prevote_delta: Duration::from_millis(d / 2 + 20),
            precommit: Duration::from_millis(d + 50),
            precommit_delta: Duration::from_millis(d / 2 + 20),
            rebroadcast: Duration::from_millis(4 * d + 200),
            max_timeout: Duration::from_secs(5),
        };
        let nodes = keys
            .into_iter()
            .zip(validators)
            .map(|((key, _), v)| Node {
                host: None,
                key,
                address: v.address,
                timers: HashMap::new(),
                wal: BTreeMap::new(),
                chain: BTreeMap::new(),
            })
            .collect();
        let mut rng = Rng(seed);
        let byzantine = faults.byzantine.then(|| rng.below(4) as usize);
        let mut sim = Sim {
            rng,
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            ctx,
            set,
            timeouts,
            genesis_tip: tip,
            faults,
            partition: None,
            decided: BTreeMap::new(),
            byzantine,
            deliveries: 0,
            heights_at_heal: None,
            check_wire: None,
            blamed: 0,
            evidence: 0,
        };
        for i in 0..sim.nodes.len() {
            sim.boot(i);
        }
        sim
    }

    /// Starts (or restarts after a crash) node `i` from what it kept durable.
    fn boot(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut tip = self.genesis_tip;
        if let Some((_, (block, _))) = node.chain.last_key_value() {
            tip.height = block.header.height + 1;
            tip.previous = block.header.hash();
        }
        let app = SimApp { tip, now_ms: self.now.as_millis() as u64 };
        let mut host = Host::new(
            self.ctx.clone(),
            node.key.clone(),
            node.address,
            self.set.clone(),
            self.timeouts,
            tip.height,
            app,
        );
        for (h, (block, cert)) in &node.chain {
            host.restore_decided(*h, block.clone(), cert.clone());
        }
        let wal = node.wal.get(&tip.height).cloned().unwrap_or_default();
        let actions = if wal.is_empty() { host.start() } else { host.recover(&wal) };
        let node = &mut self.nodes[i];
        node.timers.clear();
        node.host = Some(host);
        self.apply(i, None, actions);
    }

    fn faulty(&self) -> bool {
        self.now < self.faults.until
    }

    fn wire_check(&mut self, bytes: Vec<u8>, decode: fn(&[u8]) -> Option<Vec<u8>>) {
        let Some(n) = self.check_wire.as_mut() else { return };
        *n += 1;
        assert_eq!(decode(&bytes).as_deref(), Some(bytes.as_slice()), "wire round trip");
        // Hostile variants: a flipped byte, a truncation, a trailing byte.
        let mut flipped = bytes.clone();
        let i = self.rng.below(flipped.len() as u64) as usize;
        flipped[i] ^= 1 << self.rng.below(8);
        let _ = decode(&flipped);
        let _ = decode(&bytes[..bytes.len() / 2]);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None, "trailing bytes are refused");
    }

    fn send(&mut self, from: usize, to: usize, message: Message<S>) {
        if self.check_wire.is_some() {
            let bytes = wire::encode_message(&message).unwrap();
            self.wire_check(bytes, |b| {
                wire::decode_message::<S>(b).ok().map(|m| wire::encode_message(&m).unwrap())
            });
        }
        if self.faulty() {
            if self.rng.chance(self.faults.drop) {
                return;
            }
            if let Some(side) = &self.partition
                && side[from] != side[to]
            {
                return;
            }
        }
        let copies = if self.faulty() && self.rng.chance(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(1 + self.rng.below(self.faults.max_delay_ms));
            let at = self.now + delay;
            self.push(at, Event::Deliver { from, to, message: Box::new(message.clone()) });
        }
    }

    fn apply(&mut self, i: usize, reply_to: Option<usize>, actions: Vec<Action<S>>) {
        for action in actions {
            match action {
                Action::Persist(height, input) => {
                    if self.check_wire.is_some() {
                        let bytes = wire::encode_entry(&input).unwrap();
                        self.wire_check(bytes, |b| {
                            wire::decode_entry::<S>(b).ok().map(|e| wire::encode_entry(&e).unwrap())
                        });
                    }
                    self.nodes[i].wal.entry(height.0).or_default().push(input)
                }
                Action::Broadcast(message) => {
                    for j in 0..self.nodes.len() {
                        if j != i {
                            let m = self.tamper(i, j, message.clone());
                            self.send(i, j, m);
                        }
                    }
                }
                Action::Reply(message) => {
                    if let Some(j) = reply_to {
                        self.send(i, j, message);
                    }
                }
                Action::Schedule(timeout, after) => {
                    self.seq += 1;
                    let generation = self.seq;
                    self.nodes[i].timers.insert(timeout, generation);
                    let at = self.now + after;
                    self.push(at, Event::Timer { node: i, timeout, generation });
                }
                Action::Cancel(timeout) => {
                    self.nodes[i].timers.remove(&timeout);
                }
                Action::CancelAll => self.nodes[i].timers.clear(),
                Action::Evidence(evidence) => {
                    for e in evidence {
                        let byzantine = self.byzantine.map(|b| self.nodes[b].address.0);
                        assert_eq!(
                            Some(e.validator),
                            byzantine,
                            "evidence against an honest validator"
                        );
                        assert!(
                            e.verify(&self.ctx.federation_id, &self.set),
                            "evidence that does not verify"
                        );
                        self.evidence += 1;
                    }
                }
                Action::Misbehaved => {
                    // Only the Byzantine validator's messages may be refused as misbehaviour.
                    assert!(
                        reply_to.is_some() && reply_to == self.byzantine,
                        "validator {i} blamed {reply_to:?}, the Byzantine one is {:?}",
                        self.byzantine
                    );
                    self.blamed += 1;
                }
                Action::Decided(height, block, cert) => {
                    let id = BlockId(block.header.hash());
                    let node = &mut self.nodes[i];
                    node.chain.insert(height.0, (*block, cert));
                    node.wal.retain(|h, _| *h > height.0);
                    if Some(i) != self.byzantine {
                        let first = *self.decided.entry(height.0).or_insert(id);
                        assert_eq!(
                            first, id,
                            "SAFETY: validator {i} decided {id} at height {height}, another honest validator decided {first}"
                        );
                    }
                }
            }
        }
    }

    /// The Byzantine validator's outgoing messages: equivocation (a different, validly signed
    /// vote or proposal to some peers), forged signatures of other validators, garbage.
    fn tamper(&mut self, from: usize, to: usize, message: Message<S>) -> Message<S> {
        if Some(from) != self.byzantine {
            return message;
        }
        let key = self.nodes[from].key.clone();
        let fed = self.ctx.federation_id;
        match message {
            Message::Vote(v) if self.rng.chance(0.5) => {
                let mut vote = v.message.clone();
                let forged = self.rng.chance(0.3);
                if forged {
                    // Claim to be someone else, with our signature: must be refused.
                    vote.address = self.nodes[(from + 1 + to) % self.nodes.len()].address;
                } else {
                    vote.value = malachitebft_core_types::NilOrVal::Val(BlockId(
                        Domain::BeaconHeader.hash(&self.rng.next().to_le_bytes()),
                    ));
                }
                let root = urbis_core::beacon::vote_signing_root(&fed, &vote.message());
                Message::Vote(SignedMessage::new(vote, S::sign(&key, &root)))
            }
            Message::Proposal(p) if self.rng.chance(0.5) => {
                let mut proposal = p.message.clone();
                proposal.value.header.time_ms ^= 1 + self.rng.below(1000);
                let root = urbis_core::beacon::proposal_signing_root(&fed, &proposal.message());
                Message::Proposal(SignedMessage::new(proposal, S::sign(&key, &root)))
            }
            Message::Decided(mut block, cert) if self.rng.chance(0.5) => {
                block.header.time_ms ^= 7;
                Message::Decided(block, cert)
            }
            other => other,
        }
    }

    fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.queue.pop_first() else { return false };
        if at > self.faults.end {
            return false;
        }
        self.now = at;
        match event {
            Event::Deliver { from, to, message } => {
                let Some(host) = self.nodes[to].host.as_mut() else { return true };
                host.app.now_ms = at.as_millis() as u64;
                self.deliveries += 1;
                let actions = host.on_message(*message);
                self.apply(to, Some(from), actions);
            }
            Event::Timer { node, timeout, generation } => {
                if self.nodes[node].timers.get(&timeout) != Some(&generation) {
                    return true;
                }
                self.nodes[node].timers.remove(&timeout);
                let Some(host) = self.nodes[node].host.as_mut() else { return true };
                host.app.now_ms = at.as_millis() as u64;
                let actions = host.on_timeout(timeout);
                self.apply(node, None, actions);
            }
            Event::Crash(i) => {
                self.nodes[i].host = None;
                self.nodes[i].timers.clear();
            }
            Event::Restart(i) => {
                if self.nodes[i].host.is_none() {
                    self.boot(i);
                }
            }
        }
        true
    }

    fn schedule_faults(&mut self) {
        let until = self.faults.until.as_millis() as u64;
        if self.faults.crashes {
            for _ in 0..1 + self.rng.below(3) {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                let at = self.rng.below(until.saturating_sub(500).max(1));
                let down = 50 + self.rng.below(600);
                self.push(Duration::from_millis(at), Event::Crash(i));
                self.push(Duration::from_millis((at + down).min(until)), Event::Restart(i));
            }
        }
    }

    fn run(&mut self) {
        self.schedule_faults();
        let mut next_partition = Duration::ZERO;
        while self.step() {
            if self.faults.partitions && self.now >= next_partition && self.faulty() {
                self.partition = if self.partition.is_some() || self.rng.chance(0.4) {
                    None
                } else {
                    Some((0..self.nodes.len()).map(|_| self.rng.chance(0.5)).collect())
                };
                next_partition = self.now + Duration::from_millis(100 + self.rng.below(700));
            }
            if !self.faulty() {
                self.partition = None;
                if self.heights_at_heal.is_none() {
                    self.heights_at_heal = Some(self.honest_heights());
                }
            }
        }
    }

    fn honest_heights(&self) -> Vec<u64> {
        (0..self.nodes.len())
            .filter(|i| Some(*i) != self.byzantine)
            .map(|i| self.nodes[i].chain.keys().next_back().copied().unwrap_or(0))
            .collect()
    }
}

fn faults_for(seed: u64) -> Faults {
    let mut rng = Rng(seed ^ 0xA5A5_A5A5);
    Faults {
        drop: [0.0, 0.05, 0.2][rng.below(3) as usize],
        duplicate: [0.0, 0.1][rng.below(2) as usize],
        max_delay_ms: [5, 30, 120][rng.below(3) as usize],
        partitions: rng.chance(0.5),
        crashes: rng.chance(0.5),
        byzantine: rng.chance(0.5),
        until: Duration::from_millis(2_000),
        end: Duration::from_millis(
            std::env::var("URBIS_SIM_END_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(8_000),
        ),
    }
}

fn tip() -> Tip {
    Tip {
        height: 1,
        previous: Hash32::ZERO,
        set_hash: Domain::ValidatorSet.hash(b"sim set"),
        next_set_hash: Domain::ValidatorSet.hash(b"sim set"),
    }
}

/// Runs one seed; panics with the seed on any violation.
fn run_seed<S: Scheme>(seed: u64, keys: Vec<(S::PrivateKey, S::PublicKey)>, tip: Tip) -> Sim<S> {
    let faults = faults_for(seed);
    let mut sim = Sim::new(seed, keys, faults, tip, Domain::Genesis.hash(b"sim federation"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.run();
        sim
    }));
    match result {
        Ok(sim) => {
            // Liveness: within six seconds of the faults stopping, every honest validator gets
            // at least two blocks past the highest honest height at that moment.
            let heights = sim.honest_heights();
            if std::env::var("URBIS_SIM_DEBUG").is_ok() {
                for (i, n) in sim.nodes.iter().enumerate() {
                    if let Some(h) = &n.host {
                        println!(
                            "node {i}: height {} round {:?} byzantine {}",
                            h.height(),
                            h.round(),
                            Some(i) == sim.byzantine
                        );
                    }
                }
            }
            let healed = sim.heights_at_heal.clone().unwrap_or_default();
            let target = healed.iter().max().copied().unwrap_or(0) + 2;
            assert!(
                heights.iter().all(|h| *h >= target),
                "LIVENESS: seed {seed} ({faults:?}): honest heights {heights:?} at the end, {healed:?} when the faults stopped; rerun with URBIS_SIM_SEED={seed}"
            );
            sim
        }
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed} ({faults:?}) failed: {msg}\nrerun with URBIS_SIM_SEED={seed}");
        }
    }
}

fn mac_keys() -> Vec<([u8; 32], [u8; 32])> {
    (0..4u8).map(|i| ([i + 1; 32], [i + 1; 32])).collect()
}

#[test]
fn honest_validators_never_decide_different_blocks_and_progress_once_faults_stop() {
    let seeds: Vec<u64> = match std::env::var("URBIS_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("URBIS_SIM_SEED is a number")],
        Err(_) => {
            let n =
                std::env::var("URBIS_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000);
            (0..n).collect()
        }
    };
    let mut heights = 0u64;
    let mut deliveries = 0u64;
    let mut blamed = 0u64;
    let mut evidence = 0u64;
    let mut byzantine_runs = 0u64;
    for seed in &seeds {
        let sim = run_seed::<Mac>(*seed, mac_keys(), tip());
        heights += sim.decided.len() as u64;
        deliveries += sim.deliveries;
        blamed += sim.blamed;
        evidence += sim.evidence;
        byzantine_runs += u64::from(sim.byzantine.is_some());
    }
    println!(
        "simulated {} seeds: {heights} heights decided, {deliveries} messages delivered, {blamed} messages of the Byzantine validator refused as misbehaviour, {evidence} pieces of evidence against it",
        seeds.len()
    );
    assert!(heights >= 3 * seeds.len() as u64);
    // Honest validators are never blamed (asserted on every refusal); the Byzantine one is.
    assert!(byzantine_runs == 0 || blamed > 0, "the Byzantine validator was never caught");
    assert!(
        byzantine_runs == 0 || evidence > 0,
        "no evidence of the Byzantine validator's equivocation"
    );
}

/// A few seeds with real BLS: the same runs, and every decision folds into a commit certificate
/// that the core verifier accepts against the genesis validator set.
#[test]
fn with_real_bls_every_decision_folds_into_a_certificate_the_core_verifies() {
    use urbis_beacon::consensus::{Bls, fold_certificate};
    let fed = urbis_core::testkit::Federation::new("sim", 1, 4);
    let keys: Vec<_> =
        fed.validator_keys.iter().map(|k| (Arc::new(k.clone()), k.public_key())).collect();
    let set_hash = fed.genesis.genesis().validators.hash();
    let tip = Tip { height: 1, previous: Hash32::ZERO, set_hash, next_set_hash: set_hash };
    // Real BLS in a debug build costs milliseconds per signature: one faulty seed, shorter.
    for seed in [1u64] {
        let mut faults = faults_for(seed);
        faults.until = Duration::from_millis(1_000);
        faults.end = Duration::from_millis(2_500);
        let mut sim = Sim::<Bls>::new(seed, keys.clone(), faults, tip, fed.id());
        sim.run();
        let honest = (0..sim.nodes.len()).find(|i| Some(*i) != sim.byzantine).unwrap();
        let node = &sim.nodes[honest];
        assert!(node.chain.len() >= 3, "seed {seed}: only {} blocks", node.chain.len());
        for (height, (block, cert)) in &node.chain {
            let folded = fold_certificate(&sim.set, cert).expect("BLS certificates fold");
            assert_eq!(folded.signers.len(), 1, "4 validators: one bitfield byte");
            urbis_core::beacon::verify_certificate(
                &fed.id(),
                fed.genesis.validators(),
                &block.header,
                &folded,
            )
            .unwrap_or_else(|e| panic!("seed {seed} height {height}: {e}"));
        }
    }
}

/// Every message sent and every log entry written in faulty runs survives its wire encoding
/// byte for byte; flipped, truncated and extended bytes are refused or decode to something else,
/// never a panic.
#[test]
fn every_message_and_log_entry_of_a_run_survives_the_wire_and_hostile_bytes_do_not_panic() {
    let mut checked = 0;
    for seed in [3u64, 4, 5, 19] {
        let mut sim =
            Sim::<Mac>::new(seed, mac_keys(), faults_for(seed), tip(), Domain::Genesis.hash(b"w"));
        sim.check_wire = Some(0);
        sim.run();
        checked += sim.check_wire.unwrap();
    }
    assert!(checked > 1_000, "only {checked} messages and entries checked");
}
