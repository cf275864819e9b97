//! A cheap stand-in for BLS behind the same trait, so thousands of seeds run in CI: a keyed
//! BLAKE3 MAC whose "public key" is the secret. It authenticates nothing against a real
//! adversary and exists only here; the simulated Byzantine validator never uses another
//! validator's key, and a smaller run uses real BLS.

use malachitebft_core_types::SigningScheme;
use urbis_beacon::consensus::Scheme;
use urbis_core::hash::Hash32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mac;

impl SigningScheme for Mac {
    type DecodingError = String;
    type Signature = [u8; 32];
    type PublicKey = [u8; 32];
    type PrivateKey = [u8; 32];

    fn decode_signature(bytes: &[u8]) -> Result<[u8; 32], String> {
        bytes.try_into().map_err(|_| "signature is not 32 bytes".to_string())
    }
    fn encode_signature(signature: &[u8; 32]) -> Vec<u8> {
        signature.to_vec()
    }
    fn decode_public_key(bytes: &[u8]) -> Result<[u8; 32], String> {
        bytes.try_into().map_err(|_| "key is not 32 bytes".to_string())
    }
    fn encode_public_key(public_key: &[u8; 32]) -> Vec<u8> {
        public_key.to_vec()
    }
}

impl Scheme for Mac {
    fn sign(key: &[u8; 32], root: &Hash32) -> [u8; 32] {
        *blake3::keyed_hash(key, root.as_bytes()).as_bytes()
    }
    fn verify(key: &[u8; 32], root: &Hash32, signature: &[u8; 32]) -> bool {
        Self::sign(key, root) == *signature
    }
    fn aggregate(_: &[&[u8; 32]]) -> Option<[u8; 96]> {
        None
    }
}
