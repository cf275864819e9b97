//! `urbis devnet` as a real process: every city's shard answers, `devnet.json` is complete and
//! private, a record submitted with its tokens verifies, SIGTERM stops it cleanly, and running
//! it again resumes the same federation.

use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn start(dir: &std::path::Path, port: u16) -> Devnet {
    start_with(dir, port, &[])
}

/// A running devnet process, killed if the test ends without stopping it (a failed assertion
/// must not leave a federation running).
pub(crate) struct Devnet(Option<Child>);

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `urbis devnet` with three cities and `extra` arguments.
pub(crate) fn start_with(dir: &std::path::Path, port: u16, extra: &[&str]) -> Devnet {
    start_logged(dir, port, extra, &[], None)
}

/// `urbis devnet` with three cities, `extra` arguments and environment `env`, its logs
/// (stdout) written to `log` when given.
pub(crate) fn start_logged(
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> Devnet {
    let stdout = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args(["devnet", "--cities", "3", "--base-port", &port.to_string(), "--data-dir"])
        .arg(dir)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Devnet(Some(child))
}

pub(crate) fn wait_ready(urls: &[String]) {
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in urls {
        while !client.get(format!("{url}/readyz")).send().is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "{url} did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn manifest(dir: &std::path::Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(bytes) = std::fs::read(dir.join("devnet.json"))
            && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "devnet.json was not written");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn sigterm(mut devnet: Devnet) -> std::process::ExitStatus {
    let mut child = devnet.0.take().unwrap();
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap()
}

/// A base port whose shard ports (base..base+3), validator QUIC ports (base+100..+106, UDP),
/// validator API ports (base+200..+206) and bridge ports (base+300..+303, UDP for QUIC and TCP
/// for their API) are free (checked by binding them all).
pub(crate) fn free_run_of_three_ports() -> u16 {
    // Below the kernel's ephemeral range (32768 and up), where client connections and their
    // TIME-WAIT sockets never sit, so a run of free ports is easy to find and stays free.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut seed = nanos ^ (u64::from(std::process::id()) << 20) ^ (call << 40);
    for attempt in 0..500u64 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407 + attempt);
        let base = 12_000 + ((seed >> 33) % 20_000) as u16;
        let tcp: Vec<_> = (0..3)
            .chain(200..206)
            .chain(300..303)
            .map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        let udp: Vec<_> = (100..106)
            .chain(300..303)
            .map(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)))
            .collect();
        if tcp.iter().all(Result::is_ok) && udp.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no run of three free ports");
}

/// The validators' API base URLs from `devnet.json`.
pub(crate) fn validator_apis(m: &Value) -> Vec<String> {
    m["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["beacon_api"].as_str().unwrap().to_string())
        .collect()
}

/// A three-city devnet with `extra` arguments, started, every shard ready and the beacon past
/// height 2: its directory, the process and `devnet.json`.
pub(crate) fn running_devnet(extra: &[&str]) -> (tempfile::TempDir, Devnet, Value) {
    running_devnet_logged(extra, &[], false)
}

/// As `running_devnet`, with environment `env`, and its logs in `devnet.log` of its directory
/// when `log`.
pub(crate) fn running_devnet_logged(
    extra: &[&str],
    env: &[(&str, &str)],
    log: bool,
) -> (tempfile::TempDir, Devnet, Value) {
    let dir = tempfile::tempdir().unwrap();
    let log = log.then(|| dir.path().join("devnet.log"));
    let devnet = start_logged(dir.path(), free_run_of_three_ports(), extra, env, log.as_deref());
    let m = manifest(dir.path());
    let urls: Vec<String> = m["cities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["shard_api"].as_str().unwrap().to_string())
        .collect();
    wait_ready(&urls);
    beacon_heights(&Client::new(), &validator_apis(&m), 2);
    (dir, devnet, m)
}

/// Waits until every validator serves a latest block at or above `at_least`.
pub(crate) fn beacon_heights(client: &Client, apis: &[String], at_least: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let heights: Vec<u64> = apis
            .iter()
            .map(|a| {
                client
                    .get(format!("{a}/v1/beacon/blocks/latest"))
                    .send()
                    .ok()
                    .filter(|r| r.status().is_success())
                    .and_then(|r| r.json::<Value>().ok())
                    .and_then(|b| b["header"]["height"].as_u64())
                    .unwrap_or(0)
            })
            .collect();
        if heights.iter().all(|h| *h >= at_least) {
            return heights;
        }
        assert!(Instant::now() < deadline, "beacon heights {heights:?}, want {at_least}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn devnet_runs_three_cities_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_run_of_three_ports();
    let child = start(dir.path(), port);
    let m = manifest(dir.path());
    assert_eq!(
        std::fs::metadata(dir.path().join("devnet.json")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cities = m["cities"].as_array().unwrap().clone();
    assert_eq!(cities.len(), 3);
    let urls: Vec<String> =
        cities.iter().map(|c| c["shard_api"].as_str().unwrap().to_string()).collect();
    wait_ready(&urls);
    let client = Client::new();
    // At least four validators finalize beacon blocks, each serving them at its `beacon_api`.
    let validators: Vec<String> = m["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["beacon_api"].as_str().unwrap().to_string())
        .collect();
    assert!(validators.len() >= 4, "{m}");
    let heights = beacon_heights(&client, &validators, 2);
    let mut ids = Vec::new();
    for c in &cities {
        let token = c["service_tokens"]["open-data-office"].as_str().unwrap();
        let body = json!({"records": [{"kind": "information", "subject": "11".repeat(32), "payload": {"dataset": "d", "media_type": "application/json", "content": {"city": c["name"]}}}]});
        let r = client
            .post(format!("{}/v1/records", c["shard_api"].as_str().unwrap()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().unwrap();
        ids.push(v["records"][0]["id"].as_str().unwrap().to_string());
    }
    // Each shard offers its headers to the validators and follows the certified chain: the
    // records reach level final, and the validators serve the covering crosslink.
    let mut finals = Vec::new();
    for (c, id) in cities.iter().zip(&ids) {
        let record = wait_final(&client, c["shard_api"].as_str().unwrap(), id);
        let height = record["height"].as_u64().unwrap();
        let beacon_height =
            record["proof"]["finality"]["beacon_header"]["height"].as_u64().unwrap();
        let covering: Value = client
            .get(format!(
                "{}/v1/beacon/crosslinks/{}/{height}",
                validators[0],
                c["name"].as_str().unwrap()
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(covering["beacon_height"].as_u64(), Some(beacon_height), "{covering}");
        assert_eq!(covering["header"], record["proof"]["finality"]["beacon_header"]);
        assert_eq!(covering["crosslink"], record["proof"]["finality"]["crosslink"]);
        finals.push(beacon_height);
    }
    conflicting_header_is_evidence(&client, dir.path(), &m, &cities[0], &validators[1]);
    evidence_is_recorded_in_a_block(&client, &validators[0]);
    metrics_count_what_happened(&client, &cities, &validators);
    live_certificate_verifies_with_blst(&client, &m, &validators[2]);
    live_reweight_reaches_final_proofs(&client, dir.path(), &m, &validators, &cities[0]);
    assert!(sigterm(child).success(), "devnet exits 0 on SIGTERM");
    // The restart must write the manifest anew, not leave the old one standing.
    std::fs::remove_file(dir.path().join("devnet.json")).unwrap();
    let child = start(dir.path(), port);
    let again = manifest(dir.path());
    assert_eq!(again["federation_id"], m["federation_id"]);
    wait_ready(&urls);
    // The beacon chain resumes where it was.
    let top = heights.iter().max().copied().unwrap();
    beacon_heights(&client, &validators, top + 2);
    for (c, id) in cities.iter().zip(&ids) {
        let r = client
            .get(format!("{}/v1/records/{id}", c["shard_api"].as_str().unwrap()))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "record survived the restart");
        let v: Value = r.json().unwrap();
        let out = verify_offline(&dir.path().join("proof.json"), &v["proof"], &m);
        assert_eq!(out["level"], "final", "{out}");
        assert!(out["beacon_height"].as_u64().unwrap() >= 1, "{out}");
    }
    // Finality survived the restart: the same covering beacon blocks.
    for ((c, id), beacon_height) in cities.iter().zip(&ids).zip(&finals) {
        let record = wait_final(&client, c["shard_api"].as_str().unwrap(), id);
        assert_eq!(
            record["proof"]["finality"]["beacon_header"]["height"].as_u64(),
            Some(*beacon_height)
        );
    }
    assert!(sigterm(child).success());
}

/// Polls a record until its proof is at level final (bounded), and returns the read.
pub(crate) fn wait_final(client: &Client, shard: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value =
            client.get(format!("{shard}/v1/records/{id}")).send().unwrap().json().unwrap();
        if v["level"] == "final" {
            assert!(v["proof"]["finality"].is_object(), "{v}");
            return v;
        }
        assert_eq!(v["level"], "committed", "{v}");
        assert!(Instant::now() < deadline, "record {id} at {shard} did not become final: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A second header sealed by a city's own key at a crosslinked height is refused and kept as
/// evidence that anyone with genesis can check.
pub(crate) fn conflicting_header_is_evidence(
    client: &Client,
    dir: &std::path::Path,
    m: &Value,
    city: &Value,
    validator: &str,
) {
    use urbis_core::crosslink::{ShardEquivocation, verify_equivocation};
    use urbis_core::header::SignedShardHeader;
    let name = city["name"].as_str().unwrap();
    let genesis =
        urbis_shard::node::load_genesis(std::path::Path::new(m["genesis"].as_str().unwrap()))
            .unwrap();
    let covering: Value = client
        .get(format!("{validator}/v1/beacon/crosslinks/{name}/0"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let crosslinked: SignedShardHeader =
        serde_json::from_value(covering["crosslinked"]["header"].clone()).unwrap();
    let seed = urbis_shard::node::read_secret_hex::<32>(
        &dir.join("keys").join(format!("{name}-sealing.json")),
    )
    .unwrap();
    let key = urbis_core::sealing::SealingKey::from_seed(&seed);
    let mut other = crosslinked.header.clone();
    other.time_ms += 1;
    let forked = other.seal(&genesis.federation_id(), &key);
    let r = client
        .post(format!("{validator}/v1/beacon/crosslinks"))
        .json(&json!({"header": forked, "extension": null}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let problem: Value = r.json().unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/conflicting-header"), "{problem}");
    let evidence: Value =
        client.get(format!("{validator}/v1/beacon/evidence")).send().unwrap().json().unwrap();
    let kept: Vec<ShardEquivocation> =
        serde_json::from_value(evidence["shard_headers"].clone()).unwrap();
    assert_eq!(kept.len(), 1, "{evidence}");
    assert_eq!(kept[0].first, crosslinked);
    assert_eq!(kept[0].second, forked);
    let city_id = genesis.city_by_name(name).unwrap().id;
    assert_eq!(verify_equivocation(&genesis, &kept[0]), Ok((city_id, crosslinked.header.height)));
}

/// The latest certificate a validator serves verifies with `blst` alone: the header's borsh
/// bytes, its hash and signing root computed here from docs/protocol.md (sections 2.4, 3, 6),
/// the signers' keys from genesis aggregated by the bitfield (section 9.2).
fn live_certificate_verifies_with_blst(client: &Client, m: &Value, validator: &str) {
    use blst::BLST_ERROR;
    use blst::min_pk::{AggregatePublicKey, PublicKey, Signature};
    let block: Value =
        client.get(format!("{validator}/v1/beacon/blocks/latest")).send().unwrap().json().unwrap();
    let h = &block["header"];
    let hex32 =
        |v: &Value| -> [u8; 32] { hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap() };
    // BeaconHeader, 185 bytes: u8, u64, u64, [32], [32], [32], u64, [32], [32] (little endian).
    let mut bytes = vec![h["version"].as_u64().unwrap() as u8];
    bytes.extend(h["height"].as_u64().unwrap().to_le_bytes());
    bytes.extend(h["time_ms"].as_u64().unwrap().to_le_bytes());
    for f in ["previous", "body_hash", "crosslinks_root"] {
        bytes.extend(hex32(&h[f]));
    }
    bytes.extend(h["crosslinks_count"].as_u64().unwrap().to_le_bytes());
    for f in ["validator_set_hash", "next_validator_set_hash"] {
        bytes.extend(hex32(&h[f]));
    }
    assert_eq!(bytes.len(), 185);
    let keyed = |context: &str, m: &[u8]| -> [u8; 32] {
        let key = blake3::derive_key(context, b"");
        *blake3::keyed_hash(&key, m).as_bytes()
    };
    let header_hash = keyed("urbis v1 beacon header", &bytes);
    assert_eq!(hex::encode(header_hash), block["hash"].as_str().unwrap());
    // signing_root(2, federation_id, header hash): purpose u8, protocol version u16, id, object.
    let mut root_input = vec![2u8];
    root_input.extend(1u16.to_le_bytes());
    root_input.extend(hex32(&m["federation_id"]));
    root_input.extend(header_hash);
    let root = keyed("urbis v1 signing root", &root_input);
    let genesis: Value =
        serde_json::from_slice(&std::fs::read(m["genesis"].as_str().unwrap()).unwrap()).unwrap();
    let set = genesis["validators"]["validators"].as_array().unwrap();
    let signers = hex::decode(block["certificate"]["signers"].as_str().unwrap()).unwrap();
    assert_eq!(signers.len(), set.len().div_ceil(8));
    let keys: Vec<PublicKey> = set
        .iter()
        .enumerate()
        .filter(|(i, _)| signers[i / 8] & (1 << (i % 8)) != 0)
        .map(|(_, v)| {
            PublicKey::key_validate(&hex::decode(v["bls_key"].as_str().unwrap()).unwrap()).unwrap()
        })
        .collect();
    assert!(3 * keys.len() > 2 * set.len(), "more than 2/3 of equal weights signed");
    let refs: Vec<&PublicKey> = keys.iter().collect();
    let aggregate = AggregatePublicKey::aggregate(&refs, true).unwrap().to_public_key();
    let signature = Signature::sig_validate(
        &hex::decode(block["certificate"]["signature"].as_str().unwrap()).unwrap(),
        true,
    )
    .unwrap();
    let dst = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
    assert_eq!(signature.verify(true, &root, dst, &[], &aggregate, true), BLST_ERROR::BLST_SUCCESS);
    // And not for any other header.
    let mut other = root;
    other[0] ^= 1;
    assert_ne!(
        signature.verify(true, &other, dst, &[], &aggregate, true),
        BLST_ERROR::BLST_SUCCESS
    );
}

/// The evidence one validator kept is recorded in a block, so every validator serves it —
/// here one that never saw the conflicting offer.
fn evidence_is_recorded_in_a_block(client: &Client, validator: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let v: Value =
            client.get(format!("{validator}/v1/beacon/evidence")).send().unwrap().json().unwrap();
        if let Some(r) = v["recorded"].as_array().and_then(|r| r.first()) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "evidence was not recorded in a block: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recorded["item"]["type"], "shard_headers", "{recorded}");
    let height = recorded["beacon_height"].as_u64().unwrap();
    let block: Value = client
        .get(format!("{validator}/v1/beacon/blocks/{height}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let items = block["evidence"].as_array().unwrap();
    assert!(items.contains(&recorded["item"]), "{block}");
    // Recorded once: the next blocks do not carry it again.
    beacon_heights(client, &[validator.to_string()], height + 3);
    for later in height + 1..=height + 3 {
        let b: Value = client
            .get(format!("{validator}/v1/beacon/blocks/{later}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(!b["evidence"].as_array().unwrap().contains(&recorded["item"]), "{b}");
    }
}

/// A validator-set change on the running devnet: approved by more than 2/3 of the operators,
/// in force at its stated height; every certificate verifies with a light client from genesis
/// following it, and a record made final after it carries the change in its proof, which
/// `urbis verify --genesis` follows offline.
fn live_reweight_reaches_final_proofs(
    client: &Client,
    dir: &std::path::Path,
    m: &Value,
    validators: &[String],
    city: &Value,
) {
    use urbis_core::light_client::{LightClient, LightClientUpdate};
    use urbis_core::set_change::{
        SetChange, SetChangeProposal, SignedSetChange, aggregate_approvals,
    };
    let genesis =
        urbis_shard::node::load_genesis(std::path::Path::new(m["genesis"].as_str().unwrap()))
            .unwrap();
    let set = &genesis.genesis().validators.validators;
    let n = set.len();
    let latest = |v: &str| -> u64 {
        client.get(format!("{v}/v1/beacon/blocks/latest")).send().unwrap().json::<Value>().unwrap()
            ["header"]["height"]
            .as_u64()
            .unwrap()
    };
    let effective = latest(&validators[0]) + 4;
    let proposal = SetChangeProposal {
        change: SetChange::Reweight { bls_key: set[0].bls_key, weight: 2 },
        effective_height: effective,
    };
    // Every operator but one approves: more than 2/3 of equal weights.
    let approvals: Vec<_> = (0..n - 1)
        .map(|i| {
            let path = dir.join("keys").join(format!("{}.json", set[i].name));
            let secret = urbis_shard::node::read_secret_hex::<32>(&path).unwrap();
            let key = urbis_core::bls::SecretKey::from_bytes(&secret).unwrap();
            (i, proposal.approve(&genesis.federation_id(), &key))
        })
        .collect();
    let change =
        SignedSetChange { proposal, approvals: aggregate_approvals(n, &approvals).unwrap() };
    for v in validators {
        let r = client.post(format!("{v}/v1/beacon/set-changes")).json(&change).send().unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    beacon_heights(client, validators, effective + 1);
    let top = latest(&validators[0]);
    let mut light = LightClient::from_genesis(&genesis);
    let mut changed = vec![];
    for h in 1..=top {
        let b: Value = client
            .get(format!("{}/v1/beacon/blocks/{h}", validators[0]))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let update = LightClientUpdate {
            header: serde_json::from_value(b["header"].clone()).unwrap(),
            certificate: serde_json::from_value(b["certificate"].clone()).unwrap(),
            next_set: serde_json::from_value(b["next_validators"].clone()).unwrap(),
        };
        if update.next_set.is_some() {
            changed.push(h + 1);
        }
        light.apply(&update).unwrap_or_else(|e| panic!("beacon block {h}: {e}"));
    }
    assert_eq!(changed, vec![effective]);
    assert_eq!(light.set_at(top).unwrap().weights()[0], 2);
    // A record final after the change: its proof carries the change for offline verifiers.
    let token = city["service_tokens"]["open-data-office"].as_str().unwrap();
    let shard = city["shard_api"].as_str().unwrap();
    let body = json!({"records": [{"kind": "information", "subject": "22".repeat(32), "payload": {"dataset": "after-reweight", "media_type": "application/json", "content": {}}}]});
    let r: Value = client
        .post(format!("{shard}/v1/records"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = r["records"][0]["id"].as_str().unwrap();
    let record = wait_final(client, shard, id);
    let finality = &record["proof"]["finality"];
    assert!(finality["beacon_header"]["height"].as_u64().unwrap() >= effective);
    assert_eq!(finality["set_updates"].as_array().unwrap().len(), 1, "{finality}");
    let out = verify_offline(&dir.join("proof-after-reweight.json"), &record["proof"], m);
    assert_eq!(out["level"], "final", "{out}");
}

/// Every shard and validator serves OpenMetrics text counting what the test did.
fn metrics_count_what_happened(client: &Client, cities: &[Value], validators: &[String]) {
    let scrape = |base: &str| -> String {
        let r = client
            .get(format!("{base}/metrics"))
            .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
        let text = r.text().unwrap();
        assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
        text
    };
    let value = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    for c in cities {
        let text = scrape(c["shard_api"].as_str().unwrap());
        assert!(value(&text, "urbis_records_ingested_total{kind=\"information\"} ") >= 1.0);
        assert!(value(&text, "urbis_shard_crosslinked_height ") >= 0.0);
        assert!(value(&text, "urbis_shard_beacon_height ") >= 1.0);
        assert!(text.contains("urbis_http_server_request_duration_seconds_count{http_route=\"/v1/records\",http_request_method=\"POST\",http_response_status_code=\"200\"}"), "{text}");
        assert!(text.contains("urbis_build_info{"), "{text}");
    }
    let text = scrape(&validators[1]);
    assert_eq!(value(&text, "urbis_beacon_evidence_total{kind=\"shard_headers\"} "), 1.0);
    assert!(text.contains("urbis_http_server_request_duration_seconds_count{http_route=\"/v1/beacon/crosslinks\",http_request_method=\"POST\",http_response_status_code=\"409\"}"), "{text}");
    assert!(value(&text, "urbis_beacon_height ") >= 1.0);
    for c in cities {
        let name = c["name"].as_str().unwrap();
        let lag = value(&text, &format!("urbis_beacon_finality_lag_seconds{{city=\"{name}\"}} "));
        assert!((0.0..60.0).contains(&lag), "{name}: {lag}");
    }
}

/// No secret the devnet created reaches its logs: not a service token, not a key file's
/// secret, not a credit payload (submitted, read back and erased while the urbis crates log
/// at debug level).
#[test]
fn devnet_logs_hold_none_of_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_run_of_three_ports();
    let log = dir.path().join("devnet.log");
    let child = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args(["devnet", "--cities", "3", "--base-port", &port.to_string(), "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info,urbis=debug,urbis_shard=debug,urbis_beacon=debug,urbis_cli=debug")
        .stdout(std::fs::File::create(dir.path().join("devnet.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = Devnet(Some(child));
    let m = manifest(dir.path());
    let cities = m["cities"].as_array().unwrap().clone();
    let urls: Vec<String> =
        cities.iter().map(|c| c["shard_api"].as_str().unwrap().to_string()).collect();
    wait_ready(&urls);
    let client = Client::new();
    let marker = "CREDIT-SECRET-MARKER-7f3a9c";
    let c = &cities[0];
    let shard = c["shard_api"].as_str().unwrap();
    let token = c["service_tokens"]["credit-bureau"].as_str().unwrap();
    let body = json!({"records": [{"kind": "credit", "subject": "44".repeat(32), "payload": {"report": {"marker": marker}}}]});
    let r: Value = client
        .post(format!("{shard}/v1/records"))
        .bearer_auth(token)
        .header("Idempotency-Key", "secret-test-1")
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = r["records"][0]["id"].as_str().unwrap().to_string();
    let payload =
        client.get(format!("{shard}/v1/records/{id}/payload")).bearer_auth(token).send().unwrap();
    assert!(payload.text().unwrap().contains(marker), "the payload is readable before erasure");
    // A forged token and a refused request are logged too, without the token.
    let r = client
        .post(format!("{shard}/v1/records"))
        .bearer_auth("urbis_forged_token_value_123456")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .delete(format!("{shard}/v1/records/{id}/payload"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_final(&client, shard, &id);
    assert!(sigterm(child).success());
    let mut logs = std::fs::read_to_string(&log).unwrap();
    logs.push_str(&std::fs::read_to_string(dir.path().join("devnet.out")).unwrap());
    assert!(logs.lines().count() > 10, "the devnet logged: {logs}");
    let mut secrets: Vec<String> = vec![marker.into(), "urbis_forged_token_value_123456".into()];
    for c in &cities {
        for (_, t) in c["service_tokens"].as_object().unwrap() {
            secrets.push(t.as_str().unwrap().to_string());
        }
    }
    for entry in std::fs::read_dir(dir.path().join("keys")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".json") {
            let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            secrets.push(file["secret_hex"].as_str().unwrap().to_string());
        } else if name.ends_with("-key.pem") {
            // A bridge's or its CA's private key: its base64 body, and its DER in hex.
            let pem = std::fs::read_to_string(&path).unwrap();
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            secrets.push(body.clone());
            use base64::Engine;
            let der = base64::engine::general_purpose::STANDARD.decode(&body).unwrap();
            secrets.push(hex::encode(&der[der.len() - 32..]));
        }
    }
    assert!(secrets.len() > 10);
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret reached the logs: {}…", &s[..8]);
    }
}

/// Writes `proof` to `path` and checks it with `urbis verify --genesis` alone; returns what it
/// printed.
pub(crate) fn verify_offline(path: &std::path::Path, proof: &Value, m: &Value) -> Value {
    std::fs::write(path, serde_json::to_vec(proof).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .arg("verify")
        .arg(path)
        .arg("--genesis")
        .arg(m["genesis"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `--only-cities` splits one federation over processes on the same data directory: the first
/// runs only its city (another city's shard is not there), the second the others, and a
/// packet sent from the first process's city is received by a city of the second through
/// their bridges. A city that is not the devnet's is refused before anything is created.
/// (The process runs without transparent huge pages, where the kernel reports it.)
#[test]
fn a_federation_split_over_two_devnet_processes_carries_packets() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_run_of_three_ports();
    let first = start_with(dir.path(), port, &["--only-cities", "athens"]);
    let m = manifest(dir.path());
    // The node turned transparent huge pages off for itself (Linux).
    let pid = first.0.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    let shard = |name: &str| shard_api(&m, name);
    let (athens, berlin) = (shard("athens"), shard("berlin"));
    wait_ready(std::slice::from_ref(&athens));
    let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    assert!(client.get(format!("{berlin}/readyz")).send().is_err(), "berlin runs in the first");
    std::fs::remove_file(dir.path().join("devnet.json")).unwrap();
    let _second = start_with(dir.path(), port, &["--only-cities", "berlin,copenhagen"]);
    assert_eq!(manifest(dir.path())["federation_id"], m["federation_id"]);
    wait_ready(&[berlin.clone(), shard("copenhagen")]);
    packet_reaches_berlin(&m, &athens, &berlin);
    let fresh = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args(["devnet", "--cities", "3", "--only-cities", "nowhere", "--data-dir"])
        .arg(fresh.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--only-cities: nowhere is not one of the devnet's cities"),
        "{stderr}"
    );
    assert!(!fresh.path().join("genesis.json").exists(), "a federation was created anyway");
}

/// The shard API of the devnet's city `name`, from its manifest.
fn shard_api(m: &Value, name: &str) -> String {
    let cities = m["cities"].as_array().unwrap();
    let city = cities.iter().find(|c| c["name"] == name).unwrap();
    city["shard_api"].as_str().unwrap().to_string()
}

/// Sends an information record from athens to berlin and waits until berlin has received it.
fn packet_reaches_berlin(m: &Value, athens: &str, berlin: &str) {
    let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let token = m["cities"][0]["service_tokens"]["open-data-office"].as_str().unwrap();
    let record = json!({"kind": "information", "subject": "42".repeat(32), "to_city": "berlin",
        "payload": {"dataset": "split", "media_type": "application/json", "content": {"n": 1}}});
    let r = client
        .post(format!("{athens}/v1/records"))
        .bearer_auth(token)
        .json(&json!({ "records": [record] }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let sequence = r.json::<Value>().unwrap()["records"][0]["sequence"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.get(format!("{berlin}/v1/packets/athens/berlin/{sequence}")).send();
        if let Ok(r) = r
            && r.status().is_success()
        {
            assert_eq!(r.json::<Value>().unwrap()["state"], "received");
            break;
        }
        assert!(Instant::now() < deadline, "packet {sequence} never reached berlin");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two `--only-cities` processes started at the same moment on a fresh directory set it up one
/// at a time: one federation, whose packets travel between them.
#[test]
fn devnet_processes_started_together_share_one_federation() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_run_of_three_ports();
    let _first = start_with(dir.path(), port, &["--only-cities", "athens"]);
    let _second = start_with(dir.path(), port, &["--only-cities", "berlin,copenhagen"]);
    let m = manifest(dir.path());
    let shard = |name: &str| shard_api(&m, name);
    let (athens, berlin) = (shard("athens"), shard("berlin"));
    wait_ready(&[athens.clone(), berlin.clone(), shard("copenhagen")]);
    let genesis = urbis_bridge::load_genesis(&dir.path().join("genesis.json")).unwrap();
    assert_eq!(serde_json::to_value(genesis.federation_id()).unwrap(), m["federation_id"]);
    packet_reaches_berlin(&m, &athens, &berlin);
}
