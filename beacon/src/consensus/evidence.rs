//! Misbehaviour evidence: two validly signed, conflicting messages of one validator at one
//! height and round. Only messages whose signatures bind the round count — prevotes and
//! proposals; precommits for a block sign the round-free certificate message, so two of them are
//! not proof of anything (ADR 0004). Evidence is self-verifying: anyone with the validator set
//! can check it.

use super::context::{BlockId, Ctx, Proposal, ValidatorSet, Vote};
use super::scheme::Scheme;
use borsh::{BorshDeserialize, BorshSerialize};
use malachitebft_core_types::{NilOrVal, SignedMessage, VoteType};
use serde::Serialize;
use urbis_core::beacon::{
    ProposalMessage, VoteKind, VoteMessage, proposal_signing_root, vote_signing_root,
};
use urbis_core::encoding::hex_bytes;
use urbis_core::hash::Hash32;

/// One signed statement inside evidence.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Signed {
    /// The header hash voted for or proposed (none: a nil vote).
    pub value: Option<Hash32>,
    /// For proposals, the polka round of the re-proposal.
    pub pol_round: Option<u32>,
    /// The signature (scheme encoding).
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// What kind of messages conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// Two prevotes.
    DoublePrevote,
    /// Two proposals.
    DoubleProposal,
}

/// Two conflicting, validly signed messages of one validator at one height and round.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Evidence {
    /// The kind.
    pub kind: EvidenceKind,
    /// The validator (its consensus address).
    pub validator: Hash32,
    /// Beacon height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The first message.
    pub first: Signed,
    /// The conflicting one.
    pub second: Signed,
}

fn value_of(v: &NilOrVal<BlockId>) -> Option<Hash32> {
    match v {
        NilOrVal::Nil => None,
        NilOrVal::Val(id) => Some(id.0),
    }
}

impl Evidence {
    /// From the core's record of two votes, when they are provable (prevotes).
    pub fn from_votes<S: Scheme>(
        a: &SignedMessage<Ctx<S>, Vote>,
        b: &SignedMessage<Ctx<S>, Vote>,
    ) -> Option<Self> {
        if a.vote_type != VoteType::Prevote
            || b.vote_type != VoteType::Prevote
            || a.address != b.address
            || a.height != b.height
            || a.round != b.round
            || a.value == b.value
        {
            return None;
        }
        Some(Evidence {
            kind: EvidenceKind::DoublePrevote,
            validator: a.address.0,
            height: a.height.0,
            round: a.round.as_u32()?,
            first: Signed {
                value: value_of(&a.value),
                pol_round: None,
                signature: S::encode_signature(&a.signature),
            },
            second: Signed {
                value: value_of(&b.value),
                pol_round: None,
                signature: S::encode_signature(&b.signature),
            },
        })
    }

    /// From the core's record of two proposals.
    pub fn from_proposals<S: Scheme>(
        a: &SignedMessage<Ctx<S>, Proposal>,
        b: &SignedMessage<Ctx<S>, Proposal>,
    ) -> Option<Self> {
        let (va, vb) = (a.value.header.hash(), b.value.header.hash());
        if a.address != b.address || a.height != b.height || a.round != b.round || va == vb {
            return None;
        }
        Some(Evidence {
            kind: EvidenceKind::DoubleProposal,
            validator: a.address.0,
            height: a.height.0,
            round: a.round.as_u32()?,
            first: Signed {
                value: Some(va),
                pol_round: a.pol_round.as_u32(),
                signature: S::encode_signature(&a.signature),
            },
            second: Signed {
                value: Some(vb),
                pol_round: b.pol_round.as_u32(),
                signature: S::encode_signature(&b.signature),
            },
        })
    }

    fn root(&self, federation_id: &Hash32, s: &Signed) -> Option<Hash32> {
        Some(match self.kind {
            EvidenceKind::DoublePrevote => vote_signing_root(
                federation_id,
                &VoteMessage {
                    kind: VoteKind::Prevote,
                    height: self.height,
                    round: self.round,
                    value: s.value,
                },
            ),
            EvidenceKind::DoubleProposal => proposal_signing_root(
                federation_id,
                &ProposalMessage {
                    height: self.height,
                    round: self.round,
                    pol_round: s.pol_round,
                    value: s.value?,
                },
            ),
        })
    }

    /// Whether both messages are validly signed by the named validator of `set` and conflict.
    pub fn verify<S: Scheme>(&self, federation_id: &Hash32, set: &ValidatorSet<S>) -> bool {
        let conflicting = match self.kind {
            EvidenceKind::DoublePrevote => self.first.value != self.second.value,
            EvidenceKind::DoubleProposal => {
                self.first.value != self.second.value
                    || self.first.pol_round != self.second.pol_round
            }
        };
        let Some(validator) = set.validators().iter().find(|v| v.address.0 == self.validator)
        else {
            return false;
        };
        conflicting
            && [&self.first, &self.second].iter().all(|s| {
                let (Some(root), Ok(sig)) =
                    (self.root(federation_id, s), S::decode_signature(&s.signature))
                else {
                    return false;
                };
                S::verify(&validator.public_key, &root, &sig)
            })
    }
}
