//! Benchmarks of the proof chain, each beside its limit measured in the same run:
//! certificate verification vs its irreducible pairing-library operations, record-proof
//! verification vs BLAKE3 node hashes, and light-client catch-up over 100 000 blocks.
#![allow(missing_docs, clippy::disallowed_methods, clippy::unwrap_used)]

use bls12_381::{G1Affine, G2Affine, G2Prepared, multi_miller_loop};
use criterion::Criterion;
use std::hint::black_box;
use std::time::Instant;
use urbis_benches::{ns_per_call, report};
use urbis_core::beacon::{BeaconHeader, CommitCertificate, verify_certificate_over};
use urbis_core::bls::{self, PublicKey, SecretKey, Signature};
use urbis_core::hash::Hash32;
use urbis_core::light_client::{LightClient, LightClientUpdate};
use urbis_core::merkle::{Blake3Tree, InclusionProof, TreeHasher, root_from_leaf_hashes};
use urbis_core::proof::verify_record_proof;
use urbis_core::record::CityId;
use urbis_core::testkit::{Federation, information_record, validator};
use urbis_core::validators::{KeyCache, Quorum, TrustedSet, Validator, ValidatorSet};

fn validators(label: &str, n: usize) -> (Vec<SecretKey>, Vec<Validator>) {
    (0..n).map(|i| validator(&format!("{label}/{i}"), 1, None)).unzip()
}

fn certificate_verification(c: &mut Criterion) {
    let (keys, entries) = validators("bench", 100);
    let set = ValidatorSet { validators: entries };
    let trusted = TrustedSet::new(&set, Quorum::TWO_THIRDS, &mut KeyCache::default()).unwrap();
    let root = Hash32(blake3::hash(b"signing root").into());
    let signatures: Vec<Option<Signature>> =
        keys.iter().map(|k| Some(k.sign(root.as_bytes()))).collect();
    let cert = CommitCertificate::aggregate(&signatures).unwrap();
    verify_certificate_over(&trusted, &root, &cert).unwrap();

    let mut g = c.benchmark_group("certificate_100_validators");
    g.sample_size(30);
    g.bench_function("verify_certificate", |b| {
        b.iter(|| verify_certificate_over(&trusted, black_box(&root), black_box(&cert)).unwrap())
    });
    g.finish();

    // The irreducible operations, each timed alone.
    let sig_point = Signature::from_bytes(&cert.signature).unwrap();
    let h = G2Affine::from(bls::hash_to_g2(root.as_bytes(), bls::DST_SIGNATURE));
    let agg = G1Affine::from(PublicKey::aggregate_points(trusted.keys()));
    let neg_g1 = -G1Affine::generator();
    let t_hash = ns_per_call(15, 40, || {
        black_box(bls::hash_to_g2(black_box(root.as_bytes()), bls::DST_SIGNATURE));
    });
    let t_decompress = ns_per_call(15, 40, || {
        black_box(bls::decode_g2(black_box(&cert.signature)).unwrap());
    });
    let t_aggregate = ns_per_call(15, 200, || {
        black_box(G1Affine::from(PublicKey::aggregate_points(black_box(trusted.keys()))));
    });
    let t_miller = ns_per_call(15, 40, || {
        let hp = G2Prepared::from(h);
        let sp = G2Prepared::from(*sig_point.point());
        black_box(multi_miller_loop(&[(&agg, &hp), (&neg_g1, &sp)]));
    });
    let ml = multi_miller_loop(&[
        (&agg, &G2Prepared::from(h)),
        (&neg_g1, &G2Prepared::from(*sig_point.point())),
    ]);
    let t_final = ns_per_call(15, 40, || {
        black_box(black_box(ml).final_exponentiation());
    });
    let limit = t_hash + t_decompress + t_aggregate + t_miller + t_final;
    let figure = ns_per_call(15, 20, || {
        black_box(verify_certificate_over(&trusted, black_box(&root), black_box(&cert)).unwrap());
    });
    println!(
        "certificate parts: hash_to_G2 {:.0} µs, G2 decompress+subgroup {:.0} µs, aggregate 100 keys {:.0} µs, \
         2-pair Miller loop {:.0} µs, final exponentiation {:.0} µs",
        t_hash / 1e3,
        t_decompress / 1e3,
        t_aggregate / 1e3,
        t_miller / 1e3,
        t_final / 1e3
    );
    report(
        "certificate verification, 100 validators",
        &format!("{:.3} ms", figure / 1e6),
        &format!("{:.3} ms (sum of irreducible operations)", limit / 1e6),
        figure / limit,
        "≤ 1.1",
    );
}

fn record_proofs(c: &mut Criterion) {
    let tree = Blake3Tree::records();
    let node = ns_per_call(15, 20_000, || {
        black_box(tree.node(black_box(&Hash32::ZERO), black_box(&Hash32::ZERO)));
    });
    for (label, size) in [("10k leaves (largest block)", 10_000u64), ("1M leaves", 1 << 20)] {
        // Leaves stand for records; the proven record is real and sits at each proven index.
        let records: Vec<_> = (0..16).map(|i| information_record(CityId(0), i)).collect();
        let indexes: Vec<u64> = (0..16).map(|i| (i * 7919 * 131) % size).collect();
        let mut leaves: Vec<Hash32> = (0..size).map(|i| tree.leaf(&i.to_le_bytes())).collect();
        for (r, &i) in records.iter().zip(&indexes) {
            leaves[i as usize] = tree.leaf(r.id().as_bytes());
        }
        let root = root_from_leaf_hashes(&tree, &leaves);
        let proofs: Vec<InclusionProof> =
            indexes.iter().map(|&i| InclusionProof::build(&tree, &leaves, i).unwrap()).collect();
        drop(leaves);
        for (r, p) in records.iter().zip(&proofs) {
            urbis_core::proof::verify_record_inclusion(r, p, root, size).unwrap();
        }
        let mut g = c.benchmark_group("record_proof");
        g.bench_function(label, |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % 16;
                urbis_core::proof::verify_record_inclusion(&records[k], &proofs[k], root, size)
                    .unwrap()
            })
        });
        g.finish();
        let mut k = 0;
        let figure = ns_per_call(15, 20_000, || {
            k = (k + 1) % 16;
            black_box(
                urbis_core::proof::verify_record_inclusion(&records[k], &proofs[k], root, size)
                    .unwrap(),
            );
        });
        let path_len = proofs[0].path.len() as f64;
        // Limit: one BLAKE3 node hash per level (leaf and record-id hashes not counted).
        let limit = node * path_len;
        println!("record proof {label}: path {path_len} hashes, node hash {node:.0} ns");
        report(
            &format!("record-proof verification, {label}"),
            &format!("{:.0} proofs/s per core ({:.2} µs)", 1e9 / figure, figure / 1e3),
            &format!("{:.0} proofs/s ({path_len} node hashes × {node:.0} ns)", 1e9 / limit),
            figure / limit,
            if size > 10_000 { "≥ 200 000 proofs/s" } else { "-" },
        );
    }
    // The whole committed-level chain (record, path, Ed25519 seal) for reference.
    let fed = Federation::new("bench", 1, 4);
    let mut shard = urbis_core::testkit::ShardChain::new(CityId(0));
    shard.seal(&fed, (0..1000).map(|i| information_record(CityId(0), i)).collect(), &[]);
    let proof = shard.record_proof(0, 500);
    let client = LightClient::from_genesis(&fed.genesis);
    let mut g = c.benchmark_group("record_proof");
    g.bench_function("committed level with Ed25519 seal, 1000-record block", |b| {
        b.iter(|| verify_record_proof(&fed.genesis, &client, black_box(&proof)).unwrap())
    });
    g.finish();
}

fn light_client_catch_up(c: &mut Criterion) {
    const BLOCKS: u64 = 100_000;
    const CHANGES: u64 = 100;
    const VALIDATORS: usize = 100;
    let fed = Federation::new("catch-up", 1, 4);
    // Genesis with 100 validators.
    let (mut keys, entries) = validators("catch-up/genesis", VALIDATORS);
    let mut g = fed.genesis.genesis().clone();
    g.validators = ValidatorSet { validators: entries };
    let genesis = g.validate().unwrap();
    let fid = genesis.federation_id();
    let mut set = genesis.genesis().validators.clone();
    // A set change every 1000 blocks rotates one validator's key; only the blocks that change
    // the set, and the tip, are needed to catch up.
    let mut updates = Vec::new();
    let mut previous = Hash32::ZERO;
    for k in 0..=CHANGES {
        let height = if k == CHANGES { BLOCKS } else { (k + 1) * (BLOCKS / (CHANGES + 1)) };
        let mut next = set.clone();
        let mut next_keys = keys.clone();
        if k < CHANGES {
            let (sk, v) = validator(&format!("catch-up/rotation{k}"), 1, None);
            let slot = (k as usize) % VALIDATORS;
            next.validators[slot] = v;
            next_keys[slot] = sk;
        }
        let header = BeaconHeader {
            version: 1,
            height,
            time_ms: height * 500,
            previous,
            body_hash: Hash32::ZERO,
            crosslinks_root: Hash32::ZERO,
            crosslinks_count: 0,
            validator_set_hash: set.hash(),
            next_validator_set_hash: next.hash(),
        };
        previous = header.hash();
        let signers: Vec<Option<&SecretKey>> = keys.iter().map(Some).collect();
        let certificate = CommitCertificate::sign(&header, &fid, &signers).unwrap();
        updates.push(LightClientUpdate {
            header,
            certificate,
            next_set: (k < CHANGES).then(|| next.clone()),
        });
        set = next;
        keys = next_keys;
    }
    let catch_up = || {
        let mut client = LightClient::from_genesis(&genesis);
        if let Err((i, e)) = client.apply_all(black_box(&updates)) {
            panic!("update {i} refused: {e}");
        }
        assert_eq!(client.latest().map(|l| l.0), Some(BLOCKS));
    };
    catch_up();
    let mut group = c.benchmark_group("light_client");
    group.sample_size(10);
    group.bench_function("catch-up 100k blocks, 100 set changes, 100 validators", |b| {
        b.iter(catch_up)
    });
    group.finish();
    let start = Instant::now();
    for _ in 0..3 {
        catch_up();
    }
    let figure = start.elapsed().as_secs_f64() / 3.0;
    report(
        "light-client catch-up from genesis, 100 000 blocks, 100 set changes",
        &format!("{:.3} s", figure),
        "1 s (goal)",
        figure,
        "< 1 s",
    );
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: benchmarks are measured in
    // release only, so there is nothing to do here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("proof_chain: run with `cargo bench` (release) to measure");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    certificate_verification(&mut c);
    record_proofs(&mut c);
    light_client_catch_up(&mut c);
    c.final_summary();
}
