//! Cross-city exchange on a running two-city `urbis devnet` (validators, shards and bridges in
//! one release process on loopback: real QUIC with mutual TLS, real HTTP, real RocksDB).
//!
//! Measures, in one run:
//! 1. **latency**: a packet acknowledged (sealed, level committed) in A until B answers it
//!    `received`, one packet at a time — p50/p99 (the goal is p50 < 1 s, p99 < 2 s);
//! 2. **throughput**: a burst of packets from A to B until every one is settled at A (received
//!    at B and B's acknowledgement accepted back at A) — packets/s for the pair, over the whole
//!    burst (with the pipeline's fill and drain) and in steady flow (from a fifth of the burst
//!    settled at A to four fifths, read off A's `urbis_shard_packets_total` every 50 ms);
//! 3. the limits beside them: B's own durable ingest rate through its batch API, on a fresh
//!    federation started after the burst, of as many records as the burst carried packets
//!    (records/s: the records durable over the time until the last request is answered; its
//!    first 5 s alone are reported beside it), so that both run from the same start over the
//!    same growth of B's store, and the rate at which one core verifies a packet's proof
//!    chain, both with a beacon block the verifier has not seen (one pairing) and with one
//!    it already follows (no pairing);
//! 4. where sealing time goes, from each shard's `urbis_shard_seal_phase_seconds_total`: per
//!    packet of the burst at A and at B, and per record of B's ingest.
//!
//! `cargo bench --workspace --bench crosscity` (release); `URBIS_CROSSCITY_PACKETS` (default
//! 5000) sizes the burst and B's ingest. The figures of record are bursts of 300 000: the
//! pipeline's fill and drain (two beacon finalities and the acknowledgement's way back, about
//! a second) weigh little in them.
//!
//! With `URBIS_CROSSCITY_SPLIT=1` (Linux, `taskset`, two cores or more) each city runs as its
//! own `urbis devnet --only-cities` process on its own core — its shard, bridge and two
//! validators on core 0 (A) or core 1 (B), as cities run on their own machines — and the
//! benchmark client on A's core. B's ingest is then measured on B's core alone: the limit is
//! what the destination can take with the resources it has while packets arrive.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Records per request, in the burst and in the ingest it is set beside (the same clients
/// for both: four, each waiting for its request to be durable before it sends the next).
const REQUEST_RECORDS: u64 = 1000;

fn free_base() -> u16 {
    // Below the ephemeral range, where no client connection's TIME-WAIT socket sits.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seed = nanos ^ u64::from(std::process::id());
    for _ in 0..500 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let base = 12_000 + ((seed >> 33) % 20_000) as u16;
        let tcp: Vec<_> = (0..2)
            .chain(200..204)
            .chain(300..302)
            .map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        let udp: Vec<_> = (100..104)
            .chain(300..302)
            .map(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)))
            .collect();
        if tcp.iter().all(Result::is_ok) && udp.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free ports");
}

struct Devnet(Child);

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) the process has used so far, from `/proc` (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Some(ticks / hz)
}

/// A shard's `/metrics` text.
fn metrics(client: &Client, metrics_url: &str) -> Option<String> {
    client.get(metrics_url).send().ok()?.text().ok()
}

/// The value of `series` (its name with its labels, as exported) in a `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The shard's cumulative sealing time by phase (state tree, rules, header, batch, write), in
/// seconds, from its `/metrics`.
fn seal_phases(client: &Client, metrics_url: &str) -> Option<[f64; 5]> {
    let text = metrics(client, metrics_url)?;
    let phase = |name: &str| -> f64 {
        sample(&text, &format!("urbis_shard_seal_phase_seconds_total{{phase=\"{name}\"}}"))
            .unwrap_or(0.0)
    };
    Some(["state_tree", "rules", "header", "batch", "write"].map(phase))
}

/// The sealing time by phase since `before`.
fn phases_since(client: &Client, metrics_url: &str, before: Option<[f64; 5]>) -> Option<[f64; 5]> {
    let (now, before) = (seal_phases(client, metrics_url)?, before?);
    Some(std::array::from_fn(|i| now[i] - before[i]))
}

/// The shard's height (its last sealed block), from its `/metrics`.
fn height(client: &Client, metrics_url: &str) -> Option<f64> {
    sample(&metrics(client, metrics_url)?, "urbis_shard_block_height")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A running two-city devnet: its processes and its manifest (`devnet.json`).
struct Federation {
    devnets: Vec<Devnet>,
    manifest: Value,
    split: bool,
    // Last: the processes stop before their files go.
    _dir: tempfile::TempDir,
}

impl Federation {
    /// CPU of every devnet process.
    fn cpu_all(&self) -> Option<f64> {
        self.devnets.iter().map(|d| cpu_seconds(d.0.id())).sum()
    }

    /// CPU of B's process, where it has its own.
    fn cpu_b(&self) -> Option<f64> {
        if self.split { self.devnets.get(1).and_then(|d| cpu_seconds(d.0.id())) } else { None }
    }
}

/// Starts a fresh two-city devnet — one process with both cities, or (split) one per city
/// pinned to its core, the second started once the first has created the federation — and
/// waits until both shards are ready.
fn launch(split: bool) -> Federation {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let manifest = dir.path().join("devnet.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let wait_for_manifest = || -> Value {
        loop {
            if let Ok(bytes) = std::fs::read(&manifest)
                && let Ok(v) = serde_json::from_slice(&bytes)
            {
                break v;
            }
            assert!(Instant::now() < deadline, "devnet did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let start = |only: Option<(&str, u32)>| -> Devnet {
        let mut c = match only {
            Some((_, core)) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &core.to_string(), env!("CARGO_BIN_EXE_urbis")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_urbis")),
        };
        c.args(["devnet", "--cities", "2", "--base-port", &base.to_string(), "--data-dir"])
            .arg(dir.path());
        if let Some((city, _)) = only {
            c.args(["--only-cities", city]);
        }
        let log = format!("devnet{}.log", only.map(|(c, _)| format!("-{c}")).unwrap_or_default());
        Devnet(
            c.env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let mut devnets = Vec::new();
    let m: Value = if split {
        // The client shares A's core: B's core is the destination's alone.
        let pinned = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(pinned.success(), "taskset could not pin the benchmark to core 0");
        devnets.push(start(Some(("athens", 0))));
        wait_for_manifest();
        std::fs::remove_file(&manifest).unwrap();
        devnets.push(start(Some(("berlin", 1))));
        wait_for_manifest()
    } else {
        devnets.push(start(None));
        wait_for_manifest()
    };
    let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for c in &m["cities"].as_array().unwrap()[..2] {
        let ready = format!("{}/readyz", c["shard_api"].as_str().unwrap());
        while !client.get(&ready).send().is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "shards did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Federation { devnets, manifest: m, split, _dir: dir }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("crosscity: run with `cargo bench` (release) to measure");
        return;
    }
    let burst: u64 =
        std::env::var("URBIS_CROSSCITY_PACKETS").ok().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let split = std::env::var("URBIS_CROSSCITY_SPLIT").is_ok_and(|v| v == "1");
    let federation = launch(split);
    let m = &federation.manifest;
    // CPU of every devnet process, and of B's alone where it has its own.
    let cpu_all = || federation.cpu_all();
    let cpu_b = || federation.cpu_b();
    let client = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let a = m["cities"][0].clone();
    let b = m["cities"][1].clone();
    let (an, bn) =
        (a["name"].as_str().unwrap().to_string(), b["name"].as_str().unwrap().to_string());
    let url = |c: &Value, path: &str| format!("{}{path}", c["shard_api"].as_str().unwrap());
    let info = |n: u64, to: Option<&str>| {
        let mut r = json!({"kind": "information", "subject": format!("{:064x}", n), "payload": {"dataset": "bench", "media_type": "application/json", "content": {"n": n, "pad": "x".repeat(200)}}});
        if let Some(to) = to {
            r["to_city"] = json!(to);
        }
        r
    };
    // The burst's and the ingest's requests, written straight as text: the client shares A's
    // core through the burst, and building each record as a `Value` tree and reading each
    // answer back into one cost it several times the CPU. The same records as `info` (checked
    // below, before anything is measured).
    let request_body = |numbers: std::ops::Range<u64>, to: Option<&str>| -> String {
        use std::fmt::Write as _;
        let pad = "x".repeat(200);
        let mut body = String::with_capacity(420 * (numbers.end - numbers.start) as usize + 16);
        body.push_str("{\"records\":[");
        for (i, n) in numbers.enumerate() {
            if i > 0 {
                body.push(',');
            }
            let _ = write!(
                body,
                "{{\"kind\":\"information\",\"subject\":\"{n:064x}\",\"payload\":{{\"dataset\":\"bench\",\"media_type\":\"application/json\",\"content\":{{\"n\":{n},\"pad\":\"{pad}\"}}}}"
            );
            if let Some(to) = to {
                let _ = write!(body, ",\"to_city\":{}", Value::from(to));
            }
            body.push('}');
        }
        body.push_str("]}");
        body
    };
    for to in [None, Some(bn.as_str())] {
        let written: Value = serde_json::from_str(&request_body(7..10, to)).unwrap();
        assert_eq!(written, json!({ "records": (7..10).map(|n| info(n, to)).collect::<Vec<_>>() }));
    }
    // A shard whose sealing queue is full answers 503 ("retry shortly"): the client retries,
    // as a service would, and the wait counts in the figures. A shard that answers nothing
    // else for a minute has stopped taking records, and the run fails saying so. The answer's
    // body is returned unread.
    let submit_body = |c: &Value, body: String| -> reqwest::blocking::Response {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let r = client
                .post(url(c, "/v1/records"))
                .bearer_auth(c["service_tokens"]["open-data-office"].as_str().unwrap())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .unwrap();
            if r.status().as_u16() == 503 {
                assert!(
                    Instant::now() < give_up,
                    "the shard answered 503 for a minute: {}",
                    r.text().unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            assert!(r.status().is_success(), "{}", r.text().unwrap());
            return r;
        }
    };
    // Submits `records` and reads the answer.
    let submit = |c: &Value, records: Vec<Value>| -> Value {
        submit_body(c, json!({ "records": records }).to_string()).json().unwrap()
    };
    // Submits a written request; the answer is read to its end (the connection is reused) but
    // not parsed.
    let submit_written = |c: &Value, body: String| {
        let mut r = submit_body(c, body);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    };

    // 1. Latency, one packet at a time.
    let mut latencies = Vec::new();
    let first = Instant::now();
    let mut n = 0u64;
    while latencies.len() < 60 {
        n += 1;
        let v = submit(&a, vec![info(n, Some(&bn))]);
        let acknowledged = Instant::now();
        let sequence = v["records"][0]["sequence"].as_u64().unwrap();
        let status = url(&b, &format!("/v1/packets/{an}/{bn}/{sequence}"));
        loop {
            if let Ok(r) = client.get(&status).send()
                && r.status().is_success()
            {
                break;
            }
            assert!(acknowledged.elapsed() < Duration::from_secs(30), "packet {sequence} lost");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The first packets wait for the federation's first blocks: not counted.
        if first.elapsed() > Duration::from_secs(3) {
            latencies.push(acknowledged.elapsed());
        }
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));

    // 3b. Proof verification per core: a packet's proof as the bridge reads it (taken from A's
    // outbound page in the moment between finality and settlement), verified with a fresh light
    // client (one pairing per packet) and with one that follows its beacon block (none).
    let genesis =
        urbis_bridge::load_genesis(std::path::Path::new(m["genesis"].as_str().unwrap())).unwrap();
    n += 1;
    let v = submit(&a, vec![info(n, Some(&bn))]);
    let sequence = v["records"][0]["sequence"].as_u64().unwrap();
    let page_url =
        url(&a, &format!("/v1/packets/outbound?destination={bn}&after={}&limit=1", sequence - 1));
    let deadline = Instant::now() + Duration::from_secs(30);
    let proof: urbis_core::packet::PacketProof = loop {
        let page: Value = client.get(&page_url).send().unwrap().json().unwrap();
        if let Some(p) = page["packets"].as_array().unwrap().first() {
            break serde_json::from_value(p["proof"].clone()).unwrap();
        }
        assert!(Instant::now() < deadline, "packet {sequence} was never listed final");
        std::thread::sleep(Duration::from_millis(2));
    };
    let b_id = genesis.city_by_name(&bn).unwrap().id;
    let fresh = urbis_core::light_client::LightClient::from_genesis(&genesis);
    let mut following = urbis_core::light_client::LightClient::from_genesis(&genesis);
    following
        .apply(&urbis_core::light_client::LightClientUpdate {
            header: proof.finality.beacon_header.clone(),
            certificate: proof.finality.certificate.clone(),
            next_set: None,
        })
        .unwrap();
    let rate = |client: &urbis_core::light_client::LightClient| {
        let t = Instant::now();
        let mut k = 0u64;
        while t.elapsed() < Duration::from_secs(2) {
            urbis_core::packet::verify_packet(&genesis, client, b_id, &proof).unwrap();
            k += 1;
        }
        k as f64 / t.elapsed().as_secs_f64()
    };
    let verify_fresh = rate(&fresh);
    let verify_following = rate(&following);

    // 2. Throughput: a burst from A to B, until every packet is settled at A.
    // Four clients submit the burst in requests of `REQUEST_RECORDS`, as the ingest phase
    // below submits the records it sets the burst beside: one client waiting for each block
    // to be durable would bound the rate by its round trip.
    let start_seq = n;
    let cpu_before_burst = cpu_all();
    let cpu_b_before_burst = cpu_b();
    let cpu_client_before_burst = cpu_seconds(std::process::id());
    let started = Instant::now();
    // A's count of acknowledged packets through the burst, for the steady rate (the middle of
    // the burst, without the pipeline's fill and drain).
    let acknowledged_at_a = || -> Option<f64> {
        let text = metrics(&client, &url(&a, "/metrics"))?;
        sample(&text, "urbis_shard_packets_total{reason=\"acknowledged\"}")
    };
    let acknowledged_before = acknowledged_at_a().unwrap_or(0.0);
    let heights_before = [&a, &b].map(|c| height(&client, &url(c, "/metrics")));
    let phases_a_before = seal_phases(&client, &url(&a, "/metrics"));
    let phases_b_before = seal_phases(&client, &url(&b, "/metrics"));
    let total_sent = sequence + burst;
    let wait_settled = || {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let page: Value = client
                .get(url(&a, &format!("/v1/packets/outbound?destination={bn}&limit=1")))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if page["sent"].as_u64() == Some(total_sent)
                && page["packets"].as_array().unwrap().is_empty()
                && page["waiting_for_finality"].is_null()
            {
                break;
            }
            assert!(Instant::now() < deadline, "the burst did not settle: {page}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut submitted = Duration::ZERO;
    let sampling = std::sync::atomic::AtomicBool::new(true);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let requests: Vec<(u64, u64)> = (0..burst)
        .step_by(REQUEST_RECORDS as usize)
        .map(|first| (first, (burst - first).min(REQUEST_RECORDS)))
        .collect();
    let next_request = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(k) = acknowledged_at_a() {
                    samples.push((started.elapsed().as_secs_f64(), k - acknowledged_before));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let submitters: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let i = next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(first, k)) = requests.get(i) else { break };
                        let numbers = start_seq + first + 1..start_seq + first + k + 1;
                        submit_written(&a, request_body(numbers, Some(&bn)));
                    }
                })
            })
            .collect();
        for t in submitters {
            t.join().unwrap();
        }
        submitted = started.elapsed();
        wait_settled();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    let settled = started.elapsed();
    // The steady rate: from a fifth of the burst settled at A to four fifths.
    let reached =
        |fraction: f64| samples.iter().find(|(_, k)| *k >= fraction * burst as f64).copied();
    let steady = match (reached(0.2), reached(0.8)) {
        (Some((t0, k0)), Some((t1, k1))) if t1 > t0 => Some((k1 - k0) / (t1 - t0)),
        _ => None,
    };
    let cpu_burst = cpu_all().zip(cpu_before_burst).map(|(a, b)| a - b);
    let cpu_b_burst = cpu_b().zip(cpu_b_before_burst).map(|(a, b)| a - b);
    let cpu_client_burst =
        cpu_seconds(std::process::id()).zip(cpu_client_before_burst).map(|(a, b)| a - b);
    let packets_per_s = burst as f64 / settled.as_secs_f64();
    let phases_a_burst = phases_since(&client, &url(&a, "/metrics"), phases_a_before);
    let phases_b_burst = phases_since(&client, &url(&b, "/metrics"), phases_b_before);

    // 3a. B's own durable ingest through its batch API, four clients in requests of
    // `REQUEST_RECORDS` (the burst's clients), on
    // a fresh federation: as many records as the burst carried packets, from the same start
    // the burst had, timed until the last request is answered. On the burst's federation the
    // ingest would run on the larger store the burst left.
    let heights_burst = [&a, &b].map(|c| height(&client, &url(c, "/metrics")));
    drop(federation);
    let fresh = launch(split);
    let b = fresh.manifest["cities"][1].clone();
    // The new federation's first blocks and finalities pass before the clock starts, as the
    // latency phase let them pass before the burst.
    submit(&b, vec![info(1, None)]);
    std::thread::sleep(Duration::from_secs(3));
    let height_b_before_ingest = height(&client, &url(&b, "/metrics"));
    let phases_b_before_ingest = seal_phases(&client, &url(&b, "/metrics"));
    let cpu_before_ingest = fresh.cpu_all();
    let cpu_b_before_ingest = fresh.cpu_b();
    let ingested_at_b = || -> Option<f64> {
        let text = metrics(&client, &url(&b, "/metrics"))?;
        sample(&text, "urbis_records_ingested_total{kind=\"information\"}")
    };
    let ingested_before = ingested_at_b().unwrap_or(0.0);
    let ingest_requests = burst.div_ceil(REQUEST_RECORDS);
    let next_ingest = std::sync::atomic::AtomicU64::new(0);
    let ingest_started = Instant::now();
    // B's count of records sealed, read once, 5 s in (a poll through the whole ingest would
    // load B's core while its limit is measured).
    let mut at_5s: Option<(f64, f64)> = None;
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let records: u64 = std::thread::scope(|s| {
        let at_5s = &mut at_5s;
        let read_at_5s = &ingested_at_b;
        s.spawn(move || {
            // Not read when the ingest ends first (its end drops `done`).
            if ended.recv_timeout(Duration::from_secs(5))
                == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                *at_5s = read_at_5s()
                    .map(|k| (ingest_started.elapsed().as_secs_f64(), k - ingested_before));
            }
        });
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut count = 0u64;
                    loop {
                        let k = next_ingest.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= ingest_requests {
                            break count;
                        }
                        let first = k * REQUEST_RECORDS;
                        let last = (first + REQUEST_RECORDS).min(burst);
                        count += last - first;
                        submit_written(
                            &b,
                            request_body(1_000_000_000 + first..1_000_000_000 + last, None),
                        );
                    }
                })
            })
            .collect();
        let records = handles.into_iter().map(|h| h.join().unwrap()).sum();
        drop(done);
        records
    });
    let ingest_seconds = ingest_started.elapsed().as_secs_f64();
    // The same ingest over its first five seconds alone, the sprint earlier runs set beside
    // the burst (none when the whole ingest took less).
    let ingest_first_5s =
        at_5s.filter(|(t, _)| *t <= ingest_seconds).map(|(t, k)| k / t).filter(|r| *r > 0.0);
    let ingest = records as f64 / ingest_seconds;
    let cpu_ingest = fresh.cpu_all().zip(cpu_before_ingest).map(|(a, b)| a - b);
    let cpu_b_ingest = fresh.cpu_b().zip(cpu_b_before_ingest).map(|(a, b)| a - b);
    let phases_b_ingest = phases_since(&client, &url(&b, "/metrics"), phases_b_before_ingest);
    let height_b_ingest = height(&client, &url(&b, "/metrics"));

    println!(
        "RESULT | cross-city latency, acknowledged in A → received in B ({} packets) | p50 {} ms, p99 {} ms | goal p50 < 1000 ms, p99 < 2000 ms |",
        latencies.len(),
        p50.as_millis(),
        p99.as_millis()
    );
    println!(
        "RESULT | packets/s A → B, {burst} packets submitted in {:.2} s, all settled at A after {:.2} s | {:.0} packets/s | B's own durable ingest {:.0} records/s; ratio {:.3} (goal ≥ 0.5) |",
        submitted.as_secs_f64(),
        settled.as_secs_f64(),
        packets_per_s,
        ingest,
        packets_per_s / ingest
    );
    if let Some(sprint) = ingest_first_5s {
        println!(
            "RESULT | B's own durable ingest of {records} records on a fresh federation ({ingest_seconds:.1} s), and over its first 5 s alone | {ingest:.0} records/s; {sprint:.0} records/s over the first 5 s | whole-burst ratio against the first 5 s {:.3} |",
            packets_per_s / sprint
        );
    }
    if let Some(steady) = steady {
        println!(
            "RESULT | packets/s A → B in steady flow (settled at A, from a fifth of the burst to four fifths) | {steady:.0} packets/s | B's own durable ingest {ingest:.0} records/s; ratio {:.3} (goal ≥ 0.5) |",
            steady / ingest
        );
    }
    // What a packet costs the devnet beside what a record of B's ingest costs it: where the
    // cores are the limit, the ratio cannot exceed their quotient (times the cores each phase
    // could use).
    if let (Some(p), Some(r)) = (cpu_burst, cpu_ingest) {
        let per_packet = p / burst as f64 * 1e6;
        let per_record = r / records as f64 * 1e6;
        println!(
            "RESULT | devnet CPU (user + system, all its threads) | {per_packet:.0} µs per packet in the burst ({:.2} cores busy), {per_record:.0} µs per record of B's ingest ({:.2} cores busy) | record/packet cost ratio {:.3} |",
            p / settled.as_secs_f64(),
            r / ingest_seconds,
            per_record / per_packet
        );
    }
    if let (Some(p), Some(r), Some(all), Some(client)) =
        (cpu_b_burst, cpu_b_ingest, cpu_burst, cpu_client_burst)
    {
        let per_packet = p / burst as f64 * 1e6;
        let per_record = r / records as f64 * 1e6;
        let busy = |cpu: f64| cpu / settled.as_secs_f64();
        println!(
            "RESULT | each city on its own core: CPU of B's process (shard, bridge, 2 validators) | {per_packet:.0} µs per packet ({:.2} of its core busy over the burst; A's process {:.0} µs per packet, {:.2} of core 0, the client beside it {:.2}), {per_record:.0} µs per record of B's ingest ({:.2} of its core) | record/packet cost ratio at B {:.3} |",
            busy(p),
            (all - p) / burst as f64 * 1e6,
            busy(all - p),
            busy(client),
            r / ingest_seconds,
            per_record / per_packet
        );
    }
    if let (Some(a_burst), Some(b_burst), Some(b_ingest)) =
        (phases_a_burst, phases_b_burst, phases_b_ingest)
    {
        let per = |p: [f64; 5], n: u64| {
            let us = |x: f64| x / n as f64 * 1e6;
            format!(
                "state tree {:.1}, rules {:.1}, header {:.1}, batch {:.1}, write {:.1} µs",
                us(p[0]),
                us(p[1]),
                us(p[2]),
                us(p[3]),
                us(p[4])
            )
        };
        println!(
            "RESULT | sealing time per packet (seal_phase metrics) | A: {}; B: {} | per record of B's ingest: {} |",
            per(a_burst, burst),
            per(b_burst, burst),
            per(b_ingest, records)
        );
    }
    if let ([Some(a0), Some(b0)], [Some(a1), Some(b1)], Some((b3, b2))) =
        (heights_before, heights_burst, height_b_ingest.zip(height_b_before_ingest))
    {
        let per = |n: f64, blocks: f64| n / blocks.max(1.0);
        println!(
            "RESULT | blocks sealed | burst: A {:.0} ({:.0} packets per block), B {:.0} ({:.0} packets per block) | B's ingest: {:.0} ({:.0} records per block) |",
            a1 - a0,
            per(burst as f64, a1 - a0),
            b1 - b0,
            per(burst as f64, b1 - b0),
            b3 - b2,
            per(records as f64, b3 - b2)
        );
    }
    println!(
        "RESULT | packet proof verification, one core | {verify_fresh:.0} packets/s with an unseen beacon block (one pairing), {verify_following:.0} packets/s through a followed one | — |"
    );
}
