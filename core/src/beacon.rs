//! Beacon headers, crosslinks and commit certificates (one aggregate BLS signature plus a
//! signer bitfield).

use crate::bls::{self, BlsError, PublicKey, SecretKey, Signature};
use crate::encoding::{encode, hex_bytes};
use crate::hash::{Domain, Hash32};
use crate::merkle::{Blake3Tree, TreeHasher};
use crate::record::CityId;
use crate::signing::{Purpose, signing_root};
use crate::validators::TrustedSet;
use bls12_381::{G1Affine, G2Affine, G2Prepared};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Beacon header format version.
pub const BEACON_HEADER_VERSION: u8 = 1;

/// A beacon block header.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct BeaconHeader {
    /// [`BEACON_HEADER_VERSION`].
    pub version: u8,
    /// Height, from 1 (genesis is height 0).
    pub height: u64,
    /// Proposal time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Hash of the previous beacon header (zero at height 1).
    pub previous: Hash32,
    /// Hash of the block body (crosslinks, set changes, evidence).
    pub body_hash: Hash32,
    /// Root of the crosslinks tree: leaves `encode(Crosslink)`, sorted by city.
    pub crosslinks_root: Hash32,
    /// Number of crosslinks (the tree's size).
    pub crosslinks_count: u64,
    /// Hash of the validator set in force at this height (the set that certifies it).
    pub validator_set_hash: Hash32,
    /// Hash of the set in force from the next height on.
    pub next_validator_set_hash: Hash32,
}

impl BeaconHeader {
    /// `H_BeaconHeader(encode(header))`.
    pub fn hash(&self) -> Hash32 {
        Domain::BeaconHeader.hash(&encode(self))
    }

    /// The message validators precommit (and the certificate signs).
    pub fn signing_root(&self, federation_id: &Hash32) -> Hash32 {
        signing_root(Purpose::BeaconPrecommit, federation_id, &self.hash())
    }
}

/// The kind of a consensus vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum VoteKind {
    /// First-phase vote.
    Prevote = 1,
    /// Second-phase vote; a precommit for a block is what certificates aggregate.
    Precommit = 2,
}

/// What a vote's signing root binds, except for a precommit for a block (which binds the block's
/// header hash alone, so that precommits aggregate into the commit certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct VoteMessage {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// Beacon height.
    pub height: u64,
    /// Consensus round.
    pub round: u32,
    /// The header hash voted for; none for nil.
    pub value: Option<Hash32>,
}

/// What a proposal's signing root binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ProposalMessage {
    /// Beacon height.
    pub height: u64,
    /// Consensus round.
    pub round: u32,
    /// The round of the polka that justifies re-proposing the value, if any.
    pub pol_round: Option<u32>,
    /// The proposed header's hash.
    pub value: Hash32,
}

/// The signing root of a vote. A precommit for block `b` signs `b.signing_root(federation_id)`
/// — the message the commit certificate aggregates; it binds the height (inside the header) but
/// not the round, so precommits for one block from any rounds aggregate. Every other vote (a
/// prevote, a nil precommit) signs
/// `signing_root(purpose, federation_id, H_consensus_message(encode(VoteMessage)))`.
pub fn vote_signing_root(federation_id: &Hash32, vote: &VoteMessage) -> Hash32 {
    match (vote.kind, vote.value) {
        (VoteKind::Precommit, Some(header_hash)) => {
            signing_root(Purpose::BeaconPrecommit, federation_id, &header_hash)
        }
        (kind, _) => {
            let purpose = match kind {
                VoteKind::Prevote => Purpose::BeaconPrevote,
                VoteKind::Precommit => Purpose::BeaconPrecommit,
            };
            signing_root(purpose, federation_id, &Domain::ConsensusMessage.hash(&encode(vote)))
        }
    }
}

/// The signing root of a proposal:
/// `signing_root(BeaconProposal, federation_id, H_consensus_message(encode(ProposalMessage)))`.
pub fn proposal_signing_root(federation_id: &Hash32, proposal: &ProposalMessage) -> Hash32 {
    signing_root(
        Purpose::BeaconProposal,
        federation_id,
        &Domain::ConsensusMessage.hash(&encode(proposal)),
    )
}

/// A crosslink: a city's latest sealed header, as the beacon saw it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct Crosslink {
    /// The city.
    pub city: CityId,
    /// Hash of its header.
    pub header_hash: Hash32,
}

impl Crosslink {
    /// Leaf hash in the crosslinks tree.
    pub fn leaf_hash(&self) -> Hash32 {
        Blake3Tree::crosslinks().leaf(&encode(self))
    }
}

/// A commit certificate: the aggregate of the signers' precommit signatures.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// Compressed aggregate BLS signature (G2).
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 96],
    /// Bit `i` (byte `i / 8`, bit `i % 8`, least significant first) set when validator `i`
    /// signed. Exactly `ceil(n / 8)` bytes; bits at and beyond `n` must be zero.
    #[serde(with = "hex_bytes")]
    pub signers: Vec<u8>,
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The bitfield has the wrong length for the set.
    #[error(
        "signer bitfield has {actual} bytes, the set of {validators} validators needs {expected}"
    )]
    BitfieldLength {
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        actual: usize,
        /// Validators in the set.
        validators: usize,
    },
    /// A bit beyond the last validator is set.
    #[error("signer bit {bit} is beyond the {validators} validators of the set")]
    SignerOutOfRange {
        /// The offending bit.
        bit: usize,
        /// Validators in the set.
        validators: usize,
    },
    /// The signers do not hold strictly more than the quorum of the weight.
    #[error("signers hold {signed} of {total} weight, not more than the quorum")]
    InsufficientWeight {
        /// Weight of the signers.
        signed: u64,
        /// Total weight.
        total: u64,
    },
    /// The aggregate signature is not a valid point.
    #[error("aggregate signature: {0}")]
    SignatureEncoding(BlsError),
    /// The aggregate signature does not verify for the signers and the header.
    #[error("aggregate signature does not verify")]
    BadSignature,
}

impl CommitCertificate {
    /// Aggregates precommit signatures; `signatures[i]` is `Some` when validator `i` signed.
    pub fn aggregate(signatures: &[Option<Signature>]) -> Result<Self, BlsError> {
        let mut signers = vec![0u8; signatures.len().div_ceil(8)];
        let mut present = Vec::new();
        for (i, s) in signatures.iter().enumerate() {
            if let Some(s) = s {
                signers[i / 8] |= 1 << (i % 8);
                present.push(*s);
            }
        }
        Ok(CommitCertificate { signature: Signature::aggregate(&present)?.to_bytes(), signers })
    }

    /// Builds a certificate by signing with the given secret keys (tests, devnets).
    pub fn sign(
        header: &BeaconHeader,
        federation_id: &Hash32,
        keys: &[Option<&SecretKey>],
    ) -> Result<Self, BlsError> {
        let root = header.signing_root(federation_id);
        let signatures: Vec<Option<Signature>> =
            keys.iter().map(|k| k.map(|k| k.sign(root.as_bytes()))).collect();
        Self::aggregate(&signatures)
    }

    /// The indexes of the signers (after the bitfield passed [`check_bitfield`]).
    pub fn signer_indexes(&self, validators: usize) -> impl Iterator<Item = usize> + '_ {
        (0..validators).filter(|i| self.signers.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
    }
}

/// Checks the bitfield's shape against a set of `validators` validators.
pub fn check_bitfield(signers: &[u8], validators: usize) -> Result<(), CertificateError> {
    let expected = validators.div_ceil(8);
    if signers.len() != expected {
        return Err(CertificateError::BitfieldLength {
            expected,
            actual: signers.len(),
            validators,
        });
    }
    for bit in validators..expected * 8 {
        if signers[bit / 8] & (1 << (bit % 8)) != 0 {
            return Err(CertificateError::SignerOutOfRange { bit, validators });
        }
    }
    Ok(())
}

/// Verifies `certificate` over `header` against `set`: bitfield shape, strictly more than the
/// quorum of the weight, then one aggregate pairing check. Returns the signers' weight.
pub fn verify_certificate(
    federation_id: &Hash32,
    set: &TrustedSet,
    header: &BeaconHeader,
    certificate: &CommitCertificate,
) -> Result<u64, CertificateError> {
    verify_certificate_over(set, &header.signing_root(federation_id), certificate)
}

/// As [`verify_certificate`], over an already computed signing root.
pub fn verify_certificate_over(
    set: &TrustedSet,
    signing_root: &Hash32,
    certificate: &CommitCertificate,
) -> Result<u64, CertificateError> {
    let n = set.len();
    check_bitfield(&certificate.signers, n)?;
    let mut signed: u64 = 0;
    let mut signer_keys: Vec<&PublicKey> = Vec::with_capacity(n);
    for i in certificate.signer_indexes(n) {
        // Weights were summed without overflow when the set was checked, so a subset sum fits.
        signed = signed.saturating_add(set.weights()[i]);
        signer_keys.push(&set.keys()[i]);
    }
    if !set.quorum().is_met(signed, set.total_weight()) {
        return Err(CertificateError::InsufficientWeight { signed, total: set.total_weight() });
    }
    let signature = Signature::from_bytes(&certificate.signature)
        .map_err(CertificateError::SignatureEncoding)?;
    let aggregate_key = G1Affine::from(PublicKey::aggregate_points(signer_keys));
    let hashed = G2Prepared::from(G2Affine::from(bls::hash_to_g2(
        signing_root.as_bytes(),
        bls::DST_SIGNATURE,
    )));
    if bls::verify_prehashed(&aggregate_key, &hashed, signature.point()) {
        Ok(signed)
    } else {
        Err(CertificateError::BadSignature)
    }
}

#[cfg(test)]
mod vote_tests {
    use super::*;

    #[test]
    fn a_precommit_for_a_block_signs_the_certificate_message_and_other_votes_do_not_collide() {
        let fed = Domain::Genesis.hash(b"federation");
        let header = BeaconHeader {
            version: BEACON_HEADER_VERSION,
            height: 7,
            time_ms: 1,
            previous: Hash32::ZERO,
            body_hash: Hash32::ZERO,
            crosslinks_root: Hash32::ZERO,
            crosslinks_count: 0,
            validator_set_hash: Hash32::ZERO,
            next_validator_set_hash: Hash32::ZERO,
        };
        let id = header.hash();
        let vote = |kind, round, value| VoteMessage { kind, height: 7, round, value };
        let commit = vote_signing_root(&fed, &vote(VoteKind::Precommit, 0, Some(id)));
        assert_eq!(commit, header.signing_root(&fed));
        assert_eq!(commit, vote_signing_root(&fed, &vote(VoteKind::Precommit, 3, Some(id))));
        let others = [
            vote_signing_root(&fed, &vote(VoteKind::Prevote, 0, Some(id))),
            vote_signing_root(&fed, &vote(VoteKind::Prevote, 1, Some(id))),
            vote_signing_root(&fed, &vote(VoteKind::Prevote, 0, None)),
            vote_signing_root(&fed, &vote(VoteKind::Precommit, 0, None)),
            vote_signing_root(&fed, &vote(VoteKind::Precommit, 1, None)),
            proposal_signing_root(
                &fed,
                &ProposalMessage { height: 7, round: 0, pol_round: None, value: id },
            ),
            proposal_signing_root(
                &fed,
                &ProposalMessage { height: 7, round: 0, pol_round: Some(0), value: id },
            ),
        ];
        let mut all = others.to_vec();
        all.push(commit);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), others.len() + 1, "every message signs a distinct root");
        let other_fed = Domain::Genesis.hash(b"other");
        assert_ne!(commit, vote_signing_root(&other_fed, &vote(VoteKind::Precommit, 0, Some(id))));
    }
}
