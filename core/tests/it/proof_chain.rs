//! Honest proofs verify at the level they claim, and each broken link is named.

use crate::fixture::{absent_key, revoked_key, world};
use urbis_core::Level;
use urbis_core::merkle::MerkleError;
use urbis_core::proof::{ProofError, verify_record_proof, verify_state_proof};
use urbis_core::record::CityId;

#[test]
fn every_record_of_every_block_verifies_at_level_committed() {
    let w = world();
    let client = w.client();
    for h in 0..6 {
        for i in 0..5 {
            let v =
                verify_record_proof(&w.federation.genesis, &client, &w.shard.record_proof(h, i))
                    .unwrap();
            assert_eq!((v.level, v.height, v.beacon_height), (Level::Committed, h, None));
            assert_eq!(v.id, w.shard.blocks[h as usize][i as usize].id());
        }
    }
}

#[test]
fn records_under_a_crosslinked_header_verify_at_level_final() {
    let w = world();
    let client = w.client();
    // Heights 0..=2 through beacon block 1 (header 2 crosslinked), 0..=5 through block 2.
    for (beacon_height, top) in [(1u64, 2u64), (2, 5)] {
        for h in 0..=top {
            let v = verify_record_proof(
                &w.federation.genesis,
                &client,
                &w.final_record(h, 3, beacon_height),
            )
            .unwrap();
            assert_eq!((v.level, v.beacon_height), (Level::Final, Some(beacon_height)));
        }
    }
}

#[test]
fn state_membership_and_absence_verify_at_level_final() {
    let w = world();
    let client = w.client();
    let p = w.final_state(&revoked_key());
    let v =
        verify_state_proof(&w.federation.genesis, &client, CityId(0), &revoked_key(), &p).unwrap();
    assert_eq!(v.value.as_deref(), Some(&b"revoked at 4"[..]));
    assert_eq!(v.level, Level::Final);
    let p = w.final_state(&absent_key());
    let v =
        verify_state_proof(&w.federation.genesis, &client, CityId(0), &absent_key(), &p).unwrap();
    assert_eq!(v.value, None);
}

#[test]
fn a_record_proof_against_the_wrong_block_names_the_records_path() {
    let w = world();
    let mut p = w.shard.record_proof(1, 0);
    p.record = w.shard.blocks[2][0].clone();
    let e = verify_record_proof(&w.federation.genesis, &w.client(), &p).unwrap_err();
    assert_eq!(e, ProofError::RecordsPath(MerkleError::RootMismatch));
}

#[test]
fn a_state_proof_for_another_key_is_refused() {
    let w = world();
    let p = w.final_state(&revoked_key());
    let e = verify_state_proof(&w.federation.genesis, &w.client(), CityId(0), &absent_key(), &p)
        .unwrap_err();
    assert_eq!(e, ProofError::StateKeyMismatch);
}
