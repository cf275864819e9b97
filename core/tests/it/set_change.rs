//! Validator-set changes: approved by more than the quorum of the current weight, in force
//! from a stated later height, and producing a set the light client accepts.

use urbis_core::beacon::CertificateError;
use urbis_core::light_client::LightClient;
use urbis_core::set_change::{
    SetChange, SetChangeError, SetChangeProposal, SignedSetChange, aggregate_approvals, apply,
};
use urbis_core::testkit::{BeaconChain, Federation, validator};
use urbis_core::validators::{KeyCache, TrustedSet, ValidatorSetError};

fn signed(fed: &Federation, proposal: SetChangeProposal, by: &[usize]) -> SignedSetChange {
    let approvals: Vec<_> =
        by.iter().map(|&i| (i, proposal.approve(&fed.id(), &fed.validator_keys[i]))).collect();
    let approvals = aggregate_approvals(fed.validator_keys.len(), &approvals).unwrap();
    SignedSetChange { proposal, approvals }
}

#[test]
fn a_change_needs_the_quorum_of_the_current_set_and_a_later_height() {
    let fed = Federation::new("set-change", 2, 4);
    let g = &fed.genesis;
    let current = g.validators();
    let key0 = g.genesis().validators.validators[0].bls_key;
    let proposal = SetChangeProposal {
        change: SetChange::Reweight { bls_key: key0, weight: 30 },
        effective_height: 12,
    };
    // Three of four equal weights: more than 2/3.
    signed(&fed, proposal.clone(), &[0, 1, 3]).verify(&g.federation_id(), current, 10).unwrap();
    // Two of four: not enough.
    let e = signed(&fed, proposal.clone(), &[0, 1]).verify(&g.federation_id(), current, 10);
    assert_eq!(
        e,
        Err(SetChangeError::Approvals(CertificateError::InsufficientWeight {
            signed: 20,
            total: 40
        }))
    );
    // Approvals of another proposal, or in another federation, do not carry over.
    let mut other = signed(&fed, proposal.clone(), &[0, 1, 2]);
    other.proposal.effective_height = 13;
    assert_eq!(
        other.verify(&g.federation_id(), current, 10),
        Err(SetChangeError::Approvals(CertificateError::BadSignature))
    );
    let foreign = Federation::new("another", 2, 4);
    let mut stolen = signed(&foreign, proposal.clone(), &[0, 1, 2]);
    stolen.proposal = proposal.clone();
    assert!(stolen.verify(&g.federation_id(), current, 10).is_err());
    // In force no sooner than two heights after the block that carries it.
    assert_eq!(
        signed(&fed, proposal, &[0, 1, 2]).verify(&g.federation_id(), current, 11),
        Err(SetChangeError::TooSoon { effective: 12, min: 13 })
    );
}

#[test]
fn each_kind_of_change_yields_a_checked_set_the_light_client_follows() {
    let fed = Federation::new("set-change", 2, 4);
    let g = &fed.genesis;
    let set = &g.genesis().validators;
    let quorum = g.quorum();
    let mut cache = KeyCache::default();
    let key = |i: usize| set.validators[i].bls_key;
    // Re-weight.
    let reweighted =
        apply(set, &SetChange::Reweight { bls_key: key(1), weight: 25 }, quorum, &mut cache)
            .unwrap();
    assert_eq!(reweighted.validators[1].weight, 25);
    // Rotate: a new key with its proof of possession keeps the validator's place.
    let (new_sk, new_entry) = validator("set-change/rotated", 10, None);
    let rotate = SetChange::Rotate {
        bls_key: key(2),
        new_bls_key: new_entry.bls_key,
        new_proof_of_possession: new_entry.proof_of_possession,
        new_tls_fingerprint: new_entry.tls_fingerprint,
    };
    let rotated = apply(set, &rotate, quorum, &mut cache).unwrap();
    assert_eq!(rotated.validators[2].bls_key, new_entry.bls_key);
    assert_eq!(rotated.validators[2].name, set.validators[2].name);
    // A rotation whose proof of possession is another key's is refused.
    let mut bad = rotate.clone();
    if let SetChange::Rotate { new_proof_of_possession, .. } = &mut bad {
        *new_proof_of_possession = set.validators[0].proof_of_possession;
    }
    assert_eq!(
        apply(set, &bad, quorum, &mut cache),
        Err(SetChangeError::Set(ValidatorSetError::InvalidProofOfPossession { index: 2 }))
    );
    // Add and remove; a key that is not in the set is refused; a duplicate too.
    let (_, added) = validator("set-change/added", 10, None);
    let grown =
        apply(set, &SetChange::Add { validator: added.clone() }, quorum, &mut cache).unwrap();
    assert_eq!(grown.validators.len(), 5);
    let shrunk = apply(&grown, &SetChange::Remove { bls_key: key(0) }, quorum, &mut cache).unwrap();
    assert_eq!(shrunk.validators.len(), 4);
    assert_eq!(
        apply(set, &SetChange::Remove { bls_key: added.bls_key }, quorum, &mut cache),
        Err(SetChangeError::UnknownValidator)
    );
    assert!(matches!(
        apply(&grown, &SetChange::Add { validator: added }, quorum, &mut cache),
        Err(SetChangeError::Set(ValidatorSetError::DuplicateKey { .. }))
    ));
    // The rotated set, announced by a certified block, certifies the next one for a light
    // client that started at genesis; the old key no longer counts.
    let mut keys = fed.validator_keys.clone();
    keys[2] = new_sk;
    let mut chain = BeaconChain::new(&fed);
    chain.produce(&fed, vec![], None);
    chain.produce(&fed, vec![], Some((rotated.clone(), keys)));
    chain.produce(&fed, vec![], None);
    let mut client = LightClient::from_genesis(g);
    for h in 1..=3 {
        client.apply(&chain.update(h)).unwrap();
    }
    let in_force = client.set_at(3).unwrap();
    assert_eq!(in_force.hash(), TrustedSet::new(&rotated, quorum, &mut cache).unwrap().hash());
}
