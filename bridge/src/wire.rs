//! What bridges say to each other over QUIC (JSON, one request and one response per
//! bidirectional stream), and the parts of the shard API a bridge reads.

use serde::{Deserialize, Serialize};
use urbis_core::packet::{AcknowledgementProof, PacketId, PacketProof, TimeoutProof};

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
            "acknowledged" => Response::Acknowledged {
                proof: Proof::<AcknowledgementProof>::deserialize(rest)?.proof,
            },
            "timed_out" => {
                Response::TimedOut { proof: Proof::<TimeoutProof>::deserialize(rest)?.proof }
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

/// One packet with what travels beside it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// The packet with its proof chain.
    pub proof: PacketProof,
    /// The off-chain payload of a credit or talent packet (`{salt, bytes}`, hex).
    pub payload: Option<serde_json::Value>,
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
        /// The acknowledgement with its proof chain.
        proof: AcknowledgementProof,
    },
    /// The destination shard refused the packet as timed out; the receipt's absence is proven.
    TimedOut {
        /// The timeout proof.
        proof: TimeoutProof,
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
    pub proof: PacketProof,
    /// The off-chain payload, if any.
    pub payload: Option<serde_json::Value>,
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

/// The shard's answer to "where is my packet" (what a bridge reads of it).
#[derive(Debug, Deserialize)]
pub struct PacketStatus {
    /// The state name.
    pub state: String,
    /// At the destination once final.
    pub acknowledgement_proof: Option<AcknowledgementProof>,
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
    /// One per packet asked about.
    pub acknowledgements: Vec<Option<AcknowledgementProof>>,
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
        proof: &'a PacketProof,
        /// Its off-chain payload.
        payload: &'a Option<serde_json::Value>,
        /// The relay's `traceparent`.
        trace_context: Option<String>,
    },
    /// The destination's acknowledgement of a packet the shard's city sent.
    Acknowledgement {
        /// The packet.
        packet: &'a PacketId,
        /// The acknowledgement and its proof chain.
        proof: &'a AcknowledgementProof,
        /// The relay's `traceparent`.
        trace_context: &'a Option<String>,
    },
    /// The proof that a packet the shard's city sent timed out unreceived.
    Timeout {
        /// The packet.
        packet: &'a PacketId,
        /// The receipt's absence and its proof chain.
        proof: &'a TimeoutProof,
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
