//! Open-loop load generator against a running shard (real HTTP, real RocksDB), beside the raw
//! RocksDB `WriteBatch` rate for the same bytes with the same sync policy, in the same run.
//!
//! `cargo bench -p urbis-benches --bench ingest` (release). Reports durable ingest through the
//! batch API (records/s, ratio to raw RocksDB), acknowledgement latency percentiles from an
//! HdrHistogram, fsyncs/s (one per sealed block), and the single-record API's request rate.
#![allow(missing_docs, clippy::disallowed_methods, clippy::unwrap_used)]

use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use urbis_benches::report;

/// The allocator `urbis` runs with, so the in-process node measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORD_BYTES: usize = 300;
/// The single-record phase's offered rate: above the 10 000 req/s goal.
const SINGLE_OFFERED: f64 = 11_000.0;
const BATCH: usize = 1_000;

/// Raw RocksDB: synced WriteBatches of 1 000 values of 300 bytes.
fn raw_rocksdb_records_per_second(dir: &std::path::Path, seconds: f64) -> f64 {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir).unwrap();
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let value = vec![7u8; RECORD_BYTES];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let mut batch = rocksdb::WriteBatch::default();
        for i in 0..BATCH as u64 {
            batch.put(blake3::hash(&(n + i).to_le_bytes()).as_bytes(), &value);
        }
        db.write_opt(batch, &wo).unwrap();
        n += BATCH as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A request body of `count` information records of about 300 bytes each (encoded), numbered
/// from `first` so every record is distinct. Built as text: the generator must stay cheap beside
/// the node it loads.
fn body(subject: &str, first: u64, count: usize) -> String {
    use std::fmt::Write;
    let pad = "x".repeat(180);
    let mut s = String::with_capacity(count * 330 + 16);
    s.push_str("{\"records\":[");
    for i in 0..count as u64 {
        if i > 0 {
            s.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{{\"kind\":\"information\",\"subject\":\"{subject}\",\"payload\":{{\"dataset\":\"load\",\"media_type\":\"application/json\",\"content\":{{\"n\":{},\"pad\":\"{pad}\"}}}}}}",
            first + i
        );
    }
    s.push_str("]}");
    s
}

/// Whether a response acknowledges the request: a success status and the whole answer read
/// (a client that drops an unread answer also loses its connection).
async fn acknowledged(r: reqwest::Result<reqwest::Response>) -> bool {
    match r {
        Ok(r) if r.status().is_success() => {
            r.bytes().await.is_ok_and(|b| b.starts_with(b"{\"records\":["))
        }
        _ => false,
    }
}

struct Shard {
    url: String,
    token: String,
    _dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_shard() -> Shard {
    let dir = tempfile::tempdir().unwrap();
    let fed = urbis_core::testkit::Federation::new("ingest-bench", 1, 4);
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, serde_json::to_vec(fed.genesis.genesis()).unwrap()).unwrap();
    let key = dir.path().join("sealing.key");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .unwrap();
        f.write_all(hex::encode(urbis_core::testkit::seed("ingest-bench/city0")).as_bytes())
            .unwrap();
    }
    let tokens = dir.path().join("tokens.json");
    let (token, _) = urbis_shard::tokens::issue(
        &tokens,
        "load",
        vec![urbis_core::record::RecordKind::Information],
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = urbis_shard::node::ShardConfig {
        city: "city0".into(),
        genesis,
        data_dir: dir.path().join("data"),
        listen: ([127, 0, 0, 1], port).into(),
        sealing_key_file: key,
        tokens_file: tokens,
        block_records_max: 10_000,
        block_bytes_max: 16 << 20,
        batch_records_max: BATCH,
        body_bytes_max: 4 << 20,
        request_timeout_ms: 60_000,
        queue: 4_096,
        // The benchmark measures capacity: no per-token limit.
        rate_limit_per_second: 0,
        rate_limit_burst: 1,
        beacon_apis: vec![],
        beacon_contact_timeout_ms: 30_000,
        packet_timeout_blocks: urbis_shard::ledger::DEFAULT_PACKET_TIMEOUT_BLOCKS,
        shutdown_grace_ms: 20_000,
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(urbis_shard::node::run(config, async move {
        let _ = rx.await;
    }));
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Shard { url, token, _dir: dir, stop, task }
}

/// Connections the open loop keeps to the node, as a fixed-connection load generator (wrk2)
/// does: a request that finds them all busy waits for one, and that wait counts in its latency.
/// (Opening a connection per excess request instead measured the kernel's search for a free
/// ephemeral port among TIME_WAIT sockets, not the node.)
const CONNECTIONS: usize = 64;

/// Open loop: requests start on a fixed schedule whatever the latency; returns
/// (records acknowledged per second, latency histogram in µs, requests acknowledged per second
/// of the whole run including the drain of the last ones, requests acknowledged, requests sent).
async fn open_loop(
    shard: &Shard,
    records_per_request: usize,
    requests_per_second: f64,
    seconds: f64,
    offset: u64,
) -> (f64, Histogram<u64>, f64, u64, u64) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();
    let connections = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let interval = Duration::from_secs_f64(1.0 / requests_per_second);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0u64;
    let subject = hex::encode([5u8; 32]);
    while start.elapsed().as_secs_f64() < seconds {
        let scheduled = start + interval * n as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let body = body(&subject, offset + n * 1_000_000, records_per_request);
        let (client, url, token, histogram, connections) = (
            client.clone(),
            shard.url.clone(),
            shard.token.clone(),
            histogram.clone(),
            connections.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _connection = connections.acquire().await.unwrap();
            let r = client
                .post(format!("{url}/v1/records"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            // Latency counts from the scheduled start: queueing delay is not hidden.
            let ok = acknowledged(r).await;
            if ok {
                histogram.lock().unwrap().record(scheduled.elapsed().as_micros() as u64).unwrap();
            }
            ok
        }));
        n += 1;
    }
    let mut ok = 0u64;
    for t in tasks {
        if t.await.unwrap() {
            ok += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let h = histogram.lock().unwrap().clone();
    (ok as f64 * records_per_request as f64 / elapsed, h, ok as f64 / elapsed, ok, n)
}

/// Closed loop: `workers` clients each send batches back to back; returns records acknowledged
/// per second (the capacity).
async fn closed_loop(shard: &Shard, workers: u64, seconds: f64, offset: u64) -> f64 {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, url, token) = (client.clone(), shard.url.clone(), shard.token.clone());
        tasks.push(tokio::spawn(async move {
            let subject = hex::encode([6u8; 32]);
            let mut acked = 0u64;
            let mut n = 0u64;
            while start.elapsed().as_secs_f64() < seconds {
                let first = offset + (w * 1_000_000 + n) * 1_000_000;
                let r = client
                    .post(format!("{url}/v1/records"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body(&subject, first, BATCH))
                    .send()
                    .await;
                if acknowledged(r).await {
                    acked += BATCH as u64;
                }
                n += 1;
            }
            acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    acked as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: nothing to measure there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest: run with `cargo bench` (release) to measure");
        return;
    }
    // The node runs with the subscriber `urbis shard` installs (JSON logs, a span per request
    // with trace ids), so its cost is measured too.
    let _telemetry = urbis_ops::telemetry::init("shard", true);
    let seconds: f64 =
        std::env::var("URBIS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = raw_rocksdb_records_per_second(raw_dir.path(), seconds);
    // Deleted before the node runs, for the same reason the batch phases' node is deleted
    // before the single-record phase.
    drop(raw_dir);
    settle();
    println!("raw RocksDB: {raw:.0} records/s ({RECORD_BYTES} B, {BATCH}-record synced batches)");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let shard = start_shard().await;
        // Batch API: offer somewhat more than the raw rate can absorb would saturate; offer the
        // measured raw rate and see what is acknowledged.
        // Capacity: batches back to back from 16 clients (what the node sustains). Each client
        // waits for its answer, which comes once its block is durable: with a few clients the
        // pipeline runs dry while a block is written and the figure measures the clients'
        // round trip, not the node (4 clients left a fifth of the CPU idle).
        let before = sealing(&shard).await;
        let clients: u64 = std::env::var("URBIS_BENCH_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
        let capacity = closed_loop(&shard, clients, seconds, 1 << 50).await;
        let after = sealing(&shard).await;
        let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        breakdown(&d, raw);
        let fsyncs = d[0] / seconds;
        // Latency: an open loop at 80 % of that capacity (queueing delay counted from the
        // scheduled start, not hidden).
        let offered = (0.8 * capacity / BATCH as f64).max(1.0);
        let (records_per_s, h, ..) = open_loop(&shard, BATCH, offered, seconds, 1 << 51).await;
        println!(
            "batch API: capacity {capacity:.0} records/s ({fsyncs:.1} fsyncs/s); at {:.0} records/s offered: {records_per_s:.0} acknowledged, ack latency p50 {:.1} ms p99 {:.1} ms p999 {:.1} ms",
            offered * BATCH as f64,
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3,
        );
        report(
            "durable ingest, batch API (1 000 × 300 B), capacity",
            &format!("{capacity:.0} records/s, {fsyncs:.1} fsyncs/s"),
            &format!("{raw:.0} records/s raw RocksDB synced WriteBatch"),
            capacity / raw,
            "≥ 0.5",
        );
        report(
            "batch API acknowledgement latency at 80 % of capacity",
            &format!(
                "p50 {:.1} / p99 {:.1} / p999 {:.1} ms",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.value_at_quantile(0.999) as f64 / 1e3
            ),
            "—",
            records_per_s / (offered * BATCH as f64),
            "—",
        );
        let _ = shard.stop.send(());
        shard.task.await.unwrap().unwrap();
        // Its files go now: the kernel would otherwise write the gigabytes of them still in the
        // page cache back to disk during the next phase, under its synced writes.
        drop(shard._dir);
        settle();
        // The single-record API on a fresh node, so it does not inherit the batch phases'
        // compaction debt.
        let shard = start_shard().await;
        // Offered above the goal, so that the rate acknowledged over the run and its drain
        // can show the goal met (an open loop at exactly 10 000 req/s ends a little below it
        // once its drain is counted).
        let (_, h, rps, ok, sent) =
            open_loop(&shard, 1, SINGLE_OFFERED, seconds, 1 << 52).await;
        report(
            &format!("single-record API at {SINGLE_OFFERED:.0} req/s offered"),
            &format!(
                "{ok} of {sent} acknowledged, {rps:.0} req/s over the run and its drain; p50 {:.1} / p99 {:.1} ms",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3
            ),
            "goal 10 000 req/s",
            rps / 10_000.0,
            "≥ 10 000 req/s, p99 < 50 ms",
        );
        let _ = shard.stop.send(());
        shard.task.await.unwrap().unwrap();
    });
}

/// Lets the file system finish with the previous phase: `sync` commits the journal
/// transaction that holds the deletion of its files, which the next phase's first fsync would
/// otherwise wait for.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// The shard's sealing counters from its `/metrics`: blocks written (synced writes), records
/// sealed, and seconds spent in each phase (rules, state tree, header, write, batch).
async fn sealing(shard: &Shard) -> [f64; 7] {
    let text = reqwest::get(format!("{}/metrics", shard.url)).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let phase = |p: &str| value(&format!("urbis_shard_seal_phase_seconds_total{{phase=\"{p}\"}}"));
    [
        value("urbis_fsyncs_total"),
        value("urbis_records_ingested_total{kind=\"information\"}"),
        phase("rules"),
        phase("state_tree"),
        phase("header"),
        phase("write"),
        phase("batch"),
    ]
}

/// Where a sealed record's time goes, from the difference of two [`sealing`] reads, beside
/// the raw RocksDB cost of one record.
fn breakdown(d: &[f64], raw: f64) {
    let (blocks, records) = (d[0], d[1].max(1.0));
    let per = |seconds: f64| seconds / records * 1e6;
    let busy: f64 = d[2..].iter().sum();
    let phases = format!(
        "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} µs",
        per(d[2]),
        per(d[3]),
        per(d[4]),
        per(d[6]),
        per(d[5])
    );
    println!(
        "sealer and writer, per record over {records} records in {blocks} blocks (rules / state tree / header / batch / write + fsync): {phases}; total {:.2} µs (raw RocksDB: {:.2} µs per record)",
        per(busy),
        1e6 / raw
    );
    report(
        "sealer and writer time per record (rules / state tree / header / batch / write+fsync)",
        &phases,
        &format!("{:.2} µs raw RocksDB per record", 1e6 / raw),
        per(busy) / (1e6 / raw),
        "—",
    );
}
