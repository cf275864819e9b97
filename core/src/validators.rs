//! Validator sets: the wire form (hashed into beacon headers) and the checked form that
//! certificates are verified against.

use crate::bls::{BlsError, PublicKey, Signature};
use crate::encoding::{encode, hex_bytes};
use crate::hash::{Domain, Hash32};
use crate::record::CityId;
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most validators one set may hold (the signer bitfield stays small).
pub const VALIDATORS_MAX: usize = 1024;

/// One validator as the federation registered it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Validator {
    /// Operator label (for people; not used by the protocol).
    pub name: String,
    /// The city that operates it, if any (regulators' validators have none).
    pub city: Option<CityId>,
    /// Compressed BLS public key (G1).
    #[serde(with = "hex_bytes")]
    pub bls_key: [u8; 48],
    /// Proof of possession of `bls_key` (G2, PoP DST).
    #[serde(with = "hex_bytes")]
    pub proof_of_possession: [u8; 96],
    /// Voting weight, positive.
    pub weight: u64,
    /// SHA-256 of the validator's TLS public key (SubjectPublicKeyInfo DER).
    pub tls_fingerprint: Hash32,
}

/// An ordered validator set; a validator's position is its bit in certificates.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ValidatorSet {
    /// The validators, in bitfield order.
    pub validators: Vec<Validator>,
}

impl ValidatorSet {
    /// `H_ValidatorSet(encode(set))`.
    pub fn hash(&self) -> Hash32 {
        Domain::ValidatorSet.hash(&encode(self))
    }
}

/// The fraction of the total weight that a certificate must strictly exceed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Quorum {
    /// Numerator.
    pub numerator: u64,
    /// Denominator.
    pub denominator: u64,
}

impl Quorum {
    /// Strictly more than two thirds, the BFT minimum.
    pub const TWO_THIRDS: Quorum = Quorum { numerator: 2, denominator: 3 };

    /// Whether this threshold is at least 2/3 with a non-zero denominator and below 1.
    pub fn is_safe(&self) -> bool {
        self.denominator != 0
            && u128::from(self.numerator) * 3 >= u128::from(self.denominator) * 2
            && self.numerator < self.denominator
    }

    /// Whether `signed` of `total` strictly exceeds the threshold.
    pub fn is_met(&self, signed: u64, total: u64) -> bool {
        u128::from(signed) * u128::from(self.denominator)
            > u128::from(total) * u128::from(self.numerator)
    }
}

/// Why a validator set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    /// Fewer validators than the protocol needs.
    #[error("a validator set needs at least {min} validators, this one has {actual}")]
    TooFew {
        /// Minimum.
        min: usize,
        /// Count.
        actual: usize,
    },
    /// More validators than a bitfield may address.
    #[error("a validator set holds at most {max} validators, this one has {actual}")]
    TooMany {
        /// Maximum.
        max: usize,
        /// Count.
        actual: usize,
    },
    /// A zero weight.
    #[error("validator {index} has weight zero")]
    ZeroWeight {
        /// Position.
        index: usize,
    },
    /// The total weight overflows.
    #[error("total weight overflows")]
    WeightOverflow,
    /// The same BLS key twice.
    #[error("validator {index} repeats an earlier BLS key")]
    DuplicateKey {
        /// Position.
        index: usize,
    },
    /// A key that fails KeyValidate.
    #[error("validator {index} has an invalid BLS key: {source}")]
    InvalidKey {
        /// Position.
        index: usize,
        /// Why.
        source: BlsError,
    },
    /// A proof of possession that does not verify (rogue-key defence).
    #[error("validator {index} has an invalid proof of possession")]
    InvalidProofOfPossession {
        /// Position.
        index: usize,
    },
}

/// A validator set whose keys passed KeyValidate and PopVerify; certificates are checked
/// against this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedSet {
    hash: Hash32,
    keys: Vec<PublicKey>,
    weights: Vec<u64>,
    total_weight: u64,
    quorum: Quorum,
}

/// Minimum number of validators in any set.
pub const VALIDATORS_MIN: usize = 4;

/// Keys whose proof of possession was already checked, so a light client following many set
/// changes checks each new key once.
#[derive(Clone, Debug, Default)]
pub struct KeyCache {
    /// Keyed by (key, proof of possession): a known key with another proof is checked again,
    /// so a client's history never changes its verdict on a set.
    keys: BTreeMap<([u8; 48], [u8; 96]), PublicKey>,
}

impl KeyCache {
    /// Validates `v`'s key and proof of possession, or returns the cached result.
    fn key(&mut self, index: usize, v: &Validator) -> Result<PublicKey, ValidatorSetError> {
        if let Some(k) = self.keys.get(&(v.bls_key, v.proof_of_possession)) {
            return Ok(*k);
        }
        let key = PublicKey::from_bytes(&v.bls_key)
            .map_err(|source| ValidatorSetError::InvalidKey { index, source })?;
        let pop = Signature::from_bytes(&v.proof_of_possession)
            .map_err(|_| ValidatorSetError::InvalidProofOfPossession { index })?;
        if !key.pop_verify(&pop) {
            return Err(ValidatorSetError::InvalidProofOfPossession { index });
        }
        self.keys.insert((v.bls_key, v.proof_of_possession), key);
        Ok(key)
    }
}

impl TrustedSet {
    /// Checks every rule of a validator set and every key's proof of possession.
    pub fn new(
        set: &ValidatorSet,
        quorum: Quorum,
        cache: &mut KeyCache,
    ) -> Result<Self, ValidatorSetError> {
        let n = set.validators.len();
        if n < VALIDATORS_MIN {
            return Err(ValidatorSetError::TooFew { min: VALIDATORS_MIN, actual: n });
        }
        if n > VALIDATORS_MAX {
            return Err(ValidatorSetError::TooMany { max: VALIDATORS_MAX, actual: n });
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut keys = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        let mut total: u64 = 0;
        for (index, v) in set.validators.iter().enumerate() {
            if v.weight == 0 {
                return Err(ValidatorSetError::ZeroWeight { index });
            }
            if !seen.insert(v.bls_key) {
                return Err(ValidatorSetError::DuplicateKey { index });
            }
            total = total.checked_add(v.weight).ok_or(ValidatorSetError::WeightOverflow)?;
            keys.push(cache.key(index, v)?);
            weights.push(v.weight);
        }
        Ok(TrustedSet { hash: set.hash(), keys, weights, total_weight: total, quorum })
    }

    /// The hash of the wire form.
    pub fn hash(&self) -> Hash32 {
        self.hash
    }
    /// Number of validators.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// Never true for a set that passed [`TrustedSet::new`].
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// The validated keys, in bitfield order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
    /// Weights, in bitfield order.
    pub fn weights(&self) -> &[u64] {
        &self.weights
    }
    /// Sum of weights.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }
    /// The certificate threshold.
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }
}
