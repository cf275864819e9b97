//! The light client: follows set changes, checkpoints, set-hash checks, quorum edges.

use crate::fixture::world;
use proptest::prelude::*;
use urbis_core::beacon::{CertificateError, CommitCertificate};
use urbis_core::bls::SecretKey;
use urbis_core::light_client::{Applied, Checkpoint, LightClient, LightClientError};
use urbis_core::testkit::{BeaconChain, Federation, validator};
use urbis_core::validators::ValidatorSet;

fn rotated(label: &str, n: usize) -> (ValidatorSet, Vec<SecretKey>) {
    let (keys, validators): (Vec<_>, Vec<_>) =
        (0..n).map(|i| validator(&format!("{label}/{i}"), 10 + i as u64, None)).unzip();
    (ValidatorSet { validators }, keys)
}

#[test]
fn follows_set_changes_skipping_unchanged_blocks() {
    let fed = Federation::new("lc", 2, 4);
    let mut beacon = BeaconChain::new(&fed);
    for epoch in 0..5 {
        for _ in 0..3 {
            beacon.produce(&fed, vec![], None);
        }
        beacon.produce(&fed, vec![], Some(rotated(&format!("e{epoch}"), 4 + epoch)));
    }
    beacon.produce(&fed, vec![], None);
    let tip = beacon.blocks.len() as u64;
    let mut client = LightClient::from_genesis(&fed.genesis);
    for u in beacon.set_updates(tip) {
        assert_eq!(client.apply(&u).unwrap(), Applied::Accepted { set_changed: true });
    }
    assert_eq!(
        client.apply(&beacon.update(tip)).unwrap(),
        Applied::Accepted { set_changed: false }
    );
    assert_eq!(client.apply(&beacon.update(tip)).unwrap(), Applied::AlreadyKnown);
    assert_eq!(client.latest().map(|l| l.0), Some(tip));
    // Every earlier block still verifies against the set that was in force at its height.
    for h in 1..=tip {
        let b = &beacon.blocks[h as usize - 1];
        client.verify_header(&b.header, &b.certificate).unwrap();
    }
}

#[test]
fn a_header_naming_another_set_hash_is_refused() {
    let w = world();
    let mut u = w.beacon.update(1);
    u.header.validator_set_hash = urbis_core::Domain::ValidatorSet.hash(b"other");
    let keys: Vec<_> = w.federation.validator_keys.iter().map(Some).collect();
    u.certificate = CommitCertificate::sign(&u.header, &w.federation.id(), &keys).unwrap();
    assert!(matches!(
        w.client().apply(&u).unwrap_err(),
        LightClientError::SetHashMismatch { height: 1, .. }
    ));
}

#[test]
fn a_set_change_without_the_announced_set_is_refused() {
    let fed = Federation::new("lc2", 1, 4);
    let mut beacon = BeaconChain::new(&fed);
    beacon.produce(&fed, vec![], Some(rotated("n", 4)));
    let mut u = beacon.update(1);
    u.next_set = None;
    assert!(matches!(
        LightClient::from_genesis(&fed.genesis).apply(&u).unwrap_err(),
        LightClientError::NextSetMismatch { carried: None, .. }
    ));
}

#[test]
fn a_checkpoint_starts_the_client_mid_chain() {
    let fed = Federation::new("cp", 1, 4);
    let mut beacon = BeaconChain::new(&fed);
    beacon.produce(&fed, vec![], Some(rotated("a", 5)));
    beacon.produce(&fed, vec![], None);
    beacon.produce(&fed, vec![], None);
    let b2 = &beacon.blocks[1];
    let checkpoint = Checkpoint {
        header: b2.header.clone(),
        validators: beacon.set.clone(),
        next_validators: beacon.set.clone(),
    };
    let mut client = LightClient::from_checkpoint(&fed.genesis, &checkpoint).unwrap();
    client.apply(&beacon.update(3)).unwrap();
    assert!(matches!(
        client.verify_header(&beacon.blocks[0].header, &beacon.blocks[0].certificate).unwrap_err(),
        LightClientError::BeforeStart { height: 1, start: 2 }
    ));
    let mut bad = checkpoint.clone();
    bad.next_validators = fed.genesis.genesis().validators.clone();
    assert_eq!(
        LightClient::from_checkpoint(&fed.genesis, &bad).unwrap_err(),
        LightClientError::Checkpoint
    );
}

/// A federation whose 4 validators weigh `weights`.
fn weighted(weights: [u64; 4]) -> (urbis_core::genesis::ValidGenesis, Vec<SecretKey>) {
    let fed = Federation::new("weights", 1, 4);
    let mut g = fed.genesis.genesis().clone();
    for (v, w) in g.validators.validators.iter_mut().zip(weights) {
        v.weight = w;
    }
    (g.validate().unwrap(), fed.validator_keys)
}

fn certify(
    genesis: &urbis_core::genesis::ValidGenesis,
    keys: &[SecretKey],
    signers: &[bool],
) -> Result<(), LightClientError> {
    let header = urbis_core::beacon::BeaconHeader {
        version: 1,
        height: 1,
        time_ms: 0,
        previous: urbis_core::Hash32::ZERO,
        body_hash: urbis_core::Hash32::ZERO,
        crosslinks_root: urbis_core::Hash32::ZERO,
        crosslinks_count: 0,
        validator_set_hash: genesis.genesis().validators.hash(),
        next_validator_set_hash: genesis.genesis().validators.hash(),
    };
    let chosen: Vec<Option<&SecretKey>> =
        keys.iter().zip(signers).map(|(k, s)| s.then_some(k)).collect();
    let cert = CommitCertificate::sign(&header, &genesis.federation_id(), &chosen).unwrap();
    LightClient::from_genesis(genesis).verify_header(&header, &cert)
}

#[test]
fn a_certificate_of_exactly_two_thirds_of_the_weight_fails() {
    let (g, keys) = weighted([20, 20, 10, 10]);
    assert_eq!(
        certify(&g, &keys, &[true, true, false, false]).unwrap_err(),
        LightClientError::Certificate(CertificateError::InsufficientWeight {
            signed: 40,
            total: 60
        })
    );
    certify(&g, &keys, &[true, true, true, false]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn certificates_verify_exactly_when_signers_exceed_two_thirds(
        weights in proptest::array::uniform4(1u64..50),
        signers in proptest::array::uniform4(any::<bool>()),
    ) {
        prop_assume!(signers.iter().any(|s| *s));
        let (g, keys) = weighted(weights);
        let total: u64 = weights.iter().sum();
        let signed: u64 = weights.iter().zip(signers).filter(|(_, s)| *s).map(|(w, _)| w).sum();
        let result = certify(&g, &keys, &signers);
        if 3 * signed > 2 * total {
            prop_assert!(result.is_ok(), "{result:?}");
        } else {
            prop_assert_eq!(result.unwrap_err(), LightClientError::Certificate(CertificateError::InsufficientWeight { signed, total }));
        }
    }
}
