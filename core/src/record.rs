//! Records: the four kinds (information, capital, talent, credit) in one envelope.

use crate::encoding::{encode, hex_bytes};
use crate::hash::{Domain, Hash32};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// The record format version this code writes and accepts.
pub const RECORD_VERSION: u8 = 1;
/// Longest service name, dataset name, media type or account name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Longest external URI, in bytes.
pub const URI_BYTES_MAX: usize = 2048;
/// Largest inline information payload, in bytes (larger data is referenced by hash).
pub const INLINE_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// A city of the federation, as numbered in genesis.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct CityId(pub u32);

impl std::fmt::Display for CityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A pseudonymous subject id: keyed BLAKE3 of a normalised identifier (see [`crate::subject`]).
/// A raw identifier never appears in a record.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct SubjectId(pub Hash32);

/// A salted commitment to an off-chain payload: `H_PayloadCommitment(salt || payload)`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct PayloadCommitment(pub Hash32);

impl PayloadCommitment {
    /// Commits to `payload` under a 32-byte random `salt`.
    pub fn new(salt: &[u8; 32], payload: &[u8]) -> Self {
        let mut h = Domain::PayloadCommitment.hasher();
        h.update(salt);
        h.update(payload);
        PayloadCommitment(Hash32(*h.finalize().as_bytes()))
    }

    /// Whether `payload` with `salt` opens this commitment.
    pub fn opens(&self, salt: &[u8; 32], payload: &[u8]) -> bool {
        Self::new(salt, payload) == *self
    }
}

/// The kind of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// Government data shared across departments and cities.
    Information,
    /// Value issued or moved.
    Capital,
    /// Professional credentials (revocable).
    Talent,
    /// Credit information on people and companies.
    Credit,
}

/// One record: who issued it, about whom, when, and what.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Record {
    /// Format version, [`RECORD_VERSION`].
    pub version: u8,
    /// Issuing city.
    pub city: CityId,
    /// Issuing service within the city (e.g. `tax-office`).
    pub service: String,
    /// The pseudonymous subject.
    pub subject: SubjectId,
    /// Issue time, milliseconds since the Unix epoch (the issuing shard's clock).
    pub time_ms: u64,
    /// Destination city when the record travels as a packet.
    pub destination: Option<CityId>,
    /// What the record says.
    pub body: RecordBody,
}

/// The typed payload of a record; the variant is the record's kind.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordBody {
    /// Public information, inline or referenced by hash.
    Information(InformationPayload),
    /// A capital operation.
    Capital(CapitalPayload),
    /// A credential issued or revoked (payload committed, kept off-chain).
    Talent(TalentPayload),
    /// Credit information (payload committed, kept off-chain).
    Credit(CreditPayload),
}

/// Information payload.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct InformationPayload {
    /// Dataset or register the record belongs to.
    pub dataset: String,
    /// IANA media type of the content.
    pub media_type: String,
    /// The content.
    pub content: InformationContent,
}

/// Information content: inline (size-limited) or referenced by content hash.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InformationContent {
    /// Bytes on chain.
    Inline(#[serde(with = "hex_bytes")] Vec<u8>),
    /// Bytes elsewhere, pinned by their BLAKE3 hash.
    External {
        /// Plain BLAKE3 of the bytes.
        blake3: Hash32,
        /// Length of the bytes.
        size_bytes: u64,
        /// Where they can be fetched.
        uri: String,
    },
}

/// Capital payload.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CapitalPayload {
    /// Asset id, as named in genesis.
    pub asset: String,
    /// Amount in the asset's smallest unit; never zero. A decimal string in JSON.
    #[serde(with = "crate::encoding::u128_string")]
    pub amount: u128,
    /// What happens to it.
    pub operation: CapitalOperation,
}

/// Capital operations.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapitalOperation {
    /// New supply at the issuing city (treasury only).
    Issue {
        /// Receiving account.
        to: String,
    },
    /// A transfer inside one city.
    Transfer {
        /// Paying account.
        from: String,
        /// Receiving account.
        to: String,
    },
    /// A transfer to an account in the record's destination city (escrowed at the source).
    Send {
        /// Paying account at the source.
        from: String,
        /// Receiving account at the destination.
        to: String,
    },
}

/// Talent payload.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TalentPayload {
    /// A credential is issued; its content stays off-chain.
    Issue {
        /// Stable id of the credential (used to revoke it).
        credential_id: Hash32,
        /// Commitment to the credential document.
        commitment: PayloadCommitment,
    },
    /// A credential is revoked.
    Revoke {
        /// The credential revoked.
        credential_id: Hash32,
        /// A reason code from the issuing service's register.
        reason_code: u16,
    },
}

/// Credit payload: only the commitment is on chain.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CreditPayload {
    /// Commitment to the credit report.
    pub commitment: PayloadCommitment,
}

/// Why a record is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Unknown format version.
    #[error("record version {0} is not supported")]
    Version(u8),
    /// A name field is empty, too long, or not printable ASCII.
    #[error("field `{field}` must be 1..={max} printable ASCII bytes")]
    BadName {
        /// Field name.
        field: &'static str,
        /// Byte limit.
        max: usize,
    },
    /// Inline content larger than allowed.
    #[error("inline content of {len} bytes exceeds {max}")]
    InlineTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A capital amount of zero.
    #[error("amount must be positive")]
    ZeroAmount,
    /// A send without a destination, or a local operation with one.
    #[error("capital `send` needs a destination city and other operations must not have one")]
    Destination,
    /// A record addressed to its own city.
    #[error("destination is the issuing city")]
    DestinationIsSource,
}

impl Record {
    /// The kind of this record.
    pub fn kind(&self) -> RecordKind {
        match self.body {
            RecordBody::Information(_) => RecordKind::Information,
            RecordBody::Capital(_) => RecordKind::Capital,
            RecordBody::Talent(_) => RecordKind::Talent,
            RecordBody::Credit(_) => RecordKind::Credit,
        }
    }

    /// The record id: `H_RecordId(encode(record))`.
    pub fn id(&self) -> Hash32 {
        Domain::RecordId.hash(&encode(self))
    }

    /// Checks the rules the encoding alone cannot express.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.version != RECORD_VERSION {
            return Err(RecordError::Version(self.version));
        }
        check_name("service", &self.service, NAME_BYTES_MAX)?;
        if self.destination == Some(self.city) {
            return Err(RecordError::DestinationIsSource);
        }
        match &self.body {
            RecordBody::Information(info) => {
                check_name("dataset", &info.dataset, NAME_BYTES_MAX)?;
                check_name("media_type", &info.media_type, NAME_BYTES_MAX)?;
                match &info.content {
                    InformationContent::Inline(bytes) if bytes.len() > INLINE_PAYLOAD_BYTES_MAX => {
                        return Err(RecordError::InlineTooLarge {
                            len: bytes.len(),
                            max: INLINE_PAYLOAD_BYTES_MAX,
                        });
                    }
                    InformationContent::External { uri, .. } => {
                        check_name("uri", uri, URI_BYTES_MAX)?
                    }
                    InformationContent::Inline(_) => {}
                }
            }
            RecordBody::Capital(capital) => {
                check_name("asset", &capital.asset, NAME_BYTES_MAX)?;
                if capital.amount == 0 {
                    return Err(RecordError::ZeroAmount);
                }
                let (accounts, needs_destination): (Vec<&String>, bool) = match &capital.operation {
                    CapitalOperation::Issue { to } => (vec![to], false),
                    CapitalOperation::Transfer { from, to } => (vec![from, to], false),
                    CapitalOperation::Send { from, to } => (vec![from, to], true),
                };
                for a in accounts {
                    check_name("account", a, NAME_BYTES_MAX)?;
                }
                if needs_destination != self.destination.is_some() {
                    return Err(RecordError::Destination);
                }
            }
            RecordBody::Talent(_) | RecordBody::Credit(_) => {}
        }
        Ok(())
    }
}

fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), RecordError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok { Ok(()) } else { Err(RecordError::BadName { field, max }) }
}
