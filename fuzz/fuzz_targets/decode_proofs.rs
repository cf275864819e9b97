//! Every decoder of network input on arbitrary bytes: errors are fine, panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use urbis_core::encoding::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<urbis_core::proof::RecordProof>(data);
    let _ = decode::<urbis_core::proof::StateFactProof>(data);
    let _ = decode::<urbis_core::light_client::LightClientUpdate>(data);
    let _ = decode::<urbis_core::genesis::Genesis>(data);
    let _ = serde_json::from_slice::<urbis_core::proof::ProofDocument>(data);
});
