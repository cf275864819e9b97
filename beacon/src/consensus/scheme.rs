//! Signing schemes for consensus messages: BLS (IETF POP ciphersuite, the production scheme)
//! behind a trait, so the deterministic simulator can run thousands of seeds with a cheap
//! stand-in and a smaller run with real BLS.

use malachitebft_core_types::SigningScheme;
use std::fmt::Debug;
use std::sync::Arc;
use urbis_core::bls;
use urbis_core::hash::Hash32;

/// A scheme that signs 32-byte signing roots.
pub trait Scheme: SigningScheme + Clone + Debug + Eq + Send + Sync + 'static {
    /// Signs `root`.
    fn sign(key: &Self::PrivateKey, root: &Hash32) -> Self::Signature;
    /// Whether `signature` by `key` over `root` is valid.
    fn verify(key: &Self::PublicKey, root: &Hash32, signature: &Self::Signature) -> bool;
    /// The aggregate of signatures over one root, for the commit certificate; `None` when the
    /// scheme does not aggregate (test schemes) or a signature is unusable.
    fn aggregate(signatures: &[&Self::Signature]) -> Option<[u8; 96]>;
    /// Whether every `signatures[i]` is `keys[i]`'s over `root` (keys of a validator set).
    /// `false` does not say which failed. By default, one by one.
    fn verify_all(
        keys: &[&Self::PublicKey],
        root: &Hash32,
        signatures: &[&Self::Signature],
    ) -> bool {
        keys.len() == signatures.len()
            && keys.iter().zip(signatures).all(|(k, s)| Self::verify(k, root, s))
    }
}

/// Recently hashed signing roots: every vote on one block signs the same root, so a validator
/// hashes it to G2 once, not once per vote (hashing is about a quarter of a verification).
fn prehashed(root: &Hash32) -> Arc<bls::Prehashed> {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    const KEEP: usize = 32;
    static RECENT: Mutex<VecDeque<(Hash32, Arc<bls::Prehashed>)>> = Mutex::new(VecDeque::new());
    let lock = || RECENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, h)) = lock().iter().find(|(r, _)| r == root) {
        return h.clone();
    }
    let hashed = Arc::new(bls::Prehashed::new(root.as_bytes()));
    let mut recent = lock();
    if recent.len() >= KEEP {
        recent.pop_front();
    }
    recent.push_back((*root, hashed.clone()));
    hashed
}

/// Recently decoded signatures: one vote reaches a validator in several messages (the vote,
/// its rebroadcasts, polka, round and commit certificates), and decoding with the subgroup
/// check costs about a sixth of a verification. Only signatures that passed every check are
/// kept, keyed by their exact bytes.
static DECODED: std::sync::Mutex<Option<std::collections::HashMap<[u8; 96], bls::Signature>>> =
    std::sync::Mutex::new(None);

fn decoded(bytes: &[u8; 96]) -> Option<bls::Signature> {
    let guard = DECODED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.as_ref().and_then(|m| m.get(bytes).copied())
}

fn remember_decoded(bytes: [u8; 96], point: bls::Signature) {
    const KEEP: usize = 16_384;
    let mut guard = DECODED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = guard.get_or_insert_with(std::collections::HashMap::new);
    if map.len() >= KEEP {
        map.clear();
    }
    map.insert(bytes, point);
}

/// BLS12-381, minimal-pubkey-size, proof-of-possession ciphersuite (`docs/protocol.md` §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bls;

/// A BLS signature with its compressed bytes (ordering and equality are on the bytes).
#[derive(Clone, Debug)]
pub struct BlsSignature {
    bytes: [u8; bls::SIGNATURE_LEN],
    point: bls::Signature,
}

impl BlsSignature {
    /// The compressed bytes.
    pub fn to_bytes(&self) -> [u8; bls::SIGNATURE_LEN] {
        self.bytes
    }
}

impl PartialEq for BlsSignature {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for BlsSignature {}
impl PartialOrd for BlsSignature {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for BlsSignature {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl SigningScheme for Bls {
    type DecodingError = bls::BlsError;
    type Signature = BlsSignature;
    type PublicKey = bls::PublicKey;
    /// Shared so the consensus state can hold it; zeroised when the last holder drops it.
    type PrivateKey = Arc<bls::SecretKey>;

    fn decode_signature(bytes: &[u8]) -> Result<BlsSignature, bls::BlsError> {
        let arr: [u8; bls::SIGNATURE_LEN] =
            bytes.try_into().map_err(|_| bls::BlsError::InvalidPoint)?;
        if let Some(point) = decoded(&arr) {
            return Ok(BlsSignature { bytes: arr, point });
        }
        let point = bls::Signature::from_slice(bytes)?;
        remember_decoded(arr, point);
        Ok(BlsSignature { bytes: point.to_bytes(), point })
    }
    fn encode_signature(signature: &BlsSignature) -> Vec<u8> {
        signature.bytes.to_vec()
    }
    fn decode_public_key(bytes: &[u8]) -> Result<bls::PublicKey, bls::BlsError> {
        bls::PublicKey::from_slice(bytes)
    }
    fn encode_public_key(public_key: &bls::PublicKey) -> Vec<u8> {
        public_key.to_bytes().to_vec()
    }
}

impl Scheme for Bls {
    fn sign(key: &Arc<bls::SecretKey>, root: &Hash32) -> BlsSignature {
        let point = key.sign(root.as_bytes());
        BlsSignature { bytes: point.to_bytes(), point }
    }
    fn verify(key: &bls::PublicKey, root: &Hash32, signature: &BlsSignature) -> bool {
        key.verify_prehashed(&prehashed(root), &signature.point)
    }
    /// One pairing check over the sums (the keys of a validator set passed their proofs of
    /// possession).
    fn verify_all(keys: &[&bls::PublicKey], root: &Hash32, signatures: &[&BlsSignature]) -> bool {
        let points: Vec<&bls::Signature> = signatures.iter().map(|s| &s.point).collect();
        bls::verify_same_message(keys, &prehashed(root), &points)
    }
    fn aggregate(signatures: &[&BlsSignature]) -> Option<[u8; 96]> {
        let points: Vec<bls::Signature> = signatures.iter().map(|s| s.point).collect();
        bls::Signature::aggregate(&points).ok().map(|a| a.to_bytes())
    }
}
