//! Every decoder of network input refuses arbitrary and mutated bytes with an error, never a
//! panic (bounded proptest runs; `fuzz/` holds the same targets for long runs).

use crate::fixture::world;
use proptest::prelude::*;
use urbis_core::beacon::{BeaconHeader, CommitCertificate};
use urbis_core::encoding::{decode, encode};
use urbis_core::genesis::Genesis;
use urbis_core::header::SignedShardHeader;
use urbis_core::light_client::{Checkpoint, LightClientUpdate};
use urbis_core::proof::{RecordProof, StateFactProof};
use urbis_core::record::Record;
use urbis_core::validators::ValidatorSet;

/// Runs every decoder on `bytes` (binary and JSON forms); the property is "returns".
fn decode_all(bytes: &[u8]) {
    let _ = decode::<RecordProof>(bytes);
    let _ = decode::<StateFactProof>(bytes);
    let _ = decode::<Record>(bytes);
    let _ = decode::<SignedShardHeader>(bytes);
    let _ = decode::<BeaconHeader>(bytes);
    let _ = decode::<CommitCertificate>(bytes);
    let _ = decode::<LightClientUpdate>(bytes);
    let _ = decode::<Checkpoint>(bytes);
    let _ = decode::<ValidatorSet>(bytes);
    let _ = decode::<Genesis>(bytes);
    let _ = serde_json::from_slice::<RecordProof>(bytes);
    let _ = serde_json::from_slice::<Genesis>(bytes);
    if let Ok(a) = <&[u8; 48]>::try_from(bytes) {
        let _ = urbis_core::bls::PublicKey::from_bytes(a);
    }
    if let Ok(a) = <&[u8; 96]>::try_from(bytes) {
        let _ = urbis_core::bls::Signature::from_bytes(a);
    }
    if let Ok(a) = <&[u8; 32]>::try_from(bytes) {
        let _ = urbis_core::sealing::SealingPublicKey::from_bytes(a);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn decoders_never_panic_on_mutated_valid_proofs(
        cut in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let w = world_bytes();
        for bytes in w {
            let mut b = bytes.clone();
            let i = pos.index(b.len());
            b[i] = byte;
            decode_all(&b);
            decode_all(&bytes[..cut.index(bytes.len())]);
        }
    }
}

fn world_bytes() -> &'static [Vec<u8>] {
    static BYTES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let w = world();
        vec![
            encode(&w.final_record(1, 1, 1)),
            encode(&w.final_state(&crate::fixture::revoked_key())),
            encode(w.federation.genesis.genesis()),
            serde_json::to_vec(&w.final_record(1, 1, 1)).unwrap(),
        ]
    })
}
