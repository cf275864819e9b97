//! What bridges say to each other over QUIC (JSON, one request and one response per
//! bidirectional stream), and the parts of the shard API a bridge reads.

use serde::{Deserialize, Serialize};
use urbis_core::packet::{AcknowledgementProof, PacketId, PacketProof, TimeoutProof};

/// A source bridge's request to a destination bridge.
#[derive(Debug, Serialize, Deserialize)]
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
#[derive(Debug, Serialize, Deserialize)]
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
