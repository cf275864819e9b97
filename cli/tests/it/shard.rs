//! The shard node as a real process with real RocksDB and real HTTP: submit, read back,
//! verify with the core verifier and with `urbis verify`, pagination, idempotent retries across
//! a restart, `kill -9` crash safety, and bad input answered with problem+json.

use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use urbis_core::genesis::ValidGenesis;
use urbis_core::light_client::LightClient;
use urbis_core::proof::{ProofDocument, verify_record_proof};

/// A shard process and everything needed to talk to it.
pub struct Node {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub url: String,
    pub token: String,
    pub child: Option<Child>,
    pub genesis: ValidGenesis,
}

fn urbis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_urbis"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Node {
    /// A fresh federation of two cities; this node is `athens`, with a token for `kinds`.
    pub fn new(dir: &Path, service: &str, kinds: &str) -> Node {
        let o = urbis()
            .args([
                "genesis",
                "create",
                "--name",
                "test",
                "--cities",
                "athens,berlin",
                "--asset",
                "EUR:athens",
                "--out-dir",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let token_file = dir.join("token");
        let tokens = dir.join("tokens.json");
        let o = urbis()
            .args(["tokens", "issue", "--service", service, "--kinds", kinds, "--file"])
            .arg(&tokens)
            .arg("--out")
            .arg(&token_file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let port = free_port();
        let config = dir.join("shard.toml");
        std::fs::write(
            &config,
            format!(
                "city = \"athens\"\ngenesis = \"{g}\"\ndata_dir = \"{d}\"\nlisten = \"127.0.0.1:{port}\"\nsealing_key_file = \"{k}\"\ntokens_file = \"{t}\"\nbatch_records_max = 100\nbody_bytes_max = 65536\n",
                g = dir.join("genesis.json").display(),
                d = dir.join("data").display(),
                k = dir.join("keys/athens-sealing.json").display(),
                t = tokens.display(),
            ),
        )
        .unwrap();
        let genesis = urbis_shard::node::load_genesis(&dir.join("genesis.json")).unwrap();
        let token = std::fs::read_to_string(token_file).unwrap();
        let mut n = Node {
            dir: dir.to_path_buf(),
            config,
            url: format!("http://127.0.0.1:{port}"),
            token,
            child: None,
            genesis,
        };
        n.start();
        n
    }

    pub fn start(&mut self) {
        // The node's log goes to a file in the test directory, so a failure shows its cause.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("shard.log"))
            .unwrap();
        let child = urbis()
            .arg("shard")
            .arg("--config")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "shard did not become ready");
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("shard.log")).unwrap_or_default();
                panic!("shard exited early: {status}\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
        c.wait().unwrap()
    }

    pub fn post(&self, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = Client::new()
            .post(format!("{}/v1/records", self.url))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = Client::new().get(format!("{}{path}", self.url)).send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// Checks a record's proof with the core verifier and returns the proof document.
    pub fn verified(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/records/{id}"));
        assert_eq!(status, 200, "{body}");
        let doc: ProofDocument = serde_json::from_value(body["proof"].clone()).unwrap();
        let ProofDocument::Record(p) = &doc else { panic!("not a record proof") };
        let v = verify_record_proof(&self.genesis, &LightClient::from_genesis(&self.genesis), p)
            .unwrap();
        assert_eq!(v.id.to_hex(), id);
        body
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn info(subject: &str, n: u64) -> Value {
    json!({"kind": "information", "subject": subject, "payload": {"dataset": "street-trees", "media_type": "application/json", "content": {"tree": n}}})
}

fn subject(n: u8) -> String {
    hex::encode([n; 32])
}

#[test]
fn submit_read_back_verify_paginate_and_retry_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "open-data-office", "information");
    let s = subject(7);
    let body = json!({"records": (0..5).map(|i| info(&s, i)).collect::<Vec<_>>()});
    let (status, first) = node.post(&body, Some("batch-1"));
    assert_eq!(status, 200, "{first}");
    let ids: Vec<String> = first["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    // Read back and verify with the core verifier and with `urbis verify`.
    let view = node.verified(&ids[2]);
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, serde_json::to_vec(&view["proof"]).unwrap()).unwrap();
    let o = urbis()
        .arg("verify")
        .arg(&proof_file)
        .arg("--genesis")
        .arg(dir.path().join("genesis.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (out["level"].as_str(), out["record_id"].as_str()),
        (Some("committed"), Some(ids[2].as_str()))
    );
    // Pagination: 5 records in pages of 2.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => format!("/v1/subjects/{s}/records?limit=2"),
            Some(c) => format!("/v1/subjects/{s}/records?limit=2&cursor={c}"),
        };
        let (status, page) = node.get(&q);
        assert_eq!(status, 200, "{page}");
        for r in page["records"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // A retry gets the same answer; after a restart too; another body under the key is refused.
    assert_eq!(node.post(&body, Some("batch-1")), (200, first.clone()));
    assert!(node.sigterm().success(), "graceful shutdown exits 0");
    node.start();
    assert_eq!(node.post(&body, Some("batch-1")), (200, first.clone()));
    let other = json!({"records": [info(&s, 99)]});
    assert_eq!(node.post(&other, Some("batch-1")).0, 409);
    node.verified(&ids[4]);
    let (status, latest) = node.get("/v1/blocks/latest");
    assert_eq!(status, 200);
    assert_eq!(latest["header"]["header"]["height"], 0, "the retries sealed nothing new");
}

#[test]
fn capital_never_goes_negative_and_credit_payloads_stay_off_chain() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(dir.path(), "treasury", "capital,credit");
    let s = subject(1);
    let issue = json!({"records": [{"kind": "capital", "subject": s, "payload": {"asset": "EUR", "amount": 100, "operation": "issue", "to": "alice"}}]});
    assert_eq!(node.post(&issue, None).0, 200);
    let pay = |amount: u64| json!({"records": [{"kind": "capital", "subject": s, "payload": {"asset": "EUR", "amount": amount, "operation": "transfer", "from": "alice", "to": "bob"}}]});
    assert_eq!(node.post(&pay(60), None).0, 200);
    let (status, problem) = node.post(&pay(60), None);
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["status"], 409);
    let (status, r) = node.post(&json!({"records": [{"kind": "credit", "subject": s, "payload": {"report": {"score": 712, "marker": "PAYLOAD-MARKER-1234"}}}]}), None);
    assert_eq!(status, 200, "{r}");
    let view = node.verified(r["records"][0]["id"].as_str().unwrap());
    assert!(!view.to_string().contains("PAYLOAD-MARKER-1234"), "the report must not be on chain");
}

/// Concurrent submitters, `kill -9` at random moments, restart: every acknowledged record is
/// there with a valid proof, retries of in-flight keys are answered consistently, and the chain
/// is whole.
#[test]
fn kill_9_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "open-data-office", "information");
    // (idempotency key, body, id) of acknowledged requests; (key, body) of unanswered ones.
    let mut acknowledged: Vec<(String, Value, String)> = Vec::new();
    let mut in_flight: Vec<(String, Value)> = Vec::new();
    for round in 0..3u64 {
        let url = node.url.clone();
        let token = node.token.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4u64)
            .map(|w| {
                let (url, token, stop) = (url.clone(), token.clone(), stop.clone());
                std::thread::spawn(move || {
                    let client = Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                    let mut acked = Vec::new();
                    let mut sent = Vec::new();
                    for i in 0..10_000u64 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("r{round}-w{w}-{i}");
                        let body = json!({"records": [info(&hex::encode([w as u8; 32]), round * 1_000_000 + w * 100_000 + i)]});
                        match client.post(format!("{url}/v1/records")).bearer_auth(&token).header("Idempotency-Key", &key).json(&body).send() {
                            Ok(r) if r.status().is_success() => {
                                let v: Value = r.json().unwrap();
                                acked.push((key, body, v["records"][0]["id"].as_str().unwrap().to_string()));
                            }
                            _ => {
                                sent.push((key, body));
                                break;
                            }
                        }
                    }
                    (acked, sent)
                })
            })
            .collect();
        // Kill at a moment that varies per round, while requests are in flight.
        std::thread::sleep(Duration::from_millis(300 + 250 * round));
        node.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            let (acked, sent) = w.join().unwrap();
            in_flight.extend(sent);
            acknowledged.extend(acked);
        }
        node.start();
        for (_, _, id) in &acknowledged {
            node.verified(id);
        }
    }
    assert!(
        acknowledged.len() > 10,
        "the load was too light to test anything ({} acks)",
        acknowledged.len()
    );
    // Retrying an acknowledged key returns the same id; retrying an in-flight key either
    // returns what was sealed before the crash or seals it now, and a second retry agrees.
    for (key, body, id) in acknowledged.iter().step_by(5) {
        let (status, r) = node.post(body, Some(key));
        assert_eq!(
            (status, r["records"][0]["id"].as_str()),
            (200, Some(id.as_str())),
            "retry of {key}"
        );
    }
    assert!(!in_flight.is_empty());
    for (key, body) in &in_flight {
        let (status, first) = node.post(body, Some(key));
        assert_eq!(status, 200, "{first}");
        assert_eq!(node.post(body, Some(key)), (200, first.clone()), "second retry of {key}");
        node.verified(first["records"][0]["id"].as_str().unwrap());
    }
    // The chain is whole: contiguous heights, linked headers, history roots matching.
    let (_, latest) = node.get("/v1/blocks/latest");
    let tip = latest["header"]["header"]["height"].as_u64().unwrap();
    let mut previous = urbis_core::hash::Hash32::ZERO;
    let mut frontier = urbis_core::merkle::Frontier::default();
    let tree = urbis_core::merkle::Blake3Tree::history();
    use urbis_core::merkle::TreeHasher;
    for h in 0..=tip {
        let (status, b) = node.get(&format!("/v1/blocks/{h}"));
        assert_eq!(status, 200, "height {h} missing");
        let header: urbis_core::header::SignedShardHeader =
            serde_json::from_value(b["header"].clone()).unwrap();
        assert_eq!(
            header.header.previous,
            previous,
            "header {h} does not link to {}",
            h.saturating_sub(1)
        );
        assert_eq!(header.header.history_root, frontier.root(&tree), "history root at {h}");
        header
            .verify(
                &node.genesis.federation_id(),
                node.genesis.sealing_key(header.header.city, h).unwrap(),
            )
            .unwrap();
        previous = header.header.hash();
        frontier.push(&tree, tree.leaf(previous.as_bytes()));
    }
}

#[test]
fn bad_input_gets_its_problem_status_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(dir.path(), "open-data-office", "information");
    let tokens = dir.path().join("tokens.json");
    let issue = |service: &str, kinds: &str, out: &str| {
        let path = dir.path().join(out);
        let o = urbis()
            .args(["tokens", "issue", "--service", service, "--kinds", kinds, "--file"])
            .arg(&tokens)
            .arg("--out")
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success());
        let id =
            serde_json::from_slice::<Value>(&o.stdout).unwrap()["id"].as_str().unwrap().to_string();
        (std::fs::read_to_string(path).unwrap(), id)
    };
    let (treasury, _) = issue("treasury", "capital", "treasury.token");
    let (revoked, revoked_id) = issue("archive", "information", "revoked.token");
    assert!(
        urbis()
            .args(["tokens", "revoke", "--file"])
            .arg(&tokens)
            .arg(&revoked_id)
            .status()
            .unwrap()
            .success()
    );
    let s = subject(3);
    // One good request first, so a reused key has something to conflict with.
    let good = json!({"records": [info(&s, 1)]});
    assert_eq!(node.post(&good, Some("k1")).0, 200);
    let (_, before) = node.get("/v1/blocks/latest");

    let big = "x".repeat(70_000);
    let many: Vec<Value> = (0..101).map(|i| info(&s, i)).collect();
    let overdraft = json!({"records": [{"kind": "capital", "subject": s, "payload": {"asset": "EUR", "amount": 5, "operation": "transfer", "from": "nobody", "to": "bob"}}]});
    // (name, token, idempotency key, body, expected status)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("malformed JSON", Some(&node.token), None, b"{\"records\": [".to_vec(), 400),
        ("not JSON at all", Some(&node.token), None, b"hello".to_vec(), 400),
        ("wrong type", Some(&node.token), None, br#"{"records": "many"}"#.to_vec(), 422),
        ("unknown field", Some(&node.token), None, br#"{"records": [], "extra": 1}"#.to_vec(), 422),
        ("empty batch", Some(&node.token), None, br#"{"records": []}"#.to_vec(), 422),
        ("oversized body", Some(&node.token), None, serde_json::to_vec(&json!({"records": [info(&s, 2)], "pad": big})).unwrap(), 413),
        ("oversized batch", Some(&node.token), None, serde_json::to_vec(&json!({"records": many})).unwrap(), 413),
        ("unknown kind", Some(&node.token), None, serde_json::to_vec(&json!({"records": [{"kind": "weather", "subject": s, "payload": {}}]})).unwrap(), 422),
        ("bad subject", Some(&node.token), None, serde_json::to_vec(&json!({"records": [info("abc", 1)]})).unwrap(), 422),
        ("unknown destination", Some(&node.token), None, serde_json::to_vec(&json!({"records": [{"kind": "information", "subject": s, "to_city": "atlantis", "payload": {"dataset": "d", "media_type": "text/plain", "content": 1}}]})).unwrap(), 422),
        ("kind not allowed for the token", Some(&node.token), None, serde_json::to_vec(&overdraft).unwrap(), 403),
        ("missing token", None, None, serde_json::to_vec(&good).unwrap(), 401),
        ("forged token", Some("urbis_0000000000000000000000000000000000000000000000000000000000000000"), None, serde_json::to_vec(&good).unwrap(), 401),
        ("revoked token", Some(&revoked), None, serde_json::to_vec(&good).unwrap(), 401),
        ("reused idempotency key, other body", Some(&node.token), Some("k1"), serde_json::to_vec(&json!({"records": [info(&s, 2)]})).unwrap(), 409),
        ("overdrawing transfer", Some(&treasury), None, serde_json::to_vec(&overdraft).unwrap(), 409),
        ("unknown asset", Some(&treasury), None, serde_json::to_vec(&json!({"records": [{"kind": "capital", "subject": s, "payload": {"asset": "GBP", "amount": 5, "operation": "issue", "to": "bob"}}]})).unwrap(), 422),
    ];
    let client = Client::new();
    for (name, token, key, body, expected) in cases {
        let mut req = client
            .post(format!("{}/v1/records", node.url))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status().as_u16(), expected, "{name}");
        let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{name}");
        let problem: Value = r.json().unwrap();
        assert_eq!(problem["status"], expected, "{name}: {problem}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{name}");
    }
    let reads: Vec<(String, u16)> = vec![
        ("/v1/records/zz".to_string(), 400),
        (format!("/v1/records/{}", "0".repeat(64)), 404),
        ("/v1/blocks/99".to_string(), 404),
        ("/v1/blocks/minus-one".to_string(), 400),
        ("/v1/nowhere".to_string(), 404),
    ];
    for (path, expected) in reads {
        assert_eq!(node.get(&path).0, expected, "{path}");
    }
    let (_, after) = node.get("/v1/blocks/latest");
    assert_eq!(before, after, "a refused request wrote something");
}

/// Every file under `dir` (RocksDB tables, write-ahead logs, the node's log) that holds `needle`.
pub(crate) fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                hits.push(path);
            }
        }
    }
    hits
}

/// Right to erasure: the issuing service (or an operator) erases a credit or talent payload;
/// afterwards no byte of it, nor its salt, is left anywhere in the data directory or the log,
/// also after `kill -9` and a restart; the record's proof still verifies, the read says when
/// and by whom, and the erasure itself is a proven state fact.
#[test]
fn erasure_leaves_no_byte_of_the_payload_and_the_proof_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "credit-bureau", "credit,talent");
    let tokens = dir.path().join("tokens.json");
    let issue = |service: &str, extra: &[&str]| -> String {
        let out = dir.path().join(format!("{service}.token"));
        let o = urbis()
            .args(["tokens", "issue", "--service", service, "--file"])
            .arg(&tokens)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let operator = issue("city-it", &["--operator"]);
    let other = issue("tax-office", &["--kinds", "credit"]);

    // Unique markers, so a hit can only be this test's payload.
    let marker = format!("ERASE-ME-{}", hex::encode(rand_bytes()));
    let doc_marker = format!("DIPLOMA-{}", hex::encode(rand_bytes()));
    let s = subject(3);
    let credit = json!({"records": [{"kind": "credit", "subject": s, "payload": {"report": {"score": 640, "note": marker}}}]});
    let (status, first) = node.post(&credit, Some("credit-1"));
    assert_eq!(status, 200, "{first}");
    let id = first["records"][0]["id"].as_str().unwrap().to_string();
    let talent = json!({"records": [{"kind": "talent", "subject": s, "payload": {"action": "issue", "credential_id": hex::encode([9u8; 32]), "document": {"degree": doc_marker}}}]});
    let (status, t) = node.post(&talent, None);
    assert_eq!(status, 200, "{t}");
    let talent_id = t["records"][0]["id"].as_str().unwrap().to_string();

    let client = Client::new();
    let payload_url = |id: &str| format!("{}/v1/records/{id}/payload", node.url);
    let call = |method: reqwest::Method, url: String, token: &str| -> (u16, Value) {
        let r = client.request(method, url).bearer_auth(token).send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    // The issuing service reads its payload; the salt opens the commitment.
    let (status, held) = call(reqwest::Method::GET, payload_url(&id), &node.token);
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["payload"]["note"], marker.as_str());
    let salt = hex::decode(held["salt"].as_str().unwrap()).unwrap();
    let view = node.verified(&id);
    assert_eq!(view["payload"]["location"], "off_chain");
    // Nobody else reads or erases it.
    assert_eq!(call(reqwest::Method::GET, payload_url(&id), &other).0, 403);
    assert_eq!(call(reqwest::Method::GET, payload_url(&id), &operator).0, 403);
    assert_eq!(call(reqwest::Method::DELETE, payload_url(&id), &other).0, 403);
    assert_eq!(call(reqwest::Method::DELETE, payload_url(&id), "urbis_forged").0, 401);
    // The scan can fail: before the erasure the marker and the salt are on disk.
    assert!(!files_containing(dir.path(), marker.as_bytes()).is_empty(), "control: marker found");
    assert!(!files_containing(dir.path(), &salt).is_empty(), "control: salt found");

    // The issuing service erases.
    let (status, erased) = call(reqwest::Method::DELETE, payload_url(&id), &node.token);
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["by"], "credit-bureau");
    assert_eq!(erased["record"], id.as_str());
    let height = erased["height"].as_u64().unwrap();
    // The record still verifies, and the read says when and by whom.
    let view = node.verified(&id);
    assert_eq!(view["payload"]["location"], "erased");
    assert_eq!(view["payload"]["erasure"], erased);
    let (status, gone) = call(reqwest::Method::GET, payload_url(&id), &node.token);
    assert_eq!((status, gone["status"].as_u64()), (410, Some(410)), "{gone}");
    // The erasure is on chain: a state proof of `Erasure { record_id }` verifies offline.
    let (status, fact) =
        node.get(&format!("/v1/state/{}/proof", erased["state_key"].as_str().unwrap()));
    assert_eq!((status, fact["present"].as_bool()), (200, Some(true)), "{fact}");
    let fact_file = dir.path().join("erasure-proof.json");
    std::fs::write(&fact_file, serde_json::to_vec(&fact["proof"]).unwrap()).unwrap();
    let o = urbis()
        .arg("verify")
        .arg(&fact_file)
        .arg("--genesis")
        .arg(dir.path().join("genesis.json"))
        .args(["--city", "athens", "--key"])
        .arg(json!({"type": "erasure", "record_id": id}).to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((out["verified"].as_bool(), out["present"].as_bool()), (Some(true), Some(true)));
    // Erasing again answers the first erasure and seals nothing; so does retrying the original
    // submission under its idempotency key (the payload is not stored again).
    assert_eq!(call(reqwest::Method::DELETE, payload_url(&id), &node.token), (200, erased.clone()));
    assert_eq!(node.post(&credit, Some("credit-1")), (200, first.clone()));
    let (_, latest) = node.get("/v1/blocks/latest");
    assert_eq!(latest["header"]["header"]["height"].as_u64(), Some(height));

    // An operator erases the credential document.
    let (status, by_operator) = call(reqwest::Method::DELETE, payload_url(&talent_id), &operator);
    assert_eq!(status, 200, "{by_operator}");
    assert!(by_operator["by"].as_str().unwrap().starts_with("operator:"), "{by_operator}");
    node.verified(&talent_id);
    // A record with its content on chain has no payload to erase.
    let (status, _) = node.post(&json!({"records": [{"kind": "talent", "subject": s, "payload": {"action": "revoke", "credential_id": hex::encode([9u8; 32]), "reason_code": 2}}]}), None);
    assert_eq!(status, 200);

    // No byte of either payload, nor the salt, in any file: tables, logs, the node's log.
    for needle in [marker.as_bytes(), doc_marker.as_bytes(), &salt, hex::encode(&salt).as_bytes()] {
        let hits = files_containing(dir.path(), needle);
        assert!(hits.is_empty(), "erased bytes still in {hits:?}");
    }
    // Also after a crash and restart.
    node.kill9();
    node.start();
    let view = node.verified(&id);
    assert_eq!(view["payload"]["location"], "erased");
    for needle in [marker.as_bytes(), doc_marker.as_bytes(), &salt] {
        assert!(files_containing(dir.path(), needle).is_empty());
    }
}

fn rand_bytes() -> [u8; 12] {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).unwrap();
    b
}

/// `?wait=false` answers 202 with a status URL that later holds the same answer a waiting
/// request gets; a token over its rate gets 429 (problem+json, `Retry-After`) and writes nothing.
#[test]
fn asynchronous_submission_and_per_token_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "open-data-office", "information");
    let client = Client::new();
    let s = subject(4);
    let r = client
        .post(format!("{}/v1/records?wait=false", node.url))
        .bearer_auth(&node.token)
        .json(&json!({"records": [info(&s, 1), info(&s, 2)]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = r.json().unwrap();
    assert_eq!(accepted["status_url"], location.as_str());
    let ids = accepted["ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let r =
            client.get(format!("{}{location}", node.url)).bearer_auth(&node.token).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().unwrap();
        if v["state"] == "done" {
            break v;
        }
        assert_eq!(v["state"], "waiting");
        assert!(Instant::now() < deadline, "the submission never finished");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status["status"], 200, "{status}");
    let sealed: Vec<Value> =
        status["result"]["records"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(sealed, ids);
    node.verified(ids[1].as_str().unwrap());
    // Only the submitting service sees it.
    let o = urbis()
        .args(["tokens", "issue", "--service", "other", "--kinds", "information", "--file"])
        .arg(dir.path().join("tokens.json"))
        .output()
        .unwrap();
    let other = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let r = client.get(format!("{}{location}", node.url)).bearer_auth(&other).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Two requests per token at once, then one per second.
    node.sigterm();
    let mut config = std::fs::read_to_string(&node.config).unwrap();
    config.push_str("rate_limit_per_second = 1\nrate_limit_burst = 2\n");
    std::fs::write(&node.config, config).unwrap();
    node.start();
    let limited = subject(5);
    assert_eq!(node.post(&json!({"records": [info(&limited, 1)]}), None).0, 200);
    assert_eq!(node.post(&json!({"records": [info(&limited, 2)]}), None).0, 200);
    let r = client
        .post(format!("{}/v1/records", node.url))
        .bearer_auth(&node.token)
        .json(&json!({"records": [info(&limited, 3)]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().unwrap();
    assert_eq!(problem["status"], 429);
    // Another token has its own budget.
    let r = client
        .post(format!("{}/v1/records", node.url))
        .bearer_auth(&other)
        .json(&json!({"records": [info(&limited, 4)]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, page) = node.get(&format!("/v1/subjects/{limited}/records"));
    assert_eq!(page["records"].as_array().unwrap().len(), 3, "the refused record is not written");
}

/// History proofs and consistency proofs, served from the stored subtree roots, verify against
/// the headers' own `history_root`s, and a restart continues the same history tree.
#[test]
fn history_and_consistency_proofs_verify_against_the_headers_across_a_restart() {
    use urbis_core::header::SignedShardHeader;
    use urbis_core::merkle::{
        Blake3Tree, ConsistencyProof, InclusionProof, TreeHasher, root_from_leaf_hashes,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "open-data-office", "information");
    let s = subject(6);
    for round in 0..2u64 {
        for i in 0..6 {
            assert_eq!(node.post(&json!({"records": [info(&s, round * 10 + i)]}), None).0, 200);
        }
        if round == 0 {
            assert!(node.sigterm().success());
            node.start();
        }
    }
    let (_, latest) = node.get("/v1/blocks/latest");
    let size = latest["header"]["header"]["height"].as_u64().unwrap() + 1;
    assert!(size >= 12);
    let headers: Vec<SignedShardHeader> = (0..size)
        .map(|h| {
            serde_json::from_value(node.get(&format!("/v1/blocks/{h}")).1["header"].clone())
                .unwrap()
        })
        .collect();
    let tree = Blake3Tree::history();
    let leaves: Vec<_> = headers.iter().map(|h| tree.leaf(h.header.hash().as_bytes())).collect();
    for (m, header) in headers.iter().enumerate() {
        // Header m commits to every earlier header, also the ones sealed before the restart.
        assert_eq!(header.header.history_root, root_from_leaf_hashes(&tree, &leaves[..m]));
    }
    for m in 1..size {
        let root = headers[m as usize].header.history_root;
        for n in 0..m {
            let (status, p) = node.get(&format!("/v1/blocks/{n}/history-proof?size={m}"));
            assert_eq!(status, 200, "{p}");
            let p: InclusionProof = serde_json::from_value(p).unwrap();
            p.verify(&tree, &leaves[n as usize], &root).unwrap();
            let (status, c) = node.get(&format!("/v1/history/consistency?from={n}&to={m}"));
            assert_eq!(status, 200, "{c}");
            let c: ConsistencyProof = serde_json::from_value(c).unwrap();
            c.verify(&tree, &headers[n as usize].header.history_root, &root).unwrap();
        }
    }
    // Out of range: a problem, not a panic.
    assert_eq!(node.get(&format!("/v1/blocks/0/history-proof?size={}", size + 1)).0, 404);
    assert_eq!(node.get("/v1/blocks/5/history-proof?size=5").0, 400);
    assert_eq!(node.get("/v1/history/consistency?from=5&to=3").0, 400);
}

/// A shard that follows the beacon but hears from no validator says it is not ready (and is
/// still alive): a load balancer stops sending it traffic that could never become final.
#[test]
fn readiness_reports_a_shard_cut_off_from_the_beacon() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "open-data", "information");
    let client = Client::new();
    assert_eq!(client.get(format!("{}/readyz", node.url)).send().unwrap().status().as_u16(), 200);
    assert!(node.sigterm().success());
    // Nothing listens on the discard port: no validator will ever answer.
    let mut config = std::fs::read_to_string(&node.config).unwrap();
    config.push_str("beacon_apis = [\"http://127.0.0.1:9\"]\nbeacon_contact_timeout_ms = 1000\n");
    std::fs::write(&node.config, config).unwrap();
    node.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    let problem: Value = loop {
        let r = client.get(format!("{}/readyz", node.url)).send().unwrap();
        if r.status().as_u16() == 503 {
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            break r.json().unwrap();
        }
        assert!(Instant::now() < deadline, "readyz stayed {}", r.status());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(problem["detail"].as_str().unwrap().contains("cut off from the beacon"), "{problem}");
    assert_eq!(client.get(format!("{}/livez", node.url)).send().unwrap().status().as_u16(), 200);
}

/// SIGTERM while four clients submit as fast as they can: readiness goes false, in-flight
/// requests are answered, the process exits 0 within the grace period (20 s by default), and
/// after a restart every acknowledged record is there with a valid proof.
#[test]
fn sigterm_under_load_loses_no_acknowledged_record_and_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "open-data-office", "information");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (url, token, stop) = (node.url.clone(), node.token.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let mut acked = Vec::new();
                let mut refused = 0u64;
                for i in 0..1_000_000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"records": (0..20).map(|k| info(&hex::encode([w as u8 + 1; 32]), w * 100_000_000 + i * 100 + k)).collect::<Vec<_>>()});
                    match client.post(format!("{url}/v1/records")).bearer_auth(&token).json(&body).send() {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = r.json().unwrap();
                            for rec in v["records"].as_array().unwrap() {
                                acked.push(rec["id"].as_str().unwrap().to_string());
                            }
                        }
                        // Refused while draining (503) or no longer listening: not acknowledged.
                        Ok(r) => {
                            assert_eq!(r.status().as_u16(), 503, "{}", r.text().unwrap());
                            refused += 1;
                        }
                        Err(_) => refused += 1,
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1_500));
    let started = Instant::now();
    let status = node.sigterm();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in workers {
        let (a, _) = w.join().unwrap();
        acked.extend(a);
    }
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(20), "took {took:?} to stop");
    assert!(acked.len() > 100, "the load acknowledged only {} records", acked.len());
    node.start();
    for id in &acked {
        let (status, body) = node.get(&format!("/v1/records/{id}"));
        assert_eq!(status, 200, "acknowledged record {id} lost: {body}");
    }
    // Spot-check proofs with the core verifier (every one was read back above).
    for id in acked.iter().step_by((acked.len() / 20).max(1)) {
        node.verified(id);
    }
}
