//! Validator-set changes: add, remove, re-weight, or rotate a validator's keys (a new BLS key
//! with its proof of possession and a new TLS fingerprint), each approved by the operators of
//! more than the quorum of the current weight and taking effect at a stated later beacon
//! height. docs/protocol.md, "Validator-set changes".
//!
//! A validator's operator approves with the validator's BLS key, under its own signing-root
//! purpose ([`Purpose::ValidatorSetChange`]), so an approval can never be mistaken for a vote;
//! approvals aggregate into one [`CommitCertificate`] like precommits do.

use crate::beacon::{CertificateError, CommitCertificate, verify_certificate_over};
use crate::bls::{self, SecretKey};
use crate::encoding::encode;
use crate::hash::{Domain, Hash32};
use crate::signing::{Purpose, signing_root};
use crate::validators::{KeyCache, TrustedSet, Validator, ValidatorSet, ValidatorSetError};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// One change to the validator set. Validators are named by their current BLS key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SetChange {
    /// Appends a validator (its key's proof of possession is checked with the new set).
    Add {
        /// The new validator.
        validator: Validator,
    },
    /// Removes a validator.
    Remove {
        /// Its BLS key (hex in JSON).
        #[serde(with = "crate::encoding::hex_bytes")]
        bls_key: [u8; 48],
    },
    /// Changes a validator's weight.
    Reweight {
        /// Its BLS key.
        #[serde(with = "crate::encoding::hex_bytes")]
        bls_key: [u8; 48],
        /// The new weight, positive.
        weight: u64,
    },
    /// Replaces a validator's BLS key, proof of possession and TLS fingerprint; it keeps its
    /// position, name, city and weight.
    Rotate {
        /// Its current BLS key.
        #[serde(with = "crate::encoding::hex_bytes")]
        bls_key: [u8; 48],
        /// The new BLS key.
        #[serde(with = "crate::encoding::hex_bytes")]
        new_bls_key: [u8; 48],
        /// Proof of possession of the new key.
        #[serde(with = "crate::encoding::hex_bytes")]
        new_proof_of_possession: [u8; 96],
        /// SHA-256 of the validator's new TLS public key.
        new_tls_fingerprint: Hash32,
    },
}

/// A change with the height from which the changed set is in force.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SetChangeProposal {
    /// The change.
    pub change: SetChange,
    /// The first beacon height at which the changed set is in force.
    pub effective_height: u64,
}

impl SetChangeProposal {
    /// `H_consensus_message(borsh(proposal))`, the object of the approvals.
    pub fn hash(&self) -> Hash32 {
        Domain::ConsensusMessage.hash(&encode(self))
    }

    /// What each approving operator signs.
    pub fn signing_root(&self, federation_id: &Hash32) -> Hash32 {
        signing_root(Purpose::ValidatorSetChange, federation_id, &self.hash())
    }

    /// One operator's approval (its validator's BLS key signing the root).
    pub fn approve(&self, federation_id: &Hash32, key: &SecretKey) -> bls::Signature {
        key.sign(self.signing_root(federation_id).as_bytes())
    }
}

/// A proposal with the aggregate approval of more than the quorum of the current weight.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SignedSetChange {
    /// The proposal.
    pub proposal: SetChangeProposal,
    /// Aggregate of the approvals; the bitfield is over the current set.
    pub approvals: CommitCertificate,
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetChangeError {
    /// The approvals do not carry the quorum of the current set.
    #[error("approvals: {0}")]
    Approvals(CertificateError),
    /// The effective height is not far enough ahead of the including block.
    #[error("effective height {effective} must be at least {min} (two after the including block)")]
    TooSoon {
        /// The stated height.
        effective: u64,
        /// The least allowed.
        min: u64,
    },
    /// The change names a key that is not in the set.
    #[error("no validator with that BLS key in the current set")]
    UnknownValidator,
    /// The changed set breaks a rule (too few, duplicate key, zero weight, bad proof of
    /// possession).
    #[error("changed set: {0}")]
    Set(#[from] ValidatorSetError),
}

impl SignedSetChange {
    /// Checks the approvals against `current` (the set in force at `block_height`, the height
    /// of the block that carries the change) and that the change takes effect at least two
    /// heights later.
    pub fn verify(
        &self,
        federation_id: &Hash32,
        current: &TrustedSet,
        block_height: u64,
    ) -> Result<(), SetChangeError> {
        let min = block_height.saturating_add(2);
        if self.proposal.effective_height < min {
            return Err(SetChangeError::TooSoon { effective: self.proposal.effective_height, min });
        }
        verify_certificate_over(
            current,
            &self.proposal.signing_root(federation_id),
            &self.approvals,
        )
        .map_err(SetChangeError::Approvals)?;
        Ok(())
    }
}

/// Aggregates approvals by validators of `set` (index, signature) into a certificate.
pub fn aggregate_approvals(
    set_len: usize,
    approvals: &[(usize, bls::Signature)],
) -> Result<CommitCertificate, bls::BlsError> {
    let mut signers = vec![0u8; set_len.div_ceil(8)];
    let mut signatures = Vec::with_capacity(approvals.len());
    for (i, s) in approvals {
        if *i >= set_len {
            return Err(bls::BlsError::InvalidPoint);
        }
        signers[i / 8] |= 1 << (i % 8);
        signatures.push(*s);
    }
    let signature = bls::Signature::aggregate(&signatures)?.to_bytes();
    Ok(CommitCertificate { signature, signers })
}

/// Applies `change` to `set`; the result is checked by [`TrustedSet::new`] with `quorum`.
pub fn apply(
    set: &ValidatorSet,
    change: &SetChange,
    quorum: crate::validators::Quorum,
    cache: &mut KeyCache,
) -> Result<ValidatorSet, SetChangeError> {
    let mut next = set.clone();
    let position = |key: &[u8; 48]| {
        set.validators
            .iter()
            .position(|v| &v.bls_key == key)
            .ok_or(SetChangeError::UnknownValidator)
    };
    match change {
        SetChange::Add { validator } => next.validators.push(validator.clone()),
        SetChange::Remove { bls_key } => {
            let i = position(bls_key)?;
            next.validators.remove(i);
        }
        SetChange::Reweight { bls_key, weight } => {
            let i = position(bls_key)?;
            next.validators[i].weight = *weight;
        }
        SetChange::Rotate {
            bls_key,
            new_bls_key,
            new_proof_of_possession,
            new_tls_fingerprint,
        } => {
            let i = position(bls_key)?;
            let v = &mut next.validators[i];
            v.bls_key = *new_bls_key;
            v.proof_of_possession = *new_proof_of_possession;
            v.tls_fingerprint = *new_tls_fingerprint;
        }
    }
    TrustedSet::new(&next, quorum, cache)?;
    Ok(next)
}
