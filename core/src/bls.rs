//! BLS signatures over BLS12-381, exactly the IETF ciphersuite
//! `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_` (public keys in G1, signatures in G2).
//!
//! Keys and signatures are subgroup-checked and canonical on decode, and the identity is
//! refused for both (KeyValidate, draft-irtf-cfrg-bls-signature-05 §2.5). Domain separation
//! of Urbis messages is done in the message (the signing root), never in the DST, so any
//! IETF-conformant library verifies what we sign.

use crate::hash::Domain;
use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{
    G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Gt, Scalar, multi_miller_loop,
};
use hkdf::Hkdf;
use std::fmt;
use zeroize::Zeroize;

/// DST of signatures (§4.2.3 of the BLS draft, proof-of-possession scheme).
pub const DST_SIGNATURE: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// DST of proofs of possession.
pub const DST_POP: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Compressed public-key length.
pub const PUBLIC_KEY_LEN: usize = 48;
/// Compressed signature length.
pub const SIGNATURE_LEN: usize = 96;

/// Why BLS input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlsError {
    /// Not a canonical compressed encoding of a point in the prime-order subgroup.
    #[error("not a canonical point of the prime-order subgroup")]
    InvalidPoint,
    /// The identity point as a public key or signature.
    #[error("the identity point is not a valid key or signature")]
    Identity,
    /// A secret key of zero or not below the group order.
    #[error("secret key is zero or not below the group order")]
    InvalidSecretKey,
    /// Key material shorter than 32 bytes.
    #[error("key material must be at least 32 bytes")]
    ShortKeyMaterial,
    /// Nothing to aggregate.
    #[error("nothing to aggregate")]
    Empty,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// A BLS secret key. Zeroised on drop; its `Debug` never prints it.
#[derive(Clone)]
pub struct SecretKey(Scalar);

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// KeyGen (draft-irtf-cfrg-bls-signature-05 §2.3) with an empty `key_info`.
    pub fn key_gen(ikm: &[u8]) -> Result<Self, BlsError> {
        if ikm.len() < 32 {
            return Err(BlsError::ShortKeyMaterial);
        }
        let mut salt: Vec<u8> = b"BLS-SIG-KEYGEN-SALT-".to_vec();
        let mut ikm0 = Vec::with_capacity(ikm.len() + 1);
        ikm0.extend_from_slice(ikm);
        ikm0.push(0);
        loop {
            salt = sha256(&salt).to_vec();
            let hk = Hkdf::<sha2::Sha256>::new(Some(&salt), &ikm0);
            let mut okm = [0u8; 48];
            // L = 48 is far below HKDF-SHA256's 255 * 32 byte limit.
            hk.expand(&[0, 48], &mut okm).map_err(|_| BlsError::InvalidSecretKey)?;
            let mut wide = [0u8; 64];
            for (i, b) in okm.iter().rev().enumerate() {
                wide[i] = *b;
            }
            let sk = Scalar::from_bytes_wide(&wide);
            wide.zeroize();
            okm.zeroize();
            if sk != Scalar::zero() {
                ikm0.zeroize();
                return Ok(SecretKey(sk));
            }
        }
    }

    /// Parses the 32-byte big-endian encoding; zero and values ≥ r are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, BlsError> {
        let mut le = *bytes;
        le.reverse();
        let sk = Option::<Scalar>::from(Scalar::from_bytes(&le)).ok_or(BlsError::InvalidSecretKey);
        le.zeroize();
        let sk = sk?;
        if sk == Scalar::zero() {
            return Err(BlsError::InvalidSecretKey);
        }
        Ok(SecretKey(sk))
    }

    /// The 32-byte big-endian encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = self.0.to_bytes();
        b.reverse();
        b
    }

    /// SkToPk.
    pub fn public_key(&self) -> PublicKey {
        let point = G1Affine::from(G1Projective::generator() * self.0);
        PublicKey { bytes: point.to_compressed(), point }
    }

    /// Sign: `sk * hash_to_G2(message, DST_SIGNATURE)`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature::from_point(G2Affine::from(hash_to_g2(message, DST_SIGNATURE) * self.0))
    }

    /// PopProve: signs the compressed public key under the PoP DST.
    pub fn pop_prove(&self) -> Signature {
        let pk = self.public_key();
        Signature::from_point(G2Affine::from(hash_to_g2(&pk.bytes, DST_POP) * self.0))
    }
}

/// A validated BLS public key (KeyValidate passed: canonical, in G1's prime-order subgroup,
/// not the identity).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    point: G1Affine,
    bytes: [u8; PUBLIC_KEY_LEN],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.bytes))
    }
}

impl PublicKey {
    /// KeyValidate on a compressed G1 point.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, BlsError> {
        let point = decode_g1(bytes)?;
        if bool::from(point.is_identity()) {
            return Err(BlsError::Identity);
        }
        Ok(PublicKey { point, bytes: *bytes })
    }

    /// KeyValidate on a slice, which must be exactly 48 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BlsError> {
        let arr: &[u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| BlsError::InvalidPoint)?;
        Self::from_bytes(arr)
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.bytes
    }

    /// The curve point.
    pub fn point(&self) -> &G1Affine {
        &self.point
    }

    /// Verify (CoreVerify with the signature DST).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        core_verify(&self.point, message, DST_SIGNATURE, &signature.point)
    }

    /// PopVerify.
    pub fn pop_verify(&self, proof: &Signature) -> bool {
        core_verify(&self.point, &self.bytes, DST_POP, &proof.point)
    }

    /// Sum of public keys. Only keys whose proof of possession was checked may be aggregated.
    pub fn aggregate_points<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> G1Projective {
        keys.into_iter().fold(G1Projective::identity(), |acc, k| acc + k.point)
    }
}

/// A validated BLS signature (canonical, in G2's prime-order subgroup, not the identity).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    point: G2Affine,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.to_bytes()))
    }
}

impl Signature {
    fn from_point(point: G2Affine) -> Self {
        Signature { point }
    }

    /// Decodes a compressed G2 point with the subgroup check; the identity is refused.
    pub fn from_bytes(bytes: &[u8; SIGNATURE_LEN]) -> Result<Self, BlsError> {
        let point = decode_g2(bytes)?;
        if bool::from(point.is_identity()) {
            return Err(BlsError::Identity);
        }
        Ok(Signature { point })
    }

    /// As [`Signature::from_bytes`] on a slice of exactly 96 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BlsError> {
        let arr: &[u8; SIGNATURE_LEN] = bytes.try_into().map_err(|_| BlsError::InvalidPoint)?;
        Self::from_bytes(arr)
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.point.to_compressed()
    }

    /// The curve point.
    pub fn point(&self) -> &G2Affine {
        &self.point
    }

    /// Aggregate: the sum of the signatures. An empty list or an identity sum is an error.
    pub fn aggregate(signatures: &[Signature]) -> Result<Signature, BlsError> {
        if signatures.is_empty() {
            return Err(BlsError::Empty);
        }
        let sum = signatures.iter().fold(G2Projective::identity(), |acc, s| acc + s.point);
        let point = G2Affine::from(sum);
        if bool::from(point.is_identity()) {
            return Err(BlsError::Identity);
        }
        Ok(Signature { point })
    }
}

/// FastAggregateVerify: all `keys` signed the same `message`.
pub fn fast_aggregate_verify(keys: &[PublicKey], message: &[u8], signature: &Signature) -> bool {
    if keys.is_empty() {
        return false;
    }
    let aggregate = G1Affine::from(PublicKey::aggregate_points(keys));
    core_verify(&aggregate, message, DST_SIGNATURE, &signature.point)
}

/// AggregateVerify (proof-of-possession scheme, so messages need not be distinct):
/// `keys[i]` signed `messages[i]` and `signature` is the sum of those signatures.
pub fn aggregate_verify(keys: &[PublicKey], messages: &[&[u8]], signature: &Signature) -> bool {
    if keys.is_empty() || keys.len() != messages.len() {
        return false;
    }
    let hashes: Vec<G2Prepared> = messages
        .iter()
        .map(|m| G2Prepared::from(G2Affine::from(hash_to_g2(m, DST_SIGNATURE))))
        .collect();
    let neg_g1 = -G1Affine::generator();
    let sig = G2Prepared::from(signature.point);
    let mut terms: Vec<(&G1Affine, &G2Prepared)> =
        keys.iter().map(|k| &k.point).zip(&hashes).collect();
    terms.push((&neg_g1, &sig));
    multi_miller_loop(&terms).final_exponentiation() == Gt::identity()
}

/// Verifies many independent (key, message, signature) triples at once with random linear
/// combination. The coefficients come from BLAKE3 over `seed` and every input, so a caller that
/// passes fresh randomness as `seed` gets the usual 2^-64 soundness bound per batch, and the
/// function itself stays pure.
pub fn batch_verify(
    keys: &[PublicKey],
    messages: &[&[u8]],
    signatures: &[Signature],
    seed: &[u8; 32],
) -> bool {
    let n = keys.len();
    if n == 0 || messages.len() != n || signatures.len() != n {
        return false;
    }
    let mut transcript = Domain::BatchCoefficients.hasher();
    transcript.update(seed);
    for i in 0..n {
        transcript.update(&keys[i].bytes);
        transcript.update(&(messages[i].len() as u64).to_le_bytes());
        transcript.update(messages[i]);
        transcript.update(&signatures[i].to_bytes());
    }
    let mut xof = transcript.finalize_xof();
    let mut sig_sum = G2Projective::identity();
    let mut scaled_keys = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    for i in 0..n {
        let mut wide = [0u8; 64];
        // 128-bit coefficients, forced odd so none is zero.
        xof.fill(&mut wide[..16]);
        wide[0] |= 1;
        let r = Scalar::from_bytes_wide(&wide);
        sig_sum += signatures[i].point * r;
        scaled_keys.push(G1Affine::from(keys[i].point * r));
        hashes.push(G2Prepared::from(G2Affine::from(hash_to_g2(messages[i], DST_SIGNATURE))));
    }
    let neg_g1 = -G1Affine::generator();
    let sig = G2Prepared::from(G2Affine::from(sig_sum));
    let mut terms: Vec<(&G1Affine, &G2Prepared)> = scaled_keys.iter().zip(&hashes).collect();
    terms.push((&neg_g1, &sig));
    multi_miller_loop(&terms).final_exponentiation() == Gt::identity()
}

/// A message hashed to G2 under the signature DST and prepared for pairing: verifying many
/// signatures over one message (the votes on one block) hashes it once.
#[derive(Clone, Debug)]
pub struct Prehashed(G2Prepared);

impl Prehashed {
    /// `hash_to_G2(message, DST_SIGNATURE)`, prepared.
    pub fn new(message: &[u8]) -> Self {
        Prehashed(G2Prepared::from(G2Affine::from(hash_to_g2(message, DST_SIGNATURE))))
    }
}

/// Checks that every `signatures[i]` is `keys[i]`'s signature of the one message hashed in
/// `hashed`, with one pairing check over the sums (FastAggregateVerify on separate signatures).
/// The keys must have passed a proof-of-possession check (a validator set's keys have). A
/// `false` says some signature is bad, not which: check them one by one to find it.
pub fn verify_same_message(
    keys: &[&PublicKey],
    hashed: &Prehashed,
    signatures: &[&Signature],
) -> bool {
    if keys.is_empty() || keys.len() != signatures.len() {
        return false;
    }
    let key = G1Affine::from(PublicKey::aggregate_points(keys.iter().copied()));
    let sum = signatures.iter().fold(G2Projective::identity(), |acc, s| acc + s.point);
    verify_prehashed(&key, &hashed.0, &G2Affine::from(sum))
}

impl PublicKey {
    /// Verify with the message already hashed ([`Prehashed::new`] of the same message): the
    /// same check as [`PublicKey::verify`].
    pub fn verify_prehashed(&self, hashed: &Prehashed, signature: &Signature) -> bool {
        verify_prehashed(&self.point, &hashed.0, &signature.point)
    }
}

/// hash_to_curve for G2 (RFC 9380, suite BLS12381G2_XMD:SHA-256_SSWU_RO_).
pub fn hash_to_g2(message: &[u8], dst: &[u8]) -> G2Projective {
    <G2Projective as HashToCurve<ExpandMsgXmd<sha2::Sha256>>>::hash_to_curve([message], dst)
}

/// Decodes a compressed G1 point: canonical flags and coordinates, on the curve, in the
/// prime-order subgroup. The identity is accepted here; key validation refuses it.
pub fn decode_g1(bytes: &[u8; 48]) -> Result<G1Affine, BlsError> {
    Option::<G1Affine>::from(G1Affine::from_compressed(bytes)).ok_or(BlsError::InvalidPoint)
}

/// Decodes a compressed G2 point with the same checks as [`decode_g1`].
pub fn decode_g2(bytes: &[u8; 96]) -> Result<G2Affine, BlsError> {
    Option::<G2Affine>::from(G2Affine::from_compressed(bytes)).ok_or(BlsError::InvalidPoint)
}

/// CoreVerify: `e(pk, H(m)) == e(g1, sig)`, as one two-pair Miller loop and one final
/// exponentiation.
pub fn core_verify(key: &G1Affine, message: &[u8], dst: &[u8], signature: &G2Affine) -> bool {
    let h = G2Prepared::from(G2Affine::from(hash_to_g2(message, dst)));
    verify_prehashed(key, &h, signature)
}

/// The pairing check of CoreVerify with the message already hashed to G2.
pub fn verify_prehashed(key: &G1Affine, hashed: &G2Prepared, signature: &G2Affine) -> bool {
    let neg_g1 = -G1Affine::generator();
    let sig = G2Prepared::from(*signature);
    multi_miller_loop(&[(key, hashed), (&neg_g1, &sig)]).final_exponentiation() == Gt::identity()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SecretKey {
        SecretKey::key_gen(&[i; 32]).unwrap()
    }

    #[test]
    fn same_message_verification_accepts_only_all_valid() {
        let keys: Vec<SecretKey> = (1..=4).map(key).collect();
        let pks: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
        let sigs: Vec<Signature> = keys.iter().map(|k| k.sign(b"block")).collect();
        let hashed = Prehashed::new(b"block");
        let (pk_refs, sig_refs): (Vec<&PublicKey>, Vec<&Signature>) =
            (pks.iter().collect(), sigs.iter().collect());
        assert!(verify_same_message(&pk_refs, &hashed, &sig_refs));
        // One signature of another message, or swapped keys, fails the whole.
        let other = keys[2].sign(b"other");
        let mut bad = sig_refs.clone();
        bad[2] = &other;
        assert!(!verify_same_message(&pk_refs, &hashed, &bad));
        assert!(!verify_same_message(&pk_refs[..3], &hashed, &sig_refs[1..]));
        assert!(!verify_same_message(&[], &hashed, &[]));
    }

    #[test]
    fn prehashed_verification_agrees_with_verify() {
        let (a, b) = (key(1), key(2));
        let hashed = Prehashed::new(b"block");
        let sig = a.sign(b"block");
        assert!(a.public_key().verify_prehashed(&hashed, &sig));
        assert!(!b.public_key().verify_prehashed(&hashed, &sig));
        assert!(!a.public_key().verify_prehashed(&Prehashed::new(b"other"), &sig));
    }

    #[test]
    fn sign_verify_and_pop() {
        let sk = key(1);
        let pk = sk.public_key();
        let sig = sk.sign(b"hello");
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellp", &sig));
        assert!(pk.pop_verify(&sk.pop_prove()));
        // A signature under the signature DST is not a proof of possession.
        assert!(!pk.pop_verify(&sk.sign(&pk.to_bytes())));
    }

    #[test]
    fn secret_key_round_trip() {
        let sk = key(2);
        let again = SecretKey::from_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(sk.public_key(), again.public_key());
        assert_eq!(SecretKey::from_bytes(&[0; 32]).unwrap_err(), BlsError::InvalidSecretKey);
        assert_eq!(SecretKey::from_bytes(&[0xff; 32]).unwrap_err(), BlsError::InvalidSecretKey);
    }

    #[test]
    fn aggregates() {
        let sks: Vec<_> = (1..5).map(key).collect();
        let pks: Vec<_> = sks.iter().map(|s| s.public_key()).collect();
        let sigs: Vec<_> = sks.iter().map(|s| s.sign(b"m")).collect();
        let agg = Signature::aggregate(&sigs).unwrap();
        assert!(fast_aggregate_verify(&pks, b"m", &agg));
        assert!(!fast_aggregate_verify(&pks[1..], b"m", &agg));
        let msgs: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d"];
        let sigs: Vec<_> = sks.iter().zip(&msgs).map(|(s, m)| s.sign(m)).collect();
        let agg = Signature::aggregate(&sigs).unwrap();
        assert!(aggregate_verify(&pks, &msgs, &agg));
        assert!(batch_verify(&pks, &msgs, &sigs, &[7; 32]));
        let mut bad = sigs.clone();
        bad.swap(0, 1);
        assert!(!batch_verify(&pks, &msgs, &bad, &[7; 32]));
    }
}
