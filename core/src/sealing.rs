//! Ed25519 for shard sealing keys, under one stated rule for every edge case.
//!
//! The rule (docs/protocol.md, "Ed25519"): `A` and `R` must be canonical encodings of points in
//! the prime-order subgroup (so neither small-order nor mixed-order), `S` must be below `L`,
//! and the cofactorless equation `[S]B = R + [k]A` must hold (`verify_strict`). Because `A` and
//! `R` are torsion-free, the cofactored and cofactorless equations agree, and so single and
//! batch verification agree on every input.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::fmt;

/// Why an Ed25519 key or signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ed25519Error {
    /// The public key is not a canonical encoding of a point.
    #[error("public key is not a canonical point encoding")]
    NonCanonicalKey,
    /// The public key has a small-order or mixed-order component.
    #[error("public key is not in the prime-order subgroup")]
    WeakKey,
    /// `R` is not a canonical point encoding.
    #[error("signature R is not a canonical point encoding")]
    NonCanonicalR,
    /// `R` has a small-order or mixed-order component.
    #[error("signature R is not in the prime-order subgroup")]
    WeakR,
    /// `S` is not below the group order.
    #[error("signature S is not below the group order")]
    NonCanonicalS,
    /// The verification equation does not hold.
    #[error("signature does not verify")]
    BadSignature,
}

/// A city's sealing (signing) key. Zeroised on drop; `Debug` never prints it.
pub struct SealingKey(SigningKey);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl SealingKey {
    /// From the 32-byte RFC 8032 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SealingKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed (for writing the key file).
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public_key(&self) -> SealingPublicKey {
        SealingPublicKey { bytes: self.0.verifying_key().to_bytes(), key: self.0.verifying_key() }
    }

    /// Signs `message` (RFC 8032 Ed25519, deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A validated Ed25519 public key: canonical and in the prime-order subgroup.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealingPublicKey {
    bytes: [u8; 32],
    key: VerifyingKey,
}

impl fmt::Debug for SealingPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingPublicKey({})", hex::encode(self.bytes))
    }
}

impl SealingPublicKey {
    /// Parses and validates a public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Ed25519Error> {
        let point = canonical_point(bytes).ok_or(Ed25519Error::NonCanonicalKey)?;
        if !point.is_torsion_free() || point.is_small_order() {
            return Err(Ed25519Error::WeakKey);
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| Ed25519Error::NonCanonicalKey)?;
        Ok(SealingPublicKey { bytes: *bytes, key })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// Verifies one signature under the stated rule.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), Ed25519Error> {
        let sig = check_signature_encoding(signature)?;
        self.key.verify_strict(message, &sig).map_err(|_| Ed25519Error::BadSignature)
    }
}

/// Verifies many signatures at once; the verdict is the conjunction of [`SealingPublicKey::verify`]
/// over the items (so an empty batch is vacuously valid: callers that need at least one item
/// check that themselves). Returns the index of the first refused item on failure.
pub fn verify_batch(
    items: &[(&SealingPublicKey, &[u8], &[u8; 64])],
) -> Result<(), (usize, Ed25519Error)> {
    let mut signatures = Vec::with_capacity(items.len());
    for (i, (_, _, sig)) in items.iter().enumerate() {
        signatures.push(check_signature_encoding(sig).map_err(|e| (i, e))?);
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, m, _)| *m).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(k, _, _)| k.key).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return Ok(());
    }
    // The batch failed: find the first culprit with single verification.
    for (i, (k, m, s)) in items.iter().enumerate() {
        k.verify(m, s).map_err(|e| (i, e))?;
    }
    // Unreachable under the stated rule (batch and single agree); refuse rather than accept.
    Err((0, Ed25519Error::BadSignature))
}

fn check_signature_encoding(
    signature: &[u8; 64],
) -> Result<ed25519_dalek::Signature, Ed25519Error> {
    let r: [u8; 32] = signature[..32].try_into().map_err(|_| Ed25519Error::NonCanonicalR)?;
    let s: [u8; 32] = signature[32..].try_into().map_err(|_| Ed25519Error::NonCanonicalS)?;
    let point = canonical_point(&r).ok_or(Ed25519Error::NonCanonicalR)?;
    if !point.is_torsion_free() || point.is_small_order() {
        return Err(Ed25519Error::WeakR);
    }
    if Option::<curve25519_dalek::Scalar>::from(curve25519_dalek::Scalar::from_canonical_bytes(s))
        .is_none()
    {
        return Err(Ed25519Error::NonCanonicalS);
    }
    Ok(ed25519_dalek::Signature::from_bytes(signature))
}

/// Decompresses `bytes` and accepts it only if it re-encodes to the same bytes.
fn canonical_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (point.compress().to_bytes() == *bytes).then_some(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = SealingKey::from_seed(&[9; 32]);
        let pk = k.public_key();
        let sig = k.sign(b"header");
        pk.verify(b"header", &sig).unwrap();
        assert_eq!(pk.verify(b"headex", &sig), Err(Ed25519Error::BadSignature));
        verify_batch(&[(&pk, b"header", &sig)]).unwrap();
        assert_eq!(verify_batch(&[(&pk, b"headex", &sig)]), Err((0, Ed25519Error::BadSignature)));
    }
}
