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
    /// The records, sealed together or refused together (at least one; at most the shard's
    /// configured batch limit).
    #[serde(deserialize_with = "streaming::records")]
    #[schema(min_items = 1)]
    pub records: Vec<RecordInput>,
}

/// One record to submit; `kind` selects the payload's shape.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RecordInput {
    /// Public information, kept on chain.
    Information {
        /// Pseudonymous subject id, 64 hex digits.
        #[schema(pattern = "^[0-9a-fA-F]{64}$")]
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
        #[schema(pattern = "^[0-9a-fA-F]{64}$")]
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
        #[schema(pattern = "^[0-9a-fA-F]{64}$")]
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
        #[schema(pattern = "^[0-9a-fA-F]{64}$")]
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
    /// Dataset or register (printable ASCII, at most 128 bytes).
    #[schema(min_length = 1, max_length = 128, pattern = "^[ -~]+$")]
    pub dataset: String,
    /// Media type of `content` (the content is stored as its JSON text; printable ASCII, at
    /// most 128 bytes).
    #[schema(min_length = 1, max_length = 128, pattern = "^[ -~]+$")]
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
    #[schema(min_length = 1, max_length = 128, pattern = "^[ -~]+$")]
    pub asset: String,
    /// Amount in the asset's smallest unit, positive.
    #[schema(minimum = 1)]
    pub amount: u64,
    /// What to do.
    pub operation: CapitalOperationInput,
    /// Paying account (transfer, send; printable ASCII, at most 128 bytes).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[ -~]+$")]
    pub from: Option<String>,
    /// Receiving account (printable ASCII, at most 128 bytes).
    #[schema(min_length = 1, max_length = 128, pattern = "^[ -~]+$")]
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
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
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
    /// The JSON body: the answer, and what is stored for idempotent retries. Written directly
    /// (the same bytes `serde_json` writes for [`SubmitResponse`], a test compares them): a
    /// 1 000-record answer would otherwise allocate a `String` per id.
    pub fn render(receipts: &[Receipt]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(16 + receipts.len() * 110);
        out.extend_from_slice(b"{\"records\":[");
        let mut hex = [0u8; 64];
        for (i, r) in receipts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Infallible: 64 bytes for 32.
            let _ = hex::encode_to_slice(r.id.0, &mut hex);
            out.extend_from_slice(b"{\"id\":\"");
            out.extend_from_slice(&hex);
            // Writing to a Vec cannot fail.
            let _ = write!(out, "\",\"height\":{},\"index\":{}", r.height, r.index);
            if let Some(sequence) = r.sequence {
                let _ = write!(out, ",\"sequence\":{sequence}");
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
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

/// A `RecordInput` read in one pass: the derived internally tagged form buffers each record into
/// an intermediate tree before it knows the `kind`; this reads `kind` (normally the first
/// member) and parses `payload` straight into its type. A payload that comes before `kind` is
/// buffered as a JSON value and converted once the kind is known. Same accepted inputs and
/// the same errors as the derived form (the tests below compare the two).
pub(crate) mod streaming {
    use super::{CapitalInput, CreditInput, InformationInput, RecordInput, TalentInput};
    use serde::Deserialize;
    use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// `records`: an array of record inputs.
    pub(crate) fn records<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RecordInput>, D::Error> {
        struct Records;
        impl<'de> Visitor<'de> for Records {
            type Value = Vec<RecordInput>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // The hint comes from the input: bound what it may reserve.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(Streamed(r)) = seq.next_element()? {
                    out.push(r);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Records)
    }

    /// One record input, parsed by [`RecordVisitor`].
    pub(crate) struct Streamed(pub(crate) RecordInput);

    impl<'de> Deserialize<'de> for Streamed {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(RecordVisitor).map(Streamed)
        }
    }

    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "snake_case")]
    enum Field {
        Kind,
        Subject,
        Payload,
        ToCity,
    }

    #[derive(Clone, Copy, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Information,
        Capital,
        Talent,
        Credit,
    }

    enum Payload {
        Information(InformationInput),
        Capital(CapitalInput),
        Talent(TalentInput),
        Credit(CreditInput),
    }

    fn from_value<T: DeserializeOwned, E: de::Error>(v: serde_json::Value) -> Result<T, E> {
        T::deserialize(v).map_err(E::custom)
    }

    impl Payload {
        fn from_value<E: de::Error>(kind: Kind, v: serde_json::Value) -> Result<Self, E> {
            Ok(match kind {
                Kind::Information => Payload::Information(from_value(v)?),
                Kind::Capital => Payload::Capital(from_value(v)?),
                Kind::Talent => Payload::Talent(from_value(v)?),
                Kind::Credit => Payload::Credit(from_value(v)?),
            })
        }
    }

    struct RecordVisitor;

    impl<'de> Visitor<'de> for RecordVisitor {
        type Value = RecordInput;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a record: an object with `kind`, `subject`, `payload` and optional `to_city`",
            )
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RecordInput, A::Error> {
            let mut kind: Option<Kind> = None;
            let mut subject: Option<String> = None;
            let mut to_city: Option<Option<String>> = None;
            let mut payload: Option<Payload> = None;
            let mut early: Option<serde_json::Value> = None;
            while let Some(field) = map.next_key::<Field>()? {
                match field {
                    Field::Kind => {
                        if kind.is_some() {
                            return Err(de::Error::duplicate_field("kind"));
                        }
                        let k: Kind = map.next_value()?;
                        kind = Some(k);
                        if let Some(v) = early.take() {
                            payload = Some(Payload::from_value(k, v)?);
                        }
                    }
                    Field::Subject => {
                        if subject.is_some() {
                            return Err(de::Error::duplicate_field("subject"));
                        }
                        subject = Some(map.next_value()?);
                    }
                    Field::ToCity => {
                        if to_city.is_some() {
                            return Err(de::Error::duplicate_field("to_city"));
                        }
                        to_city = Some(map.next_value()?);
                    }
                    Field::Payload => {
                        if payload.is_some() || early.is_some() {
                            return Err(de::Error::duplicate_field("payload"));
                        }
                        match kind {
                            Some(Kind::Information) => {
                                payload = Some(Payload::Information(map.next_value()?));
                            }
                            Some(Kind::Capital) => {
                                payload = Some(Payload::Capital(map.next_value()?));
                            }
                            Some(Kind::Talent) => {
                                payload = Some(Payload::Talent(map.next_value()?))
                            }
                            Some(Kind::Credit) => {
                                payload = Some(Payload::Credit(map.next_value()?))
                            }
                            None => early = Some(map.next_value()?),
                        }
                    }
                }
            }
            if kind.is_none() {
                return Err(de::Error::missing_field("kind"));
            }
            let subject = subject.ok_or_else(|| de::Error::missing_field("subject"))?;
            let to_city = to_city.flatten();
            Ok(match payload.ok_or_else(|| de::Error::missing_field("payload"))? {
                Payload::Information(payload) => {
                    RecordInput::Information { subject, payload, to_city }
                }
                Payload::Capital(payload) => RecordInput::Capital { subject, payload, to_city },
                Payload::Talent(payload) => RecordInput::Talent { subject, payload, to_city },
                Payload::Credit(payload) => RecordInput::Credit { subject, payload, to_city },
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rendered_answers_are_what_serde_writes() {
            use crate::sealer::Receipt;
            use urbis_core::hash::Hash32;
            for receipts in [
                vec![],
                vec![Receipt { id: Hash32([7; 32]), height: 0, index: 0, sequence: None }],
                vec![
                    Receipt { id: Hash32([0xab; 32]), height: u64::MAX, index: 3, sequence: None },
                    Receipt { id: Hash32([1; 32]), height: 12, index: 999, sequence: Some(42) },
                ],
            ] {
                let rendered = super::super::SubmitResponse::render(&receipts);
                let serde =
                    serde_json::to_vec(&super::super::SubmitResponse::from_receipts(&receipts))
                        .unwrap();
                assert_eq!(String::from_utf8(rendered).unwrap(), String::from_utf8(serde).unwrap());
            }
        }

        /// The streamed parse accepts what the derived internally tagged parse accepts, gives
        /// the same value, and refuses what it refuses.
        #[test]
        fn streamed_and_derived_parses_agree() {
            let s = "ab".repeat(32);
            let cases = [
                format!(
                    r#"{{"kind":"information","subject":"{s}","payload":{{"dataset":"d","media_type":"text/plain","content":{{"b":1,"a":[true,null,"x"]}}}}}}"#
                ),
                format!(
                    r#"{{"payload":{{"dataset":"d","media_type":"m","content":"c"}},"subject":"{s}","kind":"information","to_city":"berlin"}}"#
                ),
                format!(
                    r#"{{"kind":"capital","subject":"{s}","payload":{{"asset":"EUR","amount":5,"operation":"send","from":"a","to":"b"}},"to_city":null}}"#
                ),
                format!(
                    r#"{{"subject":"{s}","payload":{{"asset":"EUR","amount":5,"operation":"issue","to":"b"}},"kind":"capital"}}"#
                ),
                format!(
                    r#"{{"kind":"talent","subject":"{s}","payload":{{"action":"issue","credential_id":"{s}","document":{{"n":1}}}}}}"#
                ),
                format!(
                    r#"{{"kind":"talent","subject":"{s}","payload":{{"action":"revoke","credential_id":"{s}","reason_code":3}}}}"#
                ),
                format!(
                    r#"{{"kind":"credit","subject":"{s}","payload":{{"report":{{"score":700}}}}}}"#
                ),
                format!(r#"{{"payload":{{"report":[1,2]}},"kind":"credit","subject":"{s}"}}"#),
                // Refused: unknown kind, missing and duplicate members, unknown members at both
                // levels, a payload of another kind's shape, wrong types.
                format!(r#"{{"kind":"gossip","subject":"{s}","payload":{{}}}}"#),
                format!(r#"{{"subject":"{s}","payload":{{"report":1}}}}"#),
                r#"{"kind":"credit","payload":{"report":1}}"#.to_string(),
                format!(r#"{{"kind":"credit","subject":"{s}"}}"#),
                format!(
                    r#"{{"kind":"credit","kind":"credit","subject":"{s}","payload":{{"report":1}}}}"#
                ),
                format!(
                    r#"{{"kind":"credit","subject":"{s}","subject":"{s}","payload":{{"report":1}}}}"#
                ),
                format!(
                    r#"{{"kind":"credit","subject":"{s}","payload":{{"report":1}},"payload":{{"report":1}}}}"#
                ),
                format!(
                    r#"{{"kind":"credit","subject":"{s}","payload":{{"report":1}},"extra":1}}"#
                ),
                format!(
                    r#"{{"kind":"credit","subject":"{s}","payload":{{"report":1,"extra":1}}}}"#
                ),
                format!(
                    r#"{{"payload":{{"report":1,"extra":1}},"kind":"credit","subject":"{s}"}}"#
                ),
                format!(r#"{{"kind":"capital","subject":"{s}","payload":{{"report":1}}}}"#),
                format!(
                    r#"{{"kind":"capital","subject":"{s}","payload":{{"asset":"EUR","amount":-5,"operation":"issue","to":"b"}}}}"#
                ),
                format!(
                    r#"{{"payload":{{"asset":"EUR","amount":"5","operation":"issue","to":"b"}},"kind":"capital","subject":"{s}"}}"#
                ),
                r#"{"kind":"information","subject":7,"payload":{"dataset":"d","media_type":"m","content":1}}"#
                    .to_string(),
                format!(
                    r#"{{"kind":"information","subject":"{s}","to_city":5,"payload":{{"dataset":"d","media_type":"m","content":1}}}}"#
                ),
                r#"{"kind":1}"#.to_string(),
                r#"[]"#.to_string(),
                r#""information""#.to_string(),
            ];
            let mut accepted = 0;
            for case in &cases {
                let derived = serde_json::from_str::<RecordInput>(case);
                let streamed = serde_json::from_str::<Streamed>(case).map(|s| s.0);
                match (&derived, &streamed) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{case}");
                        accepted += 1;
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{case}: derived {derived:?}, streamed {streamed:?}"),
                }
            }
            assert_eq!(accepted, 8);
        }

        #[test]
        fn a_request_reads_its_records_through_the_streamed_parse() {
            let s = "cd".repeat(32);
            let body = format!(
                r#"{{"records":[{{"kind":"credit","subject":"{s}","payload":{{"report":1}}}},{{"kind":"information","subject":"{s}","payload":{{"dataset":"d","media_type":"m","content":null}}}}]}}"#
            );
            let request: super::super::SubmitRequest = serde_json::from_str(&body).unwrap();
            assert_eq!(request.records.len(), 2);
            assert!(matches!(request.records[0], RecordInput::Credit { .. }));
            assert!(matches!(request.records[1], RecordInput::Information { .. }));
            let bad = format!(
                r#"{{"records":[{{"kind":"credit","subject":"{s}","payload":{{"report":1}},"x":1}}]}}"#
            );
            let err = serde_json::from_str::<super::super::SubmitRequest>(&bad).unwrap_err();
            assert!(err.to_string().contains("unknown field `x`"), "{err}");
            assert!(
                serde_json::from_str::<super::super::SubmitRequest>(r#"{"records":{}}"#).is_err()
            );
        }
    }
}
