//! Finality latency: from a shard header being sealed to the first certified beacon block that
//! covers it, with n validators in this process — each with its own RocksDB, QUIC endpoint
//! with mutual TLS on loopback, BLS keys and the real consensus host — and four emulated
//! cities that seal a header every `URBIS_FINALITY_SEAL_MS` (default 100) and offer each to
//! every validator's pool exactly as `POST /v1/beacon/crosslinks` does (the HTTP hop itself is
//! left out). A city learns its crosslinked head from decided blocks, as a shard's follower
//! does.
//!
//! Reports latency p50/p99, CPU per beacon block (the whole process: n validators and the
//! emulated cities) and the certificate's size beside 96 + ⌈n/8⌉.
//!
//! `cargo xtask bench` runs it; `URBIS_FINALITY_VALIDATORS=4,16` and
//! `URBIS_FINALITY_SECONDS=30` choose what.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use urbis_beacon::node::{Decision, run};
use urbis_beacon::store::BeaconStore;
use urbis_core::encoding::encode;
use urbis_core::record::CityId;
use urbis_core::testkit::{ShardChain, information_record};

const CITIES: u32 = 4;

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 10) // USER_HZ is 100 on Linux.
}

struct Report {
    validators: usize,
    blocks: u64,
    covered: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_per_block: Duration,
    certificate_bytes: usize,
    signers_bytes: usize,
}

async fn measure(n: usize, seconds: u64, seal_every: Duration) -> Report {
    let cluster = common::Cluster::new("finality", CITIES, n);
    let fed = &cluster.fed;
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut stores = Vec::new();
    let mut pools = Vec::new();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    let (decided_tx, mut decided_rx) = mpsc::unbounded_channel::<Decision>();
    for (i, dir) in dirs.iter().enumerate() {
        let store = Arc::new(BeaconStore::open(&dir.path().join("db")).unwrap());
        let config = cluster.config(i);
        let pool = config.pool.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        // Validator 0's decisions drive the measurement; the others' are dropped.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = decided_tx.clone();
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if i == 0 {
                    let _ = out.send(d);
                }
            }
        });
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            run(
                config,
                s,
                async {
                    let _ = stopped.await;
                },
                tx,
            )
            .await
            .unwrap();
        }));
        stores.push(store);
        pools.push(pool);
        stops.push(stop);
    }
    let mut shards: Vec<ShardChain> = (0..CITIES).map(|c| ShardChain::new(CityId(c))).collect();
    // Per city: seal instants of headers not yet covered, and the crosslinked head it knows.
    let mut sealed: Vec<BTreeMap<u64, Instant>> = vec![BTreeMap::new(); CITIES as usize];
    let mut heads: Vec<Option<u64>> = vec![None; CITIES as usize];
    let mut latencies = Vec::new();
    let warmup = Instant::now() + Duration::from_secs(3);
    let end = warmup + Duration::from_secs(seconds);
    let mut tick = tokio::time::interval(seal_every);
    let (mut blocks, mut cpu_start, mut first_block, mut certificate_bytes, mut signers_bytes) =
        (0u64, Duration::ZERO, None::<u64>, 0, 0);
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {
                for c in 0..CITIES as usize {
                    let n_records = shards[c].blocks.len() as u64;
                    shards[c].seal(fed, vec![information_record(CityId(c as u32), n_records)], &[]);
                    let m = shards[c].headers.len() as u64 - 1;
                    sealed[c].insert(m, Instant::now());
                    let entry = shards[c].crosslink_entry(m, heads[c]);
                    for (pool, store) in pools.iter().zip(&stores) {
                        // A validator that crosslinked something else refuses; the city offers
                        // its next header once it has learnt its head.
                        let _ = pool.offer(store, entry.clone());
                    }
                }
            }
            Some(d) = decided_rx.recv() => {
                let now = Instant::now();
                let block = stores[0].block(d.height).unwrap().unwrap();
                let measuring = now >= warmup;
                if measuring && first_block.is_none() {
                    first_block = Some(d.height);
                    cpu_start = cpu_time();
                }
                if measuring {
                    blocks += 1;
                    certificate_bytes = encode(&block.certificate).len();
                    signers_bytes = block.certificate.signers.len();
                }
                for entry in &block.block.body.crosslinks {
                    let c = entry.city().0 as usize;
                    let m = entry.header.header.height;
                    heads[c] = Some(m);
                    let covered: Vec<u64> = sealed[c].range(..=m).map(|(h, _)| *h).collect();
                    for h in covered {
                        let at = sealed[c].remove(&h).unwrap();
                        if measuring && at >= warmup {
                            latencies.push(now - at);
                        }
                    }
                }
            }
        }
    }
    let cpu = cpu_time().saturating_sub(cpu_start);
    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        t.await.unwrap();
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Report {
        validators: n,
        blocks,
        covered: latencies.len(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or_default(),
        cpu_per_block: if blocks > 0 { cpu / blocks as u32 } else { Duration::ZERO },
        certificate_bytes,
        signers_bytes,
    }
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: benchmarks are measured in
    // release only, so there is nothing to do here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("finality: run with `cargo bench` (release) to measure");
        return;
    }
    let sizes: Vec<usize> = std::env::var("URBIS_FINALITY_VALIDATORS")
        .unwrap_or_else(|_| "4,16".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seconds: u64 =
        std::env::var("URBIS_FINALITY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let seal_ms: u64 =
        std::env::var("URBIS_FINALITY_SEAL_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "| validators | beacon blocks | headers covered | p50 | p99 | max | CPU per block | certificate (borsh) | 96 + ⌈n/8⌉ |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let r = runtime.block_on(measure(n, seconds, Duration::from_millis(seal_ms)));
        println!(
            "| {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} ms | {} B | {} B (+4 B length prefix) |",
            r.validators,
            r.blocks,
            r.covered,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3,
            r.cpu_per_block.as_secs_f64() * 1e3,
            r.certificate_bytes,
            96 + r.signers_bytes,
        );
        assert_eq!(r.signers_bytes, r.validators.div_ceil(8), "bitfield is ⌈n/8⌉ bytes");
    }
}
