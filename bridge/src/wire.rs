//! What bridges say to each other over QUIC (JSON, one request and one response per
//! bidirectional stream), and the parts of the shard API a bridge reads.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use urbis_core::packet::PacketId;
use urbis_core::record::CityId;

/// About the most JSON one packet with its proof chain takes (a hint for buffers, not a
/// limit): its proof is about 3.7 KB, with its payload and trace context beside it.
pub const PACKET_JSON_BYTES: usize = 5 << 10;
/// About the most JSON one answer with an acknowledgement or timeout proof takes (a hint).
pub const ANSWER_JSON_BYTES: usize = 3 << 10;
/// About the most JSON one answer of a grouped reply takes, its header and finality written
/// once for the group (a hint: about 1.5–1.7 KB were measured; a smaller hint grew the reply's
/// buffer by copying it).
const GROUPED_ANSWER_JSON_BYTES: usize = 2 << 10;

/// A source bridge's request to a destination bridge, as the destination reads it.
#[derive(Debug)]
pub enum Request {
    /// Hand these packets to your shard and answer each with its final acknowledgement.
    Deliver {
        /// The packets, singly or in groups (`urbis-bridge/1` sends them singly), at most 256
        /// in all.
        items: Vec<Carried>,
    },
    /// A record sent to you had its payload erased at its source: erase your copy.
    Erase {
        /// The source city's name.
        source: String,
        /// The record.
        record_id: urbis_core::hash::Hash32,
        /// The source's final proof of `Erasure{record_id}`.
        proof: Box<urbis_core::proof::ProofDocument>,
    },
}

/// Packets of a delivery: one with its whole proof, or a group of one source block's packets
/// whose shared parts are written once (`urbis-bridge/2`).
#[derive(Debug)]
pub enum Carried {
    /// One packet.
    One(Delivery),
    /// Packets of one source block.
    Group(CarriedGroup),
}

/// A group as it crossed from the source bridge (or came from the own shard's page): the
/// parts its packets' proofs share, and each packet's own parts.
#[derive(Debug)]
pub struct CarriedGroup {
    /// The shared parts.
    pub shared: Arc<SharedParts>,
    /// The packets, in order (at least one).
    pub packets: Vec<GroupMember>,
}

/// The four parts the proofs of a group's packets share, as the source shard wrote them.
#[derive(Debug)]
pub struct SharedParts {
    /// `batch`.
    pub batch: Box<RawValue>,
    /// `batch_proof`.
    pub batch_proof: Box<RawValue>,
    /// `header`.
    pub header: Box<RawValue>,
    /// `finality`.
    pub finality: Box<RawValue>,
    /// The batch's timeout height, read from `batch`.
    pub timeout_height: u64,
}

impl SharedParts {
    /// The proof of a packet with these shared parts and its own.
    fn proof<'a>(
        &'a self,
        sequence: u64,
        path: &'a RawValue,
        record: &'a RawValue,
    ) -> ProofOut<'a> {
        ProofOut {
            whole: None,
            parts: Some(Parts {
                sequence,
                batch: self.batch.get(),
                batch_proof: self.batch_proof.get(),
                header: self.header.get(),
                finality: self.finality.get(),
                path: path.get(),
                record: record.get(),
            }),
        }
    }
}

/// A packet of a group.
#[derive(Debug)]
pub struct GroupMember {
    /// The packet, named from its record and sequence (never trusted: the shard reads them
    /// again).
    pub id: PacketId,
    /// `path`.
    pub path: Box<RawValue>,
    /// `record`.
    pub record: Box<RawValue>,
    /// Its off-chain payload.
    pub payload: Option<Box<RawValue>>,
    /// The source bridge's `traceparent` for it.
    pub trace_context: Option<String>,
}

/// One packet of a delivery as the destination bridge hands it on: where its proof's JSON
/// is, and what a bridge names it by.
#[derive(Debug)]
pub struct Arrived<'a> {
    /// The packet.
    pub id: PacketId,
    /// Its batch's timeout height.
    pub timeout_height: u64,
    /// Its proof.
    pub proof: ProofOut<'a>,
    /// Its off-chain payload.
    pub payload: Option<&'a RawValue>,
    /// The source bridge's `traceparent` for it.
    pub trace_context: Option<&'a str>,
}

impl Carried {
    /// The packets, in order.
    pub fn packets(&self) -> Vec<Arrived<'_>> {
        match self {
            Carried::One(d) => vec![Arrived {
                id: d.proof.id,
                timeout_height: d.proof.timeout_height,
                proof: d.proof.out(),
                payload: d.payload.as_deref(),
                trace_context: d.trace_context.as_deref(),
            }],
            Carried::Group(g) => g
                .packets
                .iter()
                .map(|m| Arrived {
                    id: m.id,
                    timeout_height: g.shared.timeout_height,
                    proof: g.shared.proof(m.id.sequence, &m.path, &m.record),
                    payload: m.payload.as_deref(),
                    trace_context: m.trace_context.as_deref(),
                })
                .collect(),
        }
    }

    /// How many packets.
    pub fn len(&self) -> usize {
        match self {
            Carried::One(_) => 1,
            Carried::Group(g) => g.packets.len(),
        }
    }

    /// Whether it holds no packet (never, as read).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A bridge reads a packet's source and destination from its record, and a batch's timeout
/// height from the batch.
#[derive(Deserialize)]
struct NamedRecord {
    city: CityId,
    destination: Option<CityId>,
}

impl NamedRecord {
    /// The packet of this record with `sequence` (a record without a destination names its
    /// own city as both).
    fn packet(&self, sequence: u64) -> PacketId {
        PacketId { source: self.city, destination: self.destination.unwrap_or(self.city), sequence }
    }
}

#[derive(Deserialize)]
struct NamedBatch {
    timeout_height: u64,
}

fn read_part<T: serde::de::DeserializeOwned, E: serde::de::Error>(raw: &RawValue) -> Result<T, E> {
    serde_json::from_str(raw.get()).map_err(E::custom)
}

// Requests, their items and answers are read tag first (`urbis_ops::tagged`): a batch of proofs
// is not buffered into a value tree before it is read.

impl urbis_ops::tagged::TagFirst for Carried {
    const EXPECTING: &'static str = "a packet or a group of packets";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Group {
            batch: Box<RawValue>,
            batch_proof: Box<RawValue>,
            header: Box<RawValue>,
            finality: Box<RawValue>,
            packets: Vec<Member>,
        }
        #[derive(Deserialize)]
        struct Member {
            sequence: u64,
            path: Box<RawValue>,
            record: Box<RawValue>,
            #[serde(default)]
            payload: Option<Box<RawValue>>,
            #[serde(default)]
            trace_context: Option<String>,
        }
        match tag {
            "packet" => return Delivery::deserialize(rest).map(Carried::One),
            "packets" => {}
            other => return Err(D::Error::unknown_variant(other, &["packet", "packets"])),
        }
        let g = Group::deserialize(rest)?;
        // The destination's shard checks each packet with its own copy of the shared parts:
        // a group larger than it takes would be multiplied, not refused, if handed on singly.
        urbis_core::packet::check_group_shared(
            g.batch_proof.get().len() + g.header.get().len() + g.finality.get().len(),
        )
        .map_err(D::Error::custom)?;
        if g.packets.is_empty() || g.packets.len() > crate::OUTBOUND_BATCH_MAX {
            return Err(D::Error::custom(format!(
                "a group of {} packets; at least one and at most {}",
                g.packets.len(),
                crate::OUTBOUND_BATCH_MAX
            )));
        }
        let batch: NamedBatch = read_part(&g.batch)?;
        let packets = g
            .packets
            .into_iter()
            .map(|m| {
                let record: NamedRecord = read_part(&m.record)?;
                Ok(GroupMember {
                    id: record.packet(m.sequence),
                    path: m.path,
                    record: m.record,
                    payload: m.payload,
                    trace_context: m.trace_context,
                })
            })
            .collect::<Result<_, D::Error>>()?;
        Ok(Carried::Group(CarriedGroup {
            shared: Arc::new(SharedParts {
                batch: g.batch,
                batch_proof: g.batch_proof,
                header: g.header,
                finality: g.finality,
                timeout_height: batch.timeout_height,
            }),
            packets,
        }))
    }
}

impl<'de> Deserialize<'de> for Carried {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
}

impl urbis_ops::tagged::TagFirst for Request {
    const EXPECTING: &'static str = "a bridge request";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        /// `urbis-bridge/1` sends `packets`, `urbis-bridge/2` sends `items`.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Deliver {
            #[serde(default)]
            packets: Option<Vec<Delivery>>,
            #[serde(default)]
            items: Option<Vec<Carried>>,
        }
        #[derive(Deserialize)]
        struct Erase {
            source: String,
            record_id: urbis_core::hash::Hash32,
            proof: Box<urbis_core::proof::ProofDocument>,
        }
        Ok(match tag {
            "deliver" => {
                let d = Deliver::deserialize(rest)?;
                let items = match (d.packets, d.items) {
                    (Some(packets), None) => packets.into_iter().map(Carried::One).collect(),
                    (None, Some(items)) => items,
                    _ => return Err(D::Error::custom("a delivery has `packets` or `items`")),
                };
                Request::Deliver { items }
            }
            "erase" => {
                let e = Erase::deserialize(rest)?;
                Request::Erase { source: e.source, record_id: e.record_id, proof: e.proof }
            }
            other => return Err(D::Error::unknown_variant(other, &["deliver", "erase"])),
        })
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
}

/// The body of an erasure request.
pub fn erase_request(
    source: &str,
    record_id: &urbis_core::hash::Hash32,
    proof: &urbis_core::proof::ProofDocument,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Erase<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        source: &'a str,
        record_id: &'a urbis_core::hash::Hash32,
        proof: &'a urbis_core::proof::ProofDocument,
    }
    // Serializing plain data into memory does not fail.
    serde_json::to_vec(&Erase { kind: "erase", source, record_id, proof }).unwrap_or_default()
}

/// A packet proof as a bridge carries it: the JSON its source shard wrote, passed on as it
/// came (a bridge does not decode a proof chain into its types nor encode it again: the shard
/// that receives it checks it whole), and the fields a bridge names the packet by, read from
/// those bytes. They are never trusted: the receiving shard reads them again from the same
/// bytes. (From a peer that puts a request's tag after its packets, the request is read
/// through a JSON value, and the proof is that value written again.)
#[derive(Debug)]
pub struct CarriedPacket {
    /// The proof's JSON (a `PacketProof`).
    pub json: Box<RawValue>,
    /// The packet: source and destination from its record, and its sequence.
    pub id: PacketId,
    /// The timeout height of the batch that sent it.
    pub timeout_height: u64,
    /// Where each field of the proof is in `json`, when it has all the fields of a
    /// `PacketProof` (a field it does not have is dropped where the packet is written in a
    /// group: no reader of a proof reads one).
    pub parts: Option<ProofParts>,
}

/// Byte ranges of a packet proof's fields in its JSON: what a bridge needs to write packets
/// of one source block as a group (their `batch`, `batch_proof`, `header` and `finality` once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofParts {
    /// `batch`.
    pub batch: std::ops::Range<usize>,
    /// `batch_proof`.
    pub batch_proof: std::ops::Range<usize>,
    /// `path`.
    pub path: std::ops::Range<usize>,
    /// `record`.
    pub record: std::ops::Range<usize>,
    /// `header`.
    pub header: std::ops::Range<usize>,
    /// `finality`.
    pub finality: std::ops::Range<usize>,
}

impl CarriedPacket {
    /// Where its proof's JSON is.
    pub fn out(&self) -> ProofOut<'_> {
        let text = self.json.get();
        ProofOut {
            whole: Some(text),
            parts: self.parts.as_ref().map(|p| Parts {
                sequence: self.id.sequence,
                batch: &text[p.batch.clone()],
                batch_proof: &text[p.batch_proof.clone()],
                header: &text[p.header.clone()],
                finality: &text[p.finality.clone()],
                path: &text[p.path.clone()],
                record: &text[p.record.clone()],
            }),
        }
    }
}

impl<'de> Deserialize<'de> for CarriedPacket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The proof's fields, each kept as its JSON; a bridge reads only the few it names
        // the packet by, from those.
        #[derive(Deserialize)]
        struct Fields<'a> {
            sequence: u64,
            #[serde(borrow)]
            batch: &'a RawValue,
            #[serde(borrow)]
            record: &'a RawValue,
            #[serde(borrow, default)]
            batch_proof: Option<&'a RawValue>,
            #[serde(borrow, default)]
            path: Option<&'a RawValue>,
            #[serde(borrow, default)]
            header: Option<&'a RawValue>,
            #[serde(borrow, default)]
            finality: Option<&'a RawValue>,
        }
        let json = Box::<RawValue>::deserialize(d)?;
        let text = json.get();
        let f: Fields<'_> = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
        let batch: NamedBatch = read_part(f.batch)?;
        let record: NamedRecord = read_part(f.record)?;
        // Each part's place in `text`, which it borrows from.
        let range = |part: &RawValue| {
            let start = part.get().as_ptr() as usize - text.as_ptr() as usize;
            start..start + part.get().len()
        };
        let parts = match (f.batch_proof, f.path, f.header, f.finality) {
            (Some(batch_proof), Some(path), Some(header), Some(finality)) => Some(ProofParts {
                batch: range(f.batch),
                batch_proof: range(batch_proof),
                path: range(path),
                record: range(f.record),
                header: range(header),
                finality: range(finality),
            }),
            _ => None,
        };
        Ok(CarriedPacket {
            id: record.packet(f.sequence),
            timeout_height: batch.timeout_height,
            parts,
            json,
        })
    }
}

/// One packet with what travels beside it.
#[derive(Debug, Deserialize)]
pub struct Delivery {
    /// The packet with its proof chain.
    pub proof: CarriedPacket,
    /// The off-chain payload of a credit or talent packet (`{salt, bytes}`, hex), as the
    /// source shard wrote it.
    pub payload: Option<Box<RawValue>>,
    /// The W3C `traceparent` of the source bridge's span for this packet. Not authenticated
    /// and never checked: it only links spans.
    #[serde(default)]
    pub trace_context: Option<String>,
}

/// The answers to a request, one per packet in request order.
#[derive(Debug)]
pub struct Answers {
    /// One per packet.
    pub results: Vec<Response>,
}

/// An acknowledgement proof as bridges carry it: whole, or its own parts with the header and
/// finality it shares with the other proofs of one answer of the destination shard.
#[derive(Debug)]
pub enum CarriedAck {
    /// The whole `AcknowledgementProof`.
    Whole(Box<RawValue>),
    /// Its `acknowledgement` and `proof`, and the shared `header` and `finality`.
    Part {
        /// The shared parts.
        shared: Arc<AckShared>,
        /// `acknowledgement`.
        acknowledgement: Box<RawValue>,
        /// `proof`.
        proof: Box<RawValue>,
    },
}

/// The header and finality the proofs of one acknowledgements answer share.
#[derive(Debug, Deserialize)]
pub struct AckShared {
    /// `header`.
    pub header: Box<RawValue>,
    /// `finality`.
    pub finality: Box<RawValue>,
}

impl AckShared {
    /// Whether they fit a group (`urbis_core::packet::GROUP_SHARED_JSON_MAX`).
    fn fit_group(&self) -> bool {
        self.check().is_ok()
    }

    fn check(&self) -> Result<(), String> {
        urbis_core::packet::check_group_shared(self.header.get().len() + self.finality.get().len())
    }
}

impl CarriedAck {
    /// Writes the whole proof: as it came, or its fields in `AcknowledgementProof` order.
    fn write_whole(&self, out: &mut Vec<u8>) {
        match self {
            CarriedAck::Whole(json) => out.extend_from_slice(json.get().as_bytes()),
            CarriedAck::Part { shared, acknowledgement, proof } => {
                out.extend_from_slice(b"{\"acknowledgement\":");
                out.extend_from_slice(acknowledgement.get().as_bytes());
                push_field(out, "proof", proof.get());
                push_field(out, "header", shared.header.get());
                push_field(out, "finality", shared.finality.get());
                out.push(b'}');
            }
        }
    }

    /// The shared parts, when it has them and they fit a group.
    fn group(&self) -> Option<&Arc<AckShared>> {
        match self {
            CarriedAck::Part { shared, .. } if shared.fit_group() => Some(shared),
            _ => None,
        }
    }
}

/// The destination shard's `POST /v1/packets/acknowledgements/groups` answer: one header and
/// finality, and each packet's acknowledgement and receipt proof (or `null`).
#[derive(Debug)]
pub struct AcknowledgementGroup {
    /// One per packet asked about.
    pub acknowledgements: Vec<Option<CarriedAck>>,
}

impl<'de> Deserialize<'de> for AcknowledgementGroup {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Own {
            acknowledgement: Box<RawValue>,
            proof: Box<RawValue>,
        }
        #[derive(Deserialize)]
        struct Answer {
            header: Option<Box<RawValue>>,
            finality: Option<Box<RawValue>>,
            acknowledgements: Vec<Option<Own>>,
        }
        let a = Answer::deserialize(d)?;
        let shared = match (a.header, a.finality) {
            (Some(header), Some(finality)) => Some(Arc::new(AckShared { header, finality })),
            _ => None,
        };
        let acknowledgements = a
            .acknowledgements
            .into_iter()
            .map(|own| match (own, &shared) {
                (None, _) => Ok(None),
                (Some(own), Some(shared)) => Ok(Some(CarriedAck::Part {
                    shared: shared.clone(),
                    acknowledgement: own.acknowledgement,
                    proof: own.proof,
                })),
                (Some(_), None) => {
                    Err(serde::de::Error::custom("an acknowledgement without a header"))
                }
            })
            .collect::<Result<_, D::Error>>()?;
        Ok(AcknowledgementGroup { acknowledgements })
    }
}

/// The answers as JSON: under `urbis-bridge/2` (`grouped`) the header and finality a run of
/// acknowledgements shares are written once in `shared`, and each such acknowledgement names
/// its entry there; under `urbis-bridge/1` each acknowledgement is whole.
pub fn answers_body(answers: &Answers, grouped: bool) -> Vec<u8> {
    let per_answer = if grouped { GROUPED_ANSWER_JSON_BYTES } else { ANSWER_JSON_BYTES };
    let mut out = Vec::with_capacity(64 + answers.results.len() * per_answer);
    // Each distinct shared part once, in order of first use.
    let mut shared: Vec<&Arc<AckShared>> = Vec::new();
    let mut index = Vec::with_capacity(answers.results.len());
    for r in &answers.results {
        index.push(match r {
            Response::Acknowledged { proof } if grouped => proof.group().map(|g| {
                shared.iter().position(|s| Arc::ptr_eq(s, g)).unwrap_or_else(|| {
                    shared.push(g);
                    shared.len() - 1
                })
            }),
            _ => None,
        });
    }
    out.push(b'{');
    if !shared.is_empty() {
        out.extend_from_slice(b"\"shared\":[");
        for (k, s) in shared.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"header\":");
            out.extend_from_slice(s.header.get().as_bytes());
            push_field(&mut out, "finality", s.finality.get());
            out.push(b'}');
        }
        out.extend_from_slice(b"],");
    }
    out.extend_from_slice(b"\"results\":[");
    for (i, (r, k)) in answers.results.iter().zip(index).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing plain data into memory does not fail.
        let _ = match (r, k) {
            (
                Response::Acknowledged { proof: CarriedAck::Part { acknowledgement, proof, .. } },
                Some(k),
            ) => {
                out.extend_from_slice(b"{\"type\":\"acknowledged\",\"shared\":");
                let _ = serde_json::to_writer(&mut out, &k);
                push_field(&mut out, "acknowledgement", acknowledgement.get());
                push_field(&mut out, "proof", proof.get());
                out.push(b'}');
                Ok(())
            }
            (Response::Acknowledged { proof }, _) => {
                out.extend_from_slice(b"{\"type\":\"acknowledged\",\"proof\":");
                proof.write_whole(&mut out);
                out.push(b'}');
                Ok(())
            }
            (Response::TimedOut { proof }, _) => {
                out.extend_from_slice(b"{\"type\":\"timed_out\",\"proof\":");
                out.extend_from_slice(proof.get().as_bytes());
                out.push(b'}');
                Ok(())
            }
            (Response::Pending { detail }, _) => serde_json::to_writer(
                &mut out,
                &serde_json::json!({"type": "pending", "detail": detail}),
            ),
            (Response::Erased, _) => {
                out.extend_from_slice(br#"{"type":"erased"}"#);
                Ok(())
            }
            (Response::Refused { status, detail }, _) => serde_json::to_writer(
                &mut out,
                &serde_json::json!({"type": "refused", "status": status, "detail": detail}),
            ),
        };
    }
    out.extend_from_slice(b"]}");
    out
}

impl<'de> Deserialize<'de> for Answers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            shared: Vec<AckShared>,
            results: Vec<ResponseIn>,
        }
        let raw = Raw::deserialize(d)?;
        // A source bridge writes an acknowledgement whole for its shard when its shared parts
        // do not fit a group: parts named by many would be multiplied, not refused.
        let shared: Vec<Arc<AckShared>> = raw
            .shared
            .into_iter()
            .map(|s| s.check().map(|()| Arc::new(s)).map_err(serde::de::Error::custom))
            .collect::<Result<_, D::Error>>()?;
        let results = raw
            .results
            .into_iter()
            .map(|r| match r {
                ResponseIn::Ready(r) => Ok(r),
                ResponseIn::Shared { shared: k, acknowledgement, proof } => {
                    let shared = shared.get(k).ok_or_else(|| {
                        serde::de::Error::custom(format!("no shared parts numbered {k}"))
                    })?;
                    Ok(Response::Acknowledged {
                        proof: CarriedAck::Part { shared: shared.clone(), acknowledgement, proof },
                    })
                }
            })
            .collect::<Result<_, D::Error>>()?;
        Ok(Answers { results })
    }
}

/// An answer as read, before an acknowledgement that names shared parts is given them.
enum ResponseIn {
    Ready(Response),
    Shared { shared: usize, acknowledgement: Box<RawValue>, proof: Box<RawValue> },
}

impl urbis_ops::tagged::TagFirst for ResponseIn {
    const EXPECTING: &'static str = "a bridge answer";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Acknowledged {
            #[serde(default)]
            shared: Option<usize>,
            #[serde(default)]
            acknowledgement: Option<Box<RawValue>>,
            proof: Box<RawValue>,
        }
        #[derive(Deserialize)]
        struct Proof {
            proof: Box<RawValue>,
        }
        #[derive(Deserialize)]
        struct Detail {
            detail: String,
        }
        #[derive(Deserialize)]
        struct Refused {
            status: u16,
            detail: String,
        }
        let ready = match tag {
            "acknowledged" => {
                let a = Acknowledged::deserialize(rest)?;
                return match (a.shared, a.acknowledgement) {
                    (None, None) => Ok(ResponseIn::Ready(Response::Acknowledged {
                        proof: CarriedAck::Whole(a.proof),
                    })),
                    (Some(shared), Some(acknowledgement)) => {
                        Ok(ResponseIn::Shared { shared, acknowledgement, proof: a.proof })
                    }
                    _ => Err(serde::de::Error::custom(
                        "an acknowledgement with shared parts names them and carries its own",
                    )),
                };
            }
            "timed_out" => Response::TimedOut { proof: Proof::deserialize(rest)?.proof },
            "pending" => Response::Pending { detail: Detail::deserialize(rest)?.detail },
            "erased" => {
                serde::de::IgnoredAny::deserialize(rest)?;
                Response::Erased
            }
            "refused" => {
                let r = Refused::deserialize(rest)?;
                Response::Refused { status: r.status, detail: r.detail }
            }
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["acknowledged", "timed_out", "pending", "erased", "refused"],
                ));
            }
        };
        Ok(ResponseIn::Ready(ready))
    }
}

impl<'de> Deserialize<'de> for ResponseIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
}

/// A destination bridge's answer.
#[derive(Debug)]
pub enum Response {
    /// The destination shard received the packet; its acknowledgement is final.
    Acknowledged {
        /// The acknowledgement with its proof chain (an `AcknowledgementProof`, as the
        /// destination shard wrote it).
        proof: CarriedAck,
    },
    /// The destination shard refused the packet as timed out; the receipt's absence is proven.
    TimedOut {
        /// The timeout proof (a `TimeoutProof`, as the destination shard wrote it).
        proof: Box<RawValue>,
    },
    /// Not settled yet (the destination's shard is busy or its proof not final); ask again.
    Pending {
        /// Why.
        detail: String,
    },
    /// The destination shard checked the erasure and holds no copy any more.
    Erased,
    /// The destination shard refused the packet's proof.
    Refused {
        /// The shard's HTTP status.
        status: u16,
        /// Its problem detail.
        detail: String,
    },
}

impl Response {
    /// The answer's name, for spans and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Acknowledged { .. } => "acknowledged",
            Response::TimedOut { .. } => "timed_out",
            Response::Pending { .. } => "pending",
            Response::Erased => "erased",
            Response::Refused { .. } => "refused",
        }
    }
}

/// One outbound packet from the shard's page.
#[derive(Debug)]
pub struct OutboundPacketView {
    /// Sequence.
    pub sequence: u64,
    /// The packet with its proof chain.
    pub proof: CarriedProof,
    /// The off-chain payload, if any.
    pub payload: Option<Box<RawValue>>,
    /// The trace context of the submission that made the packet, if the shard kept it.
    pub trace_context: Option<String>,
}

/// A packet proof from the shard's page: whole, or a packet of a group.
#[derive(Debug)]
pub enum CarriedProof {
    /// The whole proof.
    Whole(CarriedPacket),
    /// A packet of a group: the group's shared parts and its own.
    Member {
        /// The packet.
        id: PacketId,
        /// The group's shared parts.
        shared: Arc<SharedParts>,
        /// `path`.
        path: Box<RawValue>,
        /// `record`.
        record: Box<RawValue>,
    },
}

impl CarriedProof {
    /// The packet it proves (as it names itself: never trusted).
    pub fn id(&self) -> PacketId {
        match self {
            CarriedProof::Whole(p) => p.id,
            CarriedProof::Member { id, .. } => *id,
        }
    }

    /// Where its JSON is.
    pub fn out(&self) -> ProofOut<'_> {
        match self {
            CarriedProof::Whole(p) => p.out(),
            CarriedProof::Member { id, shared, path, record } => {
                shared.proof(id.sequence, path, record)
            }
        }
    }
}

/// A page of the shard's unsettled outbound packets (`GET /v1/packets/outbound/groups`).
#[derive(Debug)]
pub struct OutboundPage {
    /// Final unsettled packets, in sequence order.
    pub packets: Vec<OutboundPacketView>,
    /// Packets sent on the channel so far.
    pub sent: u64,
    /// The first unsettled sequence not yet final.
    pub waiting_for_finality: Option<u64>,
}

impl<'de> Deserialize<'de> for OutboundPage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Page {
            items: Vec<Carried>,
            sent: u64,
            waiting_for_finality: Option<u64>,
        }
        let page = Page::deserialize(d)?;
        let mut packets = Vec::with_capacity(page.items.iter().map(Carried::len).sum());
        for item in page.items {
            match item {
                Carried::One(d) => packets.push(OutboundPacketView {
                    sequence: d.proof.id.sequence,
                    proof: CarriedProof::Whole(d.proof),
                    payload: d.payload,
                    trace_context: d.trace_context,
                }),
                Carried::Group(g) => {
                    packets.extend(g.packets.into_iter().map(|m| OutboundPacketView {
                        sequence: m.id.sequence,
                        proof: CarriedProof::Member {
                            id: m.id,
                            shared: g.shared.clone(),
                            path: m.path,
                            record: m.record,
                        },
                        payload: m.payload,
                        trace_context: m.trace_context,
                    }))
                }
            }
        }
        Ok(OutboundPage {
            packets,
            sent: page.sent,
            waiting_for_finality: page.waiting_for_finality,
        })
    }
}

/// The shard's answer to `POST /v1/packets/batch`.
#[derive(Debug, Deserialize)]
pub struct BatchAnswer {
    /// One per item.
    pub results: Vec<BatchItem>,
}

/// One item's answer.
#[derive(Debug, Deserialize)]
pub struct BatchItem {
    /// Its HTTP status.
    pub status: u16,
    /// Its problem, when refused.
    pub problem: Option<crate::Problem>,
}

/// The shard's erasures of records sent to one city.
#[derive(Debug, Deserialize)]
pub struct OutboundErasures {
    /// In height order.
    pub erasures: Vec<OutboundErasure>,
}

/// One erasure.
#[derive(Debug, Deserialize)]
pub struct OutboundErasure {
    /// The height that recorded it.
    pub height: u64,
    /// The record.
    pub record_id: urbis_core::hash::Hash32,
}

/// The shard's `GET /v1/state/{key}/proof` answer.
#[derive(Debug, Deserialize)]
pub struct StateProofView {
    /// `committed` or `final`.
    pub level: String,
    /// Whether the key is present.
    pub present: bool,
    /// The proof.
    pub proof: urbis_core::proof::ProofDocument,
}

/// The own shard's `POST /v1/packets/answers` body: the packets a delivery carried, the
/// relay's `traceparent` for each, and the destination's answers document as it came. The
/// answers are not read here: the shard reads them once. Written last, after every other
/// field, they cannot stand for those fields: the shard refuses a field named twice.
pub fn answers_handed_on(
    packets: &[PacketId],
    traces: &[Option<String>],
    answers: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + packets.len() * 160 + answers.len());
    // Writing plain data into memory does not fail.
    out.extend_from_slice(b"{\"packets\":");
    let _ = serde_json::to_writer(&mut out, packets);
    // Written always, even all `null`: answers that added a field of their own would then
    // name it twice, which the shard refuses.
    out.extend_from_slice(b",\"trace_contexts\":");
    let _ = serde_json::to_writer(&mut out, traces);
    out.extend_from_slice(b",\"answers\":");
    out.extend_from_slice(answers);
    out.push(b'}');
    out
}

/// The own shard's answer to `POST /v1/packets/answers`.
#[derive(Debug, Deserialize)]
pub struct AnswersSettled {
    /// One per packet.
    pub results: Vec<AnswerSettled>,
}

/// What became of one packet's answer.
#[derive(Debug, Deserialize)]
pub struct AnswerSettled {
    /// The destination's answer (`acknowledged`, `timed_out`, `pending`, `erased`, `refused`),
    /// or `unreadable`.
    pub answer: String,
    /// For `acknowledged` and `timed_out`: what settling it gave.
    #[serde(default)]
    pub settlement: Option<BatchItem>,
    /// For `pending` and `refused`: the destination's detail; for `unreadable`, why.
    #[serde(default)]
    pub detail: Option<String>,
    /// For `refused`: the destination shard's status.
    #[serde(default)]
    pub destination_status: Option<u16>,
}

/// The JSON of a packet proof's fields, each as its source shard wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    /// `sequence`.
    pub sequence: u64,
    /// `batch`.
    pub batch: &'a str,
    /// `batch_proof`.
    pub batch_proof: &'a str,
    /// `header`.
    pub header: &'a str,
    /// `finality`.
    pub finality: &'a str,
    /// `path`.
    pub path: &'a str,
    /// `record`.
    pub record: &'a str,
}

impl Parts<'_> {
    /// Whether the parts a group writes once fit a group
    /// (`urbis_core::packet::GROUP_SHARED_JSON_MAX`).
    fn fit_group(&self) -> bool {
        urbis_core::packet::check_group_shared(
            self.batch_proof.len() + self.header.len() + self.finality.len(),
        )
        .is_ok()
    }

    /// Whether two packets share the parts a group writes once, byte for byte (packets of
    /// one group share the very bytes).
    fn same_group(&self, other: &Parts<'_>) -> bool {
        fn same(a: &str, b: &str) -> bool {
            std::ptr::eq(a, b) || a == b
        }
        same(self.batch, other.batch)
            && same(self.header, other.header)
            && same(self.batch_proof, other.batch_proof)
            && same(self.finality, other.finality)
    }
}

/// Where a packet proof's JSON is: whole, as it came, or as its fields (at least one of the
/// two).
#[derive(Clone, Copy, Debug)]
pub struct ProofOut<'a> {
    /// The whole proof, when it came whole.
    pub whole: Option<&'a str>,
    /// Its fields, when it has all of them.
    pub parts: Option<Parts<'a>>,
}

impl ProofOut<'_> {
    /// The parts a group writes once, when there are all of them and they fit a group.
    fn group_parts(&self) -> Option<&Parts<'_>> {
        self.parts.as_ref().filter(|p| p.fit_group())
    }

    /// Writes the whole proof: as it came, or its fields in `PacketProof` order.
    fn write_whole(&self, out: &mut Vec<u8>) {
        match (self.whole, &self.parts) {
            (Some(whole), _) => out.extend_from_slice(whole.as_bytes()),
            (None, Some(p)) => {
                out.extend_from_slice(b"{\"sequence\":");
                // Writing a number into memory does not fail.
                let _ = serde_json::to_writer(&mut *out, &p.sequence);
                push_field(out, "batch", p.batch);
                push_field(out, "batch_proof", p.batch_proof);
                push_field(out, "path", p.path);
                push_field(out, "record", p.record);
                push_field(out, "header", p.header);
                push_field(out, "finality", p.finality);
                out.push(b'}');
            }
            (None, None) => out.extend_from_slice(b"null"),
        }
    }
}

/// One packet to write into a delivery or a shard batch, with what travels beside it.
#[derive(Debug)]
pub struct PacketOut<'a> {
    /// The packet's proof.
    pub proof: ProofOut<'a>,
    /// Its off-chain payload.
    pub payload: Option<&'a RawValue>,
    /// The writer's `traceparent` for it.
    pub trace_context: Option<&'a str>,
}

fn push_field(out: &mut Vec<u8>, name: &str, json: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(json.as_bytes());
}

/// `payload` and, when there is one, `trace_context`.
fn push_beside(out: &mut Vec<u8>, p: &PacketOut<'_>) {
    push_field(out, "payload", p.payload.map_or("null", RawValue::get));
    push_trace_context(out, p.trace_context);
}

/// `trace_context`, when there is one.
fn push_trace_context(out: &mut Vec<u8>, trace_context: Option<&str>) {
    if let Some(t) = trace_context {
        out.extend_from_slice(b",\"trace_context\":");
        // Writing a string into memory does not fail.
        let _ = serde_json::to_writer(&mut *out, t);
    }
}

/// Writes `packets` as items of a shard batch or an `urbis-bridge/2` delivery, separated by
/// commas, answered one result per packet in order. Each run of consecutive packets of one
/// source block (their `batch`, `batch_proof`, `header` and `finality` equal byte for byte) is
/// one `packets` group, which writes those once; a packet whose proof lacks one of them, or
/// whose shared parts are too large for a group, is an item of its own. The parts are copied
/// as the source shard wrote them.
fn write_items(out: &mut Vec<u8>, packets: &[PacketOut<'_>]) {
    let mut i = 0;
    while i < packets.len() {
        if i > 0 {
            out.push(b',');
        }
        let first = &packets[i];
        let Some(shared) = first.proof.group_parts() else {
            out.extend_from_slice(b"{\"type\":\"packet\",\"proof\":");
            first.proof.write_whole(out);
            push_beside(out, first);
            out.push(b'}');
            i += 1;
            continue;
        };
        out.extend_from_slice(b"{\"type\":\"packets\"");
        push_field(out, "batch", shared.batch);
        push_field(out, "batch_proof", shared.batch_proof);
        push_field(out, "header", shared.header);
        push_field(out, "finality", shared.finality);
        out.extend_from_slice(b",\"packets\":[");
        // The run: the packets from here of the same source block.
        let run = packets[i..].iter().map_while(|p| {
            p.proof.group_parts().filter(|own| own.same_group(shared)).map(|own| (p, own))
        });
        let mut k = 0;
        for (p, own) in run {
            if k > 0 {
                out.push(b',');
            }
            k += 1;
            out.extend_from_slice(b"{\"sequence\":");
            // Writing a number into memory does not fail.
            let _ = serde_json::to_writer(&mut *out, &own.sequence);
            push_field(out, "path", own.path);
            push_field(out, "record", own.record);
            push_beside(out, p);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        i += k;
    }
}

/// The shard's `POST /v1/packets/batch` body for packets to hand it, answered one result per
/// packet in order; packets of one source block go as a group (see [`write_items`]).
pub fn delivery_batch_body(packets: &[PacketOut<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + packets.len() * PACKET_JSON_BYTES / 3);
    out.extend_from_slice(b"{\"items\":[");
    write_items(&mut out, packets);
    out.extend_from_slice(b"]}");
    out
}

/// A delivery to a destination bridge: under `urbis-bridge/2` (`grouped`) its `items` are
/// written as a shard batch's are, packets of one source block as a group; under
/// `urbis-bridge/1` each packet is `{"proof", "payload", "trace_context"?}` with its whole
/// proof.
pub fn deliver_request(packets: &[PacketOut<'_>], grouped: bool) -> Vec<u8> {
    let per_packet = if grouped { PACKET_JSON_BYTES / 3 } else { PACKET_JSON_BYTES };
    let mut out = Vec::with_capacity(64 + packets.len() * per_packet);
    if grouped {
        out.extend_from_slice(b"{\"type\":\"deliver\",\"items\":[");
        write_items(&mut out, packets);
    } else {
        out.extend_from_slice(b"{\"type\":\"deliver\",\"packets\":[");
        for (k, p) in packets.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"proof\":");
            p.proof.write_whole(&mut out);
            push_beside(&mut out, p);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use urbis_core::packet::PacketProof;

    /// A real packet proof (city 0 to city 1, sequence 1, timeout height 7) as its source
    /// shard serializes it.
    fn packet_proof_json() -> (PacketProof, String) {
        let proof = urbis_core::testkit::first_packet(
            &urbis_core::testkit::Federation::new("wire", 2, 4),
            7,
        );
        let json = serde_json::to_string(&proof).unwrap();
        (proof, json)
    }

    const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// The packets of a delivery, in order.
    fn arrived(request: &Request) -> Vec<Arrived<'_>> {
        let Request::Deliver { items } = request else { panic!("not a delivery") };
        items.iter().flat_map(Carried::packets).collect()
    }

    /// A proof's JSON as a bridge writes it whole, read back.
    fn whole(proof: &ProofOut<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        proof.write_whole(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    /// A bridge passes a proof on byte for byte and names its packet from it: a delivery read
    /// tag first and written again, to the next bridge or into the shard's batch, carries the
    /// proof and payload exactly as the shard wrote them; read tag last (through the value
    /// fallback) it carries the same proof; a proof without the fields a bridge reads is
    /// refused.
    #[test]
    fn proofs_are_carried_as_written() {
        let (proof, json) = packet_proof_json();
        let payload = r#"{"salt":"00ff","bytes":"c0ffee"}"#;
        let delivery =
            format!(r#"{{"proof":{json},"payload":{payload},"trace_context":"{TRACE}"}}"#);
        let first = format!(r#"{{"type":"deliver","packets":[{delivery}]}}"#);
        let last = format!(r#"{{"packets":[{delivery}],"type":"deliver"}}"#);
        for (input, verbatim) in [(&first, true), (&last, false)] {
            let request: Request = serde_json::from_str(input).unwrap();
            let packets = arrived(&request);
            let carried = &packets[0];
            assert_eq!(
                carried.id,
                PacketId { source: CityId(0), destination: CityId(1), sequence: 1 }
            );
            assert_eq!(carried.timeout_height, 7);
            assert_eq!(
                serde_json::from_value::<PacketProof>(whole(&carried.proof)).unwrap(),
                proof
            );
            if !verbatim {
                // Through the fallback the proof is the same JSON value written again (checked
                // above: it reads back as the same proof), not necessarily the same bytes.
                continue;
            }
            let out = |trace_context: Option<&'static str>| PacketOut {
                proof: carried.proof,
                payload: carried.payload,
                trace_context,
            };
            assert_eq!(
                String::from_utf8(deliver_request(
                    &[out(carried.trace_context.map(|_| TRACE))],
                    false
                ))
                .unwrap(),
                first
            );
            fn part<T: Serialize>(v: &T) -> String {
                serde_json::to_string(v).unwrap()
            }
            assert_eq!(
                String::from_utf8(delivery_batch_body(&[out(None)])).unwrap(),
                format!(
                    r#"{{"items":[{{"type":"packets","batch":{},"batch_proof":{},"header":{},"finality":{},"packets":[{{"sequence":1,"path":{},"record":{},"payload":{payload}}}]}}]}}"#,
                    part(&proof.batch),
                    part(&proof.batch_proof),
                    part(&proof.header),
                    part(&proof.finality),
                    part(&proof.path),
                    part(&proof.record),
                )
            );
        }
        let headless = json.replacen(r#""sequence":1,"#, "", 1);
        assert_ne!(headless, json);
        let refused =
            format!(r#"{{"type":"deliver","packets":[{{"proof":{headless},"payload":null}}]}}"#);
        let error = serde_json::from_str::<Request>(&refused).unwrap_err().to_string();
        assert!(error.contains("sequence"), "{error}");
    }

    /// Five packets as a source shard serves them: two of one block, one of another, one
    /// proof without `path`, and one whose shared parts are too large for a group (white space
    /// inside its finality proof); the second carries a payload and a trace context.
    struct Sample {
        proofs: Vec<serde_json::Value>,
        carried: Vec<CarriedPacket>,
        payload: Option<Box<RawValue>>,
    }

    impl Sample {
        fn new() -> Sample {
            let (proof, _) = packet_proof_json();
            let mut second = proof.clone();
            second.sequence = 2;
            second.path.leaf_index = 1;
            let mut other_block = proof.clone();
            other_block.header.header.height += 1;
            let mut pathless = serde_json::to_value(&proof).unwrap();
            pathless.as_object_mut().unwrap().remove("path");
            let padding = " ".repeat(urbis_core::packet::GROUP_SHARED_JSON_MAX);
            let oversized = serde_json::to_string(&proof).unwrap().replacen(
                r#""finality":{"#,
                &format!(r#""finality":{{{padding}"#),
                1,
            );
            let texts = [
                serde_json::to_string(&proof).unwrap(),
                serde_json::to_string(&second).unwrap(),
                serde_json::to_string(&other_block).unwrap(),
                pathless.to_string(),
                oversized,
            ];
            Sample {
                proofs: texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect(),
                carried: texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect(),
                payload: Some(
                    RawValue::from_string(r#"{"salt":"00ff","bytes":"c0ffee"}"#.into()).unwrap(),
                ),
            }
        }

        fn outs(&self) -> Vec<PacketOut<'_>> {
            self.carried
                .iter()
                .enumerate()
                .map(|(i, c)| PacketOut {
                    proof: c.out(),
                    payload: if i == 1 { self.payload.as_deref() } else { None },
                    trace_context: (i == 1).then_some(TRACE),
                })
                .collect()
        }
    }

    /// Packets of one source block go to the shard as one group that writes the parts their
    /// proofs share once, and each reads back, with the group's parts, as its proof exactly;
    /// a packet of another block starts another group; a proof without all its fields, or
    /// with shared parts too large for a group, goes as an item of its own; payloads and trace
    /// contexts stay with their packets.
    #[test]
    fn packets_of_one_block_are_handed_to_the_shard_as_one_group() {
        let sample = Sample::new();
        assert!(sample.carried[3].parts.is_none());
        assert!(
            sample.carried[4].parts.is_some() && sample.carried[4].out().group_parts().is_none()
        );
        let body: serde_json::Value =
            serde_json::from_slice(&delivery_batch_body(&sample.outs())).unwrap();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{body}");
        let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["packets", "packets", "packet", "packet"]);
        // Each grouped packet, with its group's parts, is its proof.
        let mut read = Vec::new();
        for group in &items[..2] {
            for p in group["packets"].as_array().unwrap() {
                let mut whole = serde_json::Map::new();
                for field in ["batch", "batch_proof", "header", "finality"] {
                    whole.insert(field.into(), group[field].clone());
                }
                for field in ["sequence", "path", "record"] {
                    whole.insert(field.into(), p[field].clone());
                }
                read.push((serde_json::Value::Object(whole), p));
            }
        }
        assert_eq!(read.len(), 3);
        for (i, (got, p)) in read.iter().enumerate() {
            assert_eq!(got, &sample.proofs[i]);
            assert_eq!(p.get("trace_context").is_some(), i == 1, "{p}");
        }
        assert_eq!(read[1].1["payload"]["bytes"], "c0ffee");
        assert_eq!(read[1].1["trace_context"], TRACE);
        assert!(read[0].1["payload"].is_null());
        assert_eq!(items[2]["proof"], sample.proofs[3]);
        assert_eq!(items[3]["proof"], sample.proofs[4]);
    }

    /// Between bridges that speak `urbis-bridge/2`, a delivery carries packets of one block as
    /// a group; the destination reads it as the same packets, in order, with their proofs,
    /// payloads and trace contexts, and hands its shard the very batch the source's packets
    /// would have made. The same packets sent under `urbis-bridge/1` read the same. A group
    /// whose shared parts are too large, an empty group, and a delivery with both or neither
    /// form are refused.
    #[test]
    fn a_grouped_delivery_reads_back_as_its_packets() {
        let sample = Sample::new();
        let outs = sample.outs();
        let grouped = deliver_request(&outs, true);
        let single = deliver_request(&outs, false);
        assert!(grouped.len() < single.len());
        let direct = delivery_batch_body(&outs);
        for body in [&grouped, &single] {
            let request: Request = serde_json::from_slice(body).unwrap();
            let packets = arrived(&request);
            assert_eq!(packets.len(), 5);
            for (i, p) in packets.iter().enumerate() {
                let sequence = if i == 1 { 2 } else { 1 };
                assert_eq!(p.id, PacketId { source: CityId(0), destination: CityId(1), sequence });
                assert_eq!(p.timeout_height, 7);
                assert_eq!(whole(&p.proof), sample.proofs[i]);
                assert_eq!(p.payload.map(RawValue::get), outs[i].payload.map(RawValue::get));
                assert_eq!(p.trace_context, outs[i].trace_context);
            }
            let handed: Vec<PacketOut<'_>> = packets
                .iter()
                .map(|p| PacketOut {
                    proof: p.proof,
                    payload: p.payload,
                    trace_context: p.trace_context,
                })
                .collect();
            assert_eq!(delivery_batch_body(&handed), direct);
        }
        // A shard's grouped outbound page holds the same items, and reads as the same packets.
        let items = &grouped[r#"{"type":"deliver","items":"#.len()..grouped.len() - 1];
        let page = format!(
            r#"{{"items":{},"sent":9,"waiting_for_finality":null}}"#,
            std::str::from_utf8(items).unwrap()
        );
        let page: OutboundPage = serde_json::from_str(&page).unwrap();
        assert_eq!((page.packets.len(), page.sent), (5, 9));
        for (i, p) in page.packets.iter().enumerate() {
            assert_eq!(p.sequence, p.proof.id().sequence);
            assert_eq!(whole(&p.proof.out()), sample.proofs[i]);
            assert_eq!(p.payload.as_deref().map(RawValue::get), outs[i].payload.map(RawValue::get));
            assert_eq!(p.trace_context.as_deref(), outs[i].trace_context);
        }
        assert!(matches!(page.packets[1].proof, CarriedProof::Member { .. }));
        assert!(matches!(page.packets[4].proof, CarriedProof::Whole(_)));
        let Request::Deliver { items } = serde_json::from_slice(&grouped).unwrap() else {
            panic!("not a delivery")
        };
        let sizes: Vec<usize> = items.iter().map(Carried::len).collect();
        assert_eq!(sizes, [2, 1, 1, 1]);
        assert!(matches!(items[0], Carried::Group(_)) && matches!(items[3], Carried::One(_)));

        // The first group's shared parts padded past what a group may carry.
        let text = String::from_utf8(grouped).unwrap();
        let padding = " ".repeat(urbis_core::packet::GROUP_SHARED_JSON_MAX);
        let padded = text.replacen(r#""finality":{"#, &format!(r#""finality":{{{padding}"#), 1);
        let error = serde_json::from_str::<Request>(&padded).unwrap_err().to_string();
        assert!(error.contains("shared parts"), "{error}");
        let mut empty: serde_json::Value = serde_json::from_str(&text).unwrap();
        empty["items"][0]["packets"] = serde_json::json!([]);
        let error = serde_json::from_value::<Request>(empty).unwrap_err().to_string();
        assert!(error.contains("a group of 0 packets"), "{error}");
        // A group of more packets than a delivery may hold is refused as it is read.
        let mut large: serde_json::Value = serde_json::from_str(&text).unwrap();
        let member = large["items"][0]["packets"][0].clone();
        for n in [crate::OUTBOUND_BATCH_MAX, crate::OUTBOUND_BATCH_MAX + 1] {
            large["items"][0]["packets"] = serde_json::Value::Array(vec![member.clone(); n]);
            let read = serde_json::from_value::<Request>(large.clone());
            match read {
                Ok(Request::Deliver { items }) => {
                    assert_eq!(n, crate::OUTBOUND_BATCH_MAX);
                    assert_eq!(items[0].len(), n);
                }
                Err(e) => {
                    assert_eq!(n, crate::OUTBOUND_BATCH_MAX + 1);
                    assert!(e.to_string().contains("a group of 257 packets"), "{e}");
                }
                Ok(other) => panic!("{other:?}"),
            }
        }
        let both = text.replacen(r#""items":"#, r#""packets":[],"items":"#, 1);
        let error = serde_json::from_str::<Request>(&both).unwrap_err().to_string();
        assert!(error.contains("`packets` or `items`"), "{error}");
        assert!(serde_json::from_str::<Request>(r#"{"type":"deliver"}"#).is_err());
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    /// Shared parts of an acknowledgements answer (bridges never decode them: any JSON does).
    fn ack_shared(n: u64) -> Arc<AckShared> {
        Arc::new(AckShared {
            header: raw(&format!(r#"{{"header":{{"height":{n}}},"signature":"aa"}}"#)),
            finality: raw(&format!(r#"{{"beacon_header":{{"height":{n}}},"set_updates":[]}}"#)),
        })
    }

    fn part(shared: &Arc<AckShared>, i: u64) -> CarriedAck {
        CarriedAck::Part {
            shared: shared.clone(),
            acknowledgement: raw(r#""success""#),
            proof: raw(&format!(r#"{{"leaf":null,"siblings":["{i:02x}"]}}"#)),
        }
    }

    fn whole_ack(a: &CarriedAck) -> serde_json::Value {
        let mut out = Vec::new();
        a.write_whole(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    /// The destination shard's grouped acknowledgements answer reads as its proofs, each with
    /// the answer's header and finality; entries without a header are refused.
    #[test]
    fn a_shards_grouped_acknowledgements_read_as_their_proofs() {
        let answer = r#"{"header":{"h":1},"finality":{"f":2},"acknowledgements":[{"acknowledgement":"success","proof":{"s":3}},null]}"#;
        let group: AcknowledgementGroup = serde_json::from_str(answer).unwrap();
        assert_eq!(group.acknowledgements.len(), 2);
        assert_eq!(
            whole_ack(group.acknowledgements[0].as_ref().unwrap()),
            serde_json::json!({"acknowledgement": "success", "proof": {"s": 3}, "header": {"h": 1}, "finality": {"f": 2}})
        );
        assert!(group.acknowledgements[1].is_none());
        let none: AcknowledgementGroup = serde_json::from_str(
            r#"{"header":null,"finality":null,"acknowledgements":[null,null]}"#,
        )
        .unwrap();
        assert!(none.acknowledgements.iter().all(Option::is_none));
        let headless = answer.replacen(r#""header":{"h":1}"#, r#""header":null"#, 1);
        assert!(serde_json::from_str::<AcknowledgementGroup>(&headless).is_err());
    }

    /// Answers read back as written, under `urbis-bridge/2` with each answer's shared header
    /// and finality once and under `urbis-bridge/1` with each acknowledgement whole; a shared
    /// reference that names nothing, or comes without its acknowledgement, is refused.
    #[test]
    fn answers_read_back_as_written() {
        let (one, two) = (ack_shared(1), ack_shared(2));
        let answers = Answers {
            results: vec![
                Response::Acknowledged { proof: part(&one, 1) },
                Response::Pending { detail: "busy".into() },
                Response::Acknowledged { proof: part(&one, 2) },
                Response::Acknowledged { proof: part(&two, 3) },
                Response::Acknowledged { proof: CarriedAck::Whole(raw(r#"{"whole":true}"#)) },
                Response::TimedOut { proof: raw(r#"{"receipt_absence":{}}"#) },
                Response::Erased,
                Response::Refused { status: 422, detail: "no".into() },
            ],
        };
        let grouped = answers_body(&answers, true);
        let single = answers_body(&answers, false);
        let text = String::from_utf8(grouped.clone()).unwrap();
        assert!(text.starts_with(r#"{"shared":[{"header""#), "{text}");
        assert_eq!(text.matches(r#""set_updates""#).count(), 2, "{text}");
        assert!(!String::from_utf8(single.clone()).unwrap().contains(r#""shared""#));
        for body in [&grouped, &single] {
            let back: Answers = serde_json::from_slice(body).unwrap();
            let names: Vec<&str> = back.results.iter().map(Response::name).collect();
            let wanted: Vec<&str> = answers.results.iter().map(Response::name).collect();
            assert_eq!(names, wanted);
            for (got, want) in back.results.iter().zip(&answers.results) {
                match (got, want) {
                    (Response::Acknowledged { proof: g }, Response::Acknowledged { proof: w }) => {
                        assert_eq!(whole_ack(g), whole_ack(w))
                    }
                    (Response::TimedOut { proof: g }, Response::TimedOut { proof: w }) => {
                        assert_eq!(g.get(), w.get())
                    }
                    (Response::Refused { status: 422, detail }, Response::Refused { .. }) => {
                        assert_eq!(detail, "no")
                    }
                    (Response::Pending { detail }, _) => assert_eq!(detail, "busy"),
                    (Response::Erased, Response::Erased) => {}
                    other => panic!("{other:?}"),
                }
            }
            // Read grouped, the acknowledgements of one answer share their parts again.
            if body == &grouped {
                let shared = |i: usize| match &back.results[i] {
                    Response::Acknowledged { proof: CarriedAck::Part { shared, .. } } => {
                        shared.clone()
                    }
                    other => panic!("{other:?}"),
                };
                assert!(Arc::ptr_eq(&shared(0), &shared(2)));
                assert!(!Arc::ptr_eq(&shared(0), &shared(3)));
            }
        }
        let dangling = text.replacen(r#""shared":1"#, r#""shared":7"#, 1);
        assert_ne!(dangling, text);
        let error = serde_json::from_str::<Answers>(&dangling).unwrap_err().to_string();
        assert!(error.contains("numbered 7"), "{error}");
        // Shared parts larger than a group may carry are refused, not multiplied.
        let padding = " ".repeat(urbis_core::packet::GROUP_SHARED_JSON_MAX);
        let padded = text.replacen(r#""finality":{"#, &format!(r#""finality":{{{padding}"#), 1);
        assert_ne!(padded, text);
        let error = serde_json::from_str::<Answers>(&padded).unwrap_err().to_string();
        assert!(error.contains("shared parts"), "{error}");
        let alone = r#"{"results":[{"type":"acknowledged","shared":0,"proof":{}}]}"#;
        assert!(serde_json::from_str::<Answers>(alone).is_err());
        let last: ResponseIn =
            serde_json::from_str(r#"{"status":409,"detail":"d","type":"refused"}"#).unwrap();
        assert!(matches!(
            last,
            ResponseIn::Ready(Response::Refused { status: 409, ref detail }) if detail == "d"
        ));
        assert!(serde_json::from_str::<ResponseIn>(r#"{"type":"accepted"}"#).is_err());
        assert!(serde_json::from_str::<ResponseIn>(r#"{"type":"refused","status":409}"#).is_err());
        for grouped in [true, false] {
            let request: Request = serde_json::from_slice(&deliver_request(&[], grouped)).unwrap();
            assert!(matches!(request, Request::Deliver { ref items } if items.is_empty()));
        }
    }

    /// The destination's answers go to the own shard as they came, after the packets they
    /// answer and the relay's trace contexts (written always).
    #[test]
    fn answers_are_handed_on_as_they_came_with_the_packets_they_answer() {
        let ids: Vec<PacketId> = (1..=3)
            .map(|sequence| PacketId { source: CityId(0), destination: CityId(1), sequence })
            .collect();
        let answers = br#"{"shared":[{"header":{"h":1},"finality":{"f":2}}],"results":[{"type":"pending","detail":"not final"},{"type":"acknowledged","shared":0,"acknowledgement":"success","proof":{"p":[1,2]}},{"type":"erased"}]}"#;
        let traces = [None, Some(TRACE.to_string()), None];
        let body: serde_json::Value =
            serde_json::from_slice(&answers_handed_on(&ids, &traces, answers)).unwrap();
        assert_eq!(body["packets"], serde_json::to_value(&ids).unwrap());
        assert_eq!(body["trace_contexts"], serde_json::json!([null, TRACE, null]));
        assert_eq!(body["answers"], serde_json::from_slice::<serde_json::Value>(answers).unwrap());
        // Trace contexts are written even when there is none, so that answers cannot add them.
        let quiet: serde_json::Value =
            serde_json::from_slice(&answers_handed_on(&ids, &[None, None, None], answers)).unwrap();
        assert_eq!(quiet["trace_contexts"], serde_json::json!([null, null, null]), "{quiet}");
        assert_eq!(quiet["answers"], body["answers"]);
        // The bytes are not rewritten: the shard reads the very document the destination sent.
        let written = answers_handed_on(&ids, &traces, answers);
        assert!(written.windows(answers.len()).any(|w| w == answers));
    }
}
