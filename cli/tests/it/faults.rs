//! A federation of separate processes — four `urbis beacon`, two `urbis shard`, two
//! `urbis bridge` — carries a stream of transfers while processes are killed with `kill -9`
//! or SIGTERM (after which it must exit 0 within the grace period) at random moments and
//! restarted: every transfer ends exactly once (acknowledged, or refunded), value is conserved,
//! and no process needed repair.

use crate::packets::conservation;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Proc {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(dir: &Path, name: &str, role: &str, config: &Path) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            args: vec![role.to_string(), "--config".into(), config.display().to_string()],
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_urbis"))
                .args(&self.args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits: it must exit 0 within `grace`.
    fn terminate(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else { return };
        let killed = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = c.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("{} did not exit within {grace:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{} exited with {status} after SIGTERM", self.name);
    }

    /// Whether it is still running (a process that exited on its own is a failure).
    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn urbis(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_urbis")).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A small deterministic generator, so a failing run can be repeated with its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn transfers_end_exactly_once_through_kill_9_of_any_process() {
    let seed = std::env::var("URBIS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("fault seed {seed} (URBIS_FAULT_SEED reruns it)");
    let mut rng = Lcg(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    urbis(&[
        "genesis",
        "create",
        "--name",
        "faults",
        "--cities",
        "athens,berlin",
        "--validators-per-city",
        "2",
        "--asset",
        "EUR:athens",
        "--out-dir",
        &d.to_string(),
    ]);
    let names =
        ["athens-validator-0", "athens-validator-1", "berlin-validator-0", "berlin-validator-1"];
    let quic: Vec<u16> = (0..4).map(|_| udp_port()).collect();
    let apis: Vec<u16> = (0..4).map(|_| tcp_port()).collect();
    let mut procs = Vec::new();
    for i in 0..4 {
        let mut toml = format!(
            "genesis = \"{d}/genesis.json\"\ndata_dir = \"{d}/v{i}\"\nlisten = \"127.0.0.1:{q}\"\napi_listen = \"127.0.0.1:{api}\"\nvalidator_key_file = \"{d}/keys/{n}.json\"\ntls_key_file = \"{d}/keys/{n}-tls.json\"\n",
            q = quic[i],
            api = apis[i],
            n = names[i],
        );
        for j in (0..4).filter(|j| *j != i) {
            toml.push_str(&format!(
                "[[peers]]\naddress = \"127.0.0.1:{}\"\nvalidator = \"{}\"\n",
                quic[j], names[j]
            ));
        }
        let config = dir.join(format!("beacon-{i}.toml"));
        std::fs::write(&config, toml).unwrap();
        procs.push(Proc::new(dir, names[i], "beacon", &config));
    }
    let beacon_apis: Vec<String> =
        apis.iter().map(|p| format!("\"http://127.0.0.1:{p}\"")).collect();
    let cities = ["athens", "berlin"];
    let shard_ports: Vec<u16> = (0..2).map(|_| tcp_port()).collect();
    let bridge_ports: Vec<u16> = (0..2).map(|_| udp_port()).collect();
    let mut manifest = Vec::new();
    for (i, city) in cities.iter().enumerate() {
        let tokens = format!("{d}/{city}-tokens.json");
        let token = format!("{d}/{city}-treasury.token");
        urbis(&[
            "tokens",
            "issue",
            "--service",
            "treasury",
            "--kinds",
            "capital",
            "--file",
            &tokens,
            "--out",
            &token,
        ]);
        let config = dir.join(format!("{city}-shard.toml"));
        std::fs::write(
            &config,
            format!(
                "city = \"{city}\"\ngenesis = \"{d}/genesis.json\"\ndata_dir = \"{d}/{city}-shard\"\nlisten = \"127.0.0.1:{port}\"\nsealing_key_file = \"{d}/keys/{city}-sealing.json\"\ntokens_file = \"{tokens}\"\nbeacon_apis = [{apis}]\npacket_timeout_blocks = 150\n",
                port = shard_ports[i],
                apis = beacon_apis.join(", "),
            ),
        )
        .unwrap();
        procs.push(Proc::new(dir, &format!("{city}-shard"), "shard", &config));
        let other = 1 - i;
        let config = dir.join(format!("{city}-bridge.toml"));
        std::fs::write(
            &config,
            format!(
                "city = \"{city}\"\ngenesis = \"{d}/genesis.json\"\nshard_api = \"http://127.0.0.1:{shard}\"\nlisten = \"127.0.0.1:{port}\"\ncertificate_file = \"{d}/keys/{city}-bridge.pem\"\nkey_file = \"{d}/keys/{city}-bridge-key.pem\"\ndata_dir = \"{d}/{city}-bridge\"\n[peers]\n{peer} = \"127.0.0.1:{peer_port}\"\n",
                shard = shard_ports[i],
                port = bridge_ports[i],
                peer = cities[other],
                peer_port = bridge_ports[other],
            ),
        )
        .unwrap();
        procs.push(Proc::new(dir, &format!("{city}-bridge"), "bridge", &config));
        manifest.push(json!({
            "name": city,
            "shard_api": format!("http://127.0.0.1:{}", shard_ports[i]),
            "token": std::fs::read_to_string(&token).unwrap().trim(),
        }));
    }
    let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let athens = manifest[0].clone();
    // Submits one record, retried with its Idempotency-Key while the shard is down.
    let submit = |record: Value, key: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = client
                .post(format!("{}/v1/records", athens["shard_api"].as_str().unwrap()))
                .bearer_auth(athens["token"].as_str().unwrap())
                .header("Idempotency-Key", key)
                .json(&json!({"records": [record]}))
                .send();
            if let Ok(r) = r
                && r.status().is_success()
            {
                return r.json::<Value>().unwrap()["records"][0].clone();
            }
            assert!(Instant::now() < deadline, "athens did not take record {key}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let subject = "77".repeat(32);
    submit(
        json!({"kind": "capital", "subject": subject, "payload": {"asset": "EUR", "amount": 10_000, "operation": "issue", "to": "alice"}}),
        "issue",
    );
    const TRANSFERS: u64 = 24;
    let stream = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            (0..TRANSFERS)
                .map(|n| {
                    let r = submit(json!({"kind": "capital", "subject": subject, "to_city": "berlin", "payload": {"asset": "EUR", "amount": 10 + n, "operation": "send", "from": "alice", "to": "bob"}}), &format!("send-{n}"));
                    std::thread::sleep(Duration::from_millis(150));
                    r["sequence"].as_u64().unwrap()
                })
                .collect::<Vec<u64>>()
        });
        // Meanwhile: stop a random process — kill -9, or SIGTERM after which it must exit 0
        // within the grace period — wait a random moment, restart it.
        let started = Instant::now();
        let mut killed = Vec::new();
        while !stream.is_finished() || started.elapsed() < Duration::from_secs(6) {
            let i = rng.next(procs.len() as u64) as usize;
            std::thread::sleep(Duration::from_millis(200 + rng.next(800)));
            if rng.next(3) == 0 {
                procs[i].terminate(GRACE);
                killed.push(format!("{} (SIGTERM, exit 0)", procs[i].name));
            } else {
                procs[i].kill9();
                killed.push(format!("{} (kill -9)", procs[i].name));
            }
            std::thread::sleep(Duration::from_millis(100 + rng.next(1_500)));
            procs[i].start();
        }
        eprintln!("stopped and restarted: {killed:?}");
        stream.join().unwrap()
    });
    // Exactly once: the sequences are 1..=N, each submission answered once.
    assert_eq!(stream, (1..=TRANSFERS).collect::<Vec<_>>());
    // Every transfer ends: acknowledged (received at berlin) or refunded (never received).
    let deadline = Instant::now() + Duration::from_secs(180);
    let url = |city: &Value, seq: u64| {
        format!("{}/v1/packets/athens/berlin/{seq}", city["shard_api"].as_str().unwrap())
    };
    for seq in 1..=TRANSFERS {
        let state = loop {
            let v: Value = client
                .get(url(&athens, seq))
                .send()
                .ok()
                .and_then(|r| r.json().ok())
                .unwrap_or(Value::Null);
            if let Some(s @ ("acknowledged" | "refunded" | "error_acknowledged")) =
                v["state"].as_str()
            {
                break s.to_string();
            }
            if Instant::now() > deadline {
                dump_logs(&procs);
                panic!("packet {seq} did not end: {v}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        // Berlin's shard may have been restarted a moment ago: wait until it answers.
        let at_berlin = loop {
            match client.get(url(&manifest[1], seq)).send() {
                Ok(r) => break r,
                Err(e) if Instant::now() > deadline => {
                    dump_logs(&procs);
                    panic!("berlin's shard does not answer: {e}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        match state.as_str() {
            "acknowledged" => assert_eq!(at_berlin.status().as_u16(), 200),
            _ => assert_eq!(at_berlin.status().as_u16(), 404, "a refunded packet was received"),
        }
    }
    let cities: Vec<Value> =
        manifest.iter().map(|c| json!({"name": c["name"], "shard_api": c["shard_api"]})).collect();
    assert_eq!(conservation(&client, &cities, 10_000), 0);
    // No process needed repair: every one is still running after its restarts, and each
    // exits 0 on SIGTERM within the grace period.
    let dead: Vec<String> =
        procs.iter_mut().filter_map(|p| (!p.alive()).then(|| p.name.clone())).collect();
    if !dead.is_empty() {
        dump_logs(&procs);
        panic!("{dead:?} exited on their own");
    }
    for p in &mut procs {
        p.terminate(GRACE);
    }
}

/// The last lines of every process's log, for a failure's message.
fn dump_logs(procs: &[Proc]) {
    for p in procs {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("== {}\n{}", p.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
}

/// How long a process may take to exit after SIGTERM (the shard's default
/// `shutdown_grace_ms` is 20 s).
const GRACE: Duration = Duration::from_secs(25);
