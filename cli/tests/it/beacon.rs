//! Four `urbis beacon` processes on loopback (real QUIC with pinned mutual TLS, real RocksDB):
//! `kill -9` one and blocks keep being finalized; kill a second and finalization stops; restart
//! both and it resumes; every validator serves the same chain, paced by genesis's block
//! interval, each certificate verified by the core against genesis.

use reqwest::blocking::Client;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Validator {
    config: PathBuf,
    api: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Validator {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_urbis"))
                .arg("beacon")
                .arg("--config")
                .arg(&self.config)
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

    fn block(&self, path: &str) -> Option<Value> {
        let r = Client::new().get(format!("{}{path}", self.api)).send().ok()?;
        r.status().is_success().then(|| r.json().unwrap())
    }

    /// The status of `/readyz`.
    fn ready(&self) -> u16 {
        Client::new().get(format!("{}/readyz", self.api)).send().map_or(0, |r| r.status().as_u16())
    }

    fn height(&self) -> u64 {
        self.block("/v1/beacon/blocks/latest")
            .and_then(|b| b["header"]["height"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Validator {
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

fn wait_for(what: &str, validators: &[Validator], done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let heights: Vec<u64> = validators.iter().map(Validator::height).collect();
        if done(&heights) {
            return heights;
        }
        if Instant::now() > deadline {
            for v in validators {
                eprintln!("{}", std::fs::read_to_string(&v.log).unwrap_or_default());
            }
            panic!("{what}: heights {heights:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn setup(dir: &Path) -> Vec<Validator> {
    let o = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args(["genesis", "create", "--name", "beacon-it", "--cities", "athens,berlin"])
        .args(["--validators-per-city", "2", "--out-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names =
        ["athens-validator-0", "athens-validator-1", "berlin-validator-0", "berlin-validator-1"];
    let quic: Vec<u16> = (0..4).map(|_| udp_port()).collect();
    (0..4)
        .map(|i| {
            let api = tcp_port();
            let mut toml = format!(
                "genesis = \"{g}\"\ndata_dir = \"{d}\"\nlisten = \"127.0.0.1:{q}\"\napi_listen = \"127.0.0.1:{api}\"\nvalidator_key_file = \"{k}\"\ntls_key_file = \"{t}\"\n",
                g = dir.join("genesis.json").display(),
                d = dir.join(format!("v{i}")).display(),
                q = quic[i],
                k = dir.join(format!("keys/{}.json", names[i])).display(),
                t = dir.join(format!("keys/{}-tls.json", names[i])).display(),
            );
            for j in (0..4).filter(|j| *j != i) {
                toml.push_str(&format!(
                    "[[peers]]\naddress = \"127.0.0.1:{}\"\nvalidator = \"{}\"\n",
                    quic[j], names[j]
                ));
            }
            let config = dir.join(format!("beacon-{i}.toml"));
            std::fs::write(&config, toml).unwrap();
            let mut v = Validator {
                config,
                api: format!("http://127.0.0.1:{api}"),
                log: dir.join(format!("beacon-{i}.log")),
                child: None,
            };
            v.start();
            v
        })
        .collect()
}

#[test]
fn validators_finalize_with_one_killed_stop_with_two_and_resume_agreeing() {
    let dir = tempfile::tempdir().unwrap();
    let mut vs = setup(dir.path());
    let h = wait_for("all four finalize", &vs, |h| h.iter().all(|h| *h >= 6));
    assert!(vs.iter().all(|v| v.ready() == 200), "validators that finalize are ready");
    // One validator killed: three of four equal weights are more than 2/3.
    vs[3].kill9();
    let base = h[..3].iter().copied().max().unwrap();
    wait_for("three go on", &vs[..3], |h| h.iter().all(|h| *h >= base + 3));
    // A second killed: two of four cannot finalize.
    vs[2].kill9();
    std::thread::sleep(Duration::from_secs(1));
    let stalled: Vec<u64> = vs[..2].iter().map(Validator::height).collect();
    std::thread::sleep(Duration::from_secs(3));
    let later: Vec<u64> = vs[..2].iter().map(Validator::height).collect();
    assert_eq!(stalled, later, "two of four validators must not finalize anything");
    // A stalled beacon serves stale blocks: its validators stop being ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !vs[..2].iter().all(|v| v.ready() == 503) {
        assert!(std::time::Instant::now() < deadline, "stalled validators still say ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both back: finalization resumes and the restarted ones catch up.
    vs[2].start();
    vs[3].start();
    let top = *later.iter().max().unwrap();
    let h = wait_for("all resume", &vs, |h| h.iter().all(|h| *h >= top + 3));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !vs.iter().all(|v| v.ready() == 200) {
        assert!(std::time::Instant::now() < deadline, "resumed validators are not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every validator serves the same block at every height, certified for genesis's set.
    let genesis = urbis_shard::node::load_genesis(&dir.path().join("genesis.json")).unwrap();
    let common = *h.iter().min().unwrap();
    // The set in force, as the API serves it, is the one the headers name.
    let set = vs[0].block("/v1/beacon/validators").expect("validators");
    assert_eq!(set["validators"]["validators"].as_array().unwrap().len(), 4);
    assert_eq!(set["validator_set_hash"], genesis.genesis().validators.hash().to_hex());
    assert_eq!(vs[0].block("/v1/beacon/validators?height=x"), None);
    let interval = genesis.genesis().parameters.beacon_block_interval_ms;
    let mut times = Vec::new();
    for height in 1..=common {
        let blocks: Vec<Value> = vs
            .iter()
            .map(|v| v.block(&format!("/v1/beacon/blocks/{height}")).expect("block"))
            .collect();
        for b in &blocks[1..] {
            assert_eq!(b["hash"], blocks[0]["hash"], "height {height}");
        }
        let header: urbis_core::beacon::BeaconHeader =
            serde_json::from_value(blocks[0]["header"].clone()).unwrap();
        assert_eq!(header.validator_set_hash.to_hex(), set["validator_set_hash"]);
        times.push(header.time_ms);
        let cert: urbis_core::beacon::CommitCertificate =
            serde_json::from_value(blocks[0]["certificate"].clone()).unwrap();
        urbis_core::beacon::verify_certificate(
            &genesis.federation_id(),
            genesis.validators(),
            &header,
            &cert,
        )
        .unwrap_or_else(|e| panic!("certificate of height {height}: {e}"));
    }
    // Blocks are paced by genesis's interval: each validator starts a height no sooner than one
    // interval after it started the previous. Heights 1 to 6 were decided with all four
    // running; their proposers' start times differ by less than an interval, so five heights
    // take more than four intervals (unpaced, they take about one).
    let span = times[5] - times[0];
    assert!(span >= 4 * interval, "heights 1 to 6 took {span} ms at a {interval} ms interval");
}

/// The approved set change `change`, in force from `effective`, approved by validators `by`
/// with their key files.
fn approve(
    dir: &Path,
    genesis: &urbis_core::genesis::ValidGenesis,
    change: urbis_core::set_change::SetChange,
    effective: u64,
    by: &[usize],
) -> Value {
    use urbis_core::set_change::{SetChangeProposal, SignedSetChange, aggregate_approvals};
    let names =
        ["athens-validator-0", "athens-validator-1", "berlin-validator-0", "berlin-validator-1"];
    let proposal = SetChangeProposal { change, effective_height: effective };
    let approvals: Vec<_> = by
        .iter()
        .map(|&i| {
            let path = dir.join(format!("keys/{}.json", names[i]));
            let secret = urbis_shard::node::read_secret_hex::<32>(&path).unwrap();
            let key = urbis_core::bls::SecretKey::from_bytes(&secret).unwrap();
            (i, proposal.approve(&genesis.federation_id(), &key))
        })
        .collect();
    let approvals = aggregate_approvals(4, &approvals).unwrap();
    serde_json::to_value(SignedSetChange { proposal, approvals }).unwrap()
}

fn post(url: &str, body: &Value) -> u16 {
    Client::new().post(url).json(body).send().unwrap().status().as_u16()
}

#[test]
fn a_live_federation_reweights_and_rotates_a_validator_key() {
    use urbis_core::set_change::SetChange;
    let dir = tempfile::tempdir().unwrap();
    let mut vs = setup(dir.path());
    let genesis = urbis_shard::node::load_genesis(&dir.path().join("genesis.json")).unwrap();
    let set = genesis.genesis().validators.clone();
    let h = wait_for("all four finalize", &vs, |h| h.iter().all(|h| *h >= 3));
    let now = *h.iter().max().unwrap();
    // Re-weight validator 0, approved by validators 0, 1 and 2 (3 of 4 equal weights).
    let e1 = now + 4;
    let reweight = SetChange::Reweight { bls_key: set.validators[0].bls_key, weight: 3 };
    let reweight = approve(dir.path(), &genesis, reweight, e1, &[0, 1, 2]);
    // Too few approvals are refused with a problem, not kept.
    let weak = approve(
        dir.path(),
        &genesis,
        SetChange::Reweight { bls_key: set.validators[1].bls_key, weight: 9 },
        e1,
        &[0, 1],
    );
    assert_eq!(post(&format!("{}/v1/beacon/set-changes", vs[1].api), &weak), 422);
    // Rotate validator 3 to a new BLS key and TLS key.
    let new_key = dir.path().join("keys/berlin-validator-1-next.json");
    let new_tls = dir.path().join("keys/berlin-validator-1-next-tls.json");
    let generate = |kind: &str, out: &Path| -> Value {
        let o = Command::new(env!("CARGO_BIN_EXE_urbis"))
            .args(["keys", "generate", "--kind", kind, "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["public"].clone()
    };
    let bls = generate("validator", &new_key);
    let tls = generate("validator-tls", &new_tls);
    let hex_array = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    let e2 = e1 + 3;
    let rotate = SetChange::Rotate {
        bls_key: set.validators[3].bls_key,
        new_bls_key: hex_array(&bls["bls_key"]).try_into().unwrap(),
        new_proof_of_possession: hex_array(&bls["proof_of_possession"]).try_into().unwrap(),
        new_tls_fingerprint: urbis_core::hash::Hash32(
            hex_array(&tls["tls_fingerprint"]).try_into().unwrap(),
        ),
    };
    let rotate = approve(dir.path(), &genesis, rotate, e2, &[0, 1, 2]);
    for v in &vs {
        assert_eq!(post(&format!("{}/v1/beacon/set-changes", v.api), &reweight), 202);
        assert_eq!(post(&format!("{}/v1/beacon/set-changes", v.api), &rotate), 202);
    }
    // Validator 3 runs with its old key until the rotation is in force, then restarts with
    // the new one (the federation never restarts).
    wait_for("the rotation takes force", &vs[..3], |h| h.iter().all(|h| *h >= e2));
    vs[3].kill9();
    let config = std::fs::read_to_string(&vs[3].config)
        .unwrap()
        .replace("keys/berlin-validator-1.json", "keys/berlin-validator-1-next.json")
        .replace("keys/berlin-validator-1-tls.json", "keys/berlin-validator-1-next-tls.json");
    std::fs::write(&vs[3].config, config).unwrap();
    vs[3].start();
    // The rotated validator signs again: a certificate after the rotation has its bit.
    let deadline = Instant::now() + Duration::from_secs(60);
    let signed_by_rotated = loop {
        let latest = vs[0].block("/v1/beacon/blocks/latest").unwrap();
        let signers = hex_array(&latest["certificate"]["signers"]);
        let height = latest["header"]["height"].as_u64().unwrap();
        if height > e2 && signers[0] & (1 << 3) != 0 {
            break height;
        }
        if Instant::now() > deadline {
            eprintln!("{}", std::fs::read_to_string(&vs[3].log).unwrap_or_default());
            panic!("the rotated validator never signed: {latest}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let h =
        wait_for("all four past the rotation", &vs, |h| h.iter().all(|h| *h >= signed_by_rotated));
    // Every certificate, before and after both changes, verifies with the core light client
    // from genesis, following the announced sets; every validator serves the same chain.
    let mut client = urbis_core::light_client::LightClient::from_genesis(&genesis);
    let top = *h.iter().min().unwrap();
    let mut changed = Vec::new();
    for height in 1..=top {
        let b = vs[0].block(&format!("/v1/beacon/blocks/{height}")).unwrap();
        for v in &vs[1..] {
            assert_eq!(v.block(&format!("/v1/beacon/blocks/{height}")).unwrap()["hash"], b["hash"]);
        }
        let update = urbis_core::light_client::LightClientUpdate {
            header: serde_json::from_value(b["header"].clone()).unwrap(),
            certificate: serde_json::from_value(b["certificate"].clone()).unwrap(),
            next_set: serde_json::from_value(b["next_validators"].clone()).unwrap(),
        };
        if update.next_set.is_some() {
            changed.push(height + 1);
        }
        client.apply(&update).unwrap_or_else(|e| panic!("block {height}: {e}"));
    }
    assert_eq!(changed, vec![e1, e2], "the sets changed exactly at the stated heights");
    let in_force = client.set_at(top).unwrap();
    let served = vs[2].block(&format!("/v1/beacon/validators?height={top}")).unwrap();
    assert_eq!(served["validator_set_hash"], in_force.hash().to_hex());
    let validators = served["validators"]["validators"].as_array().unwrap();
    assert_eq!(validators[0]["weight"], 3);
    assert_eq!(validators[3]["bls_key"], bls["bls_key"]);
    assert_eq!(validators[3]["tls_fingerprint"], tls["tls_fingerprint"]);
    assert_eq!(served["changes"].as_array().unwrap().len(), 2, "{served}");
    // The served updates alone bring a fresh client from genesis to the set in force.
    let updates: Vec<urbis_core::light_client::LightClientUpdate> =
        serde_json::from_value(served["updates"].clone()).unwrap();
    let mut fresh = urbis_core::light_client::LightClient::from_genesis(&genesis);
    fresh.apply_all(&updates).unwrap();
    assert_eq!(fresh.set_at(top).unwrap().hash(), in_force.hash());
}
