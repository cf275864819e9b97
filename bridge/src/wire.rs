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
}

impl Serialize for CarriedPacket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CarriedPacket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The fields of a `PacketProof` a bridge reads; the others are skipped unread.
        #[derive(Deserialize)]
        struct Head {
            sequence: u64,
            batch: Batch,
            record: Record,
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
        let json = Box::<RawValue>::deserialize(d)?;
        let head: Head = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        let source = head.record.city;
        Ok(CarriedPacket {
            json,
            id: PacketId {
                source,
                destination: head.record.destination.unwrap_or(source),
                sequence: head.sequence,
            },
            timeout_height: head.batch.timeout_height,
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
    /// A packet addressed to the shard's city.
    Packet {
        /// The packet and its proof chain.
        proof: &'a RawValue,
        /// Its off-chain payload.
        payload: &'a Option<Box<RawValue>>,
        /// The relay's `traceparent`.
        trace_context: Option<String>,
    },
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
            let item = BatchItemOut::Packet {
                proof: &carried.json,
                payload: &packets[0].payload,
                trace_context: None,
            };
            assert_eq!(
                serde_json::to_string(&item).unwrap(),
                format!(
                    r#"{{"type":"packet","proof":{json},"payload":{payload},"trace_context":null}}"#
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
