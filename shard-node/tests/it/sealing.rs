//! Sealing on real RocksDB.

use std::sync::Arc;
use urbis_core::light_client::LightClient;
use urbis_core::proof::{StateFactProof, verify_state_proof};
use urbis_core::record::{CapitalOperation, CapitalPayload, CityId, Record, RecordBody};
use urbis_core::state::StateKey;
use urbis_core::testkit::{Federation, information_record};
use urbis_shard::ledger::Rejection;
use urbis_shard::sealer::{self, BlockLimits, Outcome, Receipt, SealerParts, Submission};
use urbis_shard::store::Store;

fn capital(n: u64, amount: u128, operation: CapitalOperation) -> Record {
    let mut r = information_record(CityId(0), n);
    r.service = "treasury".into();
    r.body = RecordBody::Capital(CapitalPayload { asset: "EUR".into(), amount, operation });
    r
}

async fn submit(s: &sealer::Sealer, records: Vec<Record>) -> Outcome {
    queue(s, records, None).await.unwrap()
}

#[tokio::test]
async fn state_proofs_from_rocksdb_verify_and_submissions_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new("shard-it", 2, 4);
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let genesis = Arc::new(fed.genesis.clone());
    let key =
        urbis_core::sealing::SealingKey::from_seed(&urbis_core::testkit::seed("shard-it/city0"));
    let metrics = Arc::new(urbis_shard::metrics::ShardMetrics::default());
    let (s, thread) = sealer::start(
        SealerParts {
            store: store.clone(),
            genesis,
            city: CityId(0),
            key,
            limits: BlockLimits { records_max: 100, bytes_max: 1 << 20 },
            clock: || 1_790_000_000_000,
            metrics: metrics.clone(),
            beacon_view: Default::default(),
            packet_timeout_blocks: 10,
        },
        16,
    )
    .unwrap();
    assert!(matches!(
        submit(&s, vec![capital(1, 100, CapitalOperation::Issue { to: "alice".into() })]).await,
        Outcome::Sealed(_)
    ));
    // The second record overdraws: the whole submission is refused, the first is not sealed.
    let both = vec![
        capital(2, 30, CapitalOperation::Transfer { from: "alice".into(), to: "bob".into() }),
        capital(3, 80, CapitalOperation::Transfer { from: "alice".into(), to: "carol".into() }),
    ];
    assert!(matches!(
        submit(&s, both).await,
        Outcome::Rejected(Rejection::InsufficientFunds { index: 1, balance: 70, .. })
    ));
    assert!(matches!(
        submit(
            &s,
            vec![capital(
                4,
                30,
                CapitalOperation::Transfer { from: "alice".into(), to: "bob".into() }
            )]
        )
        .await,
        Outcome::Sealed(_)
    ));
    let tip = s.tip().unwrap();
    assert_eq!(tip.height, 1);
    // Balances proven from the RocksDB tree against the sealed header.
    let header = store.header(tip.height).unwrap().unwrap();
    let client = LightClient::from_genesis(&fed.genesis);
    let tree = jmt::JellyfishMerkleTree::<_, urbis_core::state::StateHasher>::new(&*store);
    for (account, expected) in [("alice", Some(70u128)), ("bob", Some(30)), ("carol", None)] {
        let key = StateKey::Balance { asset: "EUR".into(), account: account.into() };
        let (value, proof) = tree
            .get_with_proof(jmt::KeyHash(key.key_hash().0), tip.state_version.unwrap())
            .unwrap();
        let proof = urbis_core::state::StateProof::from_jmt(&proof).unwrap();
        let fact = StateFactProof {
            key: key.clone(),
            value,
            proof,
            header: header.clone(),
            finality: None,
        };
        let v = verify_state_proof(&fed.genesis, &client, CityId(0), &key, &fact).unwrap();
        assert_eq!(
            v.value.map(|b| urbis_core::encoding::decode::<u128>(&b).unwrap()),
            expected,
            "{account}"
        );
    }
    // The same information record twice is a duplicate.
    let r = information_record(CityId(0), 9);
    assert!(matches!(submit(&s, vec![r.clone()]).await, Outcome::Sealed(_)));
    assert!(matches!(submit(&s, vec![r]).await, Outcome::Rejected(Rejection::Duplicate { .. })));
    // The metrics count what happened: three blocks, the records by kind, refusals by rule.
    let text = metrics.encode();
    for line in [
        "urbis_records_ingested_total{kind=\"capital\"} 2",
        "urbis_records_ingested_total{kind=\"information\"} 1",
        "urbis_records_rejected_total{reason=\"insufficient_funds\"} 1",
        "urbis_records_rejected_total{reason=\"duplicate\"} 1",
        "urbis_fsyncs_total 3",
        "urbis_shard_block_height 2",
        "urbis_seal_duration_seconds_count 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    // And where the sealing time went, by phase.
    for phase in ["rules", "state_tree", "header", "batch", "write"] {
        let prefix = format!("urbis_shard_seal_phase_seconds_total{{phase=\"{phase}\"}} ");
        let seconds: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{prefix} in\n{text}"))
            .parse()
            .unwrap();
        assert!(seconds > 0.0, "{phase}: {seconds}");
    }
    drop(s);
    thread.join().unwrap();
    // Reopened, the store has the same tip.
    let tip_before = store.tip().unwrap();
    drop(store);
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.tip().unwrap(), tip_before);
}

/// Queues a submission without waiting for its answer.
fn queue(
    s: &sealer::Sealer,
    records: Vec<Record>,
    idempotency: Option<&str>,
) -> tokio::sync::oneshot::Receiver<Outcome> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let n = records.len();
    let submission = Submission {
        ids: records.iter().map(Record::id).collect(),
        encoded: records.iter().map(urbis_core::encoding::encode).collect(),
        records,
        payloads: vec![None; n],
        bytes: 100,
        erasure: None,
        packet: None,
        idempotency: idempotency
            .map(|k| ("treasury".to_string(), k.to_string(), urbis_core::hash::Hash32([7; 32]))),
        render: |r: &[Receipt]| serde_json::to_vec(r).unwrap(),
        reply,
    };
    if s.submit(submission).is_err() {
        panic!("the queue is large enough for the test");
    }
    rx
}

/// One submission per block, all queued at once: each block is sealed while the one before it
/// is still being written, and must see that block's balances, records and idempotency keys.
#[tokio::test]
async fn a_block_sealed_while_the_previous_one_is_written_sees_its_effects() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new("shard-it", 2, 4);
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let key =
        urbis_core::sealing::SealingKey::from_seed(&urbis_core::testkit::seed("shard-it/city0"));
    let (s, thread) = sealer::start(
        SealerParts {
            store: store.clone(),
            genesis: Arc::new(fed.genesis.clone()),
            city: CityId(0),
            key,
            limits: BlockLimits { records_max: 1, bytes_max: 1 << 20 },
            clock: || 1_790_000_000_000,
            metrics: Arc::new(urbis_shard::metrics::ShardMetrics::default()),
            beacon_view: Default::default(),
            packet_timeout_blocks: 10,
        },
        256,
    )
    .unwrap();
    const HOPS: u64 = 40;
    let mut answers = vec![queue(
        &s,
        vec![capital(0, 100, CapitalOperation::Issue { to: "a0".into() })],
        Some("issue"),
    )];
    // The same request again, in the next block: answered from the first, not sealed twice.
    answers.push(queue(
        &s,
        vec![capital(0, 100, CapitalOperation::Issue { to: "a0".into() })],
        Some("issue"),
    ));
    // Each transfer spends what the block before it credited.
    for n in 1..=HOPS {
        answers.push(queue(
            &s,
            vec![capital(
                n,
                100,
                CapitalOperation::Transfer { from: format!("a{}", n - 1), to: format!("a{n}") },
            )],
            None,
        ));
    }
    // A record, and the same record in the next block: a duplicate.
    let r = information_record(CityId(0), 1_000);
    answers.push(queue(&s, vec![r.clone()], None));
    answers.push(queue(&s, vec![r], None));
    let mut outcomes = Vec::new();
    for a in answers {
        outcomes.push(a.await.unwrap());
    }
    let Outcome::Sealed(first) = &outcomes[0] else { panic!("issue: {:?}", outcomes[0]) };
    match &outcomes[1] {
        Outcome::Replayed(entry) => {
            assert_eq!(entry.response, serde_json::to_vec(first).unwrap());
        }
        other => panic!("retry of the issue: {other:?}"),
    }
    let mut heights = vec![first[0].height];
    for (n, o) in outcomes[2..2 + HOPS as usize].iter().enumerate() {
        match o {
            Outcome::Sealed(r) => heights.push(r[0].height),
            other => panic!("transfer {}: {other:?}", n + 1),
        }
    }
    assert!(matches!(outcomes[2 + HOPS as usize], Outcome::Sealed(_)));
    assert!(matches!(outcomes[3 + HOPS as usize], Outcome::Rejected(Rejection::Duplicate { .. })));
    assert_eq!(heights, (0..=HOPS).collect::<Vec<_>>(), "one block per submission, in order");
    drop(s);
    thread.join().unwrap();
    // On disk: an unbroken chain whose state roots are the tree's, and the value at the end.
    let tip = store.tip().unwrap().unwrap();
    assert_eq!(tip.height, HOPS + 1);
    let tree = jmt::JellyfishMerkleTree::<_, urbis_core::state::StateHasher>::new(&*store);
    let mut previous = urbis_core::hash::Hash32::ZERO;
    for h in 0..=tip.height {
        let header = store.header(h).unwrap().unwrap().header;
        assert_eq!(header.previous, previous, "height {h}");
        previous = header.hash();
        let version = store.state_version_at(h).unwrap().unwrap().unwrap();
        assert_eq!(tree.get_root_hash(version).unwrap().0, header.state_root.0, "height {h}");
    }
    let balance = |account: String| {
        let key = StateKey::Balance { asset: "EUR".into(), account };
        tree.get(jmt::KeyHash(key.key_hash().0), tip.state_version.unwrap())
            .unwrap()
            .map(|b| urbis_core::encoding::decode::<u128>(&b).unwrap())
    };
    assert_eq!(balance(format!("a{HOPS}")), Some(100));
    for n in 0..HOPS {
        assert_eq!(balance(format!("a{n}")).unwrap_or(0), 0, "a{n}");
    }
}
