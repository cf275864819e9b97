//! Packets between cities: the public `POST /v1/packets` through which any relay hands this
//! shard a packet, an acknowledgement or a timeout (the proof is the authorization), what a
//! relay reads (outbound packets with proofs, acknowledgement and timeout proofs), where a
//! packet is, and capital totals.

use super::problem::Problem;
use super::{ApiResult, AppState, body_bytes, finality, internal, json_body, json_problem};
use crate::ledger::{PacketOp, Rejection};
use crate::sealer::{Outcome, Submission};
use crate::store::StoredPayload;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use urbis_core::encoding::{decode, encode};
use urbis_core::hash::Hash32;
use urbis_core::header::SignedShardHeader;
use urbis_core::merkle::{Blake3Tree, InclusionProof, PerfectSubtrees, root_from_leaf_hashes};
use urbis_core::packet::{
    Acknowledgement, AcknowledgementParts, AcknowledgementProof, OutboundBatch, OutboundPacket,
    PacketError, PacketId, PacketOutcome, PacketParts, PacketProof, Receipt, Settlements,
    TimeoutProof, verify_timeout,
};
use urbis_core::proof::{FinalityProof, StateFactProof};
use urbis_core::record::{CityId, PayloadCommitment, RecordBody, TalentPayload};
use urbis_core::state::{StateKey, StateProof};
use utoipa::{IntoParams, ToSchema};

/// Most packets per outbound page.
const OUTBOUND_PAGE_MAX: usize = 256;

/// An off-chain payload travelling beside a credit or talent packet.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CarriedPayload {
    /// The commitment's 32-byte salt, hex.
    #[schema(value_type = String)]
    pub salt: Hash32,
    /// The payload bytes, hex.
    pub bytes: String,
}

/// What a relay hands the shard.
#[derive(Debug, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PacketRequest {
    /// A packet addressed to this city.
    Packet {
        /// The packet and its proof chain.
        #[schema(value_type = Object)]
        proof: Box<PacketProof>,
        /// The off-chain payload of a credit or talent packet.
        payload: Option<CarriedPayload>,
        /// The W3C `traceparent` of the relay's span, continuing the packet's trace. Not
        /// authenticated and never checked: it only links spans.
        #[serde(default)]
        trace_context: Option<String>,
    },
    /// The destination's acknowledgement of a packet this city sent.
    Acknowledgement {
        /// The destination's acknowledgement and its proof chain.
        #[schema(value_type = Object)]
        proof: Box<AcknowledgementProof>,
        /// The packet.
        #[schema(value_type = Object)]
        packet: PacketId,
        /// The W3C `traceparent` of the relay's span, continuing the packet's trace. Not
        /// authenticated and never checked: it only links spans.
        #[serde(default)]
        trace_context: Option<String>,
    },
    /// Proof that a packet this city sent timed out unreceived.
    Timeout {
        /// The receipt's absence and its proof chain.
        #[schema(value_type = Object)]
        proof: Box<TimeoutProof>,
        /// The packet.
        #[schema(value_type = Object)]
        packet: PacketId,
        /// The W3C `traceparent` of the relay's span, continuing the packet's trace. Not
        /// authenticated and never checked: it only links spans.
        #[serde(default)]
        trace_context: Option<String>,
    },
}

// Read tag first (`urbis_ops::tagged`): a batch of proofs is not buffered into a value tree
// before it is read. The JSON accepted is what the derived form (and the schema) describe.
impl urbis_ops::tagged::TagFirst for PacketRequest {
    const EXPECTING: &'static str = "a packet, acknowledgement or timeout";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Packet {
            proof: Box<PacketProof>,
            payload: Option<CarriedPayload>,
            #[serde(default)]
            trace_context: Option<String>,
        }
        #[derive(Deserialize)]
        struct Settle<P> {
            proof: Box<P>,
            packet: PacketId,
            #[serde(default)]
            trace_context: Option<String>,
        }
        Ok(match tag {
            "packet" => {
                let p = Packet::deserialize(rest)?;
                PacketRequest::Packet {
                    proof: p.proof,
                    payload: p.payload,
                    trace_context: p.trace_context,
                }
            }
            "acknowledgement" => {
                let a = Settle::<AcknowledgementProof>::deserialize(rest)?;
                PacketRequest::Acknowledgement {
                    proof: a.proof,
                    packet: a.packet,
                    trace_context: a.trace_context,
                }
            }
            "timeout" => {
                let t = Settle::<TimeoutProof>::deserialize(rest)?;
                PacketRequest::Timeout {
                    proof: t.proof,
                    packet: t.packet,
                    trace_context: t.trace_context,
                }
            }
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["packet", "acknowledgement", "timeout"],
                ));
            }
        })
    }
}

impl<'de> Deserialize<'de> for PacketRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
}

impl PacketRequest {
    /// A span for handling this item: `receive packet` for a packet, `settle packet` for an
    /// acknowledgement or a timeout, continuing the trace the relay passed on (or a child of
    /// the request's span).
    fn span(&self, app: &AppState) -> tracing::Span {
        match self {
            PacketRequest::Packet { proof, trace_context, .. } => {
                receive_span(app, proof.record.city, proof.sequence, trace_context.as_deref())
            }
            PacketRequest::Acknowledgement { packet, trace_context, .. }
            | PacketRequest::Timeout { packet, trace_context, .. } => {
                settle_span(app, packet, trace_context.as_deref())
            }
        }
    }
}

/// The span of receiving packet `sequence` from `source`, continuing `trace` when it reads.
fn receive_span(
    app: &AppState,
    source: CityId,
    sequence: u64,
    trace: Option<&str>,
) -> tracing::Span {
    continued(
        tracing::info_span!(
            "receive packet",
            urbis.role = "shard",
            urbis.city = %city_label(app, app.city),
            packet.source = %city_label(app, source),
            packet.sequence = sequence,
            packet.status = tracing::field::Empty,
        ),
        trace,
    )
}

/// The span of settling `packet`, continuing `trace` when it reads.
fn settle_span(app: &AppState, packet: &PacketId, trace: Option<&str>) -> tracing::Span {
    continued(
        tracing::info_span!(
            "settle packet",
            urbis.role = "shard",
            urbis.city = %city_label(app, app.city),
            packet.destination = %city_label(app, packet.destination),
            packet.sequence = packet.sequence,
            packet.status = tracing::field::Empty,
        ),
        trace,
    )
}

/// `span`, continuing the relay's `trace` when there is one.
fn continued(span: tracing::Span, trace: Option<&str>) -> tracing::Span {
    if let Some(t) = trace {
        urbis_ops::telemetry::set_remote_parent(&span, t);
    }
    span
}

/// An item of a batch as read: whole, or a member of a group. A member is checked with its
/// group's shared parts in place, so a group's hundreds of members never hold copies of the
/// same header and finality proof.
#[derive(Debug)]
pub(super) enum BatchItem {
    Whole(PacketRequest),
    Packet(Arc<BlockShared>, GroupedPacket),
    Acknowledgement(Arc<AcknowledgementGroupShared>, GroupedAcknowledgement),
}

/// What the packets one source block sent on a channel share: the block's batch on the
/// channel with its state proof, the block's header and its finality proof. A [`PacketGroup`]
/// carries them once; so does an outbound page for each of its blocks.
#[derive(Debug)]
pub(super) struct BlockShared {
    batch: OutboundBatch,
    batch_proof: StateProof,
    header: SignedShardHeader,
    finality: FinalityProof,
}

impl BlockShared {
    /// Packet `p`'s proof: its own sequence, path and record with these parts, in place.
    fn parts<'a>(&'a self, p: &'a GroupedPacket) -> PacketParts<'a> {
        PacketParts {
            sequence: p.sequence,
            batch: &self.batch,
            batch_proof: &self.batch_proof,
            path: &p.path,
            record: &p.record,
            header: &self.header,
            finality: &self.finality,
        }
    }

    /// Packet `sequence`'s whole proof: these parts with its own path and record (the page's
    /// test form).
    #[cfg(test)]
    fn packet_proof(
        &self,
        sequence: u64,
        path: InclusionProof,
        record: urbis_core::record::Record,
    ) -> PacketProof {
        PacketProof {
            sequence,
            batch: self.batch,
            batch_proof: self.batch_proof.clone(),
            path,
            record,
            header: self.header.clone(),
            finality: self.finality.clone(),
        }
    }
}

/// What the acknowledgements of an [`AcknowledgementGroup`] share.
#[derive(Debug)]
pub(super) struct AcknowledgementGroupShared {
    pub(super) header: SignedShardHeader,
    pub(super) finality: FinalityProof,
}

impl AcknowledgementGroupShared {
    /// Member `a`'s proof: its own acknowledgement and path with these parts, in place.
    fn parts<'a>(&'a self, a: &'a GroupedAcknowledgement) -> AcknowledgementParts<'a> {
        AcknowledgementParts {
            acknowledgement: a.acknowledgement,
            proof: &a.proof,
            header: &self.header,
            finality: &self.finality,
        }
    }
}

impl BatchItem {
    /// The item as `POST /v1/packets` would take it (the test form: the shard checks a
    /// group's members with the group's parts in place, `check_item`).
    #[cfg(test)]
    fn whole(self) -> PacketRequest {
        match self {
            BatchItem::Whole(r) => r,
            BatchItem::Packet(g, p) => PacketRequest::Packet {
                proof: Box::new(g.packet_proof(p.sequence, p.path, p.record)),
                payload: p.payload,
                trace_context: p.trace_context,
            },
            BatchItem::Acknowledgement(g, a) => PacketRequest::Acknowledgement {
                proof: Box::new(AcknowledgementProof {
                    acknowledgement: a.acknowledgement,
                    proof: a.proof,
                    header: g.header.clone(),
                    finality: g.finality.clone(),
                }),
                packet: a.packet,
                trace_context: a.trace_context,
            },
        }
    }

    /// [`PacketRequest::span`] of the item.
    fn span(&self, app: &AppState) -> tracing::Span {
        match self {
            BatchItem::Whole(r) => r.span(app),
            BatchItem::Packet(_, p) => {
                receive_span(app, p.record.city, p.sequence, p.trace_context.as_deref())
            }
            BatchItem::Acknowledgement(_, a) => {
                settle_span(app, &a.packet, a.trace_context.as_deref())
            }
        }
    }
}

/// What answering a packet operation needs of it once the sealer has it: the operation itself
/// (its record and proof among it) goes to the sealer, not a copy.
#[derive(Clone, Copy)]
enum Handed {
    /// A packet received: its id, and its record's id when the record may carry an off-chain
    /// payload (credit and talent records).
    Receive { id: PacketId, private_record: Option<Hash32> },
    /// A successful acknowledgement.
    Acknowledged,
    /// An error acknowledgement, a timeout or an erasure.
    Other,
}

impl Handed {
    fn of(op: &PacketOp) -> Self {
        match op {
            PacketOp::Receive(v) => Handed::Receive {
                id: v.id,
                private_record: matches!(
                    v.record.body,
                    RecordBody::Credit(_) | RecordBody::Talent(TalentPayload::Issue { .. })
                )
                .then_some(v.record_id),
            },
            PacketOp::Acknowledge { acknowledgement: Acknowledgement::Success, .. } => {
                Handed::Acknowledged
            }
            _ => Handed::Other,
        }
    }
}

/// The packets among `handed` that were received and may carry an off-chain payload:
/// (source, sequence, record id).
fn received(handed: &[Handed]) -> Vec<(CityId, u64, Hash32)> {
    handed
        .iter()
        .filter_map(|h| match h {
            Handed::Receive { id, private_record: Some(record_id) } => {
                Some((id.source, id.sequence, *record_id))
            }
            _ => None,
        })
        .collect()
}

/// Records what became of an item on its span.
fn close_span(span: &tracing::Span, status: u16) {
    span.record("packet.status", status);
    tracing::debug!(parent: span, status, "packet item handled");
}

/// What the shard did with a packet, an acknowledgement or a timeout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PacketResponse {
    /// `received`, `error_acknowledged` (received, with an error), `acknowledged` or
    /// `refunded`.
    pub state: String,
    /// Height of the block that holds it.
    pub height: u64,
    /// The acknowledgement written, for a packet.
    #[schema(value_type = Option<Object>)]
    pub acknowledgement: Option<Acknowledgement>,
}

/// Counts a failed proof by its link, then answers its problem.
pub(super) fn failed(app: &AppState, e: PacketError) -> Problem {
    app.metrics
        .proof_failures
        .get_or_create(&crate::metrics::LinkLabel { link: crate::metrics::failed_link(&e) })
        .inc();
    Problem::invalid_proof(e.to_string())
}

/// The public endpoints' shared rate limit (the proof is the authorization, not a token).
pub(super) fn public_rate(app: &AppState, bucket: &str) -> ApiResult<()> {
    app.rate.check(bucket, (app.monotonic)()).map_err(|wait| {
        Problem::too_many(format!(
            "the public rate is exceeded; retry in {} ms",
            wait.as_millis().max(1)
        ))
    })
}

/// Hands the shard a packet, an acknowledgement or a timeout. Public: each is checked against
/// this shard's own light client and state; nothing a relay says is trusted. Rate-limited.
#[utoipa::path(post, path = "/v1/packets", request_body = PacketRequest,
    responses((status = 200, body = PacketResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn post_packet(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PacketResponse>> {
    public_rate(&app, "public:packets")?;
    let (_, request): (_, PacketRequest) = json_body(body, app.limits.body_bytes_max)?;
    let span = request.span(&app);
    let answer = tracing::Instrument::instrument(handle_packet(app, request), span.clone()).await;
    close_span(&span, answer.as_ref().map_or_else(|p| p.status, |_| 200));
    answer
}

async fn handle_packet(
    app: Arc<AppState>,
    request: PacketRequest,
) -> ApiResult<Json<PacketResponse>> {
    let checker = app.clone();
    let (op, payload) = tokio::task::spawn_blocking(move || {
        check(&checker, request, &mut urbis_core::packet::ChainCache::default())
    })
    .await
    .map_err(internal)??;
    let handed = Handed::of(&op);
    let (reply, wait) = tokio::sync::oneshot::channel();
    let submission = Submission::packet(op, payload, reply);
    let outcome = super::seal(&app, submission, wait, "ask where the packet is").await?;
    let answer = packet_outcome(handed, outcome)?;
    count_packet(&app, &answer);
    remember_receipt(&app, handed, &answer);
    erase_late_copies(&app, &received(&[handed])).await;
    Ok(Json(answer))
}

/// Remembers the height that received a packet and the acknowledgement it wrote, for the
/// acknowledgement long polls.
fn remember_receipt(app: &AppState, handed: Handed, answer: &PacketResponse) {
    if let (Handed::Receive { id, .. }, Some(acknowledgement)) = (handed, answer.acknowledgement) {
        app.recent_receipts.insert(id, (answer.height, acknowledgement));
    }
}

fn count_packet(app: &AppState, answer: &PacketResponse) {
    let reason = match answer.state.as_str() {
        "received" => "received",
        "error_acknowledged" => "error_acknowledged",
        "acknowledged" => "acknowledged",
        _ => "refunded",
    };
    app.metrics.packets.get_or_create(&crate::metrics::ReasonLabel { reason }).inc();
}

/// The answer to a sealed (or refused) packet operation.
fn packet_outcome(handed: Handed, outcome: Outcome) -> ApiResult<PacketResponse> {
    match outcome {
        Outcome::PacketSealed { height, acknowledgement } => {
            let state = match (handed, acknowledgement) {
                (Handed::Receive { .. }, Some(Acknowledgement::Success)) => "received",
                (Handed::Receive { .. }, _) => "error_acknowledged",
                (Handed::Acknowledged, _) => "acknowledged",
                _ => "refunded",
            };
            Ok(PacketResponse { state: state.into(), height, acknowledgement })
        }
        Outcome::Rejected(r @ Rejection::UnknownPacket { .. }) => {
            Err(Problem::not_found(r.to_string()))
        }
        Outcome::Rejected(r) if r.is_conflict() => Err(Problem::new(
            axum::http::StatusCode::CONFLICT,
            match r {
                Rejection::PacketDuplicate { .. } => "packet-duplicate",
                Rejection::PacketTimedOut { .. } => "packet-timed-out",
                Rejection::PacketSettled { .. } => "packet-settled",
                _ => "conflict",
            },
            r.to_string(),
        )),
        Outcome::Rejected(Rejection::State(detail)) => Err(internal(detail)),
        Outcome::Rejected(r) => Err(Problem::unprocessable(r.to_string())),
        Outcome::Failed(detail) => Err(internal(detail)),
        Outcome::Sealed(_) | Outcome::Replayed(_) => Err(internal("unexpected sealer outcome")),
    }
}

/// Many packets, acknowledgements and timeouts at once (what a bridge sends).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PacketBatchRequest {
    /// The items, each as `POST /v1/packets` takes it, or a group of packets proven through
    /// one header. Each is read on its own: one that is none of these gets its own 422 in the
    /// answer.
    pub items: Vec<PacketBatchEntry>,
}

/// One item of a batch: what `POST /v1/packets` takes, or a group of packets.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum PacketBatchEntry {
    /// A packet, an acknowledgement or a timeout.
    One(PacketRequest),
    /// Packets of one source block.
    Group(Box<PacketGroup>),
    /// Acknowledgements proven through one destination header.
    Acknowledgements(Box<AcknowledgementGroup>),
}

/// Acknowledgements of packets this city sent, proven through one destination header, with
/// that header and its finality written once: each one's `AcknowledgementProof` is
/// `{acknowledgement, proof, header, finality}` from its own `acknowledgement` and `proof` and
/// the group's `header` and `finality`. The shard reads the group as those acknowledgements,
/// in order, and answers each on its own.
#[derive(Debug, ToSchema)]
pub struct AcknowledgementGroup {
    /// Always `acknowledgements`.
    #[serde(rename = "type")]
    #[schema(pattern = "^acknowledgements$")]
    pub kind: String,
    /// The destination header, sealed.
    #[schema(value_type = Object)]
    pub header: SignedShardHeader,
    /// The header to a certified beacon block.
    #[schema(value_type = Object)]
    pub finality: FinalityProof,
    /// The acknowledgements, at least one; each is read on its own (one that does not read is
    /// refused alone).
    #[schema(value_type = Vec<GroupedAcknowledgement>)]
    pub acknowledgements: Vec<Box<serde_json::value::RawValue>>,
}

/// One acknowledgement of an [`AcknowledgementGroup`].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupedAcknowledgement {
    /// The packet.
    #[schema(value_type = Object)]
    pub packet: PacketId,
    /// The acknowledgement.
    #[schema(value_type = Object)]
    pub acknowledgement: Acknowledgement,
    /// Membership of the receipt holding it under the header's `state_root`.
    #[schema(value_type = Object)]
    pub proof: StateProof,
    /// The relay's `traceparent`, as on a single acknowledgement.
    #[serde(default)]
    pub trace_context: Option<String>,
}

/// Packets one source block sent on one channel, with the parts of their proofs they share
/// written once: each packet's `PacketProof` is `{sequence, batch, batch_proof, path, record,
/// header, finality}` from its own `sequence`, `path` and `record` and the group's other
/// fields. The shard reads the group as those packets, in order, and answers each on its own.
#[derive(Debug, ToSchema)]
pub struct PacketGroup {
    /// Always `packets`.
    #[serde(rename = "type")]
    #[schema(pattern = "^packets$")]
    pub kind: String,
    /// The batch that holds the packets, as the source's state keeps it.
    #[schema(value_type = Object)]
    pub batch: OutboundBatch,
    /// Membership of the batch under the header's `state_root`.
    #[schema(value_type = Object)]
    pub batch_proof: StateProof,
    /// The source header, sealed.
    #[schema(value_type = Object)]
    pub header: SignedShardHeader,
    /// The header to a certified beacon block.
    #[schema(value_type = Object)]
    pub finality: FinalityProof,
    /// The packets, at least one; each is read on its own (one that does not read is
    /// refused alone).
    #[schema(value_type = Vec<GroupedPacket>)]
    pub packets: Vec<Box<serde_json::value::RawValue>>,
}

/// One packet of a [`PacketGroup`].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupedPacket {
    /// Sequence on the channel.
    pub sequence: u64,
    /// Path of the record id in the batch's tree.
    #[schema(value_type = Object)]
    pub path: InclusionProof,
    /// The record.
    #[schema(value_type = Object)]
    pub record: urbis_core::record::Record,
    /// The off-chain payload of a credit or talent packet.
    pub payload: Option<CarriedPayload>,
    /// The relay's `traceparent`, as on a single packet.
    #[serde(default)]
    pub trace_context: Option<String>,
}

impl urbis_ops::tagged::TagFirst for PacketBatchEntry {
    const EXPECTING: &'static str =
        "a packet, acknowledgement, timeout, or group of packets or of acknowledgements";

    fn variant<'de, D: serde::Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_json::value::RawValue;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Group {
            batch: OutboundBatch,
            batch_proof: Box<RawValue>,
            header: Box<RawValue>,
            finality: Box<RawValue>,
            packets: Vec<Box<RawValue>>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Acknowledgements {
            header: Box<RawValue>,
            finality: Box<RawValue>,
            acknowledgements: Vec<Box<RawValue>>,
        }
        // Each member is checked with its own copy of the shared parts: they are bounded.
        fn bounded<E: Error>(shared: usize) -> Result<(), E> {
            urbis_core::packet::check_group_shared(shared).map_err(E::custom)
        }
        match tag {
            "packets" => {}
            "acknowledgements" => {
                let g = Acknowledgements::deserialize(rest)?;
                bounded(g.header.get().len() + g.finality.get().len())?;
                return Ok(PacketBatchEntry::Acknowledgements(Box::new(AcknowledgementGroup {
                    kind: tag.to_string(),
                    header: read(&g.header)?,
                    finality: read(&g.finality)?,
                    acknowledgements: g.acknowledgements,
                })));
            }
            _ => {
                return <PacketRequest as urbis_ops::tagged::TagFirst>::variant(tag, rest)
                    .map(PacketBatchEntry::One);
            }
        }
        let g = Group::deserialize(rest)?;
        bounded(g.batch_proof.get().len() + g.header.get().len() + g.finality.get().len())?;
        Ok(PacketBatchEntry::Group(Box::new(PacketGroup {
            kind: tag.to_string(),
            batch: g.batch,
            batch_proof: read(&g.batch_proof)?,
            header: read(&g.header)?,
            finality: read(&g.finality)?,
            packets: g.packets,
        })))
    }
}

impl<'de> Deserialize<'de> for PacketBatchEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        urbis_ops::tagged::deserialize(d)
    }
}

impl PacketBatchEntry {
    /// The items this entry stands for: itself, or each packet of the group, with the group's
    /// shared parts. An empty group is refused.
    fn expand(self) -> Vec<ApiResult<BatchItem>> {
        let g = match self {
            PacketBatchEntry::One(r) => return vec![Ok(BatchItem::Whole(r))],
            PacketBatchEntry::Group(g) => g,
            PacketBatchEntry::Acknowledgements(g) => return g.expand(),
        };
        let PacketGroup { batch, batch_proof, header, finality, packets, .. } = *g;
        let shared = Arc::new(BlockShared { batch, batch_proof, header, finality });
        expand_members(&packets, "a group holds at least one packet", |p: GroupedPacket| {
            BatchItem::Packet(shared.clone(), p)
        })
    }
}

/// One part of a group, kept as JSON while the group was read, read as `T`.
pub(super) fn read<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    raw: &serde_json::value::RawValue,
) -> Result<T, E> {
    serde_json::from_str(raw.get()).map_err(E::custom)
}

/// A group's members, each read on its own (one that does not read is refused alone) and made
/// whole with the group's shared parts by `whole`; a group of none is one refusal.
fn expand_members<M: serde::de::DeserializeOwned>(
    members: &[Box<serde_json::value::RawValue>],
    empty: &'static str,
    whole: impl Fn(M) -> BatchItem,
) -> Vec<ApiResult<BatchItem>> {
    if members.is_empty() {
        return vec![Err(Problem::unprocessable(empty))];
    }
    members
        .iter()
        .map(|raw| serde_json::from_str(raw.get()).map(&whole).map_err(json_problem))
        .collect()
}

impl AcknowledgementGroup {
    /// Each acknowledgement, with the group's header and finality. An empty group is refused.
    fn expand(self) -> Vec<ApiResult<BatchItem>> {
        let AcknowledgementGroup { header, finality, acknowledgements, .. } = self;
        let shared = Arc::new(AcknowledgementGroupShared { header, finality });
        expand_members(
            &acknowledgements,
            "a group holds at least one acknowledgement",
            |a: GroupedAcknowledgement| BatchItem::Acknowledgement(shared.clone(), a),
        )
    }

    /// How many answers it takes.
    fn len(&self) -> usize {
        self.acknowledgements.len()
    }
}

/// One item's answer: the answer `POST /v1/packets` would give.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PacketBatchItem {
    /// The HTTP status the item alone would get.
    pub status: u16,
    /// Its answer, when accepted.
    pub response: Option<PacketResponse>,
    /// Its problem, when refused.
    #[schema(value_type = Option<Object>)]
    pub problem: Option<serde_json::Value>,
}

/// Answers in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PacketBatchResponse {
    /// One per item.
    pub results: Vec<PacketBatchItem>,
}

/// A batch with an unreadable item, read again as each item's JSON, so that an item that does
/// not read as a packet, an acknowledgement or a timeout is refused alone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
}

/// A batch's items, each read or refused on its own, a group standing for its packets. A
/// batch whose items all read (what bridges send) is read in one pass; only one with an
/// unreadable item is read again, item by item (an unreadable item is refused once for each
/// packet it holds, if it reads as a group, else once). At most `items_max` items, counting
/// each packet of a group.
fn read_batch(body: &[u8], items_max: usize) -> ApiResult<Vec<ApiResult<BatchItem>>> {
    let too_many =
        |n: usize| Problem::too_large(format!("{n} items; at most {items_max} per batch"));
    // An entry, or an unreadable item's refusal with the number of answers it takes.
    let entries: Vec<Result<PacketBatchEntry, (Problem, usize)>> =
        match serde_json::from_slice::<PacketBatchRequest>(body) {
            Ok(request) => request.items.into_iter().map(Ok).collect(),
            Err(_) => {
                let raw: RawBatch<'_> = serde_json::from_slice(body).map_err(json_problem)?;
                if raw.items.len() > items_max {
                    return Err(too_many(raw.items.len()));
                }
                raw.items
                    .iter()
                    .map(|item| {
                        serde_json::from_str(item.get())
                            .map_err(|e| (json_problem(e), unreadable_answers(item.get())))
                    })
                    .collect()
            }
        };
    let count: usize = entries
        .iter()
        .map(|e| match e {
            Ok(PacketBatchEntry::Group(g)) => g.packets.len().max(1),
            Ok(PacketBatchEntry::Acknowledgements(g)) => g.len().max(1),
            Ok(PacketBatchEntry::One(_)) => 1,
            Err((_, n)) => *n,
        })
        .sum();
    if count > items_max {
        return Err(too_many(count));
    }
    Ok(entries
        .into_iter()
        .flat_map(|e| match e {
            Ok(e) => e.expand(),
            Err((p, n)) => (0..n).map(|_| Err(p.clone())).collect(),
        })
        .collect())
}

/// How many answers an item that does not read takes: one for each member of what reads as a
/// group (so a relay's answers stay one per packet it sent), else one.
fn unreadable_answers(item: &str) -> usize {
    #[derive(Deserialize)]
    struct Members {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        packets: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        acknowledgements: Vec<serde::de::IgnoredAny>,
    }
    match serde_json::from_str::<Members>(item) {
        Ok(m) if m.kind == "packets" => m.packets.len().max(1),
        Ok(m) if m.kind == "acknowledgements" => m.acknowledgements.len().max(1),
        _ => 1,
    }
}

/// Hands the shard many packets, acknowledgements or timeouts at once; each is read, checked
/// and answered on its own (one refusal, also of an item that does not parse, does not refuse
/// the others), and they are sealed together.
#[utoipa::path(post, path = "/v1/packets/batch", request_body = PacketBatchRequest,
    responses((status = 200, body = PacketBatchResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn post_packets_batch(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PacketBatchResponse>> {
    public_rate(&app, "public:packets")?;
    let body = body_bytes(body, app.limits.body_bytes_max)?;
    let items = read_batch(&body, app.limits.batch_records_max)?;
    Ok(Json(PacketBatchResponse { results: handle_items(&app, items).await? }))
}

/// Checks, seals and answers batch items, in order, each on its own (one refusal, also of an
/// item that did not read, does not refuse the others); they are sealed together.
pub(super) async fn handle_items(
    app: &Arc<AppState>,
    items: Vec<ApiResult<BatchItem>>,
) -> ApiResult<Vec<PacketBatchItem>> {
    let spans: Vec<tracing::Span> = items
        .iter()
        .map(|i| match i {
            Ok(i) => i.span(app),
            Err(_) => tracing::info_span!(
                "unreadable packet item",
                urbis.role = "shard",
                packet.status = tracing::field::Empty,
            ),
        })
        .collect();
    let checker = app.clone();
    let checked: Vec<ApiResult<(PacketOp, Option<StoredPayload>)>> =
        tokio::task::spawn_blocking(move || {
            let mut cache = urbis_core::packet::ChainCache::default();
            // A member of a group is checked with the group's parts in place.
            items.into_iter().map(|r| r.and_then(|r| check_item(&checker, r, &mut cache))).collect()
        })
        .await
        .map_err(internal)?;
    enum Pending {
        Done(Problem),
        Waiting(Handed, tokio::sync::oneshot::Receiver<Outcome>),
    }
    let mut pending = Vec::with_capacity(checked.len());
    for item in checked {
        let (op, payload) = match item {
            Ok(x) => x,
            Err(p) => {
                pending.push(Pending::Done(p));
                continue;
            }
        };
        let handed = Handed::of(&op);
        let (reply, wait) = tokio::sync::oneshot::channel();
        let submission = Submission::packet(op, payload, reply);
        match app.sealer.submit_wait(submission).await {
            Ok(()) => pending.push(Pending::Waiting(handed, wait)),
            Err(_) => pending.push(Pending::Done(Problem::unavailable("the sealer has stopped"))),
        }
    }
    let timeout = std::time::Duration::from_millis(app.limits.request_timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut results = Vec::with_capacity(pending.len());
    let mut sealed = Vec::new();
    for p in pending {
        let answer = match p {
            Pending::Done(problem) => Err(problem),
            Pending::Waiting(handed, wait) => match tokio::time::timeout_at(deadline, wait).await {
                Ok(Ok(outcome)) => packet_outcome(handed, outcome).inspect(|a| {
                    count_packet(app, a);
                    remember_receipt(app, handed, a);
                    sealed.push(handed);
                }),
                Ok(Err(_)) => Err(Problem::unavailable("the sealer stopped before answering")),
                Err(_) => Err(Problem::unavailable("sealing did not finish in time")),
            },
        };
        close_span(&spans[results.len()], answer.as_ref().map_or_else(|p| p.status, |_| 200));
        results.push(match answer {
            Ok(response) => {
                PacketBatchItem { status: 200, response: Some(response), problem: None }
            }
            Err(problem) => PacketBatchItem {
                status: problem.status,
                response: None,
                problem: Some(serde_json::to_value(&problem).map_err(internal)?),
            },
        });
    }
    erase_late_copies(app, &received(&sealed)).await;
    Ok(results)
}

/// Packets whose acknowledgements are asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgementsRequest {
    /// The packets (this city is their destination).
    #[schema(value_type = Vec<Object>)]
    pub packets: Vec<PacketId>,
}

/// Final acknowledgement proofs, in request order (`null`: not received, or not final yet).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AcknowledgementsResponse {
    /// One per packet.
    #[schema(value_type = Vec<Object>)]
    pub acknowledgements: Vec<Option<AcknowledgementProof>>,
}

/// `POST /v1/packets/acknowledgements/groups`: each `AcknowledgementProof` of the answer is
/// `{acknowledgement, proof, header, finality}` from its entry and the answer's `header` and
/// `finality`.
#[derive(Deserialize, ToSchema)]
pub struct AcknowledgementGroupResponse {
    /// The destination header every proof is against (`null` when none is final).
    #[schema(value_type = Option<Object>)]
    pub header: Option<SignedShardHeader>,
    /// That header to a certified beacon block.
    #[schema(value_type = Option<Object>)]
    pub finality: Option<FinalityProof>,
    /// One per packet asked about, in order: `{acknowledgement, proof}`, or `null` while the
    /// packet has no final acknowledgement.
    pub acknowledgements: Vec<Option<GroupedAcknowledgementProof>>,
}

/// An acknowledgement proof without the header and finality its answer or group holds once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupedAcknowledgementProof {
    /// The acknowledgement.
    #[schema(value_type = Object)]
    pub acknowledgement: Acknowledgement,
    /// Membership of the receipt holding it under the header's `state_root`.
    #[schema(value_type = Object)]
    pub proof: StateProof,
}

/// Query of the acknowledgements request.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AcknowledgementsQuery {
    /// Long poll: when none of the packets has a final acknowledgement yet, wait up to this
    /// many milliseconds (at most 1 000) for this city's next crosslinked header before
    /// answering. Acknowledgements become final only then, so a relay asking again sooner
    /// gets the same answer.
    pub wait_ms: Option<u64>,
}

/// The longest long poll of the acknowledgements request.
const ACK_WAIT_MS_MAX: u64 = 1_000;

/// At the destination: the final acknowledgement proofs of many packets, all against the
/// latest final header.
#[utoipa::path(post, path = "/v1/packets/acknowledgements", request_body = AcknowledgementsRequest,
    params(AcknowledgementsQuery),
    responses((status = 200, body = AcknowledgementsResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn acknowledgements(
    State(app): State<Arc<AppState>>,
    query: Result<Query<AcknowledgementsQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<RawJson> {
    acknowledgements_written(app, query, body, |out, proven| {
        write_acknowledgements(out, &proven.whole())
    })
    .await
}

/// The same answer as `POST /v1/packets/acknowledgements`, with the header and finality all
/// its proofs share written once.
#[utoipa::path(post, path = "/v1/packets/acknowledgements/groups", request_body = AcknowledgementsRequest,
    params(AcknowledgementsQuery),
    responses((status = 200, body = AcknowledgementGroupResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn acknowledgement_groups(
    State(app): State<Arc<AppState>>,
    query: Result<Query<AcknowledgementsQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<RawJson> {
    acknowledgements_written(app, query, body, write_proven_group).await
}

/// How an acknowledgements answer is written.
type AcknowledgementsWriter = fn(&mut Vec<u8>, Proven) -> serde_json::Result<()>;

/// One answer's acknowledgements, every proof against one header and its finality, which are
/// held once rather than copied into each proof (an answer holds hundreds).
struct Proven {
    /// The header and finality, when some acknowledgement is proven.
    chain: Option<(SignedShardHeader, FinalityProof)>,
    /// Each packet's acknowledgement and the state proof of its receipt, when final.
    acknowledgements: Vec<Option<(Acknowledgement, StateProof)>>,
}

impl Proven {
    /// Each acknowledgement with its whole proof.
    fn whole(self) -> Vec<Option<AcknowledgementProof>> {
        let Some((header, finality)) = self.chain else {
            return self.acknowledgements.iter().map(|_| None).collect();
        };
        self.acknowledgements
            .into_iter()
            .map(|a| {
                a.map(|(acknowledgement, proof)| AcknowledgementProof {
                    acknowledgement,
                    proof,
                    header: header.clone(),
                    finality: finality.clone(),
                })
            })
            .collect()
    }
}

async fn acknowledgements_written(
    app: Arc<AppState>,
    query: Result<Query<AcknowledgementsQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
    write: AcknowledgementsWriter,
) -> ApiResult<RawJson> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let (_, request): (_, AcknowledgementsRequest) = json_body(body, app.limits.body_bytes_max)?;
    if request.packets.len() > app.limits.batch_reads_max {
        return Err(Problem::too_large(format!(
            "{} packets; at most {} per request",
            request.packets.len(),
            app.limits.batch_reads_max
        )));
    }
    let wait = std::time::Duration::from_millis(query.wait_ms.unwrap_or(0).min(ACK_WAIT_MS_MAX));
    // Marked seen before the first look, so a crosslink between the look and the wait is not
    // missed.
    let mut crosslinked = app.crosslinked.clone();
    crosslinked.mark_unchanged();
    let request = Arc::new(request);
    let look = |written: Vec<Option<Written>>| {
        let (app, request) = (app.clone(), request.clone());
        tokio::task::spawn_blocking(move || {
            let mut written = written;
            acknowledgement_proofs(&app, &request.packets, &mut written)
                .map(|proofs| (proofs, written))
        })
    };
    let json = |proven: Proven| {
        let hint = 64 + proven.acknowledgements.iter().flatten().count() * ACK_PROOF_JSON_BYTES;
        let mut out = Vec::with_capacity(hint);
        write(&mut out, proven).map_err(internal)?;
        Ok(RawJson(out))
    };
    let (first, written) = look(vec![None; request.packets.len()]).await.map_err(internal)??;
    if wait.is_zero()
        || request.packets.is_empty()
        || first.acknowledgements.iter().any(Option::is_some)
    {
        return json(first);
    }
    match tokio::time::timeout(wait, crosslinked.changed()).await {
        Ok(Ok(())) => {
            // The receipts the first look found written are not looked up again.
            let (again, _) = look(written).await.map_err(internal)??;
            json(again)
        }
        // Nothing new became final within the wait (or the follower stopped).
        _ => json(first),
    }
}

/// JSON bytes already written.
pub struct RawJson(Vec<u8>);

impl axum::response::IntoResponse for RawJson {
    fn into_response(self) -> axum::response::Response {
        ([(axum::http::header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

/// Writes values as `serde_json` does, and a value equal to the last one written by copying
/// its JSON (a page's packets in one block share their header and finality proof).
struct Repeated<'a, T> {
    last: Option<(&'a T, Vec<u8>)>,
}

impl<'a, T: Serialize + PartialEq> Repeated<'a, T> {
    fn new() -> Self {
        Repeated { last: None }
    }

    fn write(&mut self, out: &mut Vec<u8>, value: &'a T) -> serde_json::Result<()> {
        if let Some((last, json)) = &self.last
            && (std::ptr::eq(*last, value) || *last == value)
        {
            out.extend_from_slice(json);
            return Ok(());
        }
        let json = serde_json::to_vec(value)?;
        out.extend_from_slice(&json);
        self.last = Some((value, json));
        Ok(())
    }
}

/// Writes `,"name":` (from `key`, which holds it) and `value` as `serde_json` does.
fn field<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    key: &[u8],
    value: &T,
) -> serde_json::Result<()> {
    out.extend_from_slice(key);
    serde_json::to_writer(&mut *out, value)
}

/// The `"header"` and `"finality"` fields of the proofs one body holds, each distinct pair
/// serialized once.
struct Chains<'a> {
    headers: Repeated<'a, SignedShardHeader>,
    finalities: Repeated<'a, FinalityProof>,
}

impl<'a> Chains<'a> {
    fn new() -> Self {
        Chains { headers: Repeated::new(), finalities: Repeated::new() }
    }

    fn write(
        &mut self,
        out: &mut Vec<u8>,
        header: &'a SignedShardHeader,
        finality: &'a FinalityProof,
    ) -> serde_json::Result<()> {
        out.extend_from_slice(b",\"header\":");
        self.headers.write(out, header)?;
        out.extend_from_slice(b",\"finality\":");
        self.finalities.write(out, finality)
    }
}

/// `serde_json::to_writer(out, &AcknowledgementsResponse { acknowledgements })`, with each
/// distinct header and finality serialized once.
fn write_acknowledgements(
    out: &mut Vec<u8>,
    acknowledgements: &[Option<AcknowledgementProof>],
) -> serde_json::Result<()> {
    let mut chains = Chains::new();
    out.extend_from_slice(b"{\"acknowledgements\":[");
    for (i, a) in acknowledgements.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some(a) = a else {
            out.extend_from_slice(b"null");
            continue;
        };
        field(out, b"{\"acknowledgement\":", &a.acknowledgement)?;
        field(out, b",\"proof\":", &a.proof)?;
        chains.write(out, &a.header, &a.finality)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

/// The answer as an `AcknowledgementGroupResponse`: the header and finality every proof of
/// one answer is against (`acknowledgement_proofs` proves them all at one header), once.
#[cfg(test)]
fn write_acknowledgement_group(
    out: &mut Vec<u8>,
    acknowledgements: &[Option<AcknowledgementProof>],
) -> serde_json::Result<()> {
    let first = acknowledgements.iter().flatten().next();
    debug_assert!(
        acknowledgements
            .iter()
            .flatten()
            .all(|a| { first.is_some_and(|f| a.header == f.header && a.finality == f.finality) })
    );
    write_proven_group(
        out,
        Proven {
            chain: first.map(|a| (a.header.clone(), a.finality.clone())),
            acknowledgements: acknowledgements
                .iter()
                .map(|a| a.as_ref().map(|a| (a.acknowledgement, a.proof.clone())))
                .collect(),
        },
    )
}

/// The grouped answer of [`Proven`] acknowledgements.
fn write_proven_group(out: &mut Vec<u8>, proven: Proven) -> serde_json::Result<()> {
    let (header, finality) = proven.chain.map(|(h, f)| (Some(h), Some(f))).unwrap_or_default();
    field(out, b"{\"header\":", &header)?;
    field(out, b",\"finality\":", &finality)?;
    out.extend_from_slice(b",\"acknowledgements\":[");
    for (i, a) in proven.acknowledgements.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some((acknowledgement, proof)) = a else {
            out.extend_from_slice(b"null");
            continue;
        };
        field(out, b"{\"acknowledgement\":", acknowledgement)?;
        field(out, b",\"proof\":", proof)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

/// `serde_json::to_writer(out, &page.whole())`, with each distinct header and finality
/// serialized once.
fn write_outbound_page(out: &mut Vec<u8>, page: &Page) -> serde_json::Result<()> {
    let mut chains = Chains::new();
    out.extend_from_slice(b"{\"packets\":[");
    for (i, p) in page.packets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        field(out, b"{\"sequence\":", &p.sequence)?;
        out.extend_from_slice(b",\"proof\":");
        write_packet_proof(out, &mut chains, p)?;
        write_beside(out, p)?;
        out.push(b'}');
    }
    write_page_end(out, page)
}

/// A page packet's `PacketProof`, its header and finality through `chains`.
fn write_packet_proof<'a>(
    out: &mut Vec<u8>,
    chains: &mut Chains<'a>,
    p: &'a PagePacket,
) -> serde_json::Result<()> {
    field(out, b"{\"sequence\":", &p.sequence)?;
    field(out, b",\"batch\":", &p.block.batch)?;
    field(out, b",\"batch_proof\":", &p.block.batch_proof)?;
    field(out, b",\"path\":", &p.path)?;
    field(out, b",\"record\":", &p.record)?;
    chains.write(out, &p.block.header, &p.block.finality)?;
    out.push(b'}');
    Ok(())
}

/// An outbound packet's `payload` and `trace_context` (when there is one).
fn write_beside(out: &mut Vec<u8>, p: &PagePacket) -> serde_json::Result<()> {
    field(out, b",\"payload\":", &p.payload)?;
    if let Some(t) = &p.trace_context {
        field(out, b",\"trace_context\":", t)?;
    }
    Ok(())
}

fn write_page_end(out: &mut Vec<u8>, page: &Page) -> serde_json::Result<()> {
    field(out, b"],\"sent\":", &page.sent)?;
    field(out, b",\"waiting_for_finality\":", &page.waiting_for_finality)?;
    out.push(b'}');
    Ok(())
}

/// The page as `OutboundGroups`: each run of consecutive packets one block sent (one batch,
/// so one batch proof, header and finality) is a group that writes those once, unless they
/// take more than a group may carry (`GROUP_SHARED_JSON_MAX`), when its packets are items of
/// their own.
fn write_outbound_groups(out: &mut Vec<u8>, page: &Page) -> serde_json::Result<()> {
    let mut chains = Chains::new();
    out.extend_from_slice(b"{\"items\":[");
    let mut i = 0;
    while i < page.packets.len() {
        let first = &page.packets[i].block;
        let run = page.packets[i..]
            .iter()
            .take_while(|p| {
                p.block.header.header.height == first.header.header.height
                    && p.block.batch == first.batch
            })
            .count();
        let packets = &page.packets[i..i + run];
        if i > 0 {
            out.push(b',');
        }
        i += run;
        let start = out.len();
        out.extend_from_slice(b"{\"type\":\"packets\"");
        field(out, b",\"batch\":", &first.batch)?;
        let shared_start = out.len();
        field(out, b",\"batch_proof\":", &first.batch_proof)?;
        chains.write(out, &first.header, &first.finality)?;
        if out.len() - shared_start <= urbis_core::packet::GROUP_SHARED_JSON_MAX {
            out.extend_from_slice(b",\"packets\":[");
            for (k, p) in packets.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                field(out, b"{\"sequence\":", &p.sequence)?;
                field(out, b",\"path\":", &p.path)?;
                field(out, b",\"record\":", &p.record)?;
                write_beside(out, p)?;
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
            continue;
        }
        out.truncate(start);
        for (k, p) in packets.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"type\":\"packet\",\"proof\":");
            write_packet_proof(out, &mut chains, p)?;
            write_beside(out, p)?;
            out.push(b'}');
        }
    }
    write_page_end(out, page)
}

/// About the JSON one acknowledgement proof takes (a buffer hint, not a limit).
const ACK_PROOF_JSON_BYTES: usize = 3 << 10;
/// About the JSON one outbound packet with its proof chain takes (a buffer hint).
const OUTBOUND_PACKET_JSON_BYTES: usize = 5 << 10;

/// Where a receipt was written (a receipt is written once and never changed or deleted), and
/// the acknowledgement it holds.
#[derive(Clone, Copy, Debug)]
struct Written {
    at: WrittenAt,
    acknowledgement: Acknowledgement,
}

#[derive(Clone, Copy, Debug)]
enum WrittenAt {
    /// By the block at this height.
    Height(u64),
    /// At this state version.
    Version(u64),
}

impl WrittenAt {
    /// Whether a receipt written here is in the state of the final header at height `m`,
    /// whose state version is `version` (`None`: the empty tree, which holds no receipt).
    /// A receipt is written once and never changed or deleted.
    fn is_final(self, m: u64, version: Option<jmt::Version>) -> bool {
        match (self, version) {
            (WrittenAt::Height(height), Some(_)) => height <= m,
            (WrittenAt::Version(at), Some(v)) => at <= v,
            (_, None) => false,
        }
    }
}

/// The final acknowledgement proofs of `packets` against the latest final header.
/// `written[i]`, when known, is where packet `i`'s receipt was written; what is found out is
/// put there, so a second look of the same request does not look it up again.
fn acknowledgement_proofs(
    app: &AppState,
    packets: &[PacketId],
    written: &mut [Option<Written>],
) -> ApiResult<Proven> {
    let none = || Proven { chain: None, acknowledgements: vec![None; packets.len()] };
    let Some((m, finality)) = final_height(app)? else { return Ok(none()) };
    // One header and one state version for every packet asked about.
    let (header, version) = sealed_at(app, m)?;
    // The receipts of a block share the top of their paths: walked once for all of them.
    let mut memo = crate::state_proof::PathMemo::default();
    let mut out = Vec::with_capacity(packets.len());
    for (id, written) in packets.iter().zip(written.iter_mut()) {
        if id.destination != app.city {
            out.push(None);
            continue;
        }
        // Only a present receipt is worth a proof (a bridge asks again and again until its
        // packets' blocks are final). A receipt is written once and never changed or deleted,
        // so it is present at `v` exactly when its one write is at or below `v`, or its block
        // at or below `m`: the height this shard answered the delivery with tells that, and
        // otherwise the newest-value index does with one lookup (where reading the value at `v`
        // would seek backwards through the key's versions for every receipt not yet final).
        let key = id.receipt_key();
        if written.is_none() {
            *written = match app.recent_receipts.get(id) {
                Some((height, acknowledgement)) => {
                    Some(Written { at: WrittenAt::Height(height), acknowledgement })
                }
                None => match app
                    .store
                    .state_newest(jmt::KeyHash(key.key_hash().0))
                    .map_err(internal)?
                {
                    Some((at, Some(value))) => Some(Written {
                        at: WrittenAt::Version(at),
                        acknowledgement: decode::<Receipt>(&value)
                            .map_err(internal)?
                            .acknowledgement,
                    }),
                    _ => None,
                },
            };
        }
        let Some(w) = *written else {
            out.push(None);
            continue;
        };
        let Some(v) = version.filter(|_| w.at.is_final(m, version)) else {
            out.push(None);
            continue;
        };
        // The receipt's value is known (the acknowledgement it was written with): the proof
        // needs only its path, and a wrong value would fail the source's check of the leaf.
        let (present, proof) = crate::state_proof::prove_presence_with(
            &*app.store,
            jmt::KeyHash(key.key_hash().0),
            v,
            &mut memo,
        )
        .map_err(internal)?;
        out.push(present.then_some((w.acknowledgement, proof)));
    }
    // The header and finality only when a proof stands on them, as a whole proof would carry.
    let chain = out.iter().any(Option::is_some).then_some((header, finality));
    Ok(Proven { chain, acknowledgements: out })
}

/// Verifies a request against the light client and, for a settlement, the shard's own record
/// of the packet (the record id and timeout height come from it, never from the relay).
fn check(
    app: &AppState,
    request: PacketRequest,
    cache: &mut urbis_core::packet::ChainCache,
) -> ApiResult<(PacketOp, Option<StoredPayload>)> {
    let client = app.client.read().map_err(|_| internal("light client lock poisoned"))?;
    match request {
        PacketRequest::Packet { proof, payload, .. } => {
            check_packet(app, &client, proof.parts(), payload, cache)
        }
        PacketRequest::Acknowledgement { proof, packet, .. } => {
            check_acknowledgement(app, &client, packet, proof.parts(), cache)
        }
        PacketRequest::Timeout { proof, packet, .. } => {
            let sent = own_packet(app, &packet)?;
            verify_timeout(&app.genesis, &client, &packet, sent.timeout_height, &proof)
                .map_err(|e| failed(app, e))?;
            Ok((PacketOp::Timeout { id: packet }, None))
        }
    }
}

/// [`check`] of a batch item: a member of a group is checked with the group's shared parts in
/// place, not with copies of them.
fn check_item(
    app: &AppState,
    item: BatchItem,
    cache: &mut urbis_core::packet::ChainCache,
) -> ApiResult<(PacketOp, Option<StoredPayload>)> {
    let client = || app.client.read().map_err(|_| internal("light client lock poisoned"));
    match item {
        BatchItem::Whole(request) => check(app, request, cache),
        BatchItem::Packet(shared, mut p) => {
            let payload = p.payload.take();
            check_packet(app, &*client()?, shared.parts(&p), payload, cache)
        }
        BatchItem::Acknowledgement(shared, a) => {
            check_acknowledgement(app, &*client()?, a.packet, shared.parts(&a), cache)
        }
    }
}

/// Checks a packet addressed to this city, and opens the payload beside it.
fn check_packet(
    app: &AppState,
    client: &urbis_core::light_client::LightClient,
    proof: PacketParts<'_>,
    payload: Option<CarriedPayload>,
    cache: &mut urbis_core::packet::ChainCache,
) -> ApiResult<(PacketOp, Option<StoredPayload>)> {
    let v = urbis_core::packet::verify_packet_parts(&app.genesis, client, app.city, proof, cache)
        .map_err(|e| failed(app, e))?;
    let commitment = match &v.record.body {
        RecordBody::Credit(c) => Some(c.commitment),
        RecordBody::Talent(TalentPayload::Issue { commitment, .. }) => Some(*commitment),
        _ => None,
    };
    let stored = match (commitment, payload) {
        (Some(c), Some(p)) => {
            let opened = open(&c, &p)?;
            // A payload its source already proved erased is not kept (it was in
            // flight, or a relay held it back).
            let erased = app.store.erased_inbound(&v.record_id, v.id.source.0).map_err(internal)?;
            (!erased).then_some(opened)
        }
        (None, Some(_)) => {
            return Err(Problem::unprocessable(
                "only credit and talent packets carry an off-chain payload",
            ));
        }
        (_, None) => None,
    };
    Ok((PacketOp::Receive(Box::new(v)), stored))
}

/// Checks the destination's acknowledgement of `packet`, against the record this city sent.
fn check_acknowledgement(
    app: &AppState,
    client: &urbis_core::light_client::LightClient,
    packet: PacketId,
    proof: AcknowledgementParts<'_>,
    cache: &mut urbis_core::packet::ChainCache,
) -> ApiResult<(PacketOp, Option<StoredPayload>)> {
    // The receipt must name the record this city sent, not one a relay names.
    let sent = own_packet(app, &packet)?;
    let (acknowledgement, _) = urbis_core::packet::verify_acknowledgement_parts(
        &app.genesis,
        client,
        &packet,
        &sent.record_id,
        proof,
        cache,
    )
    .map_err(|e| failed(app, e))?;
    Ok((PacketOp::Acknowledge { id: packet, acknowledgement }, None))
}

/// The settlements of `id`'s range at the tip (empty before the range's first settlement).
fn settlements(app: &AppState, id: &PacketId) -> ApiResult<Settlements> {
    Ok(match state_value(app, &id.settlements_key())? {
        None => Settlements::default(),
        Some(v) => Settlements::decode_range(&v, id.settlement_range()).map_err(internal)?,
    })
}

/// Packet `id` as this city, its source, sent it (its store's index, written with the block
/// whose batch holds it); `None` when it never sent it. A sequence below the channel's next
/// one with no entry is a damaged index, not an unsent packet: an error, so that no walk
/// takes the packet for settled and stops relaying it.
fn sent_packet(app: &AppState, id: &PacketId) -> ApiResult<Option<crate::store::SentPacket>> {
    let sent = app.store.sent_packet(id.destination.0, id.sequence).map_err(internal)?;
    if sent.is_none() && id.sequence >= 1 && id.sequence < next_sequence(app, id.destination)? {
        return Err(internal(format!("packet {id} was sent but is missing from the index")));
    }
    Ok(sent)
}

/// Packet `id`, a sequence below its channel's next one, while it is unsettled at this city,
/// its source (`None`: settled; an error when the index has no entry for it). `range` keeps
/// the settlements last read, so a walk over a channel's sequences reads each range once.
fn unsettled_packet(
    app: &AppState,
    id: &PacketId,
    range: &mut Option<(u64, Settlements)>,
) -> ApiResult<Option<crate::store::SentPacket>> {
    let bucket = id.settlement_range();
    let settled = match range {
        Some((b, s)) if *b == bucket => s,
        _ => &mut range.insert((bucket, settlements(app, id)?)).1,
    };
    if settled.outcome(id.sequence).is_some() {
        return Ok(None);
    }
    // Every caller walks sequences below the channel's next one, where `sent_packet` answers
    // an entry or an error.
    sent_packet(app, id)
}

/// An unsettled packet this city sent.
fn own_packet(app: &AppState, packet: &PacketId) -> ApiResult<OutboundPacket> {
    if packet.source != app.city {
        return Err(Problem::unprocessable(format!(
            "packet {packet} was not sent by this city ({})",
            app.city
        )));
    }
    let Some(sent) = sent_packet(app, packet)? else {
        return Err(Problem::not_found(format!("no outbound packet {packet}")));
    };
    if settlements(app, packet)?.outcome(packet.sequence).is_some() {
        return Err(Problem::new(
            axum::http::StatusCode::CONFLICT,
            "packet-settled",
            format!("packet {packet} is already settled"),
        ));
    }
    Ok(sent.packet)
}

fn open(commitment: &PayloadCommitment, p: &CarriedPayload) -> ApiResult<StoredPayload> {
    let bytes = hex::decode(&p.bytes).map_err(|_| Problem::bad_request("payload must be hex"))?;
    if !commitment.opens(&p.salt.0, &bytes) {
        return Err(Problem::unprocessable("the payload does not open the record's commitment"));
    }
    Ok(StoredPayload { salt: p.salt.0, bytes, idempotency: None })
}

/// The latest committed value of a state key.
pub fn state_value(app: &AppState, key: &StateKey) -> ApiResult<Option<Vec<u8>>> {
    let Some(tip) = app.sealer.tip() else { return Ok(None) };
    let Some(version) = tip.state_version else { return Ok(None) };
    app.store.state_value(version, jmt::KeyHash(key.key_hash().0)).map_err(internal)
}

/// A state proof of `key` against the sealed header at `height`.
pub fn prove_at(
    app: &AppState,
    key: &StateKey,
    height: u64,
) -> ApiResult<(Option<Vec<u8>>, StateProof, SignedShardHeader)> {
    let (header, version) = sealed_at(app, height)?;
    let (value, proof) = prove_in(app, key, version)?;
    Ok((value, proof, header))
}

/// The sealed header at `height` and the state tree's version after its block.
fn sealed_at(app: &AppState, height: u64) -> ApiResult<(SignedShardHeader, Option<jmt::Version>)> {
    let header =
        app.store.header(height).map_err(internal)?.ok_or_else(|| internal("header missing"))?;
    let version = app
        .store
        .state_version_at(height)
        .map_err(internal)?
        .ok_or_else(|| internal("state version missing"))?;
    Ok((header, version))
}

/// A state proof of `key` in the state tree at `version` (`None`: the empty tree).
fn prove_in(
    app: &AppState,
    key: &StateKey,
    version: Option<jmt::Version>,
) -> ApiResult<(Option<Vec<u8>>, StateProof)> {
    Ok(match version {
        None => (None, StateProof { leaf: None, siblings: vec![] }),
        Some(v) => crate::state_proof::prove(&*app.store, jmt::KeyHash(key.key_hash().0), v)
            .map_err(internal)?,
    })
}

/// The highest header a certified beacon block crosslinked, with its finality: the latest
/// state anyone else can trust.
fn final_height(app: &AppState) -> ApiResult<Option<(u64, FinalityProof)>> {
    let Some(m) = app.store.last_crosslinked().map_err(internal)? else { return Ok(None) };
    Ok(finality(app, m)?.map(|f| (m, f)))
}

/// A state fact at the latest final header (`None` before anything is final).
pub fn final_state(app: &AppState, key: &StateKey) -> ApiResult<Option<StateFactProof>> {
    let Some((m, f)) = final_height(app)? else { return Ok(None) };
    let (value, proof, header) = prove_at(app, key, m)?;
    Ok(Some(StateFactProof { key: key.clone(), value, proof, header, finality: Some(f) }))
}

fn city_by_name(app: &AppState, name: &str) -> ApiResult<CityId> {
    app.genesis
        .genesis()
        .cities
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.id)
        .ok_or_else(|| Problem::not_found(format!("no city named {name} in this federation")))
}

fn city_name(app: &AppState, id: CityId) -> String {
    city_label(app, id).into_owned()
}

/// A city's name borrowed from genesis (its id for a city genesis does not name), for the
/// fields of a span written per packet.
fn city_label(app: &AppState, id: CityId) -> std::borrow::Cow<'_, str> {
    app.genesis.city(id).map_or_else(|| id.to_string().into(), |c| c.name.as_str().into())
}

/// Query of the outbound page.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboundQuery {
    /// Destination city name.
    pub destination: String,
    /// Only sequences above this one.
    #[serde(default)]
    pub after: u64,
    /// Most packets (at most 256).
    pub limit: Option<usize>,
}

/// One outbound packet with its proof chain.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutboundPacketView {
    /// Sequence on the channel.
    pub sequence: u64,
    /// The packet and its proof chain (what `POST /v1/packets` at the destination takes).
    #[schema(value_type = Object)]
    pub proof: PacketProof,
    /// The off-chain payload of a credit or talent packet, unless erased.
    pub payload: Option<CarriedPayload>,
    /// The W3C `traceparent` of the submission that made the packet, while the shard still
    /// remembers it: a relay continues that trace. Not part of the proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<String>,
}

/// `GET /v1/packets/outbound/groups`: the page's packets in sequence order, those one source
/// block sent as a group.
#[derive(Deserialize, ToSchema)]
pub struct OutboundGroups {
    /// Each a packet alone or a group (`PacketGroup`), as `POST /v1/packets/batch` takes them.
    #[schema(value_type = Vec<OutboundGroupsItem>)]
    pub items: Vec<PacketBatchEntry>,
    /// Sequences on the channel so far.
    pub sent: u64,
    /// The first unsettled sequence whose block is not final yet, if any.
    pub waiting_for_finality: Option<u64>,
}

/// One item of an outbound groups page: a packet alone (its block's shared parts take more
/// than a group may carry), or the packets of one source block. The page holds no
/// acknowledgement, timeout or acknowledgements item.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum OutboundGroupsItem {
    /// A packet alone, as `POST /v1/packets` takes it.
    Packet(OutboundPacketItem),
    /// Packets of one source block.
    Group(Box<PacketGroup>),
}

/// A packet alone on an outbound groups page.
#[derive(ToSchema)]
pub struct OutboundPacketItem {
    /// Always `packet`.
    #[serde(rename = "type")]
    #[schema(pattern = "^packet$")]
    pub kind: String,
    /// The packet and its proof chain.
    #[schema(value_type = Object)]
    pub proof: Box<PacketProof>,
    /// The off-chain payload of a credit or talent packet (`null` for other kinds).
    pub payload: Option<CarriedPayload>,
    /// The W3C `traceparent` of the source's span, when it has one.
    pub trace_context: Option<String>,
}

/// A page of unsettled outbound packets, in sequence order.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutboundPage {
    /// Final packets not yet settled.
    pub packets: Vec<OutboundPacketView>,
    /// Sequences on the channel so far (the next packet gets `sent + 1`).
    pub sent: u64,
    /// The first unsettled sequence whose block is not final yet, if any (the page stops
    /// there).
    pub waiting_for_finality: Option<u64>,
}

/// An outbound packet as the shard holds a page of them: its own parts, and its block's
/// shared parts once for all of the block's packets on the page (a copy in every packet cost
/// a page of hundreds of packets megabytes of copies, written once per block all the same).
#[derive(Debug)]
struct PagePacket {
    sequence: u64,
    block: Arc<BlockShared>,
    path: InclusionProof,
    record: urbis_core::record::Record,
    payload: Option<CarriedPayload>,
    trace_context: Option<String>,
}

/// A page of unsettled outbound packets as the shard holds it: `OutboundPage` with each
/// block's shared parts once. Both page writers write from it.
#[derive(Debug)]
struct Page {
    packets: Vec<PagePacket>,
    sent: u64,
    waiting_for_finality: Option<u64>,
}

#[cfg(test)]
impl Page {
    /// The page with every packet's proof whole: what `GET /v1/packets/outbound` stands for.
    fn whole(&self) -> OutboundPage {
        OutboundPage {
            packets: self
                .packets
                .iter()
                .map(|p| OutboundPacketView {
                    sequence: p.sequence,
                    proof: p.block.packet_proof(p.sequence, p.path.clone(), p.record.clone()),
                    payload: p.payload.clone(),
                    trace_context: p.trace_context.clone(),
                })
                .collect(),
            sent: self.sent,
            waiting_for_finality: self.waiting_for_finality,
        }
    }

    /// `page` held as the shard holds it: consecutive packets with equal shared parts share
    /// one copy of them (as a block's packets do).
    fn from_whole(page: &OutboundPage) -> Page {
        let mut packets: Vec<PagePacket> = Vec::with_capacity(page.packets.len());
        for v in &page.packets {
            let shared = BlockShared {
                batch: v.proof.batch,
                batch_proof: v.proof.batch_proof.clone(),
                header: v.proof.header.clone(),
                finality: v.proof.finality.clone(),
            };
            let block = match packets.last() {
                Some(last)
                    if last.block.batch == shared.batch
                        && last.block.batch_proof == shared.batch_proof
                        && last.block.header == shared.header
                        && last.block.finality == shared.finality =>
                {
                    Arc::clone(&last.block)
                }
                _ => Arc::new(shared),
            };
            packets.push(PagePacket {
                sequence: v.sequence,
                block,
                path: v.proof.path.clone(),
                record: v.proof.record.clone(),
                payload: v.payload.clone(),
                trace_context: v.trace_context.clone(),
            });
        }
        Page { packets, sent: page.sent, waiting_for_finality: page.waiting_for_finality }
    }
}

/// Unsettled outbound packets to one city, each with its proof chain once its block is final:
/// what a relay carries.
#[utoipa::path(get, path = "/v1/packets/outbound", params(OutboundQuery),
    responses((status = 200, body = OutboundPage), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn outbound(
    State(app): State<Arc<AppState>>,
    query: Result<Query<OutboundQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<RawJson> {
    outbound_written(app, query, write_outbound_page).await
}

/// The same page as `GET /v1/packets/outbound`, with the packets one source block sent
/// written as a group (the form `POST /v1/packets/batch` and bridges take): their batch,
/// batch proof, header and finality once.
#[utoipa::path(get, path = "/v1/packets/outbound/groups", params(OutboundQuery),
    responses((status = 200, body = OutboundGroups), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn outbound_groups(
    State(app): State<Arc<AppState>>,
    query: Result<Query<OutboundQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<RawJson> {
    outbound_written(app, query, write_outbound_groups).await
}

async fn outbound_written(
    app: Arc<AppState>,
    query: Result<Query<OutboundQuery>, axum::extract::rejection::QueryRejection>,
    write: fn(&mut Vec<u8>, &Page) -> serde_json::Result<()>,
) -> ApiResult<RawJson> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let destination = city_by_name(&app, &q.destination)?;
    let limit = q.limit.unwrap_or(OUTBOUND_PAGE_MAX).clamp(1, OUTBOUND_PAGE_MAX);
    tokio::task::spawn_blocking(move || outbound_page(&app, destination, q.after, limit))
        .await
        .map_err(internal)?
        .and_then(|page| {
            let mut out = Vec::with_capacity(128 + page.packets.len() * OUTBOUND_PACKET_JSON_BYTES);
            write(&mut out, &page).map_err(internal)?;
            Ok(RawJson(out))
        })
}

fn outbound_page(app: &AppState, destination: CityId, after: u64, limit: usize) -> ApiResult<Page> {
    let next = next_sequence(app, destination)?;
    // Sized once for the packets the page can hold (a bridge asks for full pages while a
    // backlog lasts): grown a push at a time, the page was copied into fresh memory again and
    // again.
    let room = usize::try_from(next.saturating_sub(after.saturating_add(1))).unwrap_or(limit);
    let mut page = Page {
        packets: Vec::with_capacity(limit.min(room)),
        sent: next - 1,
        waiting_for_finality: None,
    };
    let mut blocks = PageBlocks::default();
    // Every sequence below the first one that may be unsettled is settled, and a settled
    // packet never becomes unsettled again: the walk starts there, not at a relay's cursor
    // that one slow packet holds back (each sequence is a state read).
    let first_unsettled = app
        .unsettled_from
        .lock()
        .map_err(|_| internal("lock poisoned"))?
        .get(&destination.0)
        .copied()
        .unwrap_or(1);
    let mut sequence = after.saturating_add(1).max(first_unsettled);
    let mut prefix = SettledPrefix::new(sequence, first_unsettled);
    let mut range = None;
    while sequence < next && page.packets.len() < limit {
        let id = PacketId { source: app.city, destination, sequence };
        if let Some(sent) = unsettled_packet(app, &id, &mut range)? {
            prefix.unsettled();
            match packet_proof(app, &mut blocks, &id, &sent)? {
                Some(packet) => page.packets.push(packet),
                None => {
                    page.waiting_for_finality = Some(sequence);
                    break;
                }
            }
        } else {
            prefix.settled(sequence);
        }
        sequence += 1;
    }
    if let Some(p) = prefix.mark()
        && let Ok(mut from) = app.unsettled_from.lock()
    {
        let hint = from.entry(destination.0).or_insert(1);
        *hint = (*hint).max(p);
    }
    Ok(page)
}

/// Where a walk over a channel's sequences leaves the first-unsettled mark: a walk that starts
/// at the mark moves it past each settled packet until it meets the first unsettled one, where
/// the mark stays; a walk that starts elsewhere says nothing about it.
struct SettledPrefix {
    mark: Option<u64>,
    moving: bool,
}

impl SettledPrefix {
    fn new(start: u64, mark: u64) -> Self {
        SettledPrefix { mark: (start == mark).then_some(mark), moving: start == mark }
    }

    fn settled(&mut self, sequence: u64) {
        if self.moving
            && let Some(m) = &mut self.mark
        {
            *m = sequence + 1;
        }
    }

    fn unsettled(&mut self) {
        self.moving = false;
    }

    fn mark(&self) -> Option<u64> {
        self.mark
    }
}

/// The sequence the next packet to `destination` gets: the one after its channel's newest
/// batch.
fn next_sequence(app: &AppState, destination: CityId) -> ApiResult<u64> {
    let key = StateKey::OutboundBatch { source: app.city, destination };
    Ok(match state_value(app, &key)? {
        None => 1,
        Some(v) => decode::<OutboundBatch>(&v).map_err(internal)?.next_sequence(),
    })
}

/// What a page's packets sent in one block share, computed once per block: its shared parts
/// (the block's finality proof, header, and batch on the page's channel with its state proof),
/// and the tree over the batch's record ids (each packet's path is read off it).
pub struct PageBlock {
    shared: Arc<BlockShared>,
    tree: PerfectSubtrees,
}

/// A page's blocks by height (a page holds hundreds of packets from a few blocks).
#[derive(Default)]
struct PageBlocks {
    by_height: std::collections::HashMap<u64, Arc<PageBlock>>,
}

impl PageBlocks {
    /// The shared parts of block `height`, which sent `id`; `None` while it is not final.
    fn get(
        &mut self,
        app: &AppState,
        id: &PacketId,
        height: u64,
    ) -> ApiResult<Option<Arc<PageBlock>>> {
        if let Some(block) = self.by_height.get(&height) {
            return Ok(Some(Arc::clone(block)));
        }
        let block = app.outbound_blocks.get_or_build((id.destination.0, height), || {
            let Some(finality) = finality(app, height)? else { return Ok(None) };
            let (batch, batch_proof, header, leaves) = sent_batch(app, id, height)?;
            let tree = PerfectSubtrees::from_leaf_hashes(&Blake3Tree::outbound_batch(), &leaves);
            let shared = Arc::new(BlockShared { batch, batch_proof, header, finality });
            Ok(Some(Arc::new(PageBlock { shared, tree })))
        })?;
        if let Some(block) = &block {
            self.by_height.insert(height, Arc::clone(block));
        }
        Ok(block)
    }
}

/// The blocks recent outbound pages were built from, by (destination, height): the last
/// `OUTBOUND_BLOCKS_KEPT`. A block of about 1 400 packets is read by about six pages of 256,
/// and what a page takes from it (its shared parts and the tree over its batch: a state
/// proof, a read of each of its packets and three BLAKE3 passes over them) never changes once
/// the block is final.
pub type OutboundBlocks = super::recent::Recent<(u32, u64), Arc<PageBlock>, OUTBOUND_BLOCKS_KEPT>;

/// How many built blocks outbound pages keep (a page touches a few blocks; a relay asks for a
/// few pages at once).
const OUTBOUND_BLOCKS_KEPT: usize = 32;

/// The packet's proof chain through the block that sent it, once that block is final.
fn packet_proof(
    app: &AppState,
    blocks: &mut PageBlocks,
    id: &PacketId,
    sent: &crate::store::SentPacket,
) -> ApiResult<Option<PagePacket>> {
    let record_id = sent.packet.record_id;
    let Some(block) = blocks.get(app, id, sent.height)? else {
        return Ok(None);
    };
    let batch = &block.shared.batch;
    if !batch.contains(id.sequence) {
        return Err(internal(format!("packet {id} is not in the batch of its block")));
    }
    let path = block
        .tree
        .inclusion(&Blake3Tree::outbound_batch(), id.sequence - batch.first_sequence)
        .map_err(internal)?;
    let stored = app
        .store
        .record(&record_id)
        .map_err(internal)?
        .ok_or_else(|| internal("sent record missing"))?;
    let payload = app
        .store
        .payload(&record_id)
        .map_err(internal)?
        .map(|p| CarriedPayload { salt: Hash32(p.salt), bytes: hex::encode(&p.bytes) });
    Ok(Some(PagePacket {
        sequence: id.sequence,
        block: Arc::clone(&block.shared),
        path,
        record: stored.record,
        payload,
        trace_context: app.packet_traces.get(&(id.destination.0, id.sequence)),
    }))
}

/// Where a packet is, on this side of its channel.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PacketStatus {
    /// Source city name.
    pub source: String,
    /// Destination city name.
    pub destination: String,
    /// Sequence.
    pub sequence: u64,
    /// `source` or `destination`: which side answered.
    pub side: String,
    /// At the source: `sent`, `acknowledged`, `error_acknowledged`, `timed_out` (the
    /// destination's view may have passed the timeout; a refund needs its proof) or
    /// `refunded`. At the destination: `received`, `error_acknowledged`, or `unknown`.
    pub state: String,
    /// The packet's timeout beacon height, at the source while unsettled.
    pub timeout_height: Option<u64>,
    /// The record the packet carries, at the source.
    #[schema(value_type = Option<String>)]
    pub record_id: Option<Hash32>,
    /// At the source while unsettled: the path of `record_id` at leaf `sequence -
    /// first_sequence` of the tree of the batch that `proof` shows (`docs/protocol.md` §12.6).
    #[schema(value_type = Option<Object>)]
    pub batch_path: Option<InclusionProof>,
    /// How it was settled, at the source.
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<PacketOutcome>,
    /// The acknowledgement written, at the destination.
    #[schema(value_type = Option<Object>)]
    pub acknowledgement: Option<Acknowledgement>,
    /// `final` when `proof` reaches a certified beacon block, else `committed`.
    pub level: String,
    /// The state fact behind `state` (at the source, while it is unsettled, its channel's
    /// `OutboundBatch` key at the block that sent it, whose batch holds its sequence, then the
    /// `PacketSettlements` key of its range of sequences, whose value holds its outcome; at the destination its receipt, holding the acknowledgement), as
    /// `urbis verify` takes it; at level final once covered.
    #[schema(value_type = Object)]
    pub proof: urbis_core::proof::ProofDocument,
    /// At the destination once final: the acknowledgement with the proof the source takes.
    #[schema(value_type = Option<Object>)]
    pub acknowledgement_proof: Option<AcknowledgementProof>,
}

/// Where a packet is: its state on this side with the proof of that state.
#[utoipa::path(get, path = "/v1/packets/{source}/{destination}/{sequence}",
    params(("source" = String, Path, description = "Source city name"), ("destination" = String, Path, description = "Destination city name"), ("sequence" = u64, Path, description = "Sequence")),
    responses((status = 200, body = PacketStatus), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn packet_status(
    State(app): State<Arc<AppState>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> ApiResult<Json<PacketStatus>> {
    let Path((source, destination, sequence)) =
        path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let id = PacketId {
        source: city_by_name(&app, &source)?,
        destination: city_by_name(&app, &destination)?,
        sequence,
    };
    tokio::task::spawn_blocking(move || status(&app, id)).await.map_err(internal)?.map(Json)
}

/// A state fact at the latest final header, or else at the tip.
fn best_fact(app: &AppState, key: &StateKey) -> ApiResult<StateFactProof> {
    let tip = app.sealer.tip().ok_or_else(|| Problem::not_found("no block sealed yet"))?;
    // The final fact only while it still shows the newest value. The newest value is one
    // point read; the tip is proven only when the final fact will not do.
    let newest = state_value(app, key)?;
    if let Some(f) = final_state(app, key)?
        && f.value.is_some()
        && f.value == newest
    {
        return Ok(f);
    }
    let (value, proof, header) = prove_at(app, key, tip.height)?;
    Ok(StateFactProof { key: key.clone(), value, proof, header, finality: None })
}

/// The outcome of a settled packet with its proof: its range's settlements at the latest
/// final header once that shows the outcome, else at the tip (`None`: not settled at the
/// tip). The outcome is read from the proven value itself, so the two always agree; an
/// outcome, once written, never changes.
fn settlement_fact(
    app: &AppState,
    id: &PacketId,
) -> ApiResult<Option<(PacketOutcome, StateFactProof)>> {
    let key = id.settlements_key();
    let outcome_in = |fact: &StateFactProof| -> ApiResult<Option<PacketOutcome>> {
        Ok(match fact.value.as_deref() {
            None => None,
            Some(v) => Settlements::decode_range(v, id.settlement_range())
                .map_err(internal)?
                .outcome(id.sequence),
        })
    };
    if let Some(f) = final_state(app, &key)?
        && let Some(outcome) = outcome_in(&f)?
    {
        return Ok(Some((outcome, f)));
    }
    let tip = app.sealer.tip().ok_or_else(|| Problem::not_found("no block sealed yet"))?;
    let (value, proof, header) = prove_at(app, &key, tip.height)?;
    let fact = StateFactProof { key, value, proof, header, finality: None };
    Ok(outcome_in(&fact)?.map(|outcome| (outcome, fact)))
}

/// The batch of `id`'s channel that block `height` sent, which holds `id`: its value, its
/// state proof and the header it is proven under, and the leaf hashes of its tree, from the
/// record ids in this city's index (checked against the batch's root).
fn sent_batch(
    app: &AppState,
    id: &PacketId,
    height: u64,
) -> ApiResult<(OutboundBatch, StateProof, SignedShardHeader, Vec<Hash32>)> {
    let (value, proof, header) = prove_at(app, &id.batch_key(), height)?;
    let batch: OutboundBatch =
        decode(value.as_deref().ok_or_else(|| internal("batch missing at its own block"))?)
            .map_err(internal)?;
    if batch.height != height || !batch.contains(id.sequence) {
        return Err(internal(format!("the batch at {height} does not hold packet {id}")));
    }
    let ids = app
        .store
        .sent_record_ids(id.destination.0, batch.first_sequence, batch.count)
        .map_err(internal)?;
    let leaves = OutboundBatch::leaf_hashes(&ids);
    if root_from_leaf_hashes(&Blake3Tree::outbound_batch(), &leaves) != batch.root {
        return Err(internal(format!("the index of the batch at {height} differs from its state")));
    }
    Ok((batch, proof, header, leaves))
}

fn status(app: &AppState, id: PacketId) -> ApiResult<PacketStatus> {
    let mut s = PacketStatus {
        source: city_name(app, id.source),
        destination: city_name(app, id.destination),
        sequence: id.sequence,
        side: String::new(),
        state: String::new(),
        timeout_height: None,
        record_id: None,
        batch_path: None,
        outcome: None,
        acknowledgement: None,
        level: "committed".into(),
        proof: urbis_core::proof::ProofDocument::State(StateFactProof {
            key: StateKey::BeaconView,
            value: None,
            proof: StateProof { leaf: None, siblings: vec![] },
            header: app
                .store
                .header(0)
                .map_err(internal)?
                .ok_or_else(|| Problem::not_found("no block sealed yet"))?,
            finality: None,
        }),
        acknowledgement_proof: None,
    };
    let fact = if id.source == app.city {
        s.side = "source".into();
        let Some(sent) = sent_packet(app, &id)? else {
            return Err(Problem::not_found(format!("no packet {id} was sent")));
        };
        s.record_id = Some(sent.packet.record_id);
        if let Some((outcome, fact)) = settlement_fact(app, &id)? {
            s.state = match outcome {
                PacketOutcome::Acknowledged { .. } => "acknowledged",
                PacketOutcome::ErrorAcknowledged { .. } => "error_acknowledged",
                PacketOutcome::TimedOut { .. } => "refunded",
            }
            .into();
            s.outcome = Some(outcome);
            fact
        } else {
            let view = app.beacon_view.load(std::sync::atomic::Ordering::Acquire);
            let timeout = sent.packet.timeout_height;
            s.state = if view >= timeout { "timed_out" } else { "sent" }.into();
            s.timeout_height = Some(timeout);
            let (batch, proof, header, leaves) = sent_batch(app, &id, sent.height)?;
            let fact = StateFactProof {
                key: id.batch_key(),
                value: Some(encode(&batch)),
                proof,
                header,
                finality: finality(app, sent.height)?,
            };
            s.batch_path = Some(
                InclusionProof::build(
                    &Blake3Tree::outbound_batch(),
                    &leaves,
                    id.sequence - batch.first_sequence,
                )
                .map_err(internal)?,
            );
            fact
        }
    } else if id.destination == app.city {
        s.side = "destination".into();
        let Some(v) = state_value(app, &id.receipt_key())? else {
            return Err(Problem::not_found(format!("packet {id} has not been received")));
        };
        let ack = decode::<Receipt>(&v).map_err(internal)?.acknowledgement;
        s.state = match ack {
            Acknowledgement::Success => "received",
            Acknowledgement::Error(_) => "error_acknowledged",
        }
        .into();
        s.acknowledgement = Some(ack);
        if let Some(f) = final_state(app, &id.receipt_key())?
            && f.value.is_some()
        {
            s.acknowledgement_proof = Some(AcknowledgementProof {
                acknowledgement: ack,
                proof: f.proof,
                header: f.header,
                finality: f.finality.ok_or_else(|| internal("final state without finality"))?,
            });
        }
        best_fact(app, &id.receipt_key())?
    } else {
        return Err(Problem::not_found(format!("packet {id} does not touch this city")));
    };
    s.level = if fact.finality.is_some() { "final" } else { "committed" }.into();
    s.proof = urbis_core::proof::ProofDocument::State(fact);
    Ok(s)
}

/// Queues an empty block (it records the current beacon view); its outcome is not awaited.
fn tick(app: &AppState) {
    let (reply, _) = tokio::sync::oneshot::channel();
    let _ = app.sealer.submit(Submission::tick(reply));
}

/// Query of a timeout proof.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeoutQuery {
    /// The packet's timeout beacon height (the source's own record of the packet).
    pub timeout_height: u64,
}

/// At the destination: proof that a packet was not received by a final header whose
/// certified beacon view reached its timeout. 409 while it could still be received, or once it
/// was.
#[utoipa::path(get, path = "/v1/packets/{source}/{destination}/{sequence}/timeout-proof",
    params(("source" = String, Path, description = "Source city name"), ("destination" = String, Path, description = "Destination city name (this city)"), ("sequence" = u64, Path, description = "Sequence"), TimeoutQuery),
    responses((status = 200, description = "The timeout proof the source takes", body = Object), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn timeout_proof(
    State(app): State<Arc<AppState>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    query: Result<Query<TimeoutQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<TimeoutProof>> {
    let Path((source, destination, sequence)) =
        path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let id = PacketId {
        source: city_by_name(&app, &source)?,
        destination: city_by_name(&app, &destination)?,
        sequence,
    };
    if id.destination != app.city {
        return Err(Problem::unprocessable("a timeout proof comes from the destination city"));
    }
    tokio::task::spawn_blocking(move || {
        let Some((m, finality)) = final_height(&app)? else {
            return Err(Problem::conflict("nothing of this shard is final yet"));
        };
        let (view, beacon_view_proof, header) = prove_at(&app, &StateKey::BeaconView, m)?;
        let view = view.map(|v| decode::<u64>(&v)).transpose().map_err(internal)?.unwrap_or(0);
        if view < q.timeout_height || finality.beacon_header.height < q.timeout_height {
            if app.beacon_view.load(std::sync::atomic::Ordering::Acquire) >= q.timeout_height {
                // The shard has followed the timeout block but sealed nothing since: seal an
                // empty block that records the view, so a final header can show it.
                tick(&app);
            }
            return Err(Problem::new(
                axum::http::StatusCode::CONFLICT,
                "packet-not-timed-out",
                format!(
                    "the latest final header's beacon view is {view}, the timeout is {}",
                    q.timeout_height
                ),
            ));
        }
        let (present, receipt_absence, _) = prove_at(&app, &id.receipt_key(), m)?;
        if present.is_some() {
            return Err(Problem::new(
                axum::http::StatusCode::CONFLICT,
                "packet-received",
                format!("packet {id} was received"),
            ));
        }
        Ok(Json(TimeoutProof {
            receipt_absence,
            beacon_view: view,
            beacon_view_proof,
            header,
            finality,
        }))
    })
    .await
    .map_err(internal)?
}

/// One asset's totals on this shard.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AssetTotals {
    /// Asset id.
    pub asset: String,
    /// Its issuing city.
    pub issuer: String,
    /// Σ balances (at the issuer: the issued supply not escrowed).
    #[schema(value_type = String)]
    #[serde(with = "urbis_core::encoding::u128_string")]
    pub balances: u128,
    /// Σ vouchers held here (away from the issuer).
    #[schema(value_type = String)]
    #[serde(with = "urbis_core::encoding::u128_string")]
    pub vouchers: u128,
    /// Escrow held here for each city (at the issuer), decimal strings.
    pub escrows: std::collections::BTreeMap<String, String>,
    /// Sent from here to each city and not settled yet, decimal strings.
    pub in_flight: std::collections::BTreeMap<String, String>,
}

/// This shard's side of the capital equations, as of one sealed height.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CapitalTotalsView {
    /// This city.
    pub city: String,
    /// The height the totals are as of (absent before the first block).
    pub height: Option<u64>,
    /// Every asset in genesis.
    pub assets: Vec<AssetTotals>,
}

/// Capital totals: per asset, balances, vouchers, escrows and capital in flight, so a checker
/// can add up every city's side: issued = issuer balances + escrows; escrows = vouchers
/// outstanding + in flight.
#[utoipa::path(get, path = "/v1/capital/totals",
    responses((status = 200, body = CapitalTotalsView)))]
pub async fn capital_totals(
    State(app): State<Arc<AppState>>,
) -> ApiResult<Json<CapitalTotalsView>> {
    use crate::ledger::TotalKey;
    let stored = app.store.capital_totals().map_err(internal)?;
    let mut assets: Vec<AssetTotals> = app
        .genesis
        .genesis()
        .assets
        .iter()
        .map(|a| AssetTotals {
            asset: a.id.clone(),
            issuer: city_name(&app, a.issuer),
            balances: 0,
            vouchers: 0,
            escrows: Default::default(),
            in_flight: Default::default(),
        })
        .collect();
    for (key, amount) in stored.totals {
        let asset = match &key {
            TotalKey::Balances(a)
            | TotalKey::Vouchers(a)
            | TotalKey::Escrow(a, _)
            | TotalKey::InFlight(a, _) => a,
        };
        let Some(t) = assets.iter_mut().find(|t| &t.asset == asset) else { continue };
        match key {
            TotalKey::Balances(_) => t.balances = amount,
            TotalKey::Vouchers(_) => t.vouchers = amount,
            TotalKey::Escrow(_, c) => {
                t.escrows.insert(city_name(&app, c), amount.to_string());
            }
            TotalKey::InFlight(_, c) => {
                t.in_flight.insert(city_name(&app, c), amount.to_string());
            }
        }
    }
    Ok(Json(CapitalTotalsView { city: city_name(&app, app.city), height: stored.height, assets }))
}

/// The off-chain payload that travelled beside a received credit or talent packet.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct InboundPayloadView {
    /// The received record's id.
    pub record: String,
    /// The payload (JSON).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The commitment's salt, hex.
    pub salt: String,
}

/// At the destination: the off-chain payload of a received credit or talent packet, for a
/// service of this city that may submit records of that kind.
#[utoipa::path(get, path = "/v1/packets/{source}/{destination}/{sequence}/payload",
    params(("source" = String, Path, description = "Source city name"), ("destination" = String, Path, description = "Destination city name (this city)"), ("sequence" = u64, Path, description = "Sequence")),
    responses((status = 200, body = InboundPayloadView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 410, description = "Erased at its source", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn inbound_payload(
    State(app): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> ApiResult<Json<InboundPayloadView>> {
    let grant = super::authenticate(&app, &headers)?;
    let Path((source, destination, sequence)) =
        path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let source = city_by_name(&app, &source)?;
    if city_by_name(&app, &destination)? != app.city {
        return Err(Problem::not_found(
            "payloads of received packets are kept at their destination",
        ));
    }
    let inbound = app
        .store
        .inbound(source.0, sequence)
        .map_err(internal)?
        .ok_or_else(|| Problem::not_found("no such packet was received"))?;
    if !grant.operator && !grant.kinds.contains(&inbound.record.kind()) {
        return Err(Problem::forbidden(
            "only a service of this city that handles this record kind reads its payload",
        ));
    }
    let Some(stored) = inbound.payload else {
        let committed = matches!(
            inbound.record.body,
            RecordBody::Credit(_) | RecordBody::Talent(TalentPayload::Issue { .. })
        );
        return Err(if committed {
            Problem::gone("the payload was erased, or did not travel with the packet")
        } else {
            Problem::not_found("no payload travels with this kind of record")
        });
    };
    Ok(Json(InboundPayloadView {
        record: inbound.record.id().to_hex(),
        payload: serde_json::from_slice(&stored.bytes).map_err(internal)?,
        salt: hex::encode(stored.salt),
    }))
}

/// Whether packets from a city are frozen here, and why.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    /// The source city.
    pub city: String,
    /// Whether its packets are answered with a `frozen_channel` error acknowledgement.
    pub frozen: bool,
    /// The conflicting sealed headers that froze it.
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<urbis_core::crosslink::ShardEquivocation>,
}

fn channel_view(app: &AppState, city: CityId) -> ApiResult<ChannelView> {
    let evidence = state_value(app, &StateKey::FrozenChannel { source: city })?
        .map(|v| decode::<urbis_core::crosslink::ShardEquivocation>(&v))
        .transpose()
        .map_err(internal)?;
    Ok(ChannelView { city: city_name(app, city), frozen: evidence.is_some(), evidence })
}

/// Packets from `city`: frozen or not, with the evidence.
#[utoipa::path(get, path = "/v1/channels/{city}", params(("city" = String, Path, description = "Source city name")),
    responses((status = 200, body = ChannelView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn channel(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ChannelView>> {
    let Path(city) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let city = city_by_name(&app, &city)?;
    Ok(Json(channel_view(&app, city)?))
}

/// Erases the copy of each just received packet whose source proved its payload erased while
/// the packet was being received (the erasure notice found no copy yet).
async fn erase_late_copies(app: &Arc<AppState>, received: &[(CityId, u64, Hash32)]) {
    for (source, sequence, record_id) in received {
        let late = app.store.erased_inbound(record_id, source.0).unwrap_or(false)
            && app
                .store
                .inbound(source.0, *sequence)
                .ok()
                .flatten()
                .is_some_and(|i| i.payload.is_some());
        if late {
            let erased = seal_op(app, PacketOp::EraseCopy { source: *source, sequence: *sequence });
            if let Err(p) = erased.await {
                tracing::warn!(detail = %p.detail, "a payload erased at its source could not be erased here yet");
            }
        }
    }
}

async fn seal_op(app: &Arc<AppState>, op: PacketOp) -> ApiResult<()> {
    let (reply, wait) = tokio::sync::oneshot::channel();
    let submission = Submission::packet(op, None, reply);
    match super::seal(app, submission, wait, "ask the channel's state").await? {
        Outcome::PacketSealed { .. } => Ok(()),
        Outcome::Rejected(r @ Rejection::NotFrozen { .. }) => {
            Err(Problem::not_found(r.to_string()))
        }
        Outcome::Rejected(r) => Err(internal(r)),
        Outcome::Failed(detail) => Err(internal(detail)),
        Outcome::Sealed(_) | Outcome::Replayed(_) => Err(internal("unexpected sealer outcome")),
    }
}

/// An operator lifts the freeze of packets from `city` (the evidence stays in the state
/// history and in the beacon block that recorded it).
#[utoipa::path(delete, path = "/v1/channels/{city}/freeze", params(("city" = String, Path, description = "Source city name")),
    responses((status = 200, body = ChannelView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn unfreeze(
    State(app): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ChannelView>> {
    let grant = super::authenticate(&app, &headers)?;
    if !grant.operator {
        return Err(Problem::forbidden("only an operator lifts a freeze"));
    }
    let Path(city) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let city = city_by_name(&app, &city)?;
    seal_op(&app, PacketOp::Unfreeze { source: city }).await?;
    tracing::warn!(%city, by = %grant.actor(), "freeze of packets from a city lifted");
    Ok(Json(channel_view(&app, city)?))
}

/// Anyone may report two validly sealed headers of one city at one height: once they verify,
/// packets from that city are frozen here.
#[utoipa::path(post, path = "/v1/evidence/shard-headers", request_body = Object,
    responses((status = 200, body = ChannelView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn report_equivocation(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ChannelView>> {
    public_rate(&app, "public:evidence")?;
    let (_, evidence): (_, urbis_core::crosslink::ShardEquivocation) =
        json_body(body, app.limits.body_bytes_max)?;
    let (city, _) = urbis_core::crosslink::verify_equivocation(&app.genesis, &evidence)
        .map_err(|e| Problem::invalid_proof(e.to_string()))?;
    if city == app.city {
        return Err(Problem::unprocessable("this city does not freeze its own packets"));
    }
    seal_op(&app, PacketOp::Freeze { source: city, evidence: Box::new(evidence) }).await?;
    Ok(Json(channel_view(&app, city)?))
}

/// Query of the outbound erasures.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ErasuresQuery {
    /// Destination city name.
    pub destination: String,
    /// Only erasures sealed above this height.
    #[serde(default)]
    pub after: u64,
}

/// One erasure of a record sent to the destination.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutboundErasure {
    /// The height of the block that recorded the erasure.
    pub height: u64,
    /// The erased record's id.
    #[schema(value_type = String)]
    pub record_id: Hash32,
}

/// Erasures of records sent to a city, in height order (at most 256).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutboundErasures {
    /// The erasures.
    pub erasures: Vec<OutboundErasure>,
}

/// At the source: erasures of credit and talent records sent to a city, which a relay carries
/// there (with the final proof of `Erasure{record_id}`) so the copy is erased too.
#[utoipa::path(get, path = "/v1/packets/erasures", params(ErasuresQuery),
    responses((status = 200, body = OutboundErasures), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn outbound_erasures(
    State(app): State<Arc<AppState>>,
    query: Result<Query<ErasuresQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<OutboundErasures>> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let destination = city_by_name(&app, &q.destination)?;
    let list =
        app.store.outbound_erasures(destination.0, q.after, OUTBOUND_PAGE_MAX).map_err(internal)?;
    Ok(Json(OutboundErasures {
        erasures: list
            .into_iter()
            .map(|(height, record_id)| OutboundErasure { height, record_id })
            .collect(),
    }))
}

/// An erasure at a record's source, proven.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureNotice {
    /// The source city's name.
    pub source: String,
    /// The erased record's id.
    #[schema(value_type = String)]
    pub record_id: Hash32,
    /// The source's final proof of `Erasure{record_id}`.
    #[schema(value_type = Object)]
    pub proof: urbis_core::proof::ProofDocument,
}

/// What the destination did.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErasureNoticeAnswer {
    /// The record.
    #[schema(value_type = String)]
    pub record_id: Hash32,
    /// True when a copy of its payload was held here and is now erased (and purged from the
    /// node's files); false when none was held (never travelled, or already erased).
    pub erased: bool,
}

/// At the destination: the source erased a record's payload (proven by a final proof of its
/// `Erasure` state, checked against this shard's light client); the copy that travelled beside
/// the packet is erased here too. Public: the proof is the authorization.
#[utoipa::path(post, path = "/v1/packets/erasures", request_body = ErasureNotice,
    responses((status = 200, body = ErasureNoticeAnswer), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn erasure_notice(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ErasureNoticeAnswer>> {
    public_rate(&app, "public:packets")?;
    let (_, notice): (_, ErasureNotice) = json_body(body, app.limits.body_bytes_max)?;
    let source = city_by_name(&app, &notice.source)?;
    let urbis_core::proof::ProofDocument::State(proof) = notice.proof else {
        return Err(Problem::unprocessable("an erasure is proven by a state proof"));
    };
    let record_id = notice.record_id;
    let checker = app.clone();
    let held = tokio::task::spawn_blocking(move || {
        let app = checker;
        let key = StateKey::Erasure { record_id };
        {
            let client = app.client.read().map_err(|_| internal("light client lock poisoned"))?;
            let v =
                urbis_core::proof::verify_state_proof(&app.genesis, &client, source, &key, &proof)
                    .map_err(|e| Problem::invalid_proof(e.to_string()))?;
            if v.beacon_height.is_none() {
                return Err(Problem::invalid_proof("the erasure proof is not final"));
            }
            if v.value.is_none() {
                return Err(Problem::invalid_proof(
                    "the proof shows the record's payload was not erased",
                ));
            }
        }
        // Remembered first, then the copy looked for: a receipt sealed in between checks the
        // mark after sealing (`erase_late_copies`), so one of the two always sees the other.
        app.store.mark_erased_inbound(&record_id, source.0).map_err(internal)?;
        // The copy held here, if any: (sequence) of a received packet that still has a payload.
        match app.store.inbound_by_record(&record_id).map_err(internal)? {
            Some((s, sequence)) if s == source.0 => {
                let inbound = app.store.inbound(s, sequence).map_err(internal)?;
                Ok(inbound.and_then(|i| i.payload).map(|_| sequence))
            }
            _ => Ok(None),
        }
    })
    .await
    .map_err(internal)??;
    let Some(sequence) = held else {
        return Ok(Json(ErasureNoticeAnswer { record_id, erased: false }));
    };
    // Erased with a sealed block, which purges the bytes from the node's files before it is
    // answered (as a local erasure is).
    seal_op(&app, PacketOp::EraseCopy { source, sequence }).await?;
    tracing::info!(%source, "a received payload was erased at its source's request");
    Ok(Json(ErasureNoticeAnswer { record_id, erased: true }))
}

/// Most sequences one scrape looks at per channel.
const GAUGE_SCAN_MAX: u64 = 10_000;

/// Sets the per-destination packet gauges: packets sent, and the age of the oldest one not
/// settled (its record's time to now). The scan starts where the last one stopped.
pub fn refresh_gauges(app: &AppState) {
    let now = (app.clock)();
    for city in &app.genesis.genesis().cities {
        if city.id == app.city {
            continue;
        }
        let label = crate::metrics::DestinationLabel { destination: city.name.clone() };
        let Ok(next) = next_sequence(app, city.id) else { continue };
        app.metrics.packets_sent.get_or_create(&label).set(next.saturating_sub(1) as i64);
        let Ok(mut from) = app.unsettled_from.lock() else { return };
        let start = *from.get(&city.id.0).unwrap_or(&1);
        let mut sequence = start;
        let mut oldest = None;
        let mut range = None;
        while sequence < next && sequence < start + GAUGE_SCAN_MAX {
            let id = PacketId { source: app.city, destination: city.id, sequence };
            match unsettled_packet(app, &id, &mut range) {
                Ok(Some(c)) => {
                    oldest = Some(c.packet);
                    break;
                }
                Ok(None) => sequence += 1,
                Err(_) => break,
            }
        }
        // The page walks move it too: never back.
        let hint = from.entry(city.id.0).or_insert(1);
        *hint = (*hint).max(sequence);
        let age = oldest
            .and_then(|c| app.store.record(&c.record_id).ok().flatten())
            .map_or(0.0, |r| now.saturating_sub(r.record.time_ms) as f64 / 1e3);
        app.metrics.oldest_unsettled.get_or_create(&label).set(age);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::SettledPrefix;

    /// Sequences 1–4 settled, 5 unsettled, 6 settled: a walk from the mark leaves it at 5 (the
    /// first packet still unsettled), however far it goes on; a walk from elsewhere leaves it.
    #[test]
    fn the_mark_stops_at_the_first_unsettled_packet() {
        let settled = |s: u64| s != 5;
        let walk = |start: u64, mark: u64, end: u64| {
            let mut p = SettledPrefix::new(start, mark);
            for s in start..end {
                if settled(s) { p.settled(s) } else { p.unsettled() }
            }
            p.mark()
        };
        assert_eq!(walk(1, 1, 8), Some(5));
        assert_eq!(walk(1, 1, 4), Some(4));
        assert_eq!(walk(5, 5, 8), Some(5));
        assert_eq!(walk(6, 1, 8), None);
    }

    /// A receipt remembered with the height that wrote it is final from that height's header
    /// on, not one before; one found at a state version, from that version on; none is in the
    /// empty tree.
    #[test]
    fn a_receipt_is_final_from_the_header_that_wrote_it() {
        use super::WrittenAt;
        let m = 40;
        assert!(WrittenAt::Height(m).is_final(m, Some(7)));
        assert!(WrittenAt::Height(m - 1).is_final(m, Some(7)));
        assert!(!WrittenAt::Height(m + 1).is_final(m, Some(7)));
        assert!(!WrittenAt::Height(m).is_final(m, None));
        assert!(WrittenAt::Version(7).is_final(m, Some(7)));
        assert!(!WrittenAt::Version(8).is_final(m, Some(7)));
        assert!(!WrittenAt::Version(0).is_final(m, None));
    }

    /// Six outbound packets sent by two blocks of three (with and without payloads and trace
    /// contexts), acknowledgements of them with gaps, and a light-client update.
    #[allow(clippy::unwrap_used)]
    pub(in crate::api) fn written_fixture() -> (
        super::OutboundPage,
        Vec<Option<urbis_core::packet::AcknowledgementProof>>,
        urbis_core::light_client::LightClientUpdate,
    ) {
        use super::*;
        use urbis_core::beacon::Crosslink;
        use urbis_core::packet::AckError;
        use urbis_core::record::Record;
        use urbis_core::testkit::{BeaconChain, Federation, ShardChain, information_record};
        let fed = Federation::new("writers", 2, 4);
        let (a, b) = (CityId(0), CityId(1));
        let mut chain = ShardChain::new(a);
        let mut beacon = BeaconChain::new(&fed);
        let mut packets = vec![];
        let mut acks = vec![];
        for height in 0..2u64 {
            let records: Vec<Record> = (0..3)
                .map(|i| {
                    let mut r = information_record(a, height * 10 + i);
                    r.destination = Some(b);
                    r
                })
                .collect();
            let ids: Vec<Hash32> = records.iter().map(Record::id).collect();
            let batch = OutboundBatch::new(height, height * 3 + 1, 9, &ids);
            let channel = PacketId { source: a, destination: b, sequence: 1 };
            let writes = [(channel.batch_key(), Some(encode(&batch)))];
            let leaves = OutboundBatch::leaf_hashes(&ids);
            let header_hash = chain.seal(&fed, records, &writes).header.hash();
            beacon.produce(&fed, vec![Crosslink { city: a, header_hash }], None);
            let finality = beacon.finality(&chain, height, height + 1).unwrap();
            for i in 0..3u64 {
                let r = chain.record_proof(height, i);
                let id = PacketId { source: a, destination: b, sequence: height * 3 + i + 1 };
                let fact = chain.state_proof(&id.batch_key());
                packets.push(OutboundPacketView {
                    sequence: id.sequence,
                    proof: PacketProof {
                        sequence: id.sequence,
                        batch,
                        batch_proof: fact.proof.clone(),
                        path: InclusionProof::build(&Blake3Tree::outbound_batch(), &leaves, i)
                            .unwrap(),
                        record: r.record,
                        header: r.header.clone(),
                        finality: finality.clone(),
                    },
                    payload: (i == 1)
                        .then(|| CarriedPayload { salt: Hash32([7; 32]), bytes: "0a0b".into() }),
                    trace_context: (i == 2)
                        .then(|| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                });
                acks.push((i != 1).then(|| AcknowledgementProof {
                    acknowledgement: if i == 0 {
                        Acknowledgement::Success
                    } else {
                        Acknowledgement::Error(AckError::UnknownAsset)
                    },
                    proof: fact.proof,
                    header: r.header,
                    finality: finality.clone(),
                }));
            }
        }
        let update = beacon.update(1);
        (OutboundPage { packets, sent: 6, waiting_for_finality: Some(7) }, acks, update)
    }

    /// The page and acknowledgement writers give the bytes serializing the values whole
    /// gives: packets in two blocks (headers and finality proofs repeated, then changing),
    /// with and without payloads and trace contexts, and answers with gaps.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn pages_and_acknowledgements_are_written_as_serde_json_writes_them() {
        use super::*;
        let (page, acks, _) = written_fixture();
        let held = Page::from_whole(&page);
        // Each block's three packets hold one copy of its shared parts, and made whole they
        // are the page again.
        let one = |a: usize, b: usize| Arc::ptr_eq(&held.packets[a].block, &held.packets[b].block);
        assert!(one(0, 1) && one(0, 2) && one(3, 4) && one(3, 5) && !one(2, 3));
        let whole = serde_json::to_string(&page).unwrap();
        assert_eq!(serde_json::to_string(&held.whole()).unwrap(), whole);
        let mut out = vec![];
        write_outbound_page(&mut out, &held).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), whole);
        let empty = OutboundPage { packets: vec![], sent: 0, waiting_for_finality: None };
        let mut out = vec![];
        write_outbound_page(&mut out, &Page::from_whole(&empty)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&empty).unwrap());
        for answer in [acks.clone(), vec![], vec![None]] {
            let mut out = vec![];
            write_acknowledgements(&mut out, &answer).unwrap();
            let whole = AcknowledgementsResponse { acknowledgements: answer };
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&whole).unwrap());
        }
    }

    /// An answer's acknowledgements held with their header and finality once are, made whole,
    /// the proofs they stand for, and the grouped answer written from them is the one written
    /// from the whole proofs.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn proven_acknowledgements_are_the_whole_proofs_with_their_one_header() {
        use super::*;
        let (_, acks, _) = written_fixture();
        // One block's answers: the first and third acknowledged, the second not yet.
        let answer = acks[..3].to_vec();
        let first = answer[0].as_ref().unwrap();
        let proven = || Proven {
            chain: Some((first.header.clone(), first.finality.clone())),
            acknowledgements: answer
                .iter()
                .map(|a| a.as_ref().map(|a| (a.acknowledgement, a.proof.clone())))
                .collect(),
        };
        assert_eq!(proven().whole(), answer);
        let (mut from_proven, mut from_whole) = (vec![], vec![]);
        write_proven_group(&mut from_proven, proven()).unwrap();
        write_acknowledgement_group(&mut from_whole, &answer).unwrap();
        assert_eq!(from_proven, from_whole);
        // Nothing proven: no header, and every answer empty.
        let none = Proven { chain: None, acknowledgements: vec![None, None] };
        assert_eq!(none.whole(), vec![None, None]);
    }

    /// The grouped page writes each block's packets as one group whose shared parts, with each
    /// packet's own, are exactly its proof, and reads as a batch's items; a block whose shared
    /// parts are larger than a group may carry has its packets written one by one.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_grouped_page_holds_each_blocks_packets_once_as_written_whole() {
        use super::*;
        let (mut page, _, update) = written_fixture();
        let wanted: Vec<serde_json::Value> =
            page.packets.iter().map(|v| serde_json::to_value(v).unwrap()).collect();
        // Each item's packets, each as the page writes it whole.
        let expand = |page: &OutboundPage| {
            let mut out = vec![];
            write_outbound_groups(&mut out, &Page::from_whole(page)).unwrap();
            let typed: OutboundGroups = serde_json::from_slice(&out).unwrap();
            assert_eq!((typed.sent, typed.waiting_for_finality), (6, Some(7)));
            let body: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let mut kinds = vec![];
            let mut packets = vec![];
            for item in body["items"].as_array().unwrap() {
                kinds.push(item["type"].as_str().unwrap().to_string());
                if item["type"] == "packet" {
                    let mut view = item.clone();
                    view.as_object_mut().unwrap().remove("type");
                    view["sequence"] = item["proof"]["sequence"].clone();
                    packets.push(view);
                    continue;
                }
                for p in item["packets"].as_array().unwrap() {
                    let mut proof = serde_json::Map::new();
                    proof.insert("sequence".into(), p["sequence"].clone());
                    for field in ["batch", "batch_proof"] {
                        proof.insert(field.into(), item[field].clone());
                    }
                    for field in ["path", "record"] {
                        proof.insert(field.into(), p[field].clone());
                    }
                    for field in ["header", "finality"] {
                        proof.insert(field.into(), item[field].clone());
                    }
                    let mut view = p.clone();
                    for field in ["path", "record"] {
                        view.as_object_mut().unwrap().remove(field);
                    }
                    view["proof"] = proof.into();
                    packets.push(view);
                }
            }
            (kinds, packets)
        };
        let (kinds, packets) = expand(&page);
        assert_eq!(kinds, ["packets", "packets"]);
        assert_eq!(packets, wanted);
        // The second block's finality proof carries set changes past what a group may carry.
        let updates = urbis_core::packet::GROUP_SHARED_JSON_MAX
            / serde_json::to_string(&update).unwrap().len()
            + 1;
        for v in &mut page.packets[3..] {
            v.proof.finality.set_updates = vec![update.clone(); updates];
        }
        let wanted: Vec<serde_json::Value> =
            page.packets.iter().map(|v| serde_json::to_value(v).unwrap()).collect();
        let (kinds, packets) = expand(&page);
        assert_eq!(kinds, ["packets", "packet", "packet", "packet"]);
        assert_eq!(packets, wanted);
    }

    /// An acknowledgements answer with its header and finality once reads back, with them, as
    /// the proofs; a batch's acknowledgements group reads as those acknowledgements, each on
    /// its own: a member that does not read is refused alone, an empty group once, and a group
    /// whose shared parts are too large once per member.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn acknowledgements_are_grouped_through_their_one_header() {
        use super::*;
        use serde_json::json;
        let (_, acks, update) = written_fixture();
        // The answers of one block: the first and third acknowledged, the second not yet.
        let answer = &acks[..3];
        let mut out = vec![];
        write_acknowledgement_group(&mut out, answer).unwrap();
        let grouped: AcknowledgementGroupResponse = serde_json::from_slice(&out).unwrap();
        let (header, finality) = (grouped.header.unwrap(), grouped.finality.unwrap());
        assert_eq!(grouped.acknowledgements.len(), 3);
        for (got, want) in grouped.acknowledgements.iter().zip(answer) {
            let got = got.as_ref().map(|g| AcknowledgementProof {
                acknowledgement: g.acknowledgement,
                proof: g.proof.clone(),
                header: header.clone(),
                finality: finality.clone(),
            });
            assert_eq!(&got, want);
        }
        let mut none = vec![];
        write_acknowledgement_group(&mut none, &[None]).unwrap();
        assert_eq!(none, br#"{"header":null,"finality":null,"acknowledgements":[null]}"#);

        let packet =
            |sequence: u64| PacketId { source: CityId(0), destination: CityId(1), sequence };
        let member = |i: usize| {
            let a = answer[i].as_ref().unwrap();
            json!({"packet": packet(i as u64 + 1), "acknowledgement": a.acknowledgement, "proof": a.proof})
        };
        let group = |members: Vec<serde_json::Value>, finality: &FinalityProof| json!({"type": "acknowledgements", "header": header, "finality": finality, "acknowledgements": members});
        let mut padded = finality.clone();
        let copies = urbis_core::packet::GROUP_SHARED_JSON_MAX
            / serde_json::to_string(&update).unwrap().len()
            + 1;
        padded.set_updates = vec![update; copies];
        let body = json!({"items": [
            group(vec![member(0), json!({"packet": packet(2)}), member(2)], &finality),
            group(vec![], &finality),
            group(vec![member(0), member(2)], &padded),
        ]});
        let read: Vec<ApiResult<PacketRequest>> =
            read_batch(&serde_json::to_vec(&body).unwrap(), 100)
                .unwrap()
                .into_iter()
                .map(|r| r.map(BatchItem::whole))
                .collect();
        assert_eq!(read.len(), 6);
        for (i, want) in [(0, 0), (2, 2)] {
            match &read[i] {
                Ok(PacketRequest::Acknowledgement { proof, packet: p, .. }) => {
                    assert_eq!(Some(&**proof), answer[want].as_ref());
                    assert_eq!(*p, packet(want as u64 + 1));
                }
                other => panic!("item {i}: {other:?}"),
            }
        }
        let detail = |i: usize| read[i].as_ref().unwrap_err().detail.clone();
        assert!(detail(1).contains("missing field"), "{}", detail(1));
        assert!(detail(3).contains("at least one acknowledgement"), "{}", detail(3));
        assert!(
            detail(4).contains("shared parts") && detail(5).contains("shared parts"),
            "{}",
            detail(4)
        );
    }
}
