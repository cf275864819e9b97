//! Urbis's types for Malachite's `Context`: heights, validators, beacon blocks as values, votes
//! and proposals whose signing roots are the ones `docs/protocol.md` defines.

use super::scheme::Scheme;
use crate::block::Block;
use malachitebft_core_types::{
    self as mt, LinearTimeouts, NilOrVal, Round, SignedExtension, VoteType, VotingPower,
};
use std::fmt;
use std::marker::PhantomData;
use urbis_core::beacon::{ProposalMessage, VoteKind, VoteMessage};
use urbis_core::hash::Hash32;

/// A beacon height (genesis is 0; the first block is 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mt::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: BLAKE3 of its encoded public key (stable across set changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub Hash32);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.0.to_hex()[..12])
    }
}

impl mt::Address for Address {}

/// One validator of the consensus set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator<S: Scheme> {
    /// Its address.
    pub address: Address,
    /// Its public key.
    pub public_key: S::PublicKey,
    /// Its weight.
    pub power: VotingPower,
}

impl<S: Scheme> Validator<S> {
    /// A validator with `public_key` and `power`; the address is derived from the key.
    pub fn new(public_key: S::PublicKey, power: VotingPower) -> Self {
        let address = Address(Hash32(*blake3::hash(&S::encode_public_key(&public_key)).as_bytes()));
        Validator { address, public_key, power }
    }
}

impl<S: Scheme> mt::Validator<Ctx<S>> for Validator<S> {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &S::PublicKey {
        &self.public_key
    }
    fn voting_power(&self) -> VotingPower {
        self.power
    }
}

/// A validator set in bitfield order (the order of the set's wire form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet<S: Scheme> {
    validators: Vec<Validator<S>>,
    total: VotingPower,
}

impl<S: Scheme> ValidatorSet<S> {
    /// The set of `validators`, in this order.
    pub fn new(validators: Vec<Validator<S>>) -> Self {
        let total = validators.iter().map(|v| v.power).fold(0u64, u64::saturating_add);
        ValidatorSet { validators, total }
    }

    /// The validators, in bitfield order.
    pub fn validators(&self) -> &[Validator<S>] {
        &self.validators
    }

    /// The bitfield position of `address`.
    pub fn index_of(&self, address: &Address) -> Option<usize> {
        self.validators.iter().position(|v| v.address == *address)
    }
}

impl<S: Scheme> mt::ValidatorSet<Ctx<S>> for ValidatorSet<S> {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> VotingPower {
        self.total
    }
    fn get_by_address(&self, address: &Address) -> Option<&Validator<S>> {
        self.validators.iter().find(|v| v.address == *address)
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator<S>> {
        self.validators.get(index)
    }
}

/// A value's id: the beacon header hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub Hash32);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.0.to_hex()[..12])
    }
}

impl mt::Value for Block {
    type Id = BlockId;
    fn id(&self) -> BlockId {
        BlockId(self.header.hash())
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// Prevote or precommit.
    pub vote_type: VoteType,
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The block voted for, or nil.
    pub value: NilOrVal<BlockId>,
    /// The voter.
    pub address: Address,
}

impl Vote {
    /// What the vote's signature binds (`docs/protocol.md`, section 6).
    pub fn message(&self) -> VoteMessage {
        VoteMessage {
            kind: match self.vote_type {
                VoteType::Prevote => VoteKind::Prevote,
                VoteType::Precommit => VoteKind::Precommit,
            },
            height: self.height.0,
            round: self.round.as_u32().unwrap_or(u32::MAX),
            value: match self.value {
                NilOrVal::Nil => None,
                NilOrVal::Val(id) => Some(id.0),
            },
        }
    }
}

impl<S: Scheme> mt::Vote<Ctx<S>> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &Address {
        &self.address
    }
    // Vote extensions are disabled: none is ever attached, and none would be signed.
    fn extension(&self) -> Option<&SignedExtension<Ctx<S>>> {
        None
    }
    fn take_extension(&mut self) -> Option<SignedExtension<Ctx<S>>> {
        None
    }
    fn extend(self, _extension: SignedExtension<Ctx<S>>) -> Self {
        self
    }
}

/// A proposal: the whole beacon block travels inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The proposed block.
    pub value: Block,
    /// The polka round justifying a re-proposal, or nil.
    pub pol_round: Round,
    /// The proposer.
    pub address: Address,
}

impl Proposal {
    /// What the proposal's signature binds.
    pub fn message(&self) -> ProposalMessage {
        ProposalMessage {
            height: self.height.0,
            round: self.round.as_u32().unwrap_or(u32::MAX),
            pol_round: self.pol_round.as_u32(),
            value: self.value.header.hash(),
        }
    }
}

impl<S: Scheme> mt::Proposal<Ctx<S>> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &Block {
        &self.value
    }
    fn take_value(self) -> Block {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.address
    }
}

/// The block travels whole inside the proposal; there are no separate parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoParts;

impl<S: Scheme> mt::ProposalPart<Ctx<S>> for NoParts {
    fn is_first(&self) -> bool {
        true
    }
    fn is_last(&self) -> bool {
        true
    }
}

/// Urbis as Malachite's context, over a signing scheme (BLS in production).
pub struct Ctx<S> {
    /// The federation id: every signing root binds it.
    pub federation_id: Hash32,
    scheme: PhantomData<fn() -> S>,
}

impl<S> Ctx<S> {
    /// The context of federation `federation_id`.
    pub fn new(federation_id: Hash32) -> Self {
        Ctx { federation_id, scheme: PhantomData }
    }
}

impl<S> Clone for Ctx<S> {
    fn clone(&self) -> Self {
        Ctx::new(self.federation_id)
    }
}

impl<S> fmt::Debug for Ctx<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("federation_id", &self.federation_id).finish()
    }
}

impl<S: Scheme> mt::Context for Ctx<S> {
    type Address = Address;
    type Height = Height;
    type ProposalPart = NoParts;
    type Proposal = Proposal;
    type Validator = Validator<S>;
    type ValidatorSet = ValidatorSet<S>;
    type Timeouts = LinearTimeouts;
    type Value = Block;
    type Vote = Vote;
    type Extension = Vec<u8>;
    type SigningScheme = S;

    /// Round robin over the set in bitfield order, starting one further each height.
    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet<S>,
        height: Height,
        round: Round,
    ) -> &'a Validator<S> {
        let n = validator_set.validators.len().max(1) as u64;
        let r = u64::from(round.as_u32().unwrap_or(0));
        let index = (height.0.wrapping_add(r)) % n;
        &validator_set.validators[index as usize]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: Block,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal { height, round, value, pol_round, address }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote { vote_type: VoteType::Prevote, height, round, value, address }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote { vote_type: VoteType::Precommit, height, round, value, address }
    }
}
