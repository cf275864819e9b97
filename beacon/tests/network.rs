//! Four validators in one process, each with its own RocksDB and QUIC endpoint with pinned TLS
//! keys on loopback: they decide the same blocks; with one stopped the other three go on; the
//! stopped one restarts from its data directory, catches up and agrees.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use urbis_beacon::node::{Decision, run};
use urbis_beacon::store::BeaconStore;
use urbis_beacon::transport::TlsIdentity;
use urbis_core::hash::Hash32;

/// Collects decisions until `done`; every height's block must be the same at every validator.
async fn wait_until(
    rx: &mut mpsc::UnboundedReceiver<(usize, Decision)>,
    chains: &mut BTreeMap<u64, Hash32>,
    heights: &mut [u64; 4],
    done: impl Fn(&[u64; 4]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(heights) {
        let (i, d) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no progress: heights {heights:?}"))
            .unwrap();
        let first = *chains.entry(d.height).or_insert(d.block);
        assert_eq!(first, d.block, "validators decided different blocks at {}", d.height);
        heights[i] = heights[i].max(d.height);
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_agree_survive_one_stopping_and_a_restart_catches_up() {
    let cluster = common::Cluster::new("network", 2, 4);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (decided_tx, mut decided_rx) = mpsc::unbounded_channel::<(usize, Decision)>();
    let start = |i: usize| -> Running {
        let config = cluster.config(i);
        let (stop, stopped) = oneshot::channel::<()>();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = decided_tx.clone();
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let _ = out.send((i, d));
            }
        });
        let store = Arc::new(BeaconStore::open(&dirs[i].path().join("db")).unwrap());
        let task = tokio::spawn(async move {
            run(
                config,
                store,
                async {
                    let _ = stopped.await;
                },
                tx,
            )
            .await
            .unwrap();
        });
        Running { stop, task }
    };
    let mut running: Vec<Option<Running>> = (0..4).map(|i| Some(start(i))).collect();
    // (validator, height) -> block; one block per height across validators.
    let mut chains: BTreeMap<u64, Hash32> = BTreeMap::new();
    let mut heights = [0u64; 4];
    let rx = &mut decided_rx;
    wait_until(rx, &mut chains, &mut heights, |h| h.iter().all(|h| *h >= 3)).await;
    // Stop validator 3: 3 of 4 equal weights are more than 2/3; blocks go on.
    let r = running[3].take().unwrap();
    r.stop.send(()).unwrap();
    r.task.await.unwrap();
    let stopped_at = heights[3];
    let target = heights[0].max(heights[1]).max(heights[2]) + 3;
    wait_until(rx, &mut chains, &mut heights, |h| h[..3].iter().all(|h| *h >= target)).await;
    assert_eq!(heights[3], stopped_at, "a stopped validator decides nothing");
    // Restart it from its data directory: it catches up through sync and agrees.
    running[3] = Some(start(3));
    let target = heights[0] + 2;
    wait_until(rx, &mut chains, &mut heights, |h| h.iter().all(|h| *h >= target)).await;
    for r in running.into_iter().flatten() {
        r.stop.send(()).unwrap();
        r.task.await.unwrap();
    }
}

/// Validator 3 equivocates: it sends two different signed prevotes for one height and round
/// to the three honest validators. They keep the evidence, a block records it, and the API
/// serves it; the evidence verifies and names validator 3 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_prevotes_are_recorded_in_a_block_and_served() {
    use malachitebft_core_types::{NilOrVal, SignedMessage, VoteType};
    use urbis_beacon::block::EvidenceItem;
    use urbis_beacon::consensus::{BlockId, Bls, Height, Message, Round, Scheme, Vote, wire};
    use urbis_beacon::transport::Transport;
    use urbis_core::beacon::vote_signing_root;

    let cluster = common::Cluster::new("equivocation", 2, 4);
    let (fed, genesis, tls, addrs) = (&cluster.fed, &cluster.genesis, &cluster.tls, &cluster.addrs);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (decided_tx, mut decided_rx) = mpsc::unbounded_channel::<Decision>();
    let mut stops = Vec::new();
    let mut stores = Vec::new();
    let mut api_state = None;
    for (i, dir) in dirs.iter().enumerate() {
        let config = cluster.config(i);
        let store = Arc::new(BeaconStore::open(&dir.path().join("db")).unwrap());
        if i == 0 {
            api_state = Some(urbis_beacon::api::ApiState {
                store: store.clone(),
                genesis: genesis.clone(),
                pool: config.pool.clone(),
                sets: config.sets.clone(),
                metrics: config.metrics.clone(),
                clock: common::clock,
            });
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let out = decided_tx.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if i == 0 {
                    let _ = out.send(d);
                }
            }
        });
        let s = store.clone();
        tokio::spawn(async move {
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
        });
        stops.push(stop);
        stores.push(store);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(urbis_beacon::api::serve(listener, api_state.unwrap(), std::future::pending()));
    // Validator 3, Byzantine: its own keys, its own address, two prevotes per height.
    let allowed = Arc::new(std::sync::RwLock::new(tls.iter().map(|t| t.fingerprint()).collect()));
    let (byzantine, _inbox) =
        Transport::bind(&TlsIdentity::from_pkcs8(tls[3].key_pkcs8()).unwrap(), addrs[3], allowed)
            .unwrap();
    let key = Arc::new(fed.validator_keys[3].clone());
    let address = urbis_beacon::node::address_of(&key.public_key());
    let vote = |height: u64, value: NilOrVal<BlockId>| {
        let v = Vote {
            vote_type: VoteType::Prevote,
            height: Height(height),
            round: Round::new(0),
            value,
            address,
        };
        let root = vote_signing_root(&genesis.federation_id(), &v.message());
        let signature = Bls::sign(&key, &root);
        wire::encode_message::<Bls>(&Message::Vote(SignedMessage::new(v, signature))).unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let d = tokio::time::timeout_at(deadline, decided_rx.recv())
            .await
            .expect("the honest three keep deciding")
            .unwrap();
        let recorded = stores[0].recorded_evidence(10).unwrap();
        if let Some((height, EvidenceItem::Votes(e))) = recorded.into_iter().next() {
            break (height, e);
        }
        // Two different prevotes at the next height, round 0, to every honest validator.
        let next = d.height + 1;
        for (a, fp) in addrs.iter().zip(tls).take(3).map(|(a, t)| (a, t.fingerprint())) {
            for value in [NilOrVal::Nil, NilOrVal::Val(BlockId(Hash32([7; 32])))] {
                let _ = byzantine.send(*a, &fp, &vote(next, value)).await;
            }
        }
    };
    let (recorded_at, evidence) = recorded;
    assert_eq!(evidence.validator, address.0, "only the equivocating validator is named");
    let set = urbis_beacon::node::genesis_set(genesis).unwrap();
    assert!(evidence.verify::<Bls>(&genesis.federation_id(), &set));
    // The block at that height carries it; the API serves it as recorded.
    let block = stores[0].block(recorded_at).unwrap().unwrap();
    assert!(
        block
            .block
            .body
            .evidence
            .iter()
            .any(|e| matches!(e, EvidenceItem::Votes(v) if *v == evidence))
    );
    let served: serde_json::Value =
        reqwest::get(format!("{api}/v1/beacon/evidence")).await.unwrap().json().await.unwrap();
    let items = served["recorded"].as_array().unwrap();
    assert!(
        items.iter().any(|r| r["beacon_height"] == recorded_at
            && r["item"]["type"] == "votes"
            && r["item"]["kind"] == "double_prevote"),
        "{served}"
    );
    // The evidence is counted in the metrics the API serves.
    let text = reqwest::get(format!("{api}/metrics")).await.unwrap().text().await.unwrap();
    let counted = text
        .lines()
        .find_map(|l| l.strip_prefix("urbis_beacon_evidence_total{kind=\"double_prevote\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(counted >= 1, "{text}");
    assert!(text.lines().any(|l| l.starts_with("urbis_beacon_height ")), "{text}");
    for s in stops {
        let _ = s.send(());
    }
}

/// A block request waiting for a height not yet decided is answered (with what the store has)
/// as soon as the API stops, so a stopping validator is not held for the rest of the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_block_request_is_answered_when_the_api_stops() {
    let cluster = common::Cluster::new("stopping", 2, 4);
    let dir = tempfile::tempdir().unwrap();
    let config = cluster.config(0);
    let state = urbis_beacon::api::ApiState {
        store: Arc::new(BeaconStore::open(&dir.path().join("db")).unwrap()),
        genesis: cluster.genesis.clone(),
        pool: config.pool.clone(),
        sets: config.sets.clone(),
        metrics: config.metrics.clone(),
        clock: common::clock,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(urbis_beacon::api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let request = tokio::spawn(reqwest::get(format!("{api}/v1/beacon/blocks/1000?wait_ms=30000")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!request.is_finished(), "the request waits while the height is not decided");
    stop.send(()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the waiting request is answered once the API stops")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::NOT_FOUND);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the API stops without waiting out the request's wait")
        .unwrap()
        .unwrap();
}
