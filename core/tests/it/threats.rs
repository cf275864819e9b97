//! One named negative test per class of ../shared/THREATS.md that the core can see, each
//! asserting its specific error.

use crate::fixture::{absent_key, balance_key, revoked_key, world};
use urbis_core::beacon::{CertificateError, CommitCertificate};
use urbis_core::bls::{BlsError, PublicKey, SecretKey};
use urbis_core::encoding::{DecodeError, decode, encode};
use urbis_core::genesis::GenesisError;
use urbis_core::hash::Hash32;
use urbis_core::light_client::{LightClient, LightClientError};
use urbis_core::merkle::{Blake3Tree, InclusionProof, MerkleError, TreeHasher};
use urbis_core::proof::{ProofError, RecordProof, verify_record_proof, verify_state_proof};
use urbis_core::record::CityId;
use urbis_core::record::RecordError;
use urbis_core::sealing::Ed25519Error;
use urbis_core::state::StateProofError;
use urbis_core::testkit::{Federation, validator};
use urbis_core::validators::{KeyCache, Quorum, TrustedSet, ValidatorSetError};

#[test]
fn threat_zero_root_is_never_trusted_by_value() {
    // Nomad: a zeroed root must not prove anything. A header whose records_root is zero does
    // not carry the city's seal, and a proof leading to a zero root fails at the path.
    let w = world();
    let mut p = w.shard.record_proof(1, 0);
    p.header.header.records_root = Hash32::ZERO;
    let e = verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err();
    assert_eq!(e, ProofError::RecordsPath(MerkleError::RootMismatch));
    // Even a correct path to a zeroed root is refused by the seal.
    let mut p = w.shard.record_proof(1, 0);
    p.header.header.state_root = Hash32::ZERO;
    let e = verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err();
    assert_eq!(e, ProofError::HeaderSeal(Ed25519Error::BadSignature));
}

#[test]
fn threat_non_canonical_proof_with_an_extra_sibling_is_refused() {
    // BNB hub: extra path elements must not be ignored.
    let w = world();
    let mut p = w.shard.record_proof(1, 0);
    p.inclusion.path.push(Hash32::ZERO);
    let e = verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err();
    assert!(
        matches!(
            e,
            ProofError::RecordsPath(MerkleError::WrongPathLength { expected: 3, actual: 4 })
        ),
        "{e:?}"
    );
    // Trailing bytes after an encoded proof are refused by the decoder.
    let mut bytes = encode(&w.shard.record_proof(1, 0));
    bytes.push(0);
    assert!(matches!(decode::<RecordProof>(&bytes), Err(DecodeError::Malformed { .. })));
}

#[test]
fn threat_verifier_input_from_the_caller_is_ignored() {
    // Wormhole: the set updates carried in a proof are never consulted by a verifier that has
    // its own client. A proof that carries a forged set still verifies only against our client,
    // and a client that has not followed a set change refuses the block.
    let w = world();
    let mut p = w.final_record(1, 0, 2);
    let forged = Federation::new("forged", 3, 4);
    let f = p.finality.as_mut().unwrap();
    f.set_updates.clear();
    f.certificate = CommitCertificate::sign(
        &f.beacon_header,
        &w.federation.id(),
        &forged.validator_keys.iter().map(Some).collect::<Vec<_>>(),
    )
    .unwrap();
    let e = verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err();
    assert_eq!(
        e,
        ProofError::Beacon(LightClientError::Certificate(CertificateError::BadSignature))
    );
}

#[test]
fn threat_validator_set_changes_only_through_certified_blocks() {
    // Poly Network: a set change that the current set did not certify is refused.
    let w = world();
    let mut client = w.client();
    let (sk, v) = validator("intruder", 1000, None);
    let mut set = w.federation.genesis.genesis().validators.clone();
    set.validators.push(v);
    let mut update = w.beacon.update(1);
    update.header.next_validator_set_hash = set.hash();
    update.next_set = Some(set);
    // Signed by the intruder alone: the certificate does not verify for the current set.
    let keys: Vec<Option<&SecretKey>> = vec![Some(&sk); 4];
    update.certificate =
        CommitCertificate::sign(&update.header, &w.federation.id(), &keys).unwrap();
    let e = client.apply(&update).unwrap_err();
    assert_eq!(e, LightClientError::Certificate(CertificateError::BadSignature));
}

#[test]
fn threat_threshold_edges_duplicate_and_out_of_range_bits() {
    let w = world();
    let client = w.client();
    let b = &w.beacon.blocks[0];
    // 3 of 4 equal weights is 75%: enough. 2 of 4 is not.
    let keys = &w.federation.validator_keys;
    let half = CommitCertificate::sign(
        &b.header,
        &w.federation.id(),
        &[Some(&keys[0]), Some(&keys[1]), None, None],
    )
    .unwrap();
    assert_eq!(
        client.verify_header(&b.header, &half).unwrap_err(),
        LightClientError::Certificate(CertificateError::InsufficientWeight {
            signed: 20,
            total: 40
        })
    );
    let mut out_of_range = b.certificate.clone();
    out_of_range.signers[0] |= 1 << 5;
    assert_eq!(
        client.verify_header(&b.header, &out_of_range).unwrap_err(),
        LightClientError::Certificate(CertificateError::SignerOutOfRange { bit: 5, validators: 4 })
    );
    let mut long = b.certificate.clone();
    long.signers.push(0);
    assert!(matches!(
        client.verify_header(&b.header, &long).unwrap_err(),
        LightClientError::Certificate(CertificateError::BitfieldLength {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    // A genesis threshold of 2/3 or less is refused, as are sets with repeated keys.
    let mut g = w.federation.genesis.genesis().clone();
    g.parameters.quorum = Quorum { numerator: 1, denominator: 2 };
    assert_eq!(
        g.validate().unwrap_err(),
        GenesisError::WeakQuorum { numerator: 1, denominator: 2 }
    );
    let mut g = w.federation.genesis.genesis().clone();
    let first = g.validators.validators[0].clone();
    g.validators.validators[1] = first;
    assert_eq!(
        g.validate().unwrap_err(),
        GenesisError::Validators(ValidatorSetError::DuplicateKey { index: 1 })
    );
}

#[test]
fn threat_unbacked_credit_zero_amount_is_refused() {
    let mut r = urbis_core::testkit::information_record(urbis_core::record::CityId(0), 1);
    r.body = urbis_core::record::RecordBody::Capital(urbis_core::record::CapitalPayload {
        asset: "EUR".into(),
        amount: 0,
        operation: urbis_core::record::CapitalOperation::Issue { to: "treasury".into() },
    });
    assert_eq!(r.validate(), Err(RecordError::ZeroAmount));
}

#[test]
fn threat_forged_absence_proof_is_refused() {
    // Dragonberry: an absence proof whose leaf is not on the key's path, or that claims
    // absence of a present key, is refused.
    let w = world();
    let client = w.client();
    let mut p = w.final_state(&revoked_key());
    p.value = None;
    assert_eq!(
        verify_state_proof(&w.federation.genesis, &client, CityId(0), &revoked_key(), &p)
            .unwrap_err(),
        ProofError::StatePath(StateProofError::KeyPresent)
    );
    // Reuse the membership proof of one key as an "absence" proof of another key that is
    // present: the proof's leaf is not on the other key's path, or the root differs.
    for b in 0..8 {
        let mut p = w.final_state(&revoked_key());
        p.key = balance_key(b);
        p.value = None;
        let e = verify_state_proof(&w.federation.genesis, &client, CityId(0), &balance_key(b), &p)
            .unwrap_err();
        assert!(
            matches!(
                e,
                ProofError::StatePath(
                    StateProofError::NotInSubtree | StateProofError::RootMismatch
                )
            ),
            "{e:?}"
        );
    }
}

#[test]
fn threat_leaf_node_confusion_an_inner_node_is_not_a_leaf() {
    // CVE-2017-12842: present an inner node's 64-byte preimage as a leaf.
    let tree = Blake3Tree::records();
    let leaves: Vec<Hash32> = (0u8..4).map(|i| tree.leaf(&[i])).collect();
    let root = urbis_core::merkle::root_from_leaf_hashes(&tree, &leaves);
    let mut inner = Vec::new();
    inner.extend_from_slice(&leaves[0].0);
    inner.extend_from_slice(&leaves[1].0);
    let proof = InclusionProof {
        leaf_index: 0,
        tree_size: 2,
        path: vec![tree.node(&leaves[2], &leaves[3])],
    };
    assert_eq!(proof.verify(&tree, &tree.leaf(&inner), &root), Err(MerkleError::RootMismatch));
}

#[test]
fn threat_duplicate_last_leaf_does_not_share_a_root() {
    // CVE-2012-2459: [a,b,c] and [a,b,c,c] have different roots, and the header's record count
    // pins the tree size.
    let w = world();
    let mut p = w.shard.record_proof(1, 4);
    p.inclusion.tree_size = 6;
    assert_eq!(
        verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err(),
        ProofError::RecordsCount { proof: 6, header: 5 }
    );
}

#[test]
fn threat_rogue_bls_key_without_proof_of_possession_is_refused() {
    let (_, mut v) = validator("rogue", 10, None);
    let (other, _) = validator("other", 10, None);
    v.proof_of_possession = other.pop_prove().to_bytes();
    let mut set = Federation::new("t", 1, 4).genesis.genesis().validators.clone();
    set.validators.push(v);
    assert_eq!(
        TrustedSet::new(&set, Quorum::TWO_THIRDS, &mut KeyCache::default()).unwrap_err(),
        ValidatorSetError::InvalidProofOfPossession { index: 4 }
    );
}

#[test]
fn threat_bls_edge_points_identity_key_and_signature_are_refused() {
    let mut identity_g1 = [0u8; 48];
    identity_g1[0] = 0xc0;
    assert_eq!(PublicKey::from_bytes(&identity_g1).unwrap_err(), BlsError::Identity);
    let mut identity_g2 = [0u8; 96];
    identity_g2[0] = 0xc0;
    assert_eq!(
        urbis_core::bls::Signature::from_bytes(&identity_g2).unwrap_err(),
        BlsError::Identity
    );
    // The uncompressed flag on a compressed-length key is not canonical.
    let mut key = validator("k", 1, None).1.bls_key;
    key[0] &= 0x7f;
    assert_eq!(PublicKey::from_bytes(&key).unwrap_err(), BlsError::InvalidPoint);
}

#[test]
fn threat_replay_across_federations_is_refused() {
    // EIP-155: a certificate for federation X is worthless in federation Y, even with the same
    // validators, because the signing root binds the federation id.
    let w = world();
    let mut g = w.federation.genesis.genesis().clone();
    g.name = "another federation".into();
    let other = g.validate().unwrap();
    let client = LightClient::from_genesis(&other);
    let b = &w.beacon.blocks[0];
    assert_eq!(
        client.verify_header(&b.header, &b.certificate).unwrap_err(),
        LightClientError::Certificate(CertificateError::BadSignature)
    );
    // And a shard seal from X does not verify in Y.
    let p = w.shard.record_proof(0, 0);
    assert_eq!(
        verify_record_proof(&other, &client, &p).unwrap_err(),
        ProofError::HeaderSeal(Ed25519Error::BadSignature)
    );
}

#[test]
fn threat_light_client_long_range_hidden_set_change_is_refused() {
    // A relay that hides a set change cannot make the client accept a block of the new set,
    // and the old set cannot certify past its change.
    let w = world();
    let fed = &w.federation;
    let mut beacon = urbis_core::testkit::BeaconChain::new(fed);
    let (keys, entries): (Vec<_>, Vec<_>) =
        (0..4).map(|i| validator(&format!("next{i}"), 10, None)).unzip();
    let next = urbis_core::validators::ValidatorSet { validators: entries };
    beacon.produce(fed, vec![], Some((next, keys)));
    beacon.produce(fed, vec![], None);
    let mut client = w.client();
    // Block 2 is certified by the new set; without block 1 the client does not know that set.
    let e = client.apply(&beacon.update(2)).unwrap_err();
    assert!(matches!(e, LightClientError::SetHashMismatch { height: 2, .. }), "{e:?}");
    client.apply(&beacon.update(1)).unwrap();
    client.apply(&beacon.update(2)).unwrap();
}

#[test]
fn threat_equivocation_two_certified_blocks_at_one_height_halt_the_client() {
    let w = world();
    let mut client = w.client();
    client.apply(&w.beacon.update(1)).unwrap();
    let mut fork = w.beacon.update(1);
    fork.header.time_ms += 1;
    let keys: Vec<_> = w.federation.validator_keys.iter().map(Some).collect();
    fork.certificate = CommitCertificate::sign(&fork.header, &w.federation.id(), &keys).unwrap();
    assert!(
        matches!(client.apply(&fork).unwrap_err(), LightClientError::Equivocation(e) if e.height == 1)
    );
    assert_eq!(client.halted().map(|e| e.height), Some(1));
    assert_eq!(client.apply(&w.beacon.update(2)).unwrap_err(), LightClientError::Halted(1));
}

#[test]
fn threat_tree_confusion_a_history_node_is_not_a_records_node() {
    let records = Blake3Tree::records();
    let history = Blake3Tree::history();
    let crosslinks = Blake3Tree::crosslinks();
    let a = records.leaf(b"x");
    assert_ne!(a, history.leaf(b"x"));
    assert_ne!(a, crosslinks.leaf(b"x"));
    assert_ne!(records.node(&a, &a), history.node(&a, &a));
    // A history path presented as a records path fails.
    let w = world();
    let link = w.shard.history_link(1, 5).unwrap();
    let mut p = w.shard.record_proof(5, 0);
    p.inclusion = link.inclusion;
    assert!(verify_record_proof(&w.federation.genesis, &w.client(), &p).is_err());
}

#[test]
fn threat_ed25519_malleability_high_s_is_refused() {
    let w = world();
    let mut p = w.shard.record_proof(0, 0);
    // S + L is the classic malleated twin of a valid signature.
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (i, li) in l.iter().enumerate() {
        let sum = u16::from(p.header.signature[32 + i]) + u16::from(*li) + carry;
        p.header.signature[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(
        verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err(),
        ProofError::HeaderSeal(Ed25519Error::NonCanonicalS)
    );
}

#[test]
fn threat_proof_parameter_confusion_is_a_parameter_error() {
    let tree = Blake3Tree::records();
    let leaf = tree.leaf(b"a");
    let p = InclusionProof { leaf_index: 3, tree_size: 3, path: vec![] };
    assert_eq!(
        p.verify(&tree, &leaf, &leaf),
        Err(MerkleError::IndexOutOfRange { index: 3, size: 3 })
    );
    let c = urbis_core::merkle::ConsistencyProof { size1: 5, size2: 4, path: vec![] };
    assert_eq!(c.verify(&tree, &leaf, &leaf), Err(MerkleError::SizeOrder { size1: 5, size2: 4 }));
    let c = urbis_core::merkle::ConsistencyProof { size1: 3, size2: 5, path: vec![] };
    assert!(matches!(
        c.verify(&tree, &leaf, &leaf),
        Err(MerkleError::WrongPathLength { actual: 0, .. })
    ));
    let p = InclusionProof { leaf_index: 0, tree_size: 1, path: vec![leaf] };
    assert_eq!(
        p.verify(&tree, &leaf, &leaf),
        Err(MerkleError::WrongPathLength { expected: 0, actual: 1 })
    );
}

#[test]
fn threat_forged_timeout_absence_from_another_city_is_refused() {
    // A refund needs absence of the receipt in the *destination's* state: a valid absence proof
    // from any other city's state must not do.
    let w = world();
    let p = w.final_state(&absent_key());
    let e = verify_state_proof(&w.federation.genesis, &w.client(), CityId(1), &absent_key(), &p)
        .unwrap_err();
    assert_eq!(e, ProofError::WrongCity { expected: CityId(1), actual: CityId(0) });
}

#[test]
fn threat_unknown_header_versions_are_refused() {
    let w = world();
    let mut p = w.final_record(1, 0, 1);
    p.header.header.version = 2;
    assert_eq!(
        verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err(),
        ProofError::HeaderVersion(2)
    );
    let mut p = w.final_record(1, 0, 1);
    p.finality.as_mut().unwrap().beacon_header.version = 9;
    assert_eq!(
        verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err(),
        ProofError::Beacon(LightClientError::HeaderVersion(9))
    );
}

#[test]
fn threat_a_known_key_with_a_bad_proof_of_possession_is_checked_again() {
    // A client that has seen a key must not skip the PoP check of a set that repeats the key
    // with another (invalid) proof: its verdict may not depend on its history.
    let set = Federation::new("t", 1, 4).genesis.genesis().validators.clone();
    let mut cache = KeyCache::default();
    TrustedSet::new(&set, Quorum::TWO_THIRDS, &mut cache).unwrap();
    let mut bad = set.clone();
    bad.validators[2].proof_of_possession = set.validators[3].proof_of_possession;
    assert_eq!(
        TrustedSet::new(&bad, Quorum::TWO_THIRDS, &mut cache).unwrap_err(),
        ValidatorSetError::InvalidProofOfPossession { index: 2 }
    );
}
