//! The bytes of consensus messages between validators and of write-ahead-log entries: borsh
//! structs of our own (Malachite's types have no encoding), decoded strictly — every byte from
//! the network is hostile: no trailing bytes, bounded sizes, defined rounds, signatures that
//! decode under the scheme. Decoding never verifies signatures; the core does, through the host.

use super::context::{Address, BlockId, Ctx, Height, Proposal, Vote};
use super::host::Message;
use super::scheme::Scheme;
use crate::block::Block;
use borsh::{BorshDeserialize, BorshSerialize};
use malachitebft_core_consensus::{Input, ProposedValue};
use malachitebft_core_types::{
    CommitCertificate, CommitSignature, NilOrVal, PolkaCertificate, PolkaSignature, Round,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, Timeout, TimeoutKind,
    Validity, ValueOrigin, VoteType,
};
use urbis_core::encoding::{decode, encode};
use urbis_core::hash::Hash32;

/// Most signatures one certificate may carry (the largest validator set).
pub const SIGNATURES_MAX: usize = urbis_core::validators::VALIDATORS_MAX;

/// Why bytes are not a consensus message or log entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not the canonical encoding of a wire struct.
    #[error("malformed encoding: {0}")]
    Encoding(String),
    /// A vote or proposal without a defined round, or another impossible field.
    #[error("invalid field: {0}")]
    Field(&'static str),
    /// A signature that does not decode under the scheme.
    #[error("signature does not decode: {0}")]
    Signature(String),
    /// More signatures than any validator set has.
    #[error("certificate with {0} signatures")]
    TooManySignatures(usize),
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireVote {
    /// 1 prevote, 2 precommit.
    kind: u8,
    height: u64,
    round: u32,
    value: Option<Hash32>,
    address: Hash32,
    signature: Vec<u8>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireProposal {
    height: u64,
    round: u32,
    pol_round: Option<u32>,
    block: Block,
    address: Hash32,
    signature: Vec<u8>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireCertificate {
    height: u64,
    round: u32,
    value: Hash32,
    signatures: Vec<(Hash32, Vec<u8>)>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireRoundSignature {
    kind: u8,
    value: Option<Hash32>,
    address: Hash32,
    signature: Vec<u8>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireRoundCertificate {
    height: u64,
    round: u32,
    /// 1 skip, 2 precommit.
    kind: u8,
    signatures: Vec<WireRoundSignature>,
}

#[derive(BorshSerialize, BorshDeserialize)]
enum WireMessage {
    Vote(WireVote),
    Proposal(WireProposal),
    Polka(WireCertificate),
    Round(WireRoundCertificate),
    Status(u64),
    Decided(Block, WireCertificate),
}

#[derive(BorshSerialize, BorshDeserialize)]
enum WireEntry {
    Vote(WireVote),
    Proposal(WireProposal),
    ProposedValue {
        height: u64,
        round: u32,
        valid_round: Option<u32>,
        proposer: Hash32,
        block: Block,
        valid: bool,
        /// 1 consensus, 2 sync.
        origin: u8,
    },
    /// 1 propose, 2 prevote, 3 precommit.
    Timeout {
        kind: u8,
        round: u32,
    },
    Polka(WireCertificate),
}

fn round_of(r: Round) -> Result<u32, WireError> {
    r.as_u32().ok_or(WireError::Field("undefined round"))
}

fn defined(r: u32) -> Result<Round, WireError> {
    // `u32::MAX` would overflow the core's round arithmetic.
    if r == u32::MAX { Err(WireError::Field("round out of range")) } else { Ok(Round::new(r)) }
}

fn optional_round(r: Option<u32>) -> Result<Round, WireError> {
    match r {
        None => Ok(Round::Nil),
        Some(r) => defined(r),
    }
}

fn signature<S: Scheme>(bytes: &[u8]) -> Result<S::Signature, WireError> {
    S::decode_signature(bytes).map_err(|e| WireError::Signature(e.to_string()))
}

fn vote_kind(t: VoteType) -> u8 {
    match t {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    }
}

fn vote_type(k: u8) -> Result<VoteType, WireError> {
    match k {
        1 => Ok(VoteType::Prevote),
        2 => Ok(VoteType::Precommit),
        _ => Err(WireError::Field("vote kind")),
    }
}

fn value_of(v: &NilOrVal<BlockId>) -> Option<Hash32> {
    match v {
        NilOrVal::Nil => None,
        NilOrVal::Val(id) => Some(id.0),
    }
}

fn nil_or(v: Option<Hash32>) -> NilOrVal<BlockId> {
    v.map_or(NilOrVal::Nil, |h| NilOrVal::Val(BlockId(h)))
}

fn vote_to_wire<S: Scheme>(v: &SignedMessage<Ctx<S>, Vote>) -> Result<WireVote, WireError> {
    Ok(WireVote {
        kind: vote_kind(v.vote_type),
        height: v.height.0,
        round: round_of(v.round)?,
        value: value_of(&v.value),
        address: v.address.0,
        signature: S::encode_signature(&v.signature),
    })
}

fn vote_from_wire<S: Scheme>(w: WireVote) -> Result<SignedMessage<Ctx<S>, Vote>, WireError> {
    let vote = Vote {
        vote_type: vote_type(w.kind)?,
        height: Height(w.height),
        round: defined(w.round)?,
        value: nil_or(w.value),
        address: Address(w.address),
    };
    Ok(SignedMessage::new(vote, signature::<S>(&w.signature)?))
}

fn proposal_to_wire<S: Scheme>(
    p: &SignedMessage<Ctx<S>, Proposal>,
) -> Result<WireProposal, WireError> {
    Ok(WireProposal {
        height: p.height.0,
        round: round_of(p.round)?,
        pol_round: p.pol_round.as_u32(),
        block: p.value.clone(),
        address: p.address.0,
        signature: S::encode_signature(&p.signature),
    })
}

fn proposal_from_wire<S: Scheme>(
    w: WireProposal,
) -> Result<SignedMessage<Ctx<S>, Proposal>, WireError> {
    let proposal = Proposal {
        height: Height(w.height),
        round: defined(w.round)?,
        value: w.block,
        pol_round: optional_round(w.pol_round)?,
        address: Address(w.address),
    };
    Ok(SignedMessage::new(proposal, signature::<S>(&w.signature)?))
}

fn check_count(n: usize) -> Result<(), WireError> {
    if n > SIGNATURES_MAX { Err(WireError::TooManySignatures(n)) } else { Ok(()) }
}

fn commit_to_wire<S: Scheme>(c: &CommitCertificate<Ctx<S>>) -> Result<WireCertificate, WireError> {
    Ok(WireCertificate {
        height: c.height.0,
        round: round_of(c.round)?,
        value: c.value_id.0,
        signatures: c
            .commit_signatures
            .iter()
            .map(|s| (s.address.0, S::encode_signature(&s.signature)))
            .collect(),
    })
}

fn commit_from_wire<S: Scheme>(w: WireCertificate) -> Result<CommitCertificate<Ctx<S>>, WireError> {
    check_count(w.signatures.len())?;
    let mut commit_signatures = Vec::with_capacity(w.signatures.len());
    for (address, sig) in w.signatures {
        commit_signatures.push(CommitSignature::new(Address(address), signature::<S>(&sig)?));
    }
    Ok(CommitCertificate {
        height: Height(w.height),
        round: defined(w.round)?,
        value_id: BlockId(w.value),
        commit_signatures,
    })
}

fn polka_to_wire<S: Scheme>(c: &PolkaCertificate<Ctx<S>>) -> Result<WireCertificate, WireError> {
    Ok(WireCertificate {
        height: c.height.0,
        round: round_of(c.round)?,
        value: c.value_id.0,
        signatures: c
            .polka_signatures
            .iter()
            .map(|s| (s.address.0, S::encode_signature(&s.signature)))
            .collect(),
    })
}

fn polka_from_wire<S: Scheme>(w: WireCertificate) -> Result<PolkaCertificate<Ctx<S>>, WireError> {
    check_count(w.signatures.len())?;
    let mut polka_signatures = Vec::with_capacity(w.signatures.len());
    for (address, sig) in w.signatures {
        polka_signatures.push(PolkaSignature::new(Address(address), signature::<S>(&sig)?));
    }
    Ok(PolkaCertificate {
        height: Height(w.height),
        round: defined(w.round)?,
        value_id: BlockId(w.value),
        polka_signatures,
    })
}

fn round_to_wire<S: Scheme>(
    c: &RoundCertificate<Ctx<S>>,
) -> Result<WireRoundCertificate, WireError> {
    Ok(WireRoundCertificate {
        height: c.height.0,
        round: round_of(c.round)?,
        kind: match c.cert_type {
            RoundCertificateType::Skip => 1,
            RoundCertificateType::Precommit => 2,
        },
        signatures: c
            .round_signatures
            .iter()
            .map(|s| WireRoundSignature {
                kind: vote_kind(s.vote_type),
                value: value_of(&s.value_id),
                address: s.address.0,
                signature: S::encode_signature(&s.signature),
            })
            .collect(),
    })
}

fn round_from_wire<S: Scheme>(
    w: WireRoundCertificate,
) -> Result<RoundCertificate<Ctx<S>>, WireError> {
    check_count(w.signatures.len())?;
    let cert_type = match w.kind {
        1 => RoundCertificateType::Skip,
        2 => RoundCertificateType::Precommit,
        _ => return Err(WireError::Field("round certificate kind")),
    };
    let mut round_signatures = Vec::with_capacity(w.signatures.len());
    for s in w.signatures {
        round_signatures.push(RoundSignature::new(
            vote_type(s.kind)?,
            nil_or(s.value),
            Address(s.address),
            signature::<S>(&s.signature)?,
        ));
    }
    Ok(RoundCertificate {
        height: Height(w.height),
        round: defined(w.round)?,
        cert_type,
        round_signatures,
    })
}

/// The bytes of a message.
pub fn encode_message<S: Scheme>(message: &Message<S>) -> Result<Vec<u8>, WireError> {
    let wire = match message {
        Message::Vote(v) => WireMessage::Vote(vote_to_wire::<S>(v)?),
        Message::Proposal(p) => WireMessage::Proposal(proposal_to_wire::<S>(p)?),
        Message::Polka(c) => WireMessage::Polka(polka_to_wire::<S>(c)?),
        Message::Round(c) => WireMessage::Round(round_to_wire::<S>(c)?),
        Message::Status(h) => WireMessage::Status(h.0),
        Message::Decided(block, c) => WireMessage::Decided(block.clone(), commit_to_wire::<S>(c)?),
    };
    Ok(encode(&wire))
}

/// A message from bytes (strict; signatures decoded, not verified).
pub fn decode_message<S: Scheme>(bytes: &[u8]) -> Result<Message<S>, WireError> {
    let wire: WireMessage = decode(bytes).map_err(|e| WireError::Encoding(e.to_string()))?;
    Ok(match wire {
        WireMessage::Vote(v) => Message::Vote(vote_from_wire::<S>(v)?),
        WireMessage::Proposal(p) => Message::Proposal(proposal_from_wire::<S>(p)?),
        WireMessage::Polka(c) => Message::Polka(polka_from_wire::<S>(c)?),
        WireMessage::Round(c) => Message::Round(round_from_wire::<S>(c)?),
        WireMessage::Status(h) => Message::Status(Height(h)),
        WireMessage::Decided(block, c) => Message::Decided(block, commit_from_wire::<S>(c)?),
    })
}

/// The bytes of a write-ahead-log entry. Only the inputs the core logs are representable.
pub fn encode_entry<S: Scheme>(input: &Input<Ctx<S>>) -> Result<Vec<u8>, WireError> {
    let wire = match input {
        Input::Vote(v) => WireEntry::Vote(vote_to_wire::<S>(v)?),
        Input::Proposal(p) => WireEntry::Proposal(proposal_to_wire::<S>(p)?),
        Input::ProposedValue(pv, origin) => WireEntry::ProposedValue {
            height: pv.height.0,
            round: round_of(pv.round)?,
            valid_round: pv.valid_round.as_u32(),
            proposer: pv.proposer.0,
            block: pv.value.clone(),
            valid: pv.validity.is_valid(),
            origin: match origin {
                ValueOrigin::Consensus => 1,
                ValueOrigin::Sync => 2,
            },
        },
        Input::TimeoutElapsed(t) => WireEntry::Timeout {
            kind: match t.kind {
                TimeoutKind::Propose => 1,
                TimeoutKind::Prevote => 2,
                TimeoutKind::Precommit => 3,
                _ => return Err(WireError::Field("timeout kind the core does not log")),
            },
            round: round_of(t.round)?,
        },
        Input::PolkaCertificate(c) => WireEntry::Polka(polka_to_wire::<S>(c)?),
        _ => return Err(WireError::Field("input the core does not log")),
    };
    Ok(encode(&wire))
}

/// A write-ahead-log entry from bytes.
pub fn decode_entry<S: Scheme>(bytes: &[u8]) -> Result<Input<Ctx<S>>, WireError> {
    let wire: WireEntry = decode(bytes).map_err(|e| WireError::Encoding(e.to_string()))?;
    Ok(match wire {
        WireEntry::Vote(v) => Input::Vote(vote_from_wire::<S>(v)?),
        WireEntry::Proposal(p) => Input::Proposal(proposal_from_wire::<S>(p)?),
        WireEntry::ProposedValue { height, round, valid_round, proposer, block, valid, origin } => {
            Input::ProposedValue(
                ProposedValue {
                    height: Height(height),
                    round: defined(round)?,
                    valid_round: optional_round(valid_round)?,
                    proposer: Address(proposer),
                    value: block,
                    validity: Validity::from_bool(valid),
                },
                match origin {
                    1 => ValueOrigin::Consensus,
                    2 => ValueOrigin::Sync,
                    _ => return Err(WireError::Field("value origin")),
                },
            )
        }
        WireEntry::Timeout { kind, round } => Input::TimeoutElapsed(Timeout::new(
            defined(round)?,
            match kind {
                1 => TimeoutKind::Propose,
                2 => TimeoutKind::Prevote,
                3 => TimeoutKind::Precommit,
                _ => return Err(WireError::Field("timeout kind")),
            },
        )),
        WireEntry::Polka(c) => Input::PolkaCertificate(polka_from_wire::<S>(c)?),
    })
}

/// The bytes of a commit certificate (kept beside each decided block, to serve sync).
pub fn encode_commit<S: Scheme>(c: &CommitCertificate<Ctx<S>>) -> Result<Vec<u8>, WireError> {
    Ok(encode(&commit_to_wire::<S>(c)?))
}

/// A commit certificate from bytes.
pub fn decode_commit<S: Scheme>(bytes: &[u8]) -> Result<CommitCertificate<Ctx<S>>, WireError> {
    commit_from_wire::<S>(decode(bytes).map_err(|e| WireError::Encoding(e.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::scheme::Bls;

    /// Arbitrary bytes, and bytes that start like each variant, decode to an error or a value,
    /// never a panic (with BLS signatures, so point decoding is exercised too).
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes() {
        let mut stream = blake3::Hasher::new().update(b"wire fuzz").finalize_xof();
        for i in 0..3_000u32 {
            let mut len = [0u8; 2];
            stream.fill(&mut len);
            let mut bytes = vec![0u8; usize::from(u16::from_le_bytes(len)) % 700];
            stream.fill(&mut bytes);
            if let Some(first) = bytes.first_mut() {
                // Aim at real variant tags most of the time.
                *first = (i % 7) as u8;
            }
            let _ = decode_message::<Bls>(&bytes);
            let _ = decode_entry::<Bls>(&bytes);
            let _ = decode_commit::<Bls>(&bytes);
        }
    }

    #[test]
    fn rounds_the_core_cannot_hold_are_refused() {
        let vote = WireVote {
            kind: 1,
            height: 1,
            round: u32::MAX,
            value: None,
            address: Hash32::ZERO,
            signature: vec![0; 96],
        };
        assert_eq!(
            decode_message::<Bls>(&encode(&WireMessage::Vote(vote))).err(),
            Some(WireError::Field("round out of range"))
        );
    }
}
