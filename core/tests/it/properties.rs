//! Properties of the proof chain: honest proofs of every kind verify; flipping any single bit
//! anywhere in a proof (record, paths, headers, certificate, bitfield) fails with a typed error.

use crate::fixture::{World, absent_key, revoked_key, world};
use proptest::prelude::*;
use std::sync::OnceLock;
use urbis_core::encoding::{decode, encode};
use urbis_core::light_client::LightClient;
use urbis_core::proof::{RecordProof, StateFactProof, verify_record_proof, verify_state_proof};
use urbis_core::record::CityId;
use urbis_core::state::StateKey;

fn shared() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(world)
}

/// The offline verifier's path: a fresh client fed only the proof's own set updates.
fn verify_record_offline(w: &World, p: &RecordProof) -> Result<(), String> {
    let mut client = LightClient::from_genesis(&w.federation.genesis);
    if let Some(f) = &p.finality {
        client.apply_all(&f.set_updates).map_err(|e| format!("{e:?}"))?;
    }
    verify_record_proof(&w.federation.genesis, &client, p).map(|_| ()).map_err(|e| e.to_string())
}

fn verify_state_offline(w: &World, key: &StateKey, p: &StateFactProof) -> Result<(), String> {
    let mut client = LightClient::from_genesis(&w.federation.genesis);
    if let Some(f) = &p.finality {
        client.apply_all(&f.set_updates).map_err(|e| format!("{e:?}"))?;
    }
    verify_state_proof(&w.federation.genesis, &client, CityId(0), key, p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn flipped(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[bit / 8] ^= 1 << (bit % 8);
    b
}

#[test]
fn flipping_any_bit_of_a_committed_record_proof_fails() {
    let w = shared();
    let bytes = encode(&w.shard.record_proof(3, 2));
    verify_record_offline(w, &decode(&bytes).unwrap()).unwrap();
    for bit in 0..bytes.len() * 8 {
        if let Ok(p) = decode::<RecordProof>(&flipped(&bytes, bit)) {
            assert!(
                verify_record_offline(w, &p).is_err(),
                "bit {bit} flipped and the proof still verifies"
            );
        }
    }
}

#[test]
fn flipping_any_bit_of_a_committed_state_proof_fails() {
    let w = shared();
    for key in [revoked_key(), absent_key()] {
        let bytes = encode(&w.shard.state_proof(&key));
        verify_state_offline(w, &key, &decode(&bytes).unwrap()).unwrap();
        for bit in 0..bytes.len() * 8 {
            if let Ok(p) = decode::<StateFactProof>(&flipped(&bytes, bit)) {
                assert!(
                    verify_state_offline(w, &key, &p).is_err(),
                    "bit {bit} flipped and the proof still verifies"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn honest_final_proofs_of_every_record_verify(height in 0u64..6, index in 0u64..5) {
        let w = shared();
        let beacon_height = if height <= 2 { 1 } else { 2 };
        prop_assert!(verify_record_offline(w, &w.final_record(height, index, beacon_height)).is_ok());
    }

    #[test]
    fn flipping_any_bit_of_a_final_record_proof_fails(bit in any::<prop::sample::Index>(), height in 0u64..3) {
        let w = shared();
        let bytes = encode(&w.final_record(height, 1, 1));
        let bit = bit.index(bytes.len() * 8);
        if let Ok(p) = decode::<RecordProof>(&flipped(&bytes, bit)) {
            prop_assert!(verify_record_offline(w, &p).is_err(), "bit {} flipped and the proof still verifies", bit);
        }
    }

    #[test]
    fn flipping_any_bit_of_a_final_state_proof_fails(bit in any::<prop::sample::Index>(), present in any::<bool>()) {
        let w = shared();
        let key = if present { revoked_key() } else { absent_key() };
        let bytes = encode(&w.final_state(&key));
        let bit = bit.index(bytes.len() * 8);
        if let Ok(p) = decode::<StateFactProof>(&flipped(&bytes, bit)) {
            prop_assert!(verify_state_offline(w, &key, &p).is_err(), "bit {} flipped and the proof still verifies", bit);
        }
    }

    #[test]
    fn flipping_any_bit_of_the_certificate_or_bitfield_fails(bit in 0usize..(96 + 1) * 8) {
        let w = shared();
        let mut p = w.final_record(2, 0, 1);
        let f = p.finality.as_mut().unwrap();
        if bit < 96 * 8 {
            f.certificate.signature[bit / 8] ^= 1 << (bit % 8);
        } else {
            let b = bit - 96 * 8;
            f.certificate.signers[b / 8] ^= 1 << (b % 8);
        }
        prop_assert!(verify_record_offline(w, &p).is_err());
    }
}
