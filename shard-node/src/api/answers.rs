//! `POST /v1/packets/answers`: a destination bridge's answers about packets this city sent,
//! handed on as they came. The source bridge names the packets it delivered and passes the
//! destination's answers document (docs/protocol.md §12.8) through unread; the shard reads it
//! once and settles each acknowledgement and timeout in it exactly as `POST /v1/packets/batch`
//! would. Nothing in the document is trusted: every proof is checked as on any other path.

use super::packets::{
    AcknowledgementGroupShared, BatchItem, GroupedAcknowledgement, PacketBatchItem, PacketRequest,
    handle_items, public_rate, read,
};
use super::problem::Problem;
use super::{ApiResult, AppState, body_bytes, json_problem};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use urbis_core::packet::{Acknowledgement, AcknowledgementProof, PacketId, TimeoutProof};
use urbis_core::state::StateProof;
use utoipa::ToSchema;

/// Packets this city delivered to another and the destination bridge's answers about them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswersRequest {
    /// The packets delivered, in the order of the delivery: answer `i` is about packet `i`.
    #[schema(value_type = Vec<Object>)]
    pub packets: Vec<PacketId>,
    /// The relay's `traceparent` for each packet, in the same order (empty: none). Not
    /// authenticated and never checked: it only links spans.
    #[serde(default)]
    pub trace_contexts: Vec<Option<String>>,
    /// The destination bridge's answers document, as it sent it: `{"shared"?: [{"header",
    /// "finality"}], "results": [...]}` (docs/protocol.md §12.8).
    #[schema(value_type = Object)]
    pub answers: DestinationAnswers,
}

/// A destination bridge's answers document, read: its shared parts, and one answer per packet.
#[derive(Debug)]
pub struct DestinationAnswers {
    shared: Vec<Arc<AcknowledgementGroupShared>>,
    results: Vec<DestinationAnswer>,
}

/// One answer of a destination bridge.
#[derive(Debug)]
enum DestinationAnswer {
    Acknowledged(Acknowledged),
    TimedOut(Box<TimeoutProof>),
    Pending(String),
    Erased,
    Refused { status: u16, detail: String },
}

/// An acknowledgement with its proof: its own parts with entry `shared` of the shared parts,
/// or whole.
#[derive(Debug)]
enum Acknowledged {
    Shared { shared: usize, acknowledgement: Acknowledgement, proof: StateProof },
    Whole(Box<AcknowledgementProof>),
}

/// A `shared` entry as written: each part kept as JSON until the two are known to be within
/// the bound.
#[derive(Deserialize)]
struct SharedIn {
    header: Box<RawValue>,
    finality: Box<RawValue>,
}

impl SharedIn {
    /// Each acknowledgement naming an entry is checked with its own view of it: bounded.
    fn read<E: serde::de::Error>(self) -> Result<Arc<AcknowledgementGroupShared>, E> {
        urbis_core::packet::check_group_shared(self.header.get().len() + self.finality.get().len())
            .map_err(E::custom)?;
        Ok(Arc::new(AcknowledgementGroupShared {
            header: read(&self.header)?,
            finality: read(&self.finality)?,
        }))
    }
}

impl<'de> Deserialize<'de> for DestinationAnswers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            shared: Vec<SharedIn>,
            results: Vec<DestinationAnswer>,
        }
        let raw = Raw::deserialize(d)?;
        let shared =
            raw.shared.into_iter().map(SharedIn::read).collect::<Result<Vec<_>, D::Error>>()?;
        for r in &raw.results {
            if let DestinationAnswer::Acknowledged(Acknowledged::Shared { shared: k, .. }) = r
                && *k >= shared.len()
            {
                return Err(D::Error::custom(format!("no shared parts numbered {k}")));
            }
        }
        Ok(DestinationAnswers { shared, results: raw.results })
    }
}

impl urbis_ops::tagged::TagFirst for DestinationAnswer {
    const EXPECTING: &'static str = "a bridge answer";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct TimedOut {
            proof: Box<TimeoutProof>,
        }
        #[derive(Deserialize)]
        struct Pending {
            detail: String,
        }
        #[derive(Deserialize)]
        struct Refused {
            status: u16,
            detail: String,
        }
        Ok(match tag {
            "acknowledged" => DestinationAnswer::Acknowledged(rest.deserialize_map(AckVisitor)?),
            "timed_out" => DestinationAnswer::TimedOut(TimedOut::deserialize(rest)?.proof),
            "pending" => DestinationAnswer::Pending(Pending::deserialize(rest)?.detail),
            "erased" => {
                serde::de::IgnoredAny::deserialize(rest)?;
                DestinationAnswer::Erased
            }
            "refused" => {
                let r = Refused::deserialize(rest)?;
                DestinationAnswer::Refused { status: r.status, detail: r.detail }
            }
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &["acknowledged", "timed_out", "pending", "erased", "refused"],
                ));
            }
        })
    }
}

impl<'de> Deserialize<'de> for DestinationAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
}

/// Reads an `acknowledged` answer's fields in one pass: once `shared` or `acknowledgement`
/// has come (bridges write them first), `proof` is read straight as the receipt's state proof;
/// a `proof` before either is held as JSON until the object's end tells which it is.
struct AckVisitor;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum AckField {
    Shared,
    Acknowledgement,
    Proof,
}

enum ProofIn {
    Part(StateProof),
    Held(Box<RawValue>),
}

impl<'de> Visitor<'de> for AckVisitor {
    type Value = Acknowledged;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an acknowledged answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Acknowledged, A::Error> {
        let mut shared: Option<usize> = None;
        let mut acknowledgement: Option<Acknowledgement> = None;
        let mut proof: Option<ProofIn> = None;
        while let Some(field) = map.next_key::<AckField>()? {
            match field {
                AckField::Shared if shared.is_none() => shared = Some(map.next_value()?),
                AckField::Acknowledgement if acknowledgement.is_none() => {
                    acknowledgement = Some(map.next_value()?);
                }
                AckField::Proof if proof.is_none() => {
                    proof = Some(if shared.is_some() || acknowledgement.is_some() {
                        ProofIn::Part(map.next_value()?)
                    } else {
                        ProofIn::Held(map.next_value()?)
                    });
                }
                AckField::Shared => return Err(A::Error::duplicate_field("shared")),
                AckField::Acknowledgement => {
                    return Err(A::Error::duplicate_field("acknowledgement"));
                }
                AckField::Proof => return Err(A::Error::duplicate_field("proof")),
            }
        }
        match (shared, acknowledgement, proof) {
            (_, _, None) => Err(A::Error::missing_field("proof")),
            (Some(shared), Some(acknowledgement), Some(p)) => Ok(Acknowledged::Shared {
                shared,
                acknowledgement,
                proof: match p {
                    ProofIn::Part(p) => p,
                    ProofIn::Held(raw) => read(&raw)?,
                },
            }),
            (None, None, Some(ProofIn::Held(raw))) => Ok(Acknowledged::Whole(read(&raw)?)),
            _ => Err(A::Error::custom(
                "an acknowledgement with shared parts names them and carries its own",
            )),
        }
    }
}

/// What became of one packet's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnswerResult {
    /// The destination's answer: `acknowledged`, `timed_out`, `pending` (ask again),
    /// `erased` or `refused`.
    pub answer: String,
    /// For `acknowledged` and `timed_out`: what settling it gave, as `POST /v1/packets/batch`
    /// answers an item (status 200, or the problem: 409 `packet-settled` when it was settled
    /// before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<PacketBatchItem>,
    /// For `pending` and `refused`: the destination's detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `refused`: the status the destination's shard gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_status: Option<u16>,
}

/// One result per packet, in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnswersResponse {
    /// One per packet.
    pub results: Vec<AnswerResult>,
}

/// Hands the shard a destination bridge's answers about packets this city delivered, as they
/// came. Each acknowledgement and timeout is checked and settled on its own, as in
/// `POST /v1/packets/batch`; the other answers are reported back. Public: nothing the answers
/// say is trusted. Rate-limited with the other packet endpoints.
#[utoipa::path(post, path = "/v1/packets/answers", request_body = AnswersRequest,
    responses((status = 200, body = AnswersResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn post_answers(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<AnswersResponse>> {
    public_rate(&app, "public:packets")?;
    let body = body_bytes(body, app.limits.body_bytes_max)?;
    let Read { packets, trace_contexts, shared, answers } = read_request(&body)?;
    let n = packets.len();
    if n > app.limits.batch_records_max {
        return Err(Problem::too_large(format!(
            "{n} packets; at most {} per request",
            app.limits.batch_records_max
        )));
    }
    if answers.len() != n {
        return Err(Problem::unprocessable(format!(
            "{} answers for {n} packets: the destination answers each packet it was sent",
            answers.len()
        )));
    }
    if !trace_contexts.is_empty() && trace_contexts.len() != n {
        return Err(Problem::unprocessable(format!(
            "{} trace contexts for {n} packets: one per packet, or none",
            trace_contexts.len()
        )));
    }
    let mut traces = trace_contexts.into_iter();
    let mut items = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    // Where each item handed to the batch stands among the results.
    let mut settling = Vec::with_capacity(n);
    for (packet, answer) in packets.into_iter().zip(answers) {
        let trace_context = traces.next().flatten();
        let (name, item) = match answer {
            Err(detail) => {
                results.push(answer_only("unreadable", Some(detail), None));
                continue;
            }
            Ok(DestinationAnswer::Acknowledged(Acknowledged::Shared {
                shared: k,
                acknowledgement,
                proof,
            })) => match shared.get(k) {
                Some(Ok(parts)) => (
                    "acknowledged",
                    BatchItem::Acknowledgement(
                        parts.clone(),
                        GroupedAcknowledgement { packet, acknowledgement, proof, trace_context },
                    ),
                ),
                unreadable => {
                    let detail = match unreadable {
                        Some(Err(e)) => format!("shared parts {k}: {e}"),
                        _ => format!("no shared parts numbered {k}"),
                    };
                    results.push(answer_only("unreadable", Some(detail), None));
                    continue;
                }
            },
            Ok(DestinationAnswer::Acknowledged(Acknowledged::Whole(proof))) => (
                "acknowledged",
                BatchItem::Whole(PacketRequest::Acknowledgement { proof, packet, trace_context }),
            ),
            Ok(DestinationAnswer::TimedOut(proof)) => (
                "timed_out",
                BatchItem::Whole(PacketRequest::Timeout { proof, packet, trace_context }),
            ),
            Ok(DestinationAnswer::Pending(detail)) => {
                results.push(answer_only("pending", Some(detail), None));
                continue;
            }
            Ok(DestinationAnswer::Erased) => {
                results.push(answer_only("erased", None, None));
                continue;
            }
            Ok(DestinationAnswer::Refused { status, detail }) => {
                results.push(answer_only("refused", Some(detail), Some(status)));
                continue;
            }
        };
        items.push(Ok(item));
        settling.push(results.len());
        results.push(AnswerResult {
            answer: name.to_string(),
            settlement: None,
            detail: None,
            destination_status: None,
        });
    }
    for (i, settled) in settling.into_iter().zip(handle_items(&app, items).await?) {
        results[i].settlement = Some(settled);
    }
    Ok(Json(AnswersResponse { results }))
}

/// A request as read: each shared entry and each answer read, or why it does not read.
struct Read {
    packets: Vec<PacketId>,
    trace_contexts: Vec<Option<String>>,
    shared: Vec<Result<Arc<AcknowledgementGroupShared>, String>>,
    answers: Vec<Result<DestinationAnswer, String>>,
}

/// The request with its answers document kept as JSON, for reading each part on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    packets: Vec<PacketId>,
    #[serde(default)]
    trace_contexts: Vec<Option<String>>,
    #[serde(borrow)]
    answers: RawAnswers<'a>,
}

#[derive(Deserialize)]
struct RawAnswers<'a> {
    #[serde(default, borrow)]
    shared: Vec<&'a RawValue>,
    #[serde(borrow)]
    results: Vec<&'a RawValue>,
}

/// Reads a request. One whose answers all read (what an honest destination writes) is read in
/// one pass; only one with a part that does not read is read again, part by part, so that an
/// answer that does not read (or names shared parts that do not) is refused alone, as an item
/// of `POST /v1/packets/batch` is. A body that is not such a request at all is refused whole.
fn read_request(body: &[u8]) -> ApiResult<Read> {
    if let Ok(AnswersRequest { packets, trace_contexts, answers }) = serde_json::from_slice(body) {
        let DestinationAnswers { shared, results } = answers;
        return Ok(Read {
            packets,
            trace_contexts,
            shared: shared.into_iter().map(Ok).collect(),
            answers: results.into_iter().map(Ok).collect(),
        });
    }
    let raw: RawRequest<'_> = serde_json::from_slice(body).map_err(json_problem)?;
    Ok(Read {
        packets: raw.packets,
        trace_contexts: raw.trace_contexts,
        shared: raw
            .answers
            .shared
            .iter()
            .map(|s| {
                serde_json::from_str::<SharedIn>(s.get())
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.read::<serde_json::Error>().map_err(|e| e.to_string()))
            })
            .collect(),
        answers: raw
            .answers
            .results
            .iter()
            .map(|r| serde_json::from_str(r.get()).map_err(|e| e.to_string()))
            .collect(),
    })
}

fn answer_only(answer: &str, detail: Option<String>, status: Option<u16>) -> AnswerResult {
    AnswerResult {
        answer: answer.to_string(),
        settlement: None,
        detail,
        destination_status: status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `result` as bridges write it: its type first.
    #[allow(clippy::unwrap_used)]
    fn tag_first(result: &serde_json::Value) -> String {
        let mut rest = result.as_object().unwrap().clone();
        let tag = rest.remove("type").unwrap();
        match serde_json::Value::Object(rest).to_string().as_str() {
            "{}" => format!(r#"{{"type":{tag}}}"#),
            fields => format!(r#"{{"type":{tag},{}"#, &fields[1..]),
        }
    }

    fn read(document: &serde_json::Value) -> Result<DestinationAnswers, String> {
        serde_json::from_str(&document.to_string()).map_err(|e| e.to_string())
    }

    /// A destination's answers read in either form: an acknowledgement naming shared parts
    /// (its fields in any order) with them, a whole one as itself, and the other answers as
    /// what they say; what no honest destination writes does not read.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_destinations_answers_read_in_either_form() {
        let (_, acks, update) = super::super::packets::tests::written_fixture();
        let (a, c) = (acks[0].clone().unwrap(), acks[2].clone().unwrap());
        assert_eq!((&a.header, &a.finality), (&c.header, &c.finality));
        let shared = json!([{"header": a.header, "finality": a.finality}]);
        let results = json!([
            {"type": "acknowledged", "shared": 0, "acknowledgement": a.acknowledgement, "proof": a.proof},
            {"type": "acknowledged", "proof": c.proof, "acknowledgement": c.acknowledgement, "shared": 0},
            {"type": "acknowledged", "proof": a},
            {"type": "pending", "detail": "not final"},
            {"type": "erased"},
            {"type": "refused", "status": 409, "detail": "frozen"},
        ]);
        let got = read(&json!({"shared": shared, "results": results})).unwrap();
        assert_eq!(got.shared.len(), 1);
        assert_eq!((&got.shared[0].header, &got.shared[0].finality), (&a.header, &a.finality));
        assert_eq!(got.results.len(), 6);
        for (r, want) in got.results[..2].iter().zip([&a, &c]) {
            let DestinationAnswer::Acknowledged(Acknowledged::Shared {
                shared,
                acknowledgement,
                proof,
            }) = r
            else {
                panic!("{r:?}")
            };
            assert_eq!((*shared, acknowledgement, proof), (0, &want.acknowledgement, &want.proof));
        }
        assert!(
            matches!(&got.results[2], DestinationAnswer::Acknowledged(Acknowledged::Whole(w)) if **w == a)
        );
        assert!(matches!(&got.results[3], DestinationAnswer::Pending(d) if d == "not final"));
        assert!(matches!(got.results[4], DestinationAnswer::Erased));
        assert!(
            matches!(&got.results[5], DestinationAnswer::Refused { status: 409, detail } if detail == "frozen")
        );

        // Each result read as bridges write it (its type first) and with its type last (read
        // through a JSON value): the same refusal either way.
        let one = |result: serde_json::Value| {
            let first = serde_json::from_str::<DestinationAnswers>(&format!(
                r#"{{"shared":{shared},"results":[{}]}}"#,
                tag_first(&result)
            ))
            .map_err(|e| e.to_string());
            let last = read(&json!({"shared": shared, "results": [result]}));
            [first, last]
        };
        let part = json!({"type": "acknowledged", "shared": 0, "acknowledgement": a.acknowledgement, "proof": a.proof});
        let without = |field: &str| {
            let mut r = part.clone();
            r.as_object_mut().unwrap().remove(field);
            r
        };
        let with = |field: &str, value: serde_json::Value| {
            let mut r = part.clone();
            r[field] = value;
            r
        };
        for (result, phrase) in [
            (without("acknowledgement"), "names them and carries its own"),
            (without("shared"), "names them and carries its own"),
            (without("proof"), "missing field `proof`"),
            (with("shared", json!(1)), "no shared parts numbered 1"),
            (with("extra", json!(true)), "unknown field `extra`"),
            (json!({"type": "accepted"}), "unknown variant `accepted`"),
            (json!({"type": "refused", "status": 409}), "missing field `detail`"),
        ] {
            for read in one(result.clone()) {
                let error = read.unwrap_err();
                assert!(error.contains(phrase), "{result}: {error}");
            }
        }
        // A field twice, in the form bridges write (the type first): the second could stand
        // for another proof than the first.
        let twice = format!(
            r#"{{"type":"acknowledged","shared":0,"shared":0,"acknowledgement":{},"proof":{}}}"#,
            json!(a.acknowledgement),
            json!(a.proof)
        );
        let text = format!(r#"{{"shared":{shared},"results":[{twice}]}}"#);
        let error = serde_json::from_str::<DestinationAnswers>(&text).unwrap_err().to_string();
        assert!(error.contains("duplicate field `shared`"), "{error}");
        // In a request, a result that does not read is refused alone: the request is read
        // again part by part, and the others stand; a body that is no request is refused whole.
        let packets = json!([
            {"source": 0, "destination": 1, "sequence": 1},
            {"source": 0, "destination": 1, "sequence": 2},
            {"source": 0, "destination": 1, "sequence": 3}
        ]);
        let body = format!(
            r#"{{"packets":{packets},"answers":{{"shared":{shared},"results":[{},{},{}]}}}}"#,
            json!({"type": "timed_out", "proof": {"receipt_absence": 1}}),
            tag_first(&part),
            tag_first(&with("shared", json!(3))),
        );
        let request = read_request(body.as_bytes()).unwrap();
        let lengths = (request.packets.len(), request.shared.len(), request.answers.len());
        assert_eq!(lengths, (3, 1, 3));
        let readable: Vec<bool> = request.answers.iter().map(Result::is_ok).collect();
        assert_eq!(readable, [false, true, true]);
        let whole =
            format!(r#"{{"packets":{packets},"answers":{{"shared":{shared},"results":[]}}}}"#);
        assert!(read_request(whole.as_bytes()).unwrap().answers.is_empty());
        assert_eq!(read_request(b"{\"packets\":").err().map(|p| p.status), Some(400));
        let unknown = format!(r#"{{"packets":{packets},"answers":{{"results":[]}},"more":1}}"#);
        assert_eq!(read_request(unknown.as_bytes()).err().map(|p| p.status), Some(422));
        // Shared parts larger than a group may carry would be copied into each member.
        let mut padded = a.finality.clone();
        padded.set_updates = vec![
            update.clone();
            urbis_core::packet::GROUP_SHARED_JSON_MAX
                / serde_json::to_string(&update).unwrap().len()
                + 1
        ];
        let oversized = json!([{"header": a.header, "finality": padded}]);
        let error = read(&json!({"shared": oversized, "results": [part]})).unwrap_err();
        assert!(error.contains("shared parts"), "{error}");
    }
}
