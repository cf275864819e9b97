//! The proof-chain verifier: one pure function from a self-contained proof to a verified
//! record (or state fact), naming the first link that failed.
//!
//! Chain (docs/protocol.md, "Proof chain"): record → records path → shard header N (sealed by
//! the city's key at N's height) → N in the history tree of the crosslinked header M → M's
//! crosslink in beacon block F → F's certificate under the light client's set at F.

use crate::beacon::{BeaconHeader, CommitCertificate, Crosslink};
use crate::encoding::encode;
use crate::genesis::ValidGenesis;
use crate::hash::Hash32;
use crate::header::{SHARD_HEADER_VERSION, SignedShardHeader};
use crate::light_client::{LightClient, LightClientError, LightClientUpdate};
use crate::merkle::{Blake3Tree, InclusionProof, MerkleError, TreeHasher};
use crate::record::{CityId, Record, RecordError};
use crate::sealing::Ed25519Error;
use crate::state::{StateKey, StateProof, StateProofError};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// How far a proof goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Durable in its shard and sealed by the city: what the submitting service is told.
    Committed,
    /// Covered by a certified beacon block: what other cities and regulators accept.
    Final,
}

/// The link from a sealed shard header to a certified beacon block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct FinalityProof {
    /// When the crosslinked header M is later than N: M and N's inclusion in M's history tree.
    pub history: Option<HistoryLink>,
    /// M's crosslink leaf in F's crosslinks tree.
    pub crosslink: InclusionProof,
    /// Beacon header F.
    pub beacon_header: BeaconHeader,
    /// F's commit certificate.
    pub certificate: CommitCertificate,
    /// Certified set changes from genesis up to F, for verifiers that follow nothing else
    /// (`urbis verify`). A verifier with its own light client ignores them.
    pub set_updates: Vec<LightClientUpdate>,
}

/// N's inclusion in the history tree of a later header M.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct HistoryLink {
    /// The crosslinked header M.
    pub crosslinked: SignedShardHeader,
    /// Path of N's header hash: leaf index N.height, tree size M.height.
    pub inclusion: InclusionProof,
}

/// A record with everything needed to verify it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RecordProof {
    /// The record.
    pub record: Record,
    /// Path of the record id in header N's records tree.
    pub inclusion: InclusionProof,
    /// Header N, sealed.
    pub header: SignedShardHeader,
    /// The beacon part; absent for a proof at level committed.
    pub finality: Option<FinalityProof>,
}

/// A state fact (value or absence) with everything needed to verify it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct StateFactProof {
    /// The key (informational; the verifier checks against the key it builds itself).
    pub key: StateKey,
    /// The value, or `None` for absence (hex in JSON).
    #[serde(with = "crate::encoding::hex_option")]
    pub value: Option<Vec<u8>>,
    /// The proof against N's `state_root`.
    pub proof: StateProof,
    /// Header N, sealed.
    pub header: SignedShardHeader,
    /// The beacon part; absent for a proof at level committed.
    pub finality: Option<FinalityProof>,
}

/// Which link of the chain failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The record itself is malformed.
    #[error("record: {0}")]
    Record(#[from] RecordError),
    /// The record claims another city than the header's.
    #[error("record is from city {record}, header from city {header}")]
    CityMismatch {
        /// City in the record.
        record: CityId,
        /// City in the header.
        header: CityId,
    },
    /// The records path's tree size is not the header's record count.
    #[error("records path is for a tree of {proof} leaves, the header commits to {header}")]
    RecordsCount {
        /// Size in the proof.
        proof: u64,
        /// Count in the header.
        header: u64,
    },
    /// The record is not in the header's records tree.
    #[error("records path: {0}")]
    RecordsPath(MerkleError),
    /// The city is not in genesis.
    #[error("city {0} is not a member of this federation")]
    UnknownCity(CityId),
    /// The proof is about another city's state than the one asked about.
    #[error("proof is about city {actual}'s state, city {expected} was asked about")]
    WrongCity {
        /// City asked about.
        expected: CityId,
        /// City of the proof's header.
        actual: CityId,
    },
    /// A shard header of a version this verifier does not know.
    #[error("shard header version {0} is not supported")]
    HeaderVersion(u8),
    /// Header N's seal does not verify.
    #[error("shard header seal: {0}")]
    HeaderSeal(Ed25519Error),
    /// The state path does not prove the claim.
    #[error("state path: {0}")]
    StatePath(StateProofError),
    /// The proof is about another key than the one asked for.
    #[error("proof is about another state key than the one asked for")]
    StateKeyMismatch,
    /// The crosslinked header M is from another city or not later than N.
    #[error("crosslinked header must be a later header of the same city")]
    HistoryHeader,
    /// The history path's parameters are not (N.height, M.height).
    #[error("history path must be leaf {expected_index} of a tree of {expected_size}")]
    HistoryParameters {
        /// N's height.
        expected_index: u64,
        /// M's height.
        expected_size: u64,
    },
    /// N is not in M's history tree.
    #[error("history path: {0}")]
    HistoryPath(MerkleError),
    /// M's seal does not verify.
    #[error("crosslinked header seal: {0}")]
    CrosslinkedSeal(Ed25519Error),
    /// The crosslink path's tree size is not F's crosslink count.
    #[error(
        "crosslink path is for a tree of {proof} leaves, the beacon header commits to {header}"
    )]
    CrosslinksCount {
        /// Size in the proof.
        proof: u64,
        /// Count in the header.
        header: u64,
    },
    /// M's crosslink is not in F's crosslinks tree.
    #[error("crosslink path: {0}")]
    CrosslinkPath(MerkleError),
    /// F is not certified under the light client's view.
    #[error("beacon block: {0}")]
    Beacon(#[from] LightClientError),
    /// The proof stops at level committed where a certified beacon block is needed.
    #[error("the proof is not final: it reaches no certified beacon block")]
    NotFinal,
    /// A state value does not decode as the key's value type.
    #[error("the proven value does not decode")]
    Value,
    /// The city's crosslinks are not accepted before its first height.
    #[error("beacon block {beacon_height} precedes city {city}'s first height {first_height}")]
    BeforeCityJoined {
        /// City.
        city: CityId,
        /// F's height.
        beacon_height: u64,
        /// The city's first height in genesis.
        first_height: u64,
    },
}

/// A verified record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// The record.
    pub record: Record,
    /// Its id.
    pub id: Hash32,
    /// Height of its shard block.
    pub height: u64,
    /// How far the proof went.
    pub level: Level,
    /// The certified beacon height, at level final.
    pub beacon_height: Option<u64>,
}

/// A verified state fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedState {
    /// The value, or `None` for proven absence.
    pub value: Option<Vec<u8>>,
    /// The shard height whose state it is.
    pub height: u64,
    /// How far the proof went.
    pub level: Level,
    /// The certified beacon height, at level final.
    pub beacon_height: Option<u64>,
}

/// Verifies a record proof. Without a finality part the result is at level committed and says
/// so; with one, every link down to the certificate is checked against `client` (never
/// against anything the proof claims about validators).
pub fn verify_record_proof(
    genesis: &ValidGenesis,
    client: &LightClient,
    proof: &RecordProof,
) -> Result<VerifiedRecord, ProofError> {
    let header = &proof.header.header;
    proof.record.validate()?;
    if proof.record.city != header.city {
        return Err(ProofError::CityMismatch { record: proof.record.city, header: header.city });
    }
    let id = verify_record_inclusion(
        &proof.record,
        &proof.inclusion,
        header.records_root,
        header.records_count,
    )?;
    verify_seal(genesis, &proof.header)?;
    let beacon_height = match &proof.finality {
        None => None,
        Some(f) => Some(verify_finality(genesis, client, &proof.header, f)?),
    };
    Ok(VerifiedRecord {
        record: proof.record.clone(),
        id,
        height: header.height,
        level: if beacon_height.is_some() { Level::Final } else { Level::Committed },
        beacon_height,
    })
}

/// The first link alone: `record`'s id is leaf `inclusion.leaf_index` of a records tree with
/// `records_count` leaves and root `records_root` (both from an already trusted header).
pub fn verify_record_inclusion(
    record: &Record,
    inclusion: &InclusionProof,
    records_root: Hash32,
    records_count: u64,
) -> Result<Hash32, ProofError> {
    if inclusion.tree_size != records_count {
        return Err(ProofError::RecordsCount { proof: inclusion.tree_size, header: records_count });
    }
    let id = record.id();
    let tree = Blake3Tree::records();
    inclusion
        .verify(&tree, &tree.leaf(id.as_bytes()), &records_root)
        .map_err(ProofError::RecordsPath)?;
    Ok(id)
}

/// Verifies a state proof about `city`'s state for the key the caller built itself.
pub fn verify_state_proof(
    genesis: &ValidGenesis,
    client: &LightClient,
    city: CityId,
    key: &StateKey,
    proof: &StateFactProof,
) -> Result<VerifiedState, ProofError> {
    if &proof.key != key {
        return Err(ProofError::StateKeyMismatch);
    }
    let header = &proof.header.header;
    if header.city != city {
        return Err(ProofError::WrongCity { expected: city, actual: header.city });
    }
    proof
        .proof
        .verify(&header.state_root, key, proof.value.as_deref())
        .map_err(ProofError::StatePath)?;
    verify_seal(genesis, &proof.header)?;
    let beacon_height = match &proof.finality {
        None => None,
        Some(f) => Some(verify_finality(genesis, client, &proof.header, f)?),
    };
    Ok(VerifiedState {
        value: proof.value.clone(),
        height: header.height,
        level: if beacon_height.is_some() { Level::Final } else { Level::Committed },
        beacon_height,
    })
}

/// Checks header N's version and its seal by the city's key in force at N's height.
pub(crate) fn verify_seal(
    genesis: &ValidGenesis,
    signed: &SignedShardHeader,
) -> Result<(), ProofError> {
    let h = &signed.header;
    if h.version != SHARD_HEADER_VERSION {
        return Err(ProofError::HeaderVersion(h.version));
    }
    let key = genesis.sealing_key(h.city, h.height).ok_or(ProofError::UnknownCity(h.city))?;
    signed.verify(&genesis.federation_id(), key).map_err(ProofError::HeaderSeal)
}

/// Links sealed header N to a certified beacon block; returns the beacon height.
pub(crate) fn verify_finality(
    genesis: &ValidGenesis,
    client: &LightClient,
    n: &SignedShardHeader,
    f: &FinalityProof,
) -> Result<u64, ProofError> {
    let city = n.header.city;
    let city_info = genesis.city(city).ok_or(ProofError::UnknownCity(city))?;
    let crosslinked_hash = match &f.history {
        None => n.header.hash(),
        Some(link) => {
            let m = &link.crosslinked.header;
            if m.city != city || m.height <= n.header.height {
                return Err(ProofError::HistoryHeader);
            }
            if link.inclusion.leaf_index != n.header.height || link.inclusion.tree_size != m.height
            {
                return Err(ProofError::HistoryParameters {
                    expected_index: n.header.height,
                    expected_size: m.height,
                });
            }
            let tree = Blake3Tree::history();
            link.inclusion
                .verify(&tree, &tree.leaf(n.header.hash().as_bytes()), &m.history_root)
                .map_err(ProofError::HistoryPath)?;
            verify_seal(genesis, &link.crosslinked).map_err(|e| match e {
                ProofError::HeaderSeal(e) => ProofError::CrosslinkedSeal(e),
                other => other,
            })?;
            m.hash()
        }
    };
    let beacon = &f.beacon_header;
    if f.crosslink.tree_size != beacon.crosslinks_count {
        return Err(ProofError::CrosslinksCount {
            proof: f.crosslink.tree_size,
            header: beacon.crosslinks_count,
        });
    }
    let leaf = Crosslink { city, header_hash: crosslinked_hash };
    let tree = Blake3Tree::crosslinks();
    f.crosslink
        .verify(&tree, &tree.leaf(&encode(&leaf)), &beacon.crosslinks_root)
        .map_err(ProofError::CrosslinkPath)?;
    if beacon.height < city_info.first_height {
        return Err(ProofError::BeforeCityJoined {
            city,
            beacon_height: beacon.height,
            first_height: city_info.first_height,
        });
    }
    client.verify_header(beacon, &f.certificate)?;
    Ok(beacon.height)
}

/// A talent credential's status at its issuing city, as a final state proof shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CredentialStatus {
    /// Not revoked as of the proof's height.
    Valid,
    /// Revoked by the issuer's block at `height`.
    Revoked {
        /// The revoking block's height.
        height: u64,
    },
}

/// A credential status and how fresh its proof is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedCredential {
    /// The status.
    pub status: CredentialStatus,
    /// The issuer's shard height the proof is about.
    pub shard_height: u64,
    /// The certified beacon height that covers it.
    pub beacon_height: u64,
}

/// Checks a final proof of `Revocation{credential_id}` in the issuing city's state: present is
/// "revoked at height H", absent is "not revoked as of this height". The key is built here.
pub fn verify_credential_status(
    genesis: &ValidGenesis,
    client: &LightClient,
    issuer: CityId,
    credential_id: crate::hash::Hash32,
    proof: &StateFactProof,
) -> Result<CheckedCredential, ProofError> {
    let key = StateKey::Revocation { credential_id };
    let v = verify_state_proof(genesis, client, issuer, &key, proof)?;
    let beacon_height = v.beacon_height.ok_or(ProofError::NotFinal)?;
    let status = match &v.value {
        None => CredentialStatus::Valid,
        Some(bytes) => CredentialStatus::Revoked {
            height: crate::encoding::decode::<u64>(bytes).map_err(|_| ProofError::Value)?,
        },
    };
    Ok(CheckedCredential { status, shard_height: v.height, beacon_height })
}

/// The self-contained proof document `urbis verify` reads and the APIs return (JSON).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProofDocument {
    /// A record and its proof chain.
    Record(RecordProof),
    /// A state fact and its proof chain.
    State(StateFactProof),
}
