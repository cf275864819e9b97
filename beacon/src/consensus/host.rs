//! The host of Malachite's consensus core for one validator: a pure state machine. Inputs
//! (peer messages, elapsed timeouts) go in; actions (broadcast, reply, timers, WAL appends,
//! decisions) come out. The node, the simulator and the tests all drive this same type; none
//! of it does I/O.

use super::context::{Address, BlockId, Ctx, Height, ValidatorSet, Vote};
use super::scheme::Scheme;
use crate::block::Block;
use malachitebft_core_consensus::{
    self as mc, ConsensusMsg, Effect, Input, LivenessMsg, LocallyProposedValue, Params, PeerId,
    ProposedValue, Resumable, Resume, SignedConsensusMsg, State, ThresholdParams, ValuePayload,
};
use malachitebft_core_types::{
    self as mt, CertificateError, CommitCertificate, ExtendedCommitCertificate, LinearTimeouts,
    NilOrVal, PolkaCertificate, Round, RoundCertificate, RoundCertificateType, SignedMessage,
    SignedProposal, SignedVote, ThresholdParam, Timeout, Timeouts, Validity, ValueOrigin,
    ValueResponse, VoteExtensionPolicy, VoteExtensions, VoteType,
};
use std::collections::BTreeMap;
use std::time::Duration;
use urbis_core::beacon::{proposal_signing_root, vote_signing_root};

/// The application side of consensus: what to propose, what is valid, what was decided.
pub trait App {
    /// The block to propose at `height` (the next after the last committed one).
    fn propose(&mut self, height: u64, round: u32) -> Block;
    /// Whether `block` may be decided at the next height.
    fn validate(&self, block: &Block) -> bool;
    /// `block` was decided; the chain moves on.
    fn commit(&mut self, block: &Block);
    /// The validators in force at `height` (encoded public key, weight), in bitfield order,
    /// when validator-set changes exist; `None` keeps the set the host runs with.
    fn validators(&self, _height: u64) -> Option<Vec<(Vec<u8>, u64)>> {
        None
    }
}

/// A message between validators.
#[derive(Clone, Debug)]
pub enum Message<S: Scheme> {
    /// A signed prevote or precommit.
    Vote(SignedVote<Ctx<S>>),
    /// A signed proposal (the block inside it).
    Proposal(SignedProposal<Ctx<S>>),
    /// A polka certificate (liveness).
    Polka(PolkaCertificate<Ctx<S>>),
    /// A round certificate (liveness).
    Round(RoundCertificate<Ctx<S>>),
    /// The sender's height: peers ahead answer with the decided block of that height.
    Status(Height),
    /// A decided block with its commit certificate (sync).
    Decided(Block, CommitCertificate<Ctx<S>>),
}

/// What the host of a validator must do.
#[derive(Clone, Debug)]
pub enum Action<S: Scheme> {
    /// Make this input durable in the write-ahead log of `height` before any later `Broadcast`
    /// or `Reply` leaves the node.
    Persist(Height, Input<Ctx<S>>),
    /// Send to every other validator.
    Broadcast(Message<S>),
    /// Send to the peer whose message is being handled.
    Reply(Message<S>),
    /// Start (or restart) a timer; when it fires call [`Host::on_timeout`].
    Schedule(Timeout, Duration),
    /// Cancel one timer.
    Cancel(Timeout),
    /// Cancel every timer.
    CancelAll,
    /// The message being handled carried a bad signature or certificate: its sender misbehaves
    /// (validators send only what they signed or verified).
    Misbehaved,
    /// Provable misbehaviour seen while deciding a height (to keep and serve).
    Evidence(Vec<super::evidence::Evidence>),
    /// A block was decided (the app has committed it); the WAL of `height` may be dropped.
    Decided(Height, Box<Block>, CommitCertificate<Ctx<S>>),
}

/// Work the host does after the core returns (the core cannot be re-entered from a handler).
enum Followup<S: Scheme> {
    Build(Height, Round),
    Decided(CommitCertificate<Ctx<S>>),
    Finalized(Height),
    SyncValue(ValueResponse<Ctx<S>>, Address),
}

/// One validator's consensus.
pub struct Host<S: Scheme, A: App> {
    state: State<Ctx<S>>,
    ctx: Ctx<S>,
    key: S::PrivateKey,
    set: ValidatorSet<S>,
    timeouts: LinearTimeouts,
    /// The application.
    pub app: A,
    /// Decided blocks with their certificates, by height (served to lagging peers).
    decided: BTreeMap<u64, (Block, CommitCertificate<Ctx<S>>)>,
    /// Proposals for heights not started yet.
    future: Vec<SignedProposal<Ctx<S>>>,
    /// Messages from later heights seen at this height (every eighth asks its sender for the
    /// block we miss).
    ahead: u32,
    /// Vote signatures checked on arrival (so the core's own check is free), bounded.
    verified: std::collections::HashSet<[u8; 32]>,
    /// This validator's public key (its own signatures need no checking).
    own_key: Option<S::PublicKey>,
    /// While the write-ahead log is replayed: the blocks the core asked for, built afterwards.
    recovering: Option<Vec<(Height, Round)>>,
    /// The least time from starting a height to starting the next (block pacing); none: as
    /// fast as rounds complete.
    interval: Option<std::time::Duration>,
}

/// Sync responses carry a peer id; ours names no one in particular.
fn sync_peer() -> PeerId {
    let mut bytes = vec![0x12, 0x20];
    bytes.extend_from_slice(&[0u8; 32]);
    PeerId::from_bytes(&bytes).unwrap_or_else(|_| unreachable!("a SHA-256 multihash is a peer id"))
}

impl<S: Scheme, A: App> Host<S, A> {
    /// A validator at `height` (the next height to decide) with `address` in `set`.
    pub fn new(
        ctx: Ctx<S>,
        key: S::PrivateKey,
        address: Address,
        set: ValidatorSet<S>,
        timeouts: LinearTimeouts,
        height: u64,
        app: A,
    ) -> Self {
        let params = Params {
            address,
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalAndParts,
            enabled: true,
        };
        let state = State::new(ctx.clone(), Height(height), set.clone(), params, 64, 4096);
        let own_key =
            mt::ValidatorSet::get_by_address(&set, &address).map(|v| v.public_key.clone());
        Host {
            own_key,
            state,
            ctx,
            key,
            set,
            timeouts,
            app,
            decided: BTreeMap::new(),
            future: vec![],
            ahead: 0,
            verified: Default::default(),
            recovering: None,
            interval: None,
        }
    }

    /// Paces blocks: the next height starts no sooner than `interval` after this one started
    /// (measured on the core's own clock, so not for virtual time). A decision is reported as
    /// soon as it is made; only the start of the next height waits.
    pub fn with_block_interval(mut self, interval: std::time::Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// The height being decided.
    pub fn height(&self) -> u64 {
        self.state.height().0
    }

    /// The round being played.
    pub fn round(&self) -> Round {
        self.state.round()
    }

    /// Decided blocks kept for sync, by height.
    pub fn decided(&self) -> &BTreeMap<u64, (Block, CommitCertificate<Ctx<S>>)> {
        &self.decided
    }

    /// Reloads a decided block kept durable (after a restart), so lagging peers can sync it.
    pub fn restore_decided(
        &mut self,
        height: u64,
        block: Block,
        certificate: CommitCertificate<Ctx<S>>,
    ) {
        self.decided.insert(height, (block, certificate));
    }

    /// Starts the current height (fresh start, no log).
    pub fn start(&mut self) -> Vec<Action<S>> {
        let mut out = Vec::new();
        self.run(self.start_input(), &mut out);
        out.push(Action::Broadcast(Message::Status(self.state.height())));
        out
    }

    /// Starts the current height after a crash, replaying its write-ahead log: messages signed
    /// before the crash are recognised and never signed differently.
    pub fn recover(&mut self, wal: &[Input<Ctx<S>>]) -> Vec<Action<S>> {
        let mut out = Vec::new();
        // No block is built while the log is replayed: proposing before the log says what we
        // already proposed would sign a second proposal (and prevote) for the same round.
        self.recovering = Some(Vec::new());
        self.run(self.start_input(), &mut out);
        self.state.record_recovered_own_precommit_extensions(wal.iter());
        self.state.index_wal_entries(wal.iter());
        for entry in wal {
            self.run(entry.clone(), &mut out);
        }
        self.state.reset_entries_index();
        // Already in the log: replayed inputs are not appended again (new ones are).
        out.retain(|a| !matches!(a, Action::Persist(_, input) if wal.contains(input)));
        let own = *self.state.address();
        for (height, round) in self.recovering.take().unwrap_or_default() {
            let proposed = wal.iter().any(|e| {
                matches!(e, Input::ProposedValue(pv, _) if pv.proposer == own && pv.round == round)
            });
            if height == self.state.height() && round == self.state.round() && !proposed {
                let block = self.app.propose(height.0, round.as_u32().unwrap_or(0));
                self.run(Input::Propose(LocallyProposedValue::new(height, round, block)), &mut out);
            }
        }
        out.push(Action::Broadcast(Message::Status(self.state.height())));
        out
    }

    fn start_input(&self) -> Input<Ctx<S>> {
        Input::StartHeight(
            self.state.height(),
            self.set.clone(),
            false,
            self.interval,
            VoteExtensionPolicy::Disabled,
        )
    }

    /// A timer fired.
    pub fn on_timeout(&mut self, timeout: Timeout) -> Vec<Action<S>> {
        let mut out = Vec::new();
        self.run(Input::TimeoutElapsed(timeout), &mut out);
        if matches!(timeout.kind, mt::TimeoutKind::Rebroadcast) {
            // Peers that fell behind learn where we are.
            out.push(Action::Broadcast(Message::Status(self.state.height())));
        }
        out
    }

    /// A message from a peer (untrusted: every signature is checked before it counts).
    pub fn on_message(&mut self, message: Message<S>) -> Vec<Action<S>> {
        let mut out = Vec::new();
        let from_height = match &message {
            Message::Vote(v) => Some(v.height),
            Message::Proposal(p) => Some(p.height),
            _ => None,
        };
        if from_height.is_some_and(|h| h > self.state.height()) {
            // The sender is ahead: ask it for the block we miss (not for every message).
            if self.ahead.is_multiple_of(8) {
                out.push(Action::Reply(Message::Status(self.state.height())));
            }
            self.ahead = self.ahead.wrapping_add(1);
        }
        // Everything a peer sends is checked here, on arrival, so a bad signature is charged
        // to the peer that sent it (the core may check a message later, when it is replayed).
        match message {
            Message::Vote(v) => {
                if self.check_vote(&v) {
                    self.run(Input::Vote(v), &mut out)
                } else {
                    out.push(Action::Misbehaved);
                }
            }
            // Certificates are checked against the set of the height being decided; others are
            // of no use here.
            Message::Polka(c) if c.height != self.state.height() => {}
            Message::Round(c) if c.height != self.state.height() => {}
            Message::Decided(_, cert) if cert.height != self.state.height() => {}
            Message::Polka(c) => {
                if verify_polka(
                    &self.ctx,
                    &self.verified,
                    &c,
                    &self.set,
                    ThresholdParams::default(),
                )
                .is_ok()
                {
                    self.run(Input::PolkaCertificate(c), &mut out)
                } else {
                    out.push(Action::Misbehaved);
                }
            }
            Message::Round(c) => {
                if verify_round(
                    &self.ctx,
                    &self.verified,
                    &c,
                    &self.set,
                    ThresholdParams::default(),
                )
                .is_ok()
                {
                    self.run(Input::RoundCertificate(c), &mut out)
                } else {
                    out.push(Action::Misbehaved);
                }
            }
            Message::Proposal(p) => self.proposal(p, &mut out),
            Message::Status(h) => {
                if let Some((block, cert)) = self.decided.get(&h.0) {
                    out.push(Action::Reply(Message::Decided(block.clone(), cert.clone())));
                }
            }
            Message::Decided(block, cert) => {
                let certified = BlockId(block.header.hash()) == cert.value_id
                    && verify_commit(
                        &self.ctx,
                        &self.verified,
                        &cert,
                        &self.set,
                        ThresholdParams::default(),
                    )
                    .is_ok();
                if !certified {
                    out.push(Action::Misbehaved);
                } else if cert.height == self.state.height() && block.header.height == cert.height.0
                {
                    let extended =
                        ExtendedCommitCertificate::from_commit_certificate_and_extensions(
                            cert,
                            VoteExtensions::new(vec![]),
                        );
                    let bytes = borsh::to_vec(&block).unwrap_or_default();
                    let response = ValueResponse::new(sync_peer(), bytes.into(), extended);
                    self.run(Input::SyncValueResponse(response), &mut out);
                }
            }
        }
        out
    }

    /// Whether a vote is signed by the validator it names (and remembers that it is).
    fn check_vote(&mut self, v: &SignedVote<Ctx<S>>) -> bool {
        let Some(validator) = mt::ValidatorSet::get_by_address(&self.set, &v.address) else {
            return false;
        };
        let root = vote_signing_root(&self.ctx.federation_id, &v.message.message());
        if !S::verify(&validator.public_key, &root, &v.signature) {
            return false;
        }
        remember::<S>(&mut self.verified, Some(&validator.public_key), &root, &v.signature);
        true
    }

    fn proposal(&mut self, p: SignedProposal<Ctx<S>>, out: &mut Vec<Action<S>>) {
        let height = self.state.height();
        if p.height > height {
            if self.future.len() < 256 {
                self.future.push(p);
            }
            return;
        }
        if p.height < height {
            return;
        }
        // Only the round's proposer proposes, and only with a valid signature: checked here
        // because the app's verdict below is fed beside the proposal.
        let proposer = *self.state.get_proposer(height, p.round);
        let key = match mt::ValidatorSet::get_by_address(&self.set, &proposer) {
            Some(v) => v.public_key.clone(),
            None => return,
        };
        let root = proposal_signing_root(&self.ctx.federation_id, &p.message.message());
        if p.address != proposer || !S::verify(&key, &root, &p.signature) {
            tracing::debug!(%proposer, "proposal refused: wrong proposer or bad signature");
            out.push(Action::Misbehaved);
            return;
        }
        remember::<S>(&mut self.verified, Some(&key), &root, &p.signature);
        let validity =
            Validity::from_bool(p.value.header.height == height.0 && self.app.validate(&p.value));
        let value = ProposedValue {
            height,
            round: p.round,
            valid_round: p.pol_round,
            proposer,
            value: p.value.clone(),
            validity,
        };
        self.run(Input::Proposal(p), out);
        self.run(Input::ProposedValue(value, ValueOrigin::Consensus), out);
    }

    /// Feeds `input` and every input it leads to, in order.
    fn run(&mut self, input: Input<Ctx<S>>, out: &mut Vec<Action<S>>) {
        let mut queue = std::collections::VecDeque::from([input]);
        let mut ready = Vec::new();
        while let Some(input) = queue.pop_front() {
            let mut followups = Vec::new();
            let result: Result<(), mc::Error<Ctx<S>>> = {
                let (ctx, key, timeouts, verified, own_key) = (
                    &self.ctx,
                    &self.key,
                    &self.timeouts,
                    &mut self.verified,
                    self.own_key.as_ref(),
                );
                mc::process!(
                    input: input,
                    state: &mut self.state,
                    metrics: &(),
                    with: effect => handle(ctx, key, timeouts, (&mut *verified, own_key), out, &mut followups, effect)
                )
            };
            if let Err(e) = result {
                tracing::warn!(error = ?e, "consensus input refused");
            }
            for f in followups {
                match f {
                    Followup::Build(height, round) => {
                        if let Some(deferred) = self.recovering.as_mut() {
                            deferred.push((height, round));
                            continue;
                        }
                        let block = self.app.propose(height.0, round.as_u32().unwrap_or(0));
                        queue.push_back(Input::Propose(LocallyProposedValue::new(
                            height, round, block,
                        )));
                    }
                    Followup::Decided(cert) => {
                        if let Some((_, block)) = self.state.decided_value() {
                            self.app.commit(&block);
                            out.push(Action::Decided(
                                cert.height,
                                Box::new(block.clone()),
                                cert.clone(),
                            ));
                            self.decided.insert(cert.height.0, (block, cert));
                        }
                    }
                    Followup::Finalized(height) => {
                        let next = Height(height.0 + 1);
                        self.ahead = 0;
                        if let Some(set) = self.app.validators(next.0).and_then(consensus_set::<S>)
                        {
                            self.set = set;
                        }
                        queue.push_back(Input::StartHeight(
                            next,
                            self.set.clone(),
                            false,
                            self.interval,
                            VoteExtensionPolicy::Disabled,
                        ));
                        // A validator catching up asks for the next block at once.
                        out.push(Action::Broadcast(Message::Status(next)));
                        // Proposals that arrived early are handled once their height started.
                        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.future)
                            .into_iter()
                            .partition(|p| p.height == next);
                        self.future = later.into_iter().filter(|p| p.height > next).collect();
                        ready.extend(now);
                    }
                    Followup::SyncValue(response, proposer) => {
                        // The certificate was checked; the bytes beside it were not. A block
                        // that is not the certified one is a lie of the peer that sent it.
                        let Ok(block) = borsh::from_slice::<Block>(&response.value_bytes) else {
                            continue;
                        };
                        if BlockId(block.header.hash()) != response.certificate.value_id {
                            tracing::debug!(
                                "sync response carries another block than its certificate"
                            );
                            continue;
                        }
                        let validity = Validity::from_bool(self.app.validate(&block));
                        let cert = &response.certificate;
                        queue.push_back(Input::ProposedValue(
                            ProposedValue {
                                height: cert.height,
                                round: cert.round,
                                valid_round: Round::Nil,
                                proposer,
                                value: block,
                                validity,
                            },
                            ValueOrigin::Sync,
                        ));
                    }
                }
            }
        }
        for p in ready {
            self.proposal(p, out);
        }
    }
}

/// Signing root of a consensus message (`docs/protocol.md`, section 6).
fn message_root<S: Scheme>(
    ctx: &Ctx<S>,
    message: &ConsensusMsg<Ctx<S>>,
) -> urbis_core::hash::Hash32 {
    match message {
        ConsensusMsg::Vote(v) => vote_signing_root(&ctx.federation_id, &v.message()),
        ConsensusMsg::Proposal(p) => proposal_signing_root(&ctx.federation_id, &p.message()),
    }
}

/// Checks signed votes against the set: known, distinct validators, valid signatures, and
/// weight meeting `threshold`.
fn verify_votes<S: Scheme>(
    ctx: &Ctx<S>,
    verified: &std::collections::HashSet<[u8; 32]>,
    set: &ValidatorSet<S>,
    threshold: ThresholdParam,
    votes: impl IntoIterator<Item = (Vote, S::Signature)>,
) -> Result<(), CertificateError<Ctx<S>>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut signed: u64 = 0;
    // Signatures not checked before, grouped by the root they sign: votes on one block sign
    // one root, so each group is checked as one aggregate and bisected only on failure.
    let mut unchecked: BTreeMap<_, Vec<Unchecked<S>>> = BTreeMap::new();
    for (vote, signature) in votes {
        let address = vote.address;
        if !seen.insert(address) {
            return Err(CertificateError::DuplicateVote(address));
        }
        let Some(validator) = mt::ValidatorSet::get_by_address(set, &address) else {
            return Err(CertificateError::UnknownValidator(address));
        };
        let root = vote_signing_root(&ctx.federation_id, &vote.message());
        // A signature already checked on arrival is not checked again.
        if !verified.contains(&verified_key::<S>(&root, &signature, &validator.public_key)) {
            unchecked.entry(root).or_default().push((
                vote,
                validator.public_key.clone(),
                signature,
            ));
        }
        signed = signed
            .checked_add(validator.power)
            .ok_or(CertificateError::VotingPowerOverflow { signed, added: validator.power })?;
    }
    for (root, group) in &unchecked {
        let keys: Vec<&S::PublicKey> = group.iter().map(|(_, k, _)| k).collect();
        let signatures: Vec<&S::Signature> = group.iter().map(|(_, _, s)| s).collect();
        if S::verify_all(&keys, root, &signatures) {
            continue;
        }
        for (vote, key, signature) in group {
            if !S::verify(key, root, signature) {
                let (address, signature) = (vote.address, signature.clone());
                return Err(match vote.vote_type {
                    VoteType::Precommit => {
                        CertificateError::InvalidCommitSignature(mt::CommitSignature {
                            address,
                            signature,
                        })
                    }
                    VoteType::Prevote => {
                        CertificateError::InvalidPolkaSignature(mt::PolkaSignature {
                            address,
                            signature,
                        })
                    }
                });
            }
        }
    }
    let total = mt::ValidatorSet::total_voting_power(set);
    if threshold.is_met(signed, total) {
        Ok(())
    } else {
        Err(CertificateError::NotEnoughVotingPower {
            signed,
            total,
            expected: threshold.min_expected(total),
        })
    }
}

/// A vote whose signature is still to be checked, with its signer's key.
type Unchecked<S> = (
    Vote,
    <S as malachitebft_core_types::SigningScheme>::PublicKey,
    <S as malachitebft_core_types::SigningScheme>::Signature,
);

/// Checks a certificate of votes of one type for one block: `signatures` are `(address,
/// signature)` over the vote each address would have cast.
fn verify_block_votes<'a, S: Scheme>(
    ctx: &Ctx<S>,
    verified: &std::collections::HashSet<[u8; 32]>,
    set: &ValidatorSet<S>,
    thresholds: ThresholdParams,
    vote_type: VoteType,
    (height, round, value_id): (Height, Round, BlockId),
    signatures: impl Iterator<Item = (Address, &'a S::Signature)>,
) -> Result<(), CertificateError<Ctx<S>>> {
    let votes = signatures.map(|(address, signature)| {
        let vote = Vote { vote_type, height, round, value: NilOrVal::Val(value_id), address };
        (vote, signature.clone())
    });
    verify_votes(ctx, verified, set, thresholds.quorum, votes)
}

fn verify_commit<S: Scheme>(
    ctx: &Ctx<S>,
    verified: &std::collections::HashSet<[u8; 32]>,
    cert: &CommitCertificate<Ctx<S>>,
    set: &ValidatorSet<S>,
    thresholds: ThresholdParams,
) -> Result<(), CertificateError<Ctx<S>>> {
    let signatures = cert.commit_signatures.iter().map(|c| (c.address, &c.signature));
    let block = (cert.height, cert.round, cert.value_id);
    verify_block_votes(ctx, verified, set, thresholds, VoteType::Precommit, block, signatures)
}

fn verify_polka<S: Scheme>(
    ctx: &Ctx<S>,
    verified: &std::collections::HashSet<[u8; 32]>,
    cert: &PolkaCertificate<Ctx<S>>,
    set: &ValidatorSet<S>,
    thresholds: ThresholdParams,
) -> Result<(), CertificateError<Ctx<S>>> {
    let signatures = cert.polka_signatures.iter().map(|c| (c.address, &c.signature));
    let block = (cert.height, cert.round, cert.value_id);
    verify_block_votes(ctx, verified, set, thresholds, VoteType::Prevote, block, signatures)
}

fn verify_round<S: Scheme>(
    ctx: &Ctx<S>,
    verified: &std::collections::HashSet<[u8; 32]>,
    cert: &RoundCertificate<Ctx<S>>,
    set: &ValidatorSet<S>,
    thresholds: ThresholdParams,
) -> Result<(), CertificateError<Ctx<S>>> {
    let threshold = match cert.cert_type {
        RoundCertificateType::Precommit => {
            if let Some(s) =
                cert.round_signatures.iter().find(|s| s.vote_type != VoteType::Precommit)
            {
                return Err(CertificateError::InvalidVoteType(s.address));
            }
            thresholds.quorum
        }
        RoundCertificateType::Skip => thresholds.honest,
    };
    let votes = cert.round_signatures.iter().map(|s| {
        let vote = Vote {
            vote_type: s.vote_type,
            height: cert.height,
            round: cert.round,
            value: s.value_id,
            address: s.address,
        };
        (vote, s.signature.clone())
    });
    verify_votes(ctx, verified, set, threshold, votes)
}

/// The consensus set of encoded keys and weights; `None` if a key does not decode.
fn consensus_set<S: Scheme>(validators: Vec<(Vec<u8>, u64)>) -> Option<ValidatorSet<S>> {
    let mut out = Vec::with_capacity(validators.len());
    for (key, weight) in validators {
        out.push(super::Validator::new(S::decode_public_key(&key).ok()?, weight));
    }
    Some(ValidatorSet::new(out))
}

/// Records a signature as checked (this validator's own, or one checked on arrival).
fn remember<S: Scheme>(
    verified: &mut std::collections::HashSet<[u8; 32]>,
    key: Option<&S::PublicKey>,
    root: &urbis_core::hash::Hash32,
    signature: &S::Signature,
) {
    let Some(key) = key else { return };
    if verified.len() >= 65_536 {
        verified.clear();
    }
    verified.insert(verified_key::<S>(root, signature, key));
}

/// The cache key of a verified signature: (signing root, signature, public key).
fn verified_key<S: Scheme>(
    root: &urbis_core::hash::Hash32,
    signature: &S::Signature,
    key: &S::PublicKey,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(root.as_bytes());
    h.update(&S::encode_signature(signature));
    h.update(&S::encode_public_key(key));
    *h.finalize().as_bytes()
}

/// Carries out one effect of the core. Never returns `Err`: a refusal is a resume value.
#[allow(clippy::too_many_arguments)]
fn handle<S: Scheme>(
    ctx: &Ctx<S>,
    key: &S::PrivateKey,
    timeouts: &LinearTimeouts,
    (verified, own_key): (&mut std::collections::HashSet<[u8; 32]>, Option<&S::PublicKey>),
    out: &mut Vec<Action<S>>,
    followups: &mut Vec<Followup<S>>,
    effect: Effect<Ctx<S>>,
) -> Result<Resume<Ctx<S>>, std::convert::Infallible> {
    Ok(match effect {
        Effect::CancelAllTimeouts(r) => {
            out.push(Action::CancelAll);
            r.resume_with(())
        }
        Effect::CancelTimeout(t, r) => {
            out.push(Action::Cancel(t));
            r.resume_with(())
        }
        Effect::ScheduleTimeout(t, r) => {
            out.push(Action::Schedule(t, Timeouts::<Ctx<S>>::duration_for(timeouts, t)));
            r.resume_with(())
        }
        Effect::StartRound(_, _, _, _, r) => r.resume_with(()),
        Effect::PublishConsensusMsg(m, r) => {
            out.push(Action::Broadcast(match m {
                SignedConsensusMsg::Vote(v) => Message::Vote(v),
                SignedConsensusMsg::Proposal(p) => Message::Proposal(p),
            }));
            r.resume_with(())
        }
        Effect::PublishLivenessMsg(m, r) => {
            out.push(Action::Broadcast(match m {
                LivenessMsg::Vote(v) => Message::Vote(v),
                LivenessMsg::PolkaCertificate(c) => Message::Polka(c),
                LivenessMsg::SkipRoundCertificate(c) => Message::Round(c),
            }));
            r.resume_with(())
        }
        Effect::RepublishVote(v, r) => {
            out.push(Action::Broadcast(Message::Vote(v)));
            r.resume_with(())
        }
        Effect::RepublishRoundCertificate(c, r) => {
            out.push(Action::Broadcast(Message::Round(c)));
            r.resume_with(())
        }
        Effect::GetValue(height, round, _, r) => {
            followups.push(Followup::Build(height, round));
            r.resume_with(())
        }
        // The block travels inside the proposal: nothing to restream.
        Effect::RestreamProposal(.., r) => r.resume_with(()),
        Effect::CertVerifiedSyncValue(response, proposer, r) => {
            followups.push(Followup::SyncValue(response, proposer));
            r.resume_with(())
        }
        Effect::CertRejectedSyncValue(_, height, error, r) => {
            tracing::debug!(%height, ?error, "sync value refused");
            r.resume_with(())
        }
        Effect::Decide(cert, _, r) => {
            followups.push(Followup::Decided(cert));
            r.resume_with(())
        }
        Effect::Finalize(cert, _, misbehaviour, r) => {
            let mut evidence = Vec::new();
            for (_, pairs) in misbehaviour.votes.iter() {
                for (a, b) in pairs {
                    evidence.extend(super::evidence::Evidence::from_votes::<S>(a, b));
                }
            }
            for (_, pairs) in misbehaviour.proposals.iter() {
                for (a, b) in pairs {
                    evidence.extend(super::evidence::Evidence::from_proposals::<S>(a, b));
                }
            }
            if !evidence.is_empty() {
                out.push(Action::Evidence(evidence));
            }
            followups.push(Followup::Finalized(cert.height));
            r.resume_with(())
        }
        Effect::WalAppend(height, entry, r) => {
            out.push(Action::Persist(height, entry));
            r.resume_with(())
        }
        Effect::SignVote(vote, r) => {
            let root = vote_signing_root(&ctx.federation_id, &vote.message());
            let signature = S::sign(key, &root);
            remember::<S>(verified, own_key, &root, &signature);
            r.resume_with(SignedMessage::new(vote, signature))
        }
        Effect::SignProposal(proposal, r) => {
            let root = proposal_signing_root(&ctx.federation_id, &proposal.message());
            let signature = S::sign(key, &root);
            remember::<S>(verified, own_key, &root, &signature);
            r.resume_with(SignedMessage::new(proposal, signature))
        }
        Effect::VerifySignature(signed, public_key, r) => {
            let root = message_root(ctx, &signed.message);
            // A vote checked on arrival (`on_message`) is not checked twice.
            let key = verified_key::<S>(&root, &signed.signature, &public_key);
            r.resume_with(
                verified.contains(&key) || S::verify(&public_key, &root, &signed.signature),
            )
        }
        Effect::VerifyCommitCertificate(cert, set, thresholds, r) => {
            r.resume_with(verify_commit(ctx, &*verified, &cert, &set, thresholds))
        }
        Effect::VerifyExtendedCommitCertificate(cert, set, thresholds, _, r) => {
            // Extensions are disabled: any extension makes the certificate invalid.
            let result = match cert.commit_signatures.iter().find(|c| c.extension.is_some()) {
                Some(c) => Err(CertificateError::UnexpectedVoteExtension(c.address)),
                None => {
                    verify_commit(ctx, &*verified, &cert.trim_vote_extensions(), &set, thresholds)
                }
            };
            r.resume_with(result)
        }
        Effect::VerifyPolkaCertificate(cert, set, thresholds, r) => {
            r.resume_with(verify_polka(ctx, &*verified, &cert, &set, thresholds))
        }
        Effect::VerifyRoundCertificate(cert, set, thresholds, r) => {
            r.resume_with(verify_round(ctx, &*verified, &cert, &set, thresholds))
        }
        // Never asked while extensions are disabled.
        Effect::ExtendVote(.., r) => r.resume_with(None),
        Effect::VerifyVoteExtension(.., r) => {
            r.resume_with(Err(mc::VoteExtensionError::InvalidVoteExtension))
        }
    })
}
