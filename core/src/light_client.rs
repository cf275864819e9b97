//! The beacon light client: follows certified validator-set changes from genesis or a
//! checkpoint, never expires, and halts with evidence when shown two certified blocks at one
//! height.

use crate::beacon::{
    BEACON_HEADER_VERSION, BeaconHeader, CertificateError, CommitCertificate, verify_certificate,
};
use crate::genesis::ValidGenesis;
use crate::hash::Hash32;
use crate::validators::{KeyCache, Quorum, TrustedSet, ValidatorSet, ValidatorSetError};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A certified beacon header, with the next validator set when the header changes it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct LightClientUpdate {
    /// The header.
    pub header: BeaconHeader,
    /// Its commit certificate.
    pub certificate: CommitCertificate,
    /// The set named by `header.next_validator_set_hash`, when it differs from the current one.
    pub next_set: Option<ValidatorSet>,
}

/// A trusted starting point other than genesis (`urbis verify --checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Checkpoint {
    /// A beacon header the operator trusts.
    pub header: BeaconHeader,
    /// The set in force at that header (hash must match).
    pub validators: ValidatorSet,
    /// The set in force after it (hash must match `next_validator_set_hash`).
    pub next_validators: ValidatorSet,
}

/// Two certified, different headers at one height: more than 1/3 of the weight misbehaved.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct EquivocationEvidence {
    /// The height.
    pub height: u64,
    /// The header the client accepted first.
    pub first: Hash32,
    /// The conflicting certified header.
    pub second: BeaconHeader,
    /// Its certificate.
    pub second_certificate: CommitCertificate,
}

/// Why the light client refused an update or a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightClientError {
    /// The client halted on evidence of a >1/3 fault; an operator must act.
    #[error("light client halted on conflicting certified blocks at height {0}")]
    Halted(u64),
    /// This update is itself the evidence that halted the client.
    #[error("conflicting certified blocks at height {}", .0.height)]
    Equivocation(Box<EquivocationEvidence>),
    /// The header's validator-set hash is not the set in force at its height.
    #[error(
        "header at height {height} names validator set {claimed}, the set in force is {in_force}"
    )]
    SetHashMismatch {
        /// Header height.
        height: u64,
        /// Hash in the header.
        claimed: Hash32,
        /// Hash the client knows.
        in_force: Hash32,
    },
    /// The header changes the set but the update does not carry the new set, or carries another.
    #[error("header announces next validator set {announced}, the update carries {carried:?}")]
    NextSetMismatch {
        /// Hash in the header.
        announced: Hash32,
        /// Hash of the set carried, if any.
        carried: Option<Hash32>,
    },
    /// The new set breaks a rule.
    #[error("next validator set: {0}")]
    NextSet(#[from] ValidatorSetError),
    /// The certificate does not certify the header under the set in force.
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// Heights before the trusted start cannot be checked.
    #[error("height {height} precedes the client's trusted start at {start}")]
    BeforeStart {
        /// Requested height.
        height: u64,
        /// First height the client can check.
        start: u64,
    },
    /// Set changes must be applied in height order.
    #[error("set change at height {height} is not after the last known change at {last}")]
    OutOfOrderSetChange {
        /// Height of the update.
        height: u64,
        /// Last change known.
        last: u64,
    },
    /// The checkpoint's sets do not match its header.
    #[error("checkpoint sets do not match its header")]
    Checkpoint,
    /// A beacon header of a version this client does not know.
    #[error("beacon header version {0} is not supported")]
    HeaderVersion(u8),
}

/// What [`LightClient::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new certified header; `set_changed` when it installed the next set.
    Accepted {
        /// Whether a new set takes effect after this header.
        set_changed: bool,
    },
    /// The header was already known.
    AlreadyKnown,
}

#[derive(Clone, Debug)]
struct Epoch {
    /// First height at which `set` is in force.
    from_height: u64,
    set: TrustedSet,
}

/// The light client state. Pure: every method takes its inputs and returns its verdict.
#[derive(Clone, Debug)]
pub struct LightClient {
    federation_id: Hash32,
    quorum: Quorum,
    /// The first height the client can check (1 from genesis; the checkpoint's height).
    start: u64,
    epochs: Vec<Epoch>,
    /// Certified header hashes by height (for equivocation detection and `latest`).
    certified: BTreeMap<u64, Hash32>,
    keys: KeyCache,
    halted: Option<Box<EquivocationEvidence>>,
}

impl LightClient {
    /// Starts from genesis: the genesis set is in force from height 1.
    pub fn from_genesis(genesis: &ValidGenesis) -> Self {
        LightClient {
            federation_id: genesis.federation_id(),
            quorum: genesis.quorum(),
            start: 1,
            epochs: vec![Epoch { from_height: 1, set: genesis.validators().clone() }],
            certified: BTreeMap::new(),
            keys: KeyCache::default(),
            halted: None,
        }
    }

    /// Starts from a checkpoint the operator trusts (its header is taken as certified).
    pub fn from_checkpoint(
        genesis: &ValidGenesis,
        checkpoint: &Checkpoint,
    ) -> Result<Self, LightClientError> {
        let h = &checkpoint.header;
        if checkpoint.validators.hash() != h.validator_set_hash
            || checkpoint.next_validators.hash() != h.next_validator_set_hash
        {
            return Err(LightClientError::Checkpoint);
        }
        let mut keys = KeyCache::default();
        let quorum = genesis.quorum();
        let current = TrustedSet::new(&checkpoint.validators, quorum, &mut keys)?;
        let next = TrustedSet::new(&checkpoint.next_validators, quorum, &mut keys)?;
        let mut epochs = vec![Epoch { from_height: h.height, set: current }];
        if h.next_validator_set_hash != h.validator_set_hash {
            epochs.push(Epoch { from_height: h.height.saturating_add(1), set: next });
        }
        let mut certified = BTreeMap::new();
        certified.insert(h.height, h.hash());
        Ok(LightClient {
            federation_id: genesis.federation_id(),
            quorum,
            start: h.height,
            epochs,
            certified,
            keys,
            halted: None,
        })
    }

    /// The federation this client follows.
    pub fn federation_id(&self) -> Hash32 {
        self.federation_id
    }

    /// The highest certified height and header hash known, if any.
    pub fn latest(&self) -> Option<(u64, Hash32)> {
        self.certified.iter().next_back().map(|(h, x)| (*h, *x))
    }

    /// The evidence that halted the client, if it halted.
    pub fn halted(&self) -> Option<&EquivocationEvidence> {
        self.halted.as_deref()
    }

    /// The validator set in force at `height`, as far as the client knows.
    pub fn set_at(&self, height: u64) -> Result<&TrustedSet, LightClientError> {
        if height < self.start {
            return Err(LightClientError::BeforeStart { height, start: self.start });
        }
        self.epochs
            .iter()
            .rev()
            .find(|e| e.from_height <= height)
            .map(|e| &e.set)
            .ok_or(LightClientError::BeforeStart { height, start: self.start })
    }

    /// Checks that `certificate` certifies `header` under the set in force at its height,
    /// without changing the client. Conflicts with a known header at that height are reported
    /// as [`LightClientError::Equivocation`].
    pub fn verify_header(
        &self,
        header: &BeaconHeader,
        certificate: &CommitCertificate,
    ) -> Result<(), LightClientError> {
        if let Some(e) = &self.halted {
            return Err(LightClientError::Halted(e.height));
        }
        // A header this client already applied is certified: the certificate that came with
        // it was checked then (the one given now is not needed). This keeps checking many
        // proofs through one beacon block to one pairing.
        if self.certified.get(&header.height) == Some(&header.hash()) {
            return Ok(());
        }
        if header.version != BEACON_HEADER_VERSION {
            return Err(LightClientError::HeaderVersion(header.version));
        }
        let set = self.set_at(header.height)?;
        if header.validator_set_hash != set.hash() {
            return Err(LightClientError::SetHashMismatch {
                height: header.height,
                claimed: header.validator_set_hash,
                in_force: set.hash(),
            });
        }
        verify_certificate(&self.federation_id, set, header, certificate)?;
        if let Some(known) = self.certified.get(&header.height)
            && *known != header.hash()
        {
            return Err(LightClientError::Equivocation(Box::new(EquivocationEvidence {
                height: header.height,
                first: *known,
                second: header.clone(),
                second_certificate: certificate.clone(),
            })));
        }
        Ok(())
    }

    /// Applies one certified header. A header that changes the set must carry the new set;
    /// the new set is in force from the next height. Two certified headers at one height halt
    /// the client for good.
    pub fn apply(&mut self, update: &LightClientUpdate) -> Result<Applied, LightClientError> {
        let header = &update.header;
        match self.verify_header(header, &update.certificate) {
            Ok(()) => {}
            Err(LightClientError::Equivocation(evidence)) => {
                self.halted = Some(evidence.clone());
                return Err(LightClientError::Equivocation(evidence));
            }
            Err(e) => return Err(e),
        }
        if self.certified.contains_key(&header.height) {
            return Ok(Applied::AlreadyKnown);
        }
        let changes = header.next_validator_set_hash != header.validator_set_hash;
        let carried = update.next_set.as_ref().map(ValidatorSet::hash);
        if changes && carried != Some(header.next_validator_set_hash) {
            return Err(LightClientError::NextSetMismatch {
                announced: header.next_validator_set_hash,
                carried,
            });
        }
        if !changes && update.next_set.is_some() && carried != Some(header.validator_set_hash) {
            return Err(LightClientError::NextSetMismatch {
                announced: header.next_validator_set_hash,
                carried,
            });
        }
        let last_change = self.epochs.last().map_or(0, |e| e.from_height);
        if changes {
            let from_height = header.height.saturating_add(1);
            if from_height <= last_change {
                // A change at or before one already known: accept it only if it is the same.
                let known = self.epochs.iter().find(|e| e.from_height == from_height);
                if known.is_none_or(|e| e.set.hash() != header.next_validator_set_hash) {
                    return Err(LightClientError::OutOfOrderSetChange {
                        height: header.height,
                        last: last_change,
                    });
                }
            } else if let Some(next) = &update.next_set {
                let set = TrustedSet::new(next, self.quorum, &mut self.keys)?;
                self.epochs.push(Epoch { from_height, set });
            }
        }
        self.certified.insert(header.height, header.hash());
        Ok(Applied::Accepted { set_changed: changes })
    }

    /// Applies updates in order, stopping at the first refusal (with its index).
    pub fn apply_all(
        &mut self,
        updates: &[LightClientUpdate],
    ) -> Result<(), (usize, LightClientError)> {
        for (i, u) in updates.iter().enumerate() {
            self.apply(u).map_err(|e| (i, e))?;
        }
        Ok(())
    }
}
