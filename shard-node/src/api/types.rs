//! Request and response bodies of the shard API, typed so the OpenAPI document describes them,
//! and their conversion into records.

use crate::sealer::Receipt;
use crate::store::StoredPayload;
use serde::{Deserialize, Serialize};
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::Hash32;
use urbis_core::record::{
    CapitalOperation, CapitalPayload, CityId, CreditPayload, InformationContent,
    InformationPayload, PayloadCommitment, RECORD_VERSION, Record, RecordBody, RecordKind,
    SubjectId, TalentPayload,
};
use utoipa::ToSchema;

/// `POST /v1/records` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The records, sealed together or refused together.
    pub records: Vec<RecordInput>,
}

/// One record to submit; `kind` selects the payload's shape.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RecordInput {
    /// Public information, kept on chain.
    Information {
        /// Pseudonymous subject id, 64 hex digits.
        subject: String,
        /// The information.
        payload: InformationInput,
        /// Destination city name, when the record travels to another city.
        #[serde(default)]
        to_city: Option<String>,
    },
    /// A capital operation.
    Capital {
        /// Pseudonymous subject id, 64 hex digits.
        subject: String,
        /// The operation.
        payload: CapitalInput,
        /// Destination city name (required for `send`).
        #[serde(default)]
        to_city: Option<String>,
    },
    /// A credential issued or revoked; the document stays off chain.
    Talent {
        /// Pseudonymous subject id, 64 hex digits.
        subject: String,
        /// The credential action.
        payload: TalentInput,
        /// Destination city name.
        #[serde(default)]
        to_city: Option<String>,
    },
    /// A credit report; it stays off chain, the chain holds its salted commitment.
    Credit {
        /// Pseudonymous subject id, 64 hex digits.
        subject: String,
        /// The report.
        payload: CreditInput,
        /// Destination city name.
        #[serde(default)]
        to_city: Option<String>,
    },
}

/// Information payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InformationInput {
    /// Dataset or register.
    pub dataset: String,
    /// Media type of `content` (the content is stored as its JSON text).
    pub media_type: String,
    /// The content, any JSON value.
    pub content: serde_json::Value,
}

/// Capital operations.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapitalOperationInput {
    /// New supply (treasury of the issuing city only).
    Issue,
    /// Between two accounts of this city.
    Transfer,
    /// To an account in `to_city` (escrowed here).
    Send,
}

/// Capital payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapitalInput {
    /// Asset id from genesis.
    pub asset: String,
    /// Amount in the asset's smallest unit, positive.
    pub amount: u64,
    /// What to do.
    pub operation: CapitalOperationInput,
    /// Paying account (transfer, send).
    #[serde(default)]
    pub from: Option<String>,
    /// Receiving account.
    pub to: String,
}

/// Talent actions.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TalentAction {
    /// Issue a credential.
    Issue,
    /// Revoke a credential.
    Revoke,
}

/// Talent payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TalentInput {
    /// Issue or revoke.
    pub action: TalentAction,
    /// Credential id, 64 hex digits.
    pub credential_id: String,
    /// The credential document (issue only), kept off chain.
    #[serde(default)]
    pub document: Option<serde_json::Value>,
    /// Reason code (revoke only).
    #[serde(default)]
    pub reason_code: Option<u16>,
}

/// Credit payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditInput {
    /// The credit report, kept off chain.
    pub report: serde_json::Value,
}

/// Where each submitted record landed, in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmitResponse {
    /// One entry per submitted record.
    pub records: Vec<ReceiptView>,
}

/// A record's place in the chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiptView {
    /// Record id, 64 hex digits.
    pub id: String,
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u64,
    /// For a record addressed to another city: its packet's sequence on the channel (ask
    /// `GET /v1/packets/{source}/{destination}/{sequence}` where it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

impl SubmitResponse {
    /// From sealer receipts.
    pub fn from_receipts(receipts: &[Receipt]) -> Self {
        SubmitResponse {
            records: receipts
                .iter()
                .map(|r| ReceiptView {
                    id: r.id.to_hex(),
                    height: r.height,
                    index: r.index,
                    sequence: r.sequence,
                })
                .collect(),
        }
    }
    /// The JSON body stored for idempotent retries.
    pub fn render(receipts: &[Receipt]) -> Vec<u8> {
        serde_json::to_vec(&Self::from_receipts(receipts)).unwrap_or_default()
    }
}

/// Why a record input was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The token may not submit this kind.
    #[error("record {index}: this token may not submit {kind:?} records")]
    KindNotAllowed {
        /// Position.
        index: usize,
        /// Kind.
        kind: RecordKind,
    },
    /// A malformed field.
    #[error("record {index}: {detail}")]
    Invalid {
        /// Position.
        index: usize,
        /// What is wrong.
        detail: String,
    },
}

/// What the node needs to turn inputs into records.
pub struct Context<'a> {
    /// Genesis, for city names.
    pub genesis: &'a ValidGenesis,
    /// This shard's city.
    pub city: CityId,
    /// The submitting service.
    pub service: &'a str,
    /// Kinds the token may submit.
    pub kinds: &'a [RecordKind],
    /// Acceptance time.
    pub now_ms: u64,
}

impl RecordInput {
    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordInput::Information { .. } => RecordKind::Information,
            RecordInput::Capital { .. } => RecordKind::Capital,
            RecordInput::Talent { .. } => RecordKind::Talent,
            RecordInput::Credit { .. } => RecordKind::Credit,
        }
    }

    /// Builds the record (and its off-chain payload), drawing salts from `salt`.
    pub fn into_record(
        self,
        index: usize,
        ctx: &Context<'_>,
        salt: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(Record, Option<StoredPayload>), InputError> {
        let invalid = |detail: String| InputError::Invalid { index, detail };
        let kind = self.kind();
        if !ctx.kinds.contains(&kind) {
            return Err(InputError::KindNotAllowed { index, kind });
        }
        let (subject, to_city) = match &self {
            RecordInput::Information { subject, to_city, .. }
            | RecordInput::Capital { subject, to_city, .. }
            | RecordInput::Talent { subject, to_city, .. }
            | RecordInput::Credit { subject, to_city, .. } => (subject.clone(), to_city.clone()),
        };
        let subject = SubjectId(
            parse_hash(&subject).map_err(|_| invalid("subject must be 64 hex digits".into()))?,
        );
        let destination = match to_city {
            None => None,
            Some(name) => Some(
                ctx.genesis
                    .city_by_name(&name)
                    .ok_or_else(|| invalid(format!("unknown city {name}")))?
                    .id,
            ),
        };
        let mut payload = None;
        let body = match self {
            RecordInput::Information { payload: p, .. } => {
                RecordBody::Information(InformationPayload {
                    dataset: p.dataset,
                    media_type: p.media_type,
                    content: InformationContent::Inline(
                        serde_json::to_vec(&p.content).unwrap_or_default(),
                    ),
                })
            }
            RecordInput::Capital { payload: p, .. } => {
                let operation = match (p.operation, p.from) {
                    (CapitalOperationInput::Issue, None) => CapitalOperation::Issue { to: p.to },
                    (CapitalOperationInput::Transfer, Some(from)) => {
                        CapitalOperation::Transfer { from, to: p.to }
                    }
                    (CapitalOperationInput::Send, Some(from)) => {
                        CapitalOperation::Send { from, to: p.to }
                    }
                    (CapitalOperationInput::Issue, Some(_)) => {
                        return Err(invalid("issue takes no `from`".into()));
                    }
                    (_, None) => return Err(invalid("transfer and send need `from`".into())),
                };
                RecordBody::Capital(CapitalPayload {
                    asset: p.asset,
                    amount: u128::from(p.amount),
                    operation,
                })
            }
            RecordInput::Talent { payload: p, .. } => {
                let credential_id = parse_hash(&p.credential_id)
                    .map_err(|_| invalid("credential_id must be 64 hex digits".into()))?;
                match (p.action, p.document, p.reason_code) {
                    (TalentAction::Issue, Some(document), None) => {
                        let bytes = serde_json::to_vec(&document).unwrap_or_default();
                        let s = salt();
                        let commitment = PayloadCommitment::new(&s, &bytes);
                        payload = Some(StoredPayload { salt: s, bytes, idempotency: None });
                        RecordBody::Talent(TalentPayload::Issue { credential_id, commitment })
                    }
                    (TalentAction::Revoke, None, reason) => {
                        RecordBody::Talent(TalentPayload::Revoke {
                            credential_id,
                            reason_code: reason.unwrap_or(0),
                        })
                    }
                    (TalentAction::Issue, _, _) => {
                        return Err(invalid("issue needs `document` and no `reason_code`".into()));
                    }
                    (TalentAction::Revoke, Some(_), _) => {
                        return Err(invalid("revoke takes no `document`".into()));
                    }
                }
            }
            RecordInput::Credit { payload: p, .. } => {
                let bytes = serde_json::to_vec(&p.report).unwrap_or_default();
                let s = salt();
                let commitment = PayloadCommitment::new(&s, &bytes);
                payload = Some(StoredPayload { salt: s, bytes, idempotency: None });
                RecordBody::Credit(CreditPayload { commitment })
            }
        };
        let record = Record {
            version: RECORD_VERSION,
            city: ctx.city,
            service: ctx.service.to_string(),
            subject,
            time_ms: ctx.now_ms,
            destination,
            body,
        };
        record.validate().map_err(|e| invalid(e.to_string()))?;
        Ok((record, payload))
    }
}

/// Parses 64 hex digits.
pub fn parse_hash(s: &str) -> Result<Hash32, hex::FromHexError> {
    Hash32::from_hex(s)
}
