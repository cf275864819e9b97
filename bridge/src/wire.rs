//! What bridges say to each other over QUIC (JSON, one request and one response per
//! bidirectional stream), and the parts of the shard API a bridge reads.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use urbis_core::packet::PacketId;
use urbis_core::record::CityId;

/// About the most JSON one packet with its proof chain takes (a hint for buffers, not a
/// limit): its proof is about 3.7 KB, with its payload and trace context beside it.
pub const PACKET_JSON_BYTES: usize = 5 << 10;
/// About the most JSON one answer with an acknowledgement or timeout proof takes (a hint).
pub const ANSWER_JSON_BYTES: usize = 3 << 10;

/// A source bridge's request to a destination bridge.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Hand these packets to your shard and answer each with its final acknowledgement.
    Deliver {
        /// The packets, at most 256.
        packets: Vec<Delivery>,
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

// Both enums are read tag first (`urbis_ops::tagged`): a batch of proofs is not buffered into
// a value tree before it is read. The JSON is what the derived form reads and writes.

impl urbis_ops::tagged::TagFirst for Request {
    const EXPECTING: &'static str = "a bridge request";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Deliver {
            packets: Vec<Delivery>,
        }
        #[derive(Deserialize)]
        struct Erase {
            source: String,
            record_id: urbis_core::hash::Hash32,
            proof: Box<urbis_core::proof::ProofDocument>,
        }
        Ok(match tag {
            "deliver" => Request::Deliver { packets: Deliver::deserialize(rest)?.packets },
            "erase" => {
                let e = Erase::deserialize(rest)?;
                Request::Erase { source: e.source, record_id: e.record_id, proof: e.proof }
            }
            other => return Err(serde::de::Error::unknown_variant(other, &["deliver", "erase"])),
        })
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
}

impl urbis_ops::tagged::TagFirst for Response {
    const EXPECTING: &'static str = "a bridge answer";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Proof<P> {
            proof: P,
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
        Ok(match tag {
            "acknowledged" => {
                Response::Acknowledged { proof: Proof::<Box<RawValue>>::deserialize(rest)?.proof }
            }
            "timed_out" => {
                Response::TimedOut { proof: Proof::<Box<RawValue>>::deserialize(rest)?.proof }
            }
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
        })
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
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
    /// The JSON of one part of the proof.
    pub fn part(&self, range: &std::ops::Range<usize>) -> &str {
        &self.json.get()[range.clone()]
    }

    /// The parts a group writes once, when there are all of them and they fit a group
    /// (`urbis_core::packet::GROUP_SHARED_JSON_MAX`).
    pub fn group_parts(&self) -> Option<&ProofParts> {
        let p = self.parts.as_ref()?;
        let shared = p.batch_proof.len() + p.header.len() + p.finality.len();
        (shared <= urbis_core::packet::GROUP_SHARED_JSON_MAX).then_some(p)
    }

    /// Whether two packets share the parts a group writes once (byte for byte).
    pub fn same_group(&self, other: &CarriedPacket) -> bool {
        match (self.group_parts(), other.group_parts()) {
            (Some(a), Some(b)) => {
                self.part(&a.batch) == other.part(&b.batch)
                    && self.part(&a.header) == other.part(&b.header)
                    && self.part(&a.batch_proof) == other.part(&b.batch_proof)
                    && self.part(&a.finality) == other.part(&b.finality)
            }
            _ => false,
        }
    }
}

impl Serialize for CarriedPacket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
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
        #[derive(Deserialize)]
        struct Batch {
            timeout_height: u64,
        }
        #[derive(Deserialize)]
        struct Record {
            city: CityId,
            destination: Option<CityId>,
        }
        let custom = serde::de::Error::custom;
        let json = Box::<RawValue>::deserialize(d)?;
        let text = json.get();
        let f: Fields<'_> = serde_json::from_str(text).map_err(custom)?;
        let batch: Batch = serde_json::from_str(f.batch.get()).map_err(custom)?;
        let record: Record = serde_json::from_str(f.record.get()).map_err(custom)?;
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
        let source = record.city;
        Ok(CarriedPacket {
            id: PacketId {
                source,
                destination: record.destination.unwrap_or(source),
                sequence: f.sequence,
            },
            timeout_height: batch.timeout_height,
            parts,
            json,
        })
    }
}

/// One packet with what travels beside it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// The packet with its proof chain.
    pub proof: CarriedPacket,
    /// The off-chain payload of a credit or talent packet (`{salt, bytes}`, hex), as the
    /// source shard wrote it.
    pub payload: Option<Box<RawValue>>,
    /// The W3C `traceparent` of the source bridge's span for this packet. Not authenticated
    /// and never checked: it only links spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<String>,
}

/// The answers to a request, one per packet in request order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answers {
    /// One per packet.
    pub results: Vec<Response>,
}

/// A destination bridge's answer.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The destination shard received the packet; its acknowledgement is final.
    Acknowledged {
        /// The acknowledgement with its proof chain (an `AcknowledgementProof`, as the
        /// destination shard wrote it).
        proof: Box<RawValue>,
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

/// One outbound packet as the shard serves it.
#[derive(Debug, Deserialize)]
pub struct OutboundPacketView {
    /// Sequence.
    pub sequence: u64,
    /// The packet with its proof chain.
    pub proof: CarriedPacket,
    /// The off-chain payload, if any.
    pub payload: Option<Box<RawValue>>,
    /// The trace context of the submission that made the packet, if the shard kept it.
    #[serde(default)]
    pub trace_context: Option<String>,
}

/// A page of the shard's unsettled outbound packets.
#[derive(Debug, Deserialize)]
pub struct OutboundPage {
    /// Final unsettled packets.
    pub packets: Vec<OutboundPacketView>,
    /// Packets sent on the channel so far.
    pub sent: u64,
    /// The first unsettled sequence not yet final.
    pub waiting_for_finality: Option<u64>,
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

/// The shard's answer to `POST /v1/packets/acknowledgements`.
#[derive(Debug, Deserialize)]
pub struct Acknowledgements {
    /// One per packet asked about (`AcknowledgementProof`s, as the shard wrote them).
    pub acknowledgements: Vec<Option<Box<RawValue>>>,
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

/// One item of the shard's `POST /v1/packets/batch`, borrowing what it carries: written
/// straight from the parsed proofs, without building a JSON value tree of each first.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BatchItemOut<'a> {
    /// The destination's acknowledgement of a packet the shard's city sent.
    Acknowledgement {
        /// The packet.
        packet: &'a PacketId,
        /// The acknowledgement and its proof chain.
        proof: &'a RawValue,
        /// The relay's `traceparent`.
        trace_context: &'a Option<String>,
    },
    /// The proof that a packet the shard's city sent timed out unreceived.
    Timeout {
        /// The packet.
        packet: &'a PacketId,
        /// The receipt's absence and its proof chain.
        proof: &'a RawValue,
        /// The relay's `traceparent`.
        trace_context: &'a Option<String>,
    },
}

/// A packet to hand the own shard, with what travels beside it.
#[derive(Debug)]
pub struct DeliveryOut<'a> {
    /// The packet and its proof chain.
    pub proof: &'a CarriedPacket,
    /// Its off-chain payload.
    pub payload: &'a Option<Box<RawValue>>,
    /// The relay's `traceparent`.
    pub trace_context: Option<String>,
}

/// The shard's `POST /v1/packets/batch` body for packets to hand it, answered one result per
/// packet in order. Each run of consecutive packets of one source block (their `batch`,
/// `batch_proof`, `header` and `finality` equal byte for byte) is one `packets` group, which
/// writes those once; a packet whose proof lacks one of them is an item of its own. The parts
/// are copied as the source shard wrote them. Packets whose shared parts are too large for a
/// group go as items of their own too.
pub fn delivery_batch_body(packets: &[DeliveryOut<'_>]) -> Vec<u8> {
    fn push_raw(out: &mut Vec<u8>, name: &str, json: &str) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(json.as_bytes());
    }
    fn push_beside(out: &mut Vec<u8>, p: &DeliveryOut<'_>) {
        push_raw(out, "payload", p.payload.as_deref().map_or("null", RawValue::get));
        if let Some(t) = &p.trace_context {
            out.extend_from_slice(b",\"trace_context\":");
            // Writing a string into memory does not fail.
            let _ = serde_json::to_writer(&mut *out, t);
        }
    }
    let mut out = Vec::with_capacity(64 + packets.len() * PACKET_JSON_BYTES / 3);
    out.extend_from_slice(b"{\"items\":[");
    let mut i = 0;
    while i < packets.len() {
        if i > 0 {
            out.push(b',');
        }
        let first = &packets[i];
        let Some(parts) = first.proof.group_parts() else {
            out.extend_from_slice(b"{\"type\":\"packet\"");
            push_raw(&mut out, "proof", first.proof.json.get());
            push_beside(&mut out, first);
            out.push(b'}');
            i += 1;
            continue;
        };
        let end = i + packets[i..].iter().take_while(|p| p.proof.same_group(first.proof)).count();
        out.extend_from_slice(b"{\"type\":\"packets\"");
        push_raw(&mut out, "batch", first.proof.part(&parts.batch));
        push_raw(&mut out, "batch_proof", first.proof.part(&parts.batch_proof));
        push_raw(&mut out, "header", first.proof.part(&parts.header));
        push_raw(&mut out, "finality", first.proof.part(&parts.finality));
        out.extend_from_slice(b",\"packets\":[");
        for (k, p) in packets[i..end].iter().enumerate() {
            // In the run, so its parts are there.
            let Some(own) = &p.proof.parts else { continue };
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"sequence\":");
            // Writing a number into memory does not fail.
            let _ = serde_json::to_writer(&mut out, &p.proof.id.sequence);
            push_raw(&mut out, "path", p.proof.part(&own.path));
            push_raw(&mut out, "record", p.proof.part(&own.record));
            push_beside(&mut out, p);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        i = end;
    }
    out.extend_from_slice(b"]}");
    out
}

/// The shard's `POST /v1/packets/batch` body.
#[derive(Debug, Serialize)]
pub struct BatchRequestOut<'a> {
    /// The items, answered in order.
    pub items: Vec<BatchItemOut<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real packet proof (city 0 to city 1, sequence 1, timeout height 7) as its source
    /// shard serializes it.
    fn packet_proof_json() -> (urbis_core::packet::PacketProof, String) {
        let proof = urbis_core::testkit::first_packet(
            &urbis_core::testkit::Federation::new("wire", 2, 4),
            7,
        );
        let json = serde_json::to_string(&proof).unwrap();
        (proof, json)
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
        let delivery = format!(
            r#"{{"proof":{json},"payload":{payload},"trace_context":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}"#
        );
        let first = format!(r#"{{"type":"deliver","packets":[{delivery}]}}"#);
        let last = format!(r#"{{"packets":[{delivery}],"type":"deliver"}}"#);
        for (input, verbatim) in [(&first, true), (&last, false)] {
            let request: Request = serde_json::from_str(input).unwrap();
            let Request::Deliver { packets } = &request else { panic!("not a delivery") };
            let carried = &packets[0].proof;
            assert_eq!(
                carried.id,
                PacketId { source: CityId(0), destination: CityId(1), sequence: 1 }
            );
            assert_eq!(carried.timeout_height, 7);
            let back: urbis_core::packet::PacketProof =
                serde_json::from_str(carried.json.get()).unwrap();
            assert_eq!(back, proof);
            if !verbatim {
                // Through the fallback the proof is the same JSON value written again (checked
                // above: it reads back as the same proof), not necessarily the same bytes.
                continue;
            }
            assert_eq!(serde_json::to_string(&request).unwrap(), first);
            let out =
                DeliveryOut { proof: carried, payload: &packets[0].payload, trace_context: None };
            fn part<T: Serialize>(v: &T) -> String {
                serde_json::to_string(v).unwrap()
            }
            assert_eq!(
                String::from_utf8(delivery_batch_body(&[out])).unwrap(),
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

    /// Packets of one source block go to the shard as one group that writes the parts their
    /// proofs share once, and each reads back, with the group's parts, as its proof exactly;
    /// a packet of another block starts another group; a proof without all its fields, or
    /// with shared parts too large for a group, goes as an item of its own; payloads and trace
    /// contexts stay with their packets.
    #[test]
    fn packets_of_one_block_are_handed_to_the_shard_as_one_group() {
        use urbis_core::packet::PacketProof;
        let (proof, _) = packet_proof_json();
        let mut second = proof.clone();
        second.sequence = 2;
        second.path.leaf_index = 1;
        let mut other_block = proof.clone();
        other_block.header.header.height += 1;
        let mut pathless = serde_json::to_value(&proof).unwrap();
        pathless.as_object_mut().unwrap().remove("path");
        // Shared parts larger than a group may carry (white space inside its finality proof).
        let oversized = serde_json::to_string(&proof).unwrap().replacen(
            r#""finality":{"#,
            &format!(r#""finality":{{{}"#, " ".repeat(urbis_core::packet::GROUP_SHARED_JSON_MAX)),
            1,
        );
        let texts = [
            serde_json::to_string(&proof).unwrap(),
            serde_json::to_string(&second).unwrap(),
            serde_json::to_string(&other_block).unwrap(),
            pathless.to_string(),
            oversized,
        ];
        let carried: Vec<CarriedPacket> =
            texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
        assert!(carried[3].parts.is_none());
        assert!(carried[4].parts.is_some() && carried[4].group_parts().is_none());
        let payload: Option<Box<RawValue>> =
            Some(RawValue::from_string(r#"{"salt":"00ff","bytes":"c0ffee"}"#.into()).unwrap());
        let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let outs: Vec<DeliveryOut<'_>> = carried
            .iter()
            .enumerate()
            .map(|(i, c)| DeliveryOut {
                proof: c,
                payload: if i == 1 { &payload } else { &None },
                trace_context: (i == 1).then(|| trace.to_string()),
            })
            .collect();
        let body: serde_json::Value = serde_json::from_slice(&delivery_batch_body(&outs)).unwrap();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{body}");
        let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["packets", "packets", "packet", "packet"]);
        assert_eq!(
            serde_json::from_value::<PacketProof>(items[3]["proof"].clone()).unwrap(),
            proof
        );
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
                read.push((serde_json::from_value::<PacketProof>(whole.into()).unwrap(), p));
            }
        }
        let expected = [&proof, &second, &other_block];
        assert_eq!(read.len(), 3);
        for ((got, p), want) in read.iter().zip(expected) {
            assert_eq!(got, want);
            assert_eq!(p.get("trace_context").is_some(), got.sequence == 2, "{p}");
        }
        assert_eq!(read[1].1["payload"]["bytes"], "c0ffee");
        assert_eq!(read[1].1["trace_context"], trace);
        assert!(read[0].1["payload"].is_null());
        assert_eq!(items[2]["proof"], pathless);
    }

    /// Answers and requests read back as written, with the tag first or last; an unknown
    /// variant and a missing field are refused. (Proof-carrying variants are read by the
    /// bridges of the packet tests, end to end.)
    #[test]
    fn requests_and_answers_read_back_as_written() {
        let answers = Answers {
            results: vec![
                Response::Pending { detail: "busy".into() },
                Response::Erased,
                Response::Refused { status: 422, detail: "no".into() },
            ],
        };
        let json = serde_json::to_string(&answers).unwrap();
        assert!(json.contains(r#"{"type":"pending","detail":"busy"}"#), "{json}");
        let back: Answers = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let last: Response =
            serde_json::from_str(r#"{"status":409,"detail":"d","type":"refused"}"#).unwrap();
        assert!(matches!(last, Response::Refused { status: 409, ref detail } if detail == "d"));
        assert!(serde_json::from_str::<Response>(r#"{"type":"accepted"}"#).is_err());
        assert!(serde_json::from_str::<Response>(r#"{"type":"refused","status":409}"#).is_err());
        let request: Request = serde_json::from_str(
            &serde_json::to_string(&Request::Deliver { packets: vec![] }).unwrap(),
        )
        .unwrap();
        assert!(matches!(request, Request::Deliver { ref packets } if packets.is_empty()));
        assert!(serde_json::from_str::<Request>(r#"{"type":"deliver"}"#).is_err());
    }
}
