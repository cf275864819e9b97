//! End-to-end tests of the `urbis` binary as a real process: key files, genesis, offline
//! verification of proofs at both levels and of broken proofs.
// Process-level tests wait for real processes against wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use urbis_core::beacon::Crosslink;
use urbis_core::proof::ProofDocument;
use urbis_core::record::CityId;
use urbis_core::testkit::{BeaconChain, Federation, ShardChain, information_record};

fn urbis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_urbis")).args(args).output().expect("running urbis")
}

fn stdout(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn keys_generate_writes_mode_0600_and_prints_only_public_parts() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["sealing", "validator", "subject"] {
        let path = dir.path().join(format!("{kind}.json"));
        let o = urbis(&["keys", "generate", "--kind", kind, "--out", path.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let secret = file["secret_hex"].as_str().unwrap();
        assert_eq!(secret.len(), 64);
        let printed = String::from_utf8_lossy(&o.stdout);
        assert!(!printed.contains(secret), "the secret was printed");
        // Never overwrites an existing key.
        let again = urbis(&["keys", "generate", "--kind", kind, "--out", path.to_str().unwrap()]);
        assert!(!again.status.success());
    }
}

#[test]
fn genesis_create_then_validate_and_subject_id() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = urbis(&[
        "genesis",
        "create",
        "--name",
        "devnet",
        "--cities",
        "athens,berlin",
        "--asset",
        "EUR:berlin",
        "--out-dir",
        out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let created = stdout(&o);
    let genesis = dir.path().join("genesis.json");
    let o = urbis(&["genesis", "validate", genesis.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = stdout(&o);
    assert_eq!(v["federation_id"], created["federation_id"]);
    assert_eq!(v["validators"], 4);
    // A tampered genesis (a weight of zero) is refused with the reason.
    let mut g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&genesis).unwrap()).unwrap();
    g["validators"]["validators"][2]["weight"] = 0.into();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&g).unwrap()).unwrap();
    let o = urbis(&["genesis", "validate", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("validator 2 has weight zero"));
    // Subject ids: same person in two spellings, read from stdin.
    let key = dir.path().join("keys/subject.json");
    let id = |raw: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_urbis"))
            .args(["subject-id", "--key-file", key.to_str().unwrap(), "--scheme", "national:DE"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(raw.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(id("12 345 678\n"), id("12345678\n"));
    assert_eq!(id("12345678\n").trim().len(), 64);
}

fn write(dir: &Path, name: &str, value: &impl serde::Serialize) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn verify_checks_committed_and_final_proofs_offline_and_names_the_failing_link() {
    let fed = Federation::new("cli", 2, 4);
    let mut shard = ShardChain::new(CityId(1));
    let mut beacon = BeaconChain::new(&fed);
    for h in 0..3u64 {
        shard.seal(&fed, (0..3).map(|i| information_record(CityId(1), h * 3 + i)).collect(), &[]);
    }
    let header_hash = shard.headers[2].header.hash();
    beacon.produce(&fed, vec![Crosslink { city: CityId(1), header_hash }], None);
    let dir = tempfile::tempdir().unwrap();
    let genesis = write(dir.path(), "genesis.json", fed.genesis.genesis());

    let committed = shard.record_proof(1, 2);
    let path = write(dir.path(), "committed.json", &ProofDocument::Record(committed.clone()));
    let o = urbis(&["verify", &path, "--genesis", &genesis]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(stdout(&o)["level"], "committed");

    let mut fin = committed.clone();
    fin.finality = beacon.finality(&shard, 1, 1);
    let path = write(dir.path(), "final.json", &ProofDocument::Record(fin.clone()));
    let o = urbis(&["verify", &path, "--genesis", &genesis]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let v = stdout(&o);
    assert_eq!((v["level"].as_str(), v["beacon_height"].as_u64()), (Some("final"), Some(1)));
    assert_eq!(v["record_id"], serde_json::json!(fin.record.id()));

    let mut broken = fin.clone();
    broken.finality.as_mut().unwrap().history.as_mut().unwrap().inclusion.path[0].0[0] ^= 1;
    let path = write(dir.path(), "broken.json", &ProofDocument::Record(broken));
    let o = urbis(&["verify", &path, "--genesis", &genesis]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o)["link"], "history_path");

    let mut forged = fin;
    forged.record.time_ms += 1;
    let path = write(dir.path(), "forged.json", &ProofDocument::Record(forged));
    let o = urbis(&["verify", &path, "--genesis", &genesis]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o)["link"], "records_path");
}
mod beacon;
mod devnet;
mod faults;
mod packets;
mod shard;
mod traces;
