//! The shard's HTTP API (axum): submit records, read them back with proofs, blocks, subjects,
//! state and history proofs, health, and the OpenAPI document.

pub mod answers;
pub mod credentials;
pub mod limit;
pub mod packets;
pub mod problem;
pub mod receipts;
pub mod recent;
pub mod traces;
pub mod types;

use crate::sealer::{Outcome, Sealer, Submission};
use crate::store::Store;
use crate::tokens::{AuthError, Tokens};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use problem::Problem;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use types::{Context, SubmitRequest, SubmitResponse};
use urbis_core::encoding::decode;
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::Hash32;
use urbis_core::header::SignedShardHeader;
use urbis_core::merkle::{Blake3Tree, ConsistencyProof, InclusionProof, TreeHasher};
use urbis_core::proof::{FinalityProof, HistoryLink, ProofDocument, RecordProof, StateFactProof};
use urbis_core::record::{CityId, Record, RecordKind, SubjectId};
use urbis_core::state::StateKey;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Limits the API enforces before anything reaches the ledger.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Most records per request.
    pub batch_records_max: usize,
    /// Most ids per batch read.
    pub batch_reads_max: usize,
    /// Longest wait for a seal.
    pub request_timeout_ms: u64,
}

/// Shared state of the handlers.
pub struct AppState {
    /// The store (reads).
    pub store: Arc<Store>,
    /// The sealing loop (writes).
    pub sealer: Sealer,
    /// Service tokens.
    pub tokens: Tokens,
    /// The federation.
    pub genesis: Arc<ValidGenesis>,
    /// This shard's city.
    pub city: CityId,
    /// Limits.
    pub limits: ApiLimits,
    /// The wall clock, milliseconds since the Unix epoch.
    pub clock: fn() -> u64,
    /// Fresh 32 random bytes (salts).
    pub random: fn() -> [u8; 32],
    /// False while draining on shutdown.
    pub ready: AtomicBool,
    /// A monotonic clock (time since some fixed start), for rate limits.
    pub monotonic: fn() -> std::time::Duration,
    /// Per-token rate limit of writes.
    pub rate: limit::RateLimiter,
    /// Submissions accepted with `?wait=false`.
    pub pending: limit::PendingTable,
    /// The node's metrics.
    pub metrics: Arc<crate::metrics::ShardMetrics>,
    /// When the shard follows the beacon: the last time a validator answered.
    pub beacon: Option<BeaconContact>,
    /// The light client packets are verified against (the follower advances it).
    pub client: Arc<std::sync::RwLock<urbis_core::light_client::LightClient>>,
    /// The highest beacon height followed durably.
    pub beacon_view: Arc<std::sync::atomic::AtomicU64>,
    /// Per destination city: the lowest sequence that may still be unsettled (every one below
    /// it is settled, for good): where outbound pages and the metrics' scan start.
    pub unsettled_from: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
    /// The trace context of recent outbound packets.
    pub packet_traces: traces::PacketTraces,
    /// What recent outbound pages took from the blocks that sent their packets.
    pub outbound_blocks: packets::OutboundBlocks,
    /// The height that received each recent inbound packet (acknowledgement long polls).
    pub recent_receipts: receipts::RecentReceipts,
    /// This city's latest crosslinked height, as the follower records it: what makes new
    /// acknowledgements final (long polls wait on it).
    pub crosslinked: tokio::sync::watch::Receiver<Option<u64>>,
}

/// The last answer of a validator to the shard's light client.
pub struct BeaconContact {
    /// On the monotonic clock (`AppState::monotonic`), in milliseconds.
    pub last_ms: Arc<std::sync::atomic::AtomicU64>,
    /// How long without an answer makes the node not ready.
    pub timeout_ms: u64,
}

/// Registers the bearer-token security scheme the submit route names.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// States what serde's `deny_unknown_fields` already enforces on a record's variants, which
/// utoipa leaves out for an internally tagged enum: no property beyond the listed ones.
struct ClosedRecordInput;

impl utoipa::Modify for ClosedRecordInput {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let Some(components) = openapi.components.as_mut() else { return };
        let Some(RefOr::T(Schema::OneOf(variants))) = components.schemas.get_mut("RecordInput")
        else {
            return;
        };
        for variant in &mut variants.items {
            if let RefOr::T(Schema::Object(object)) = variant {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerScheme, &ClosedRecordInput),
    info(title = "Urbis shard API", description = "A city's ledger: submit records, read them back with proofs that `urbis verify` checks offline."),
    paths(submit, submission_status, packets::post_packet, packets::post_packets_batch, answers::post_answers, packets::acknowledgements, packets::acknowledgement_groups, packets::outbound, packets::outbound_groups, packets::packet_status, packets::timeout_proof, packets::capital_totals, packets::inbound_payload, credentials::credential_status, packets::channel, packets::unfreeze, packets::outbound_erasures, packets::erasure_notice, packets::report_equivocation, get_record, get_payload, erase_payload, latest_block, get_block, subject_records, state_proof, history_proof, consistency, batch_record_proofs, livez, startupz, readyz),
    components(schemas(answers::AnswersRequest, answers::AnswerResult, answers::AnswersResponse, packets::PacketBatchRequest, packets::PacketBatchEntry, packets::PacketGroup, packets::GroupedPacket, packets::PacketBatchItem, packets::PacketBatchResponse, packets::AcknowledgementsRequest, packets::AcknowledgementsResponse, packets::AcknowledgementGroupResponse, packets::GroupedAcknowledgementProof, packets::AcknowledgementGroup, packets::GroupedAcknowledgement, packets::PacketRequest, packets::PacketResponse, packets::CarriedPayload, packets::OutboundPage, packets::OutboundGroups, packets::OutboundGroupsItem, packets::OutboundPacketItem, packets::OutboundPacketView, packets::PacketStatus, packets::CapitalTotalsView, packets::AssetTotals, packets::InboundPayloadView, packets::ChannelView, packets::OutboundErasures, packets::OutboundErasure, packets::ErasureNotice, packets::ErasureNoticeAnswer, credentials::CredentialStatusRequest, credentials::CredentialStatusView, Problem, SubmitRequest, SubmitResponse, AcceptedResponse, SubmissionStatus, BlockView, RecordView, PayloadView, PayloadStatus, PayloadLocation, ErasureView, SubjectPage, ProofView, BatchProofRequest, BatchProofResponse))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/records", post(submit))
        .route("/v1/records/{id}", get(get_record))
        .route("/v1/records/{id}/payload", get(get_payload).delete(erase_payload))
        .route("/v1/submissions/{id}", get(submission_status))
        .route("/v1/proofs/records", post(batch_record_proofs))
        .route("/v1/blocks/latest", get(latest_block))
        .route("/v1/blocks/{height}", get(get_block))
        .route("/v1/blocks/{height}/history-proof", get(history_proof))
        .route("/v1/history/consistency", get(consistency))
        .route("/v1/subjects/{subject}/records", get(subject_records))
        .route("/v1/state/{key}/proof", get(state_proof))
        .route("/v1/packets", post(packets::post_packet))
        .route("/v1/packets/outbound", get(packets::outbound))
        .route("/v1/packets/outbound/groups", get(packets::outbound_groups))
        .route("/v1/packets/batch", post(packets::post_packets_batch))
        .route("/v1/packets/answers", post(answers::post_answers))
        .route(
            "/v1/packets/erasures",
            get(packets::outbound_erasures).post(packets::erasure_notice),
        )
        .route("/v1/packets/acknowledgements", post(packets::acknowledgements))
        .route("/v1/packets/acknowledgements/groups", post(packets::acknowledgement_groups))
        .route("/v1/packets/{source}/{destination}/{sequence}", get(packets::packet_status))
        .route(
            "/v1/packets/{source}/{destination}/{sequence}/timeout-proof",
            get(packets::timeout_proof),
        )
        .route(
            "/v1/packets/{source}/{destination}/{sequence}/payload",
            get(packets::inbound_payload),
        )
        .route("/v1/capital/totals", get(packets::capital_totals))
        .route("/v1/credentials/status", post(credentials::credential_status))
        .route("/v1/channels/{city}", get(packets::channel))
        .route("/v1/channels/{city}/freeze", axum::routing::delete(packets::unfreeze))
        .route("/v1/evidence/shard-headers", post(packets::report_equivocation))
        .route("/livez", get(livez))
        .route("/startupz", get(startupz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.http.clone(),
            urbis_ops::time_request,
        ))
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(state.limits.body_bytes_max))
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        .with_state(state)
}

/// `GET /metrics`: OpenMetrics text for scrapers that accept it (Prometheus does), the
/// Prometheus text format for the others.
async fn metrics(State(app): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    let refresh = app.clone();
    // The per-channel packet gauges are read from the state at scrape time.
    if let Err(e) = tokio::task::spawn_blocking(move || packets::refresh_gauges(&refresh)).await {
        tracing::warn!(error = %e, "packet gauges not refreshed");
    }
    app.metrics.response(&headers)
}

/// Bounds every request: a submission waits at most `request_timeout_ms` for its block (and
/// says so); anything still running a little after that is cut off with a 503 problem.
async fn deadline(
    State(app): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = std::time::Duration::from_millis(app.limits.request_timeout_ms + 5_000);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::unavailable("the request did not finish in time").into_response(),
    }
}

async fn openapi_json() -> impl IntoResponse {
    Json(openapi())
}

type ApiResult<T> = Result<T, Problem>;

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "internal error");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the node's log",
    )
}

/// Reads a JSON body: 413 over the limit, 400 when it is not JSON, 422 when it is JSON of the
/// wrong shape. Returns the raw bytes too (idempotency hashes them).
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> ApiResult<(Bytes, T)> {
    let body = body_bytes(body, limit)?;
    let value = serde_json::from_slice(&body).map_err(json_problem)?;
    Ok((body, value))
}

/// A request body's bytes: 413 over the limit, 400 when it could not be read.
fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> ApiResult<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large(format!("request body exceeds {limit} bytes"))
        } else {
            Problem::bad_request(e.body_text())
        }
    })
}

/// A body that does not read as what was expected: 422 when it is JSON of the wrong shape,
/// 400 when it is not JSON.
fn json_problem(e: serde_json::Error) -> Problem {
    match e.classify() {
        serde_json::error::Category::Data => Problem::unprocessable(e.to_string()),
        _ => Problem::bad_request(e.to_string()),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Submit records.
#[utoipa::path(
    post, path = "/v1/records", request_body = SubmitRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body get the same answer, also after a restart. 1 to 255 visible ASCII characters.", min_length = 1, max_length = 255), SubmitQuery),
    responses(
        (status = 200, description = "Sealed in a durable block (level committed)", body = SubmitResponse),
        (status = 202, description = "`?wait=false`: queued, not yet durable; the outcome appears at `status_url` (also in `Location`)", body = AcceptedResponse),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the state, or the idempotency key was used with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or batch too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A record breaks a rule", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This token's request rate is exceeded; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Draining or overloaded; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn submit(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    if !app.ready.load(Ordering::Relaxed) {
        return Err(Problem::unavailable("the node is shutting down"));
    }
    let grant = authenticate(&app, &headers)?;
    rate_limit(&app, &grant)?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let (body, request): (Bytes, SubmitRequest) = json_body(body, app.limits.body_bytes_max)?;
    if request.records.is_empty() {
        return Err(Problem::unprocessable("`records` is empty"));
    }
    if request.records.len() > app.limits.batch_records_max {
        return Err(Problem::too_large(format!(
            "at most {} records per request",
            app.limits.batch_records_max
        )));
    }
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k =
                v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
                    Problem::bad_request("Idempotency-Key must be 1..=255 visible ASCII characters")
                })?;
            Some(k.to_string())
        }
    };
    let request_hash = Hash32(*blake3::hash(&body).as_bytes());
    if let Some(key) = &idempotency_key
        && let Some(entry) = app.store.idempotency(&grant.service, key).map_err(internal)?
    {
        return replay(entry, request_hash);
    }
    let ctx = Context {
        genesis: &app.genesis,
        city: app.city,
        service: &grant.service,
        kinds: &grant.kinds,
        now_ms: (app.clock)(),
    };
    let mut records = Vec::with_capacity(request.records.len());
    let mut payloads = Vec::with_capacity(request.records.len());
    let mut ids = Vec::with_capacity(request.records.len());
    let mut encodings = Vec::with_capacity(request.records.len());
    let mut bytes = 0usize;
    let mut salt = app.random;
    for (index, input) in request.records.into_iter().enumerate() {
        let (record, payload) = input.into_record(index, &ctx, &mut salt).map_err(|e| match e {
            types::InputError::KindNotAllowed { .. } => Problem::forbidden(e.to_string()),
            types::InputError::Invalid { .. } => Problem::unprocessable(e.to_string()),
        })?;
        let encoded = urbis_core::encoding::encode(&record);
        let size = encoded.len();
        // The record id, here on the request's thread rather than on the sealer's.
        ids.push(urbis_core::hash::Domain::RecordId.hash(&encoded));
        encodings.push(encoded);
        if size as u64 > app.genesis.genesis().parameters.record_bytes_max {
            return Err(Problem::too_large(format!(
                "record {index} encodes to {size} bytes, the limit is {}",
                app.genesis.genesis().parameters.record_bytes_max
            )));
        }
        bytes += size;
        records.push(record);
        payloads.push(payload);
    }
    // Packets carry the submission's trace on to the bridges.
    let destinations: Vec<Option<u32>> =
        records.iter().map(|r| r.destination.map(|d| d.0)).collect();
    let trace = destinations
        .iter()
        .any(Option::is_some)
        .then(|| urbis_ops::telemetry::traceparent(&tracing::Span::current()))
        .flatten()
        .map(|t| (destinations, t));
    let (reply, wait) = tokio::sync::oneshot::channel();
    let submission = Submission {
        records,
        ids,
        encoded: encodings,
        payloads,
        bytes,
        erasure: None,
        packet: None,
        idempotency: idempotency_key.map(|k| (grant.service.clone(), k, request_hash)),
        render: SubmitResponse::render,
        reply,
    };
    // Without an Idempotency-Key a retry after an unanswered request may seal the records twice.
    let unknown = if submission.idempotency.is_some() {
        "retry with the same Idempotency-Key to learn the outcome"
    } else {
        "the outcome is unknown: look the records up before retrying, or send an Idempotency-Key"
    };
    if query.wait.unwrap_or(true) {
        let outcome = seal(&app, submission, wait, unknown).await?;
        remember_traces(&app, &outcome, trace);
        return answer(outcome, request_hash);
    }
    // Answer now; the outcome goes to the submission's status URL.
    let ids: Vec<String> = submission.ids.iter().map(Hash32::to_hex).collect();
    let sid = hex::encode(&(app.random)()[..16]);
    queue(&app, submission)?;
    app.pending.insert(&sid, &grant.service);
    let task_app = app.clone();
    let task_sid = sid.clone();
    tokio::spawn(async move {
        let timeout = std::time::Duration::from_millis(task_app.limits.request_timeout_ms);
        let result = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(outcome)) => {
                remember_traces(&task_app, &outcome, trace);
                answer(outcome, request_hash)
            }
            _ => Err(Problem::unavailable(format!("the outcome is unknown; {unknown}"))),
        };
        let response = result.unwrap_or_else(IntoResponse::into_response);
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        task_app.pending.finish(&task_sid, status, body);
    });
    let status_url = format!("/v1/submissions/{sid}");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(AcceptedResponse { submission: sid, status_url: status_url.clone(), ids }),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&status_url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// `POST /v1/records` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmitQuery {
    /// `false`: answer 202 at once with a status URL instead of waiting for the block.
    pub wait: Option<bool>,
}

/// The answer to `POST /v1/records?wait=false`.
#[derive(Serialize, ToSchema)]
pub struct AcceptedResponse {
    /// Submission id.
    pub submission: String,
    /// Where the outcome appears: `GET` it with the same token.
    pub status_url: String,
    /// The ids the records will have, in request order.
    pub ids: Vec<String>,
}

/// The state of a submission accepted with `?wait=false`.
#[derive(Serialize, ToSchema)]
pub struct SubmissionStatus {
    /// `waiting` (queued, not yet durable) or `done`.
    pub state: String,
    /// When done: the HTTP status the waiting request would have got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// When done: that request's body (a `SubmitResponse`, or a problem document).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
}

/// The outcome of a submission accepted with `?wait=false`.
#[utoipa::path(get, path = "/v1/submissions/{id}", params(("id" = String, Path, description = "Submission id from the 202 answer")),
    responses(
        (status = 200, body = SubmissionStatus),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, made by another service, or forgotten (look the records up by id)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn submission_status(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SubmissionStatus>> {
    let grant = authenticate(&app, &headers)?;
    let Path(id) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    match app.pending.get(&id, &grant.service) {
        None => Err(Problem::not_found(
            "no such submission here (it may be forgotten: look its records up by id)",
        )),
        Some(limit::Pending::Waiting) => {
            Ok(Json(SubmissionStatus { state: "waiting".into(), status: None, result: None }))
        }
        Some(limit::Pending::Done(status, body)) => Ok(Json(SubmissionStatus {
            state: "done".into(),
            status: Some(status),
            result: Some(body),
        })),
    }
}

/// The HTTP answer to a sealer outcome.
/// Keeps the trace context of the packets a sealed submission made (`trace`: each record's
/// destination, and the submission's `traceparent`).
fn remember_traces(app: &AppState, outcome: &Outcome, trace: Option<(Vec<Option<u32>>, String)>) {
    let (Outcome::Sealed(receipts), Some((destinations, traceparent))) = (outcome, trace) else {
        return;
    };
    for (receipt, destination) in receipts.iter().zip(destinations) {
        if let (Some(sequence), Some(destination)) = (receipt.sequence, destination) {
            app.packet_traces.insert((destination, sequence), traceparent.clone());
        }
    }
}

fn answer(outcome: Outcome, request_hash: Hash32) -> ApiResult<Response> {
    match outcome {
        Outcome::Sealed(receipts) => Ok((
            [(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"))],
            SubmitResponse::render(&receipts),
        )
            .into_response()),
        Outcome::Replayed(entry) => replay(entry, request_hash),
        Outcome::Rejected(r) if r.is_forbidden() => Err(Problem::forbidden(r.to_string())),
        Outcome::Rejected(r) if r.is_conflict() => Err(Problem::conflict(r.to_string())),
        Outcome::Rejected(crate::ledger::Rejection::State(detail))
            if detail.contains("idempotency") =>
        {
            Err(Problem::conflict(detail))
        }
        Outcome::Rejected(crate::ledger::Rejection::State(detail)) => Err(internal(detail)),
        Outcome::Rejected(r) => Err(Problem::unprocessable(r.to_string())),
        Outcome::Failed(detail) if detail.contains("in progress") => Err(Problem::conflict(detail)),
        Outcome::Failed(detail) => Err(internal(detail)),
        Outcome::PacketSealed { .. } => Err(internal("unexpected sealer outcome")),
    }
}

fn rate_limit(app: &AppState, grant: &crate::tokens::Grant) -> ApiResult<()> {
    app.rate.check(&grant.token_id, (app.monotonic)()).map_err(|wait| {
        Problem::too_many(format!(
            "this token's request rate is exceeded; retry in {} ms",
            wait.as_millis().max(1)
        ))
    })
}

/// Queues a submission without waiting.
fn queue(app: &AppState, submission: Submission) -> ApiResult<()> {
    match app.sealer.submit(submission) {
        Ok(()) => Ok(()),
        Err(crate::sealer::QueueError::Full(_)) => Err(Problem::unavailable(
            "too many submissions are waiting to be sealed; retry shortly",
        )),
        Err(crate::sealer::QueueError::Stopped(_)) => {
            Err(Problem::unavailable("the sealer has stopped"))
        }
    }
}

fn authenticate(app: &AppState, headers: &HeaderMap) -> ApiResult<crate::tokens::Grant> {
    app.tokens.authenticate(bearer(headers)).map_err(|e| match e {
        AuthError::Unavailable => Problem::unavailable(e.to_string()),
        _ => Problem::unauthorized(e.to_string()),
    })
}

/// Queues a submission and waits (bounded by the request timeout) for its block to be durable.
/// `unknown` tells the caller what to do when the outcome cannot be known.
async fn seal(
    app: &AppState,
    submission: Submission,
    wait: tokio::sync::oneshot::Receiver<Outcome>,
    unknown: &str,
) -> ApiResult<Outcome> {
    queue(app, submission)?;
    let timeout = std::time::Duration::from_millis(app.limits.request_timeout_ms);
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| Problem::unavailable(format!("sealing did not finish in time; {unknown}")))?
        .map_err(|_| {
            Problem::unavailable(format!("the sealer stopped before answering; {unknown}"))
        })
}

fn replay(entry: crate::store::IdempotencyEntry, request_hash: Hash32) -> ApiResult<Response> {
    // An entry whose body hash was scrubbed by an erasure answers any retry with its key.
    if entry.request_hash.is_some_and(|h| h != request_hash) {
        return Err(Problem::conflict(
            "this Idempotency-Key was used with a different request body",
        ));
    }
    let mut r = (StatusCode::OK, entry.response).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
    Ok(r)
}

/// A record with its self-contained proof.
#[derive(Serialize, ToSchema)]
pub struct RecordView {
    /// Record id.
    pub id: String,
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u64,
    /// `committed` (durable and sealed by the city).
    pub level: String,
    /// The record.
    #[schema(value_type = Object)]
    pub record: Record,
    /// The proof `urbis verify` takes (the record is inside it).
    #[schema(value_type = Object)]
    pub proof: ProofDocument,
    /// Where the record's payload is: on chain, off chain, or erased (when and by whom).
    pub payload: PayloadStatus,
}

/// Where a record's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayloadLocation {
    /// In the record itself (information, capital, talent revocations).
    OnChain,
    /// Off chain at this node, behind the record's commitment; the issuing service reads it at
    /// `GET /v1/records/{id}/payload`.
    OffChain,
    /// Erased: the payload and its salt are gone; the commitment and every proof remain.
    Erased,
}

/// A record's payload status.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PayloadStatus {
    /// Where the payload is.
    pub location: PayloadLocation,
    /// When and by whom it was erased (for `erased`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureView>,
}

/// An erasure, as recorded on chain under the state key `Erasure { record_id }`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErasureView {
    /// The record whose payload was erased.
    pub record: String,
    /// Height of the block that records the erasure.
    pub height: u64,
    /// That block's time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who asked: the issuing service, or `operator:<token id>`.
    pub by: String,
    /// Hex of the state key whose proof (`GET /v1/state/{key}/proof`) shows the erasure.
    pub state_key: String,
}

fn has_off_chain_payload(record: &Record) -> bool {
    matches!(
        record.body,
        urbis_core::record::RecordBody::Credit(_)
            | urbis_core::record::RecordBody::Talent(
                urbis_core::record::TalentPayload::Issue { .. }
            )
    )
}

/// The erasure of `id`'s payload recorded in the latest state, if any.
fn erasure(app: &AppState, id: &Hash32) -> ApiResult<Option<ErasureView>> {
    let Some(version) = app.sealer.tip().and_then(|t| t.state_version) else { return Ok(None) };
    let key = StateKey::Erasure { record_id: *id };
    let Some(bytes) =
        app.store.state_value(version, jmt::KeyHash(key.key_hash().0)).map_err(internal)?
    else {
        return Ok(None);
    };
    let note: urbis_core::state::ErasureNote = decode(&bytes).map_err(internal)?;
    Ok(Some(ErasureView {
        record: id.to_hex(),
        height: note.height,
        time_ms: note.time_ms,
        by: note.by,
        state_key: hex::encode(urbis_core::encoding::encode(&key)),
    }))
}

fn payload_status(app: &AppState, id: &Hash32, record: &Record) -> ApiResult<PayloadStatus> {
    if !has_off_chain_payload(record) {
        return Ok(PayloadStatus { location: PayloadLocation::OnChain, erasure: None });
    }
    Ok(match erasure(app, id)? {
        Some(e) => PayloadStatus { location: PayloadLocation::Erased, erasure: Some(e) },
        None => PayloadStatus { location: PayloadLocation::OffChain, erasure: None },
    })
}

fn record_view(
    app: &AppState,
    id: &Hash32,
    (proof, height, index): (RecordProof, u64, u64),
) -> ApiResult<RecordView> {
    Ok(RecordView {
        id: id.to_hex(),
        height,
        index,
        level: if proof.finality.is_some() { "final" } else { "committed" }.into(),
        payload: payload_status(app, id, &proof.record)?,
        record: proof.record.clone(),
        proof: ProofDocument::Record(proof),
    })
}

fn record_proof(app: &AppState, id: &Hash32) -> ApiResult<Option<(RecordProof, u64, u64)>> {
    let Some(stored) = app.store.record(id).map_err(internal)? else { return Ok(None) };
    let ids = app
        .store
        .block_records(stored.height)
        .map_err(internal)?
        .ok_or_else(|| internal("block missing"))?;
    let header = app
        .store
        .header(stored.height)
        .map_err(internal)?
        .ok_or_else(|| internal("header missing"))?;
    let tree = Blake3Tree::records();
    let leaves: Vec<Hash32> = ids.iter().map(|i| tree.leaf(i.as_bytes())).collect();
    let inclusion = InclusionProof::build(&tree, &leaves, stored.index).map_err(internal)?;
    let finality = finality(app, stored.height)?;
    Ok(Some((
        RecordProof { record: stored.record, inclusion, header, finality },
        stored.height,
        stored.index,
    )))
}

/// The link from header `height` to the first certified beacon block that covers it, once the
/// shard's light client has seen one.
fn finality(app: &AppState, height: u64) -> ApiResult<Option<FinalityProof>> {
    let Some((m, link)) = app.store.covering(height).map_err(internal)? else { return Ok(None) };
    let history = if m == height {
        None
    } else {
        let crosslinked =
            app.store.header(m).map_err(internal)?.ok_or_else(|| internal("header missing"))?;
        let mut perfect = |level, index| app.store.history_node(level, index);
        let inclusion =
            InclusionProof::build_from_subtrees(&Blake3Tree::history(), &mut perfect, m, height)
                .map_err(|e| internal(format!("{e:?}")))?;
        Some(HistoryLink { crosslinked, inclusion })
    };
    Ok(Some(FinalityProof {
        history,
        crosslink: link.path.clone(),
        beacon_header: link.beacon_header.clone(),
        certificate: link.certificate.clone(),
        // The set changes before F, so `urbis verify` can follow them from genesis.
        set_updates: app
            .store
            .set_updates()
            .map_err(internal)?
            .into_iter()
            .filter(|u| u.header.height < link.beacon_header.height)
            .collect(),
    }))
}

/// A record and its proof.
#[utoipa::path(get, path = "/v1/records/{id}", params(("id" = String, Path, description = "Record id, 64 hex digits", pattern = "^[0-9a-fA-F]{64}$")),
    responses((status = 200, body = RecordView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_record(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<RecordView>> {
    let Path(id) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let id = types::parse_hash(&id)
        .map_err(|_| Problem::bad_request("record id must be 64 hex digits"))?;
    let found = record_proof(&app, &id)?.ok_or_else(|| Problem::not_found("no such record"))?;
    Ok(Json(record_view(&app, &id, found)?))
}

/// An off-chain payload, for the service that issued the record.
#[derive(Serialize, ToSchema)]
pub struct PayloadView {
    /// Record id.
    pub record: String,
    /// The payload (the credit report or credential document) as submitted: any JSON value.
    pub payload: serde_json::Value,
    /// The 32-byte salt, hex: with the payload's canonical bytes it opens the record's
    /// commitment (`H_payload_commitment(salt || payload)`).
    pub salt: String,
}

fn record_with_payload(app: &AppState, id: &str) -> ApiResult<(Hash32, Record)> {
    let id = types::parse_hash(id)
        .map_err(|_| Problem::bad_request("record id must be 64 hex digits"))?;
    let stored = app
        .store
        .record(&id)
        .map_err(internal)?
        .ok_or_else(|| Problem::not_found("no such record"))?;
    if !has_off_chain_payload(&stored.record) {
        return Err(Problem::not_found(
            "this record has no off-chain payload (its content is on chain)",
        ));
    }
    Ok((id, stored.record))
}

/// The off-chain payload of a credit or talent record, for the service that issued it.
#[utoipa::path(get, path = "/v1/records/{id}/payload", params(("id" = String, Path, description = "Record id, 64 hex digits", pattern = "^[0-9a-fA-F]{64}$")),
    responses(
        (status = 200, body = PayloadView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the issuing service reads the payload", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Erased", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn get_payload(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<PayloadView>> {
    let grant = authenticate(&app, &headers)?;
    let Path(id) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let (id, record) = record_with_payload(&app, &id)?;
    if grant.operator || grant.service != record.service {
        return Err(Problem::forbidden(
            "only the service that issued the record reads its payload",
        ));
    }
    let Some(stored) = app.store.payload(&id).map_err(internal)? else {
        return Err(match erasure(&app, &id)? {
            Some(e) => Problem::gone(format!(
                "the payload was erased at height {} (time {} ms) by {}",
                e.height, e.time_ms, e.by
            )),
            None => internal("an off-chain payload is missing from the store"),
        });
    };
    let payload = serde_json::from_slice(&stored.bytes).map_err(internal)?;
    Ok(Json(PayloadView { record: id.to_hex(), payload, salt: hex::encode(stored.salt) }))
}

/// Right to erasure: removes a credit or talent record's off-chain payload and its salt
/// everywhere this node kept them, and records the erasure on chain. The record and its proof
/// stay valid. Erasing again answers the first erasure.
#[utoipa::path(delete, path = "/v1/records/{id}/payload", params(("id" = String, Path, description = "Record id, 64 hex digits", pattern = "^[0-9a-fA-F]{64}$")),
    responses(
        (status = 200, description = "Erased; the erasure is sealed in a durable block and the bytes are purged from the node's files", body = ErasureView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the issuing service or an operator erases", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn erase_payload(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ErasureView>> {
    if !app.ready.load(Ordering::Relaxed) {
        return Err(Problem::unavailable("the node is shutting down"));
    }
    let grant = authenticate(&app, &headers)?;
    rate_limit(&app, &grant)?;
    let Path(id) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let (id, record) = record_with_payload(&app, &id)?;
    if !grant.operator && grant.service != record.service {
        return Err(Problem::forbidden(
            "only the service that issued the record, or an operator, erases its payload",
        ));
    }
    if let Some(done) = erasure(&app, &id)? {
        return Ok(Json(done));
    }
    let (reply, wait) = tokio::sync::oneshot::channel();
    let submission = Submission {
        records: vec![],
        ids: vec![],
        encoded: vec![],
        payloads: vec![],
        bytes: 0,
        erasure: Some((id, grant.actor())),
        packet: None,
        idempotency: None,
        render: SubmitResponse::render,
        reply,
    };
    let outcome = seal(&app, submission, wait, "repeat the erasure; it is idempotent").await?;
    match outcome {
        Outcome::Sealed(_) | Outcome::Rejected(crate::ledger::Rejection::AlreadyErased { .. }) => {
            let done =
                erasure(&app, &id)?.ok_or_else(|| internal("erasure sealed but not in state"))?;
            tracing::info!(by = %done.by, height = done.height, "payload erased");
            Ok(Json(done))
        }
        Outcome::Rejected(crate::ledger::Rejection::UnknownRecord { .. }) => {
            Err(Problem::not_found("no such record"))
        }
        Outcome::Rejected(r) => Err(internal(r)),
        Outcome::Replayed(_) | Outcome::PacketSealed { .. } => {
            Err(internal("unexpected sealer outcome for an erasure"))
        }
        Outcome::Failed(detail) => Err(internal(detail)),
    }
}

/// Ids to fetch proofs for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchProofRequest {
    /// Record ids, 64 hex digits each.
    pub ids: Vec<String>,
}

/// Proofs by id; ids not found are listed apart.
#[derive(Serialize, ToSchema)]
pub struct BatchProofResponse {
    /// Found records with proofs.
    pub records: Vec<RecordView>,
    /// Ids with no record here.
    pub missing: Vec<String>,
}

/// Many record proofs in one call (for relays).
#[utoipa::path(post, path = "/v1/proofs/records", request_body = BatchProofRequest,
    responses((status = 200, body = BatchProofResponse), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn batch_record_proofs(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BatchProofResponse>> {
    let (_, req): (Bytes, BatchProofRequest) = json_body(body, app.limits.body_bytes_max)?;
    if req.ids.len() > app.limits.batch_reads_max {
        return Err(Problem::too_large(format!(
            "at most {} ids per request",
            app.limits.batch_reads_max
        )));
    }
    let mut out = BatchProofResponse { records: vec![], missing: vec![] };
    for s in req.ids {
        let id = types::parse_hash(&s)
            .map_err(|_| Problem::unprocessable(format!("{s} is not 64 hex digits")))?;
        match record_proof(&app, &id)? {
            Some(found) => out.records.push(record_view(&app, &id, found)?),
            None => out.missing.push(s),
        }
    }
    Ok(Json(out))
}

/// A sealed block.
#[derive(Serialize, ToSchema)]
pub struct BlockView {
    /// Header hash.
    pub hash: String,
    /// The sealed header.
    #[schema(value_type = Object)]
    pub header: SignedShardHeader,
    /// Record ids in block order.
    pub records: Vec<String>,
}

fn block_view(app: &AppState, height: u64) -> ApiResult<Json<BlockView>> {
    let header = app
        .store
        .header(height)
        .map_err(internal)?
        .ok_or_else(|| Problem::not_found(format!("no block at height {height}")))?;
    let ids = app.store.block_records(height).map_err(internal)?.unwrap_or_default();
    Ok(Json(BlockView {
        hash: header.header.hash().to_hex(),
        header,
        records: ids.iter().map(Hash32::to_hex).collect(),
    }))
}

/// The latest sealed block.
#[utoipa::path(get, path = "/v1/blocks/latest", responses((status = 200, body = BlockView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn latest_block(State(app): State<Arc<AppState>>) -> ApiResult<Json<BlockView>> {
    let tip = app.sealer.tip().ok_or_else(|| Problem::not_found("no block sealed yet"))?;
    block_view(&app, tip.height)
}

/// A sealed block by height.
#[utoipa::path(get, path = "/v1/blocks/{height}", params(("height" = u64, Path, description = "Block height")),
    responses((status = 200, body = BlockView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_block(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<BlockView>> {
    let Path(height) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let height: u64 = height
        .parse()
        .map_err(|_| Problem::bad_request("height must be a non-negative integer"))?;
    block_view(&app, height)
}

/// Pagination of a subject's records.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubjectQuery {
    /// Only this kind: information, capital, talent or credit.
    #[param(value_type = Option<String>)]
    pub kind: Option<RecordKind>,
    /// Only records issued at or after this time (ms since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Only records issued before this time.
    pub to_ms: Option<u64>,
    /// The `next` cursor of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=100 (default 50).
    pub limit: Option<usize>,
}

/// One page of a subject's records.
#[derive(Serialize, ToSchema)]
pub struct SubjectPage {
    /// Records with proofs.
    pub records: Vec<RecordView>,
    /// Cursor of the next page, absent on the last.
    pub next: Option<String>,
}

/// A subject's records, in chain order, with proofs.
#[utoipa::path(get, path = "/v1/subjects/{subject}/records", params(("subject" = String, Path, description = "Subject id, 64 hex digits", pattern = "^[0-9a-fA-F]{64}$"), SubjectQuery),
    responses((status = 200, body = SubjectPage), (status = 400, body = Problem, content_type = "application/problem+json")))]
async fn subject_records(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SubjectQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SubjectPage>> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let Path(subject) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let subject = SubjectId(
        types::parse_hash(&subject)
            .map_err(|_| Problem::bad_request("subject must be 64 hex digits"))?,
    );
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request("limit must be 1..=100"));
    }
    let mut after = match &q.cursor {
        None => None,
        Some(c) => {
            let (h, i) =
                c.split_once('.').ok_or_else(|| Problem::bad_request("malformed cursor"))?;
            Some((
                h.parse().map_err(|_| Problem::bad_request("malformed cursor"))?,
                i.parse().map_err(|_| Problem::bad_request("malformed cursor"))?,
            ))
        }
    };
    let mut out = Vec::new();
    let mut next = None;
    // Filters apply after the index scan; scan in chunks until the page is full.
    'scan: loop {
        let chunk = app.store.subject_records(&subject, after, 256).map_err(internal)?;
        if chunk.is_empty() {
            break;
        }
        for (pos, id) in chunk {
            after = Some(pos);
            let Some(found) = record_proof(&app, &id)? else { continue };
            let r = &found.0.record;
            let keep = q.kind.is_none_or(|k| r.kind() == k)
                && q.from_ms.is_none_or(|t| r.time_ms >= t)
                && q.to_ms.is_none_or(|t| r.time_ms < t);
            if keep {
                if out.len() == limit {
                    next = after.map(|_| ());
                    break 'scan;
                }
                out.push(record_view(&app, &id, found)?);
            }
        }
    }
    let next = next.and_then(|_| out.last().map(|v| format!("{}.{}", v.height, v.index)));
    Ok(Json(SubjectPage { records: out, next }))
}

/// A state proof document.
#[derive(Serialize, ToSchema)]
pub struct ProofView {
    /// `committed`.
    pub level: String,
    /// Whether the key is present.
    pub present: bool,
    /// The proof `urbis verify --key` takes.
    #[schema(value_type = Object)]
    pub proof: ProofDocument,
}

/// Membership or non-membership of a state key at the latest block.
#[utoipa::path(get, path = "/v1/state/{key}/proof", params(("key" = String, Path, description = "Hex of the canonical encoding of the state key", pattern = "^([0-9a-fA-F]{2})+$"), StateProofQuery),
    responses((status = 200, body = ProofView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn state_proof(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StateProofQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ProofView>> {
    let Path(key) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let bytes = hex::decode(&key).map_err(|_| Problem::bad_request("key must be hex"))?;
    let key: StateKey = decode(&bytes).map_err(|e| Problem::bad_request(e.to_string()))?;
    let fact = match q.level.as_deref() {
        None | Some("committed") => {
            let tip = app.sealer.tip().ok_or_else(|| Problem::not_found("no block sealed yet"))?;
            let (value, proof, header) = packets::prove_at(&app, &key, tip.height)?;
            StateFactProof { key, value, proof, header, finality: None }
        }
        Some("final") => packets::final_state(&app, &key)?
            .ok_or_else(|| Problem::not_found("no header of this shard is final yet"))?,
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "level must be committed or final, not {other}"
            )));
        }
    };
    Ok(Json(ProofView {
        level: if fact.finality.is_some() { "final" } else { "committed" }.into(),
        present: fact.value.is_some(),
        proof: ProofDocument::State(fact),
    }))
}

/// Query of a state proof.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateProofQuery {
    /// `committed` (default: the latest sealed header) or `final` (the latest header a
    /// certified beacon block covers; what other cities and regulators accept).
    pub level: Option<String>,
}

/// Query of a history proof.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Tree size (the height of the committing header), greater than the block's height.
    pub size: u64,
}

/// Inclusion of header `height` in the history tree of size `size`.
#[utoipa::path(get, path = "/v1/blocks/{height}/history-proof", params(("height" = u64, Path, description = "Block height"), HistoryQuery),
    responses((status = 200, description = "Inclusion proof", body = Object), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn history_proof(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<InclusionProof>> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let Path(height) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let height: u64 = height
        .parse()
        .map_err(|_| Problem::bad_request("height must be a non-negative integer"))?;
    let headers = app.sealer.tip().map_or(0, |t| t.height + 1);
    if q.size > headers {
        return Err(Problem::not_found(format!("the history has {headers} headers")));
    }
    let mut perfect = |level, index| app.store.history_node(level, index);
    InclusionProof::build_from_subtrees(&Blake3Tree::history(), &mut perfect, q.size, height)
        .map(Json)
        .map_err(subtree_problem)
}

/// Query of a consistency proof.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// Older tree size.
    pub from: u64,
    /// Newer tree size.
    pub to: u64,
}

/// Consistency of the history tree between two sizes.
#[utoipa::path(get, path = "/v1/history/consistency", params(ConsistencyQuery),
    responses((status = 200, description = "Consistency proof", body = Object), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn consistency(
    State(app): State<Arc<AppState>>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ConsistencyProof>> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let headers = app.sealer.tip().map_or(0, |t| t.height + 1);
    if q.to > headers {
        return Err(Problem::not_found(format!("the history has {headers} headers")));
    }
    let mut perfect = |level, index| app.store.history_node(level, index);
    ConsistencyProof::build_from_subtrees(&Blake3Tree::history(), &mut perfect, q.from, q.to)
        .map(Json)
        .map_err(subtree_problem)
}

fn subtree_problem(e: urbis_core::merkle::SubtreeError<crate::store::StoreError>) -> Problem {
    match e {
        urbis_core::merkle::SubtreeError::Merkle(m) => Problem::bad_request(m.to_string()),
        urbis_core::merkle::SubtreeError::Source(s) => internal(s),
    }
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/livez", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn livez() -> &'static str {
    "ok"
}

/// Startup: answered only once the store is open, the tip and history are loaded and the
/// sealer runs (the listener is bound after that), so a 200 means started.
#[utoipa::path(get, path = "/startupz", responses((status = 200, description = "started", body = String, content_type = "text/plain")))]
async fn startupz() -> &'static str {
    "started"
}

/// Readiness: accepting submissions.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready", body = String, content_type = "text/plain"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn readyz(State(app): State<Arc<AppState>>) -> ApiResult<&'static str> {
    if !app.sealer.is_healthy() {
        return Err(Problem::unavailable(
            "the sealer stopped after a storage failure; restart the node",
        ));
    }
    if !app.ready.load(Ordering::Relaxed) {
        return Err(Problem::unavailable("draining"));
    }
    if let Some(b) = &app.beacon {
        let now = (app.monotonic)().as_millis() as u64;
        let silent = now.saturating_sub(b.last_ms.load(Ordering::Relaxed));
        if silent > b.timeout_ms {
            return Err(Problem::unavailable(format!(
                "cut off from the beacon: no validator has answered for {silent} ms"
            )));
        }
    }
    Ok("ready")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;

    /// The OpenAPI document states the forms the handlers check and the values they answer,
    /// so that clients and the contract fuzzer see them: hex ids as hex, a submission's names
    /// as the record rules take them, and an off-chain payload as any JSON value (a credit
    /// report may be `null`, and is answered as it was submitted).
    #[test]
    fn the_openapi_document_states_the_forms_the_handlers_check() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let param = |path: &str, method: &str, name: &str| -> Value {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["schema"]
                .clone()
        };
        let hex64 = "^[0-9a-fA-F]{64}$";
        for (path, method) in [
            ("/v1/records/{id}", "get"),
            ("/v1/records/{id}/payload", "get"),
            ("/v1/records/{id}/payload", "delete"),
        ] {
            assert_eq!(param(path, method, "id")["pattern"], hex64, "{method} {path}");
        }
        assert_eq!(param("/v1/subjects/{subject}/records", "get", "subject")["pattern"], hex64);
        assert_eq!(param("/v1/state/{key}/proof", "get", "key")["pattern"], "^([0-9a-fA-F]{2})+$");
        let key = param("/v1/records", "post", "Idempotency-Key");
        assert_eq!((key["minLength"].as_u64(), key["maxLength"].as_u64()), (Some(1), Some(255)));

        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["SubmitRequest"]["properties"]["records"]["minItems"], 1);
        let variants = schemas["RecordInput"]["oneOf"].as_array().unwrap();
        assert_eq!(variants.len(), 4);
        for variant in variants {
            assert_eq!(variant["properties"]["subject"]["pattern"], hex64);
            // serde refuses unknown fields; the document says so.
            assert_eq!(variant["additionalProperties"], false, "{variant}");
        }
        let mut record = serde_json::json!({"kind": "information", "subject": "ab".repeat(32),
            "payload": {"dataset": "d", "media_type": "text/plain", "content": "x"}});
        assert!(serde_json::from_value::<super::types::RecordInput>(record.clone()).is_ok());
        record["note"] = "unknown".into();
        assert!(serde_json::from_value::<super::types::RecordInput>(record).is_err());
        assert_eq!(schemas["TalentInput"]["properties"]["credential_id"]["pattern"], hex64);
        assert_eq!(schemas["CapitalInput"]["properties"]["amount"]["minimum"], 1);
        let name_max = urbis_core::record::NAME_BYTES_MAX as u64;
        for (schema, field) in [
            ("InformationInput", "dataset"),
            ("InformationInput", "media_type"),
            ("CapitalInput", "asset"),
            ("CapitalInput", "from"),
            ("CapitalInput", "to"),
        ] {
            let s = &schemas[schema]["properties"][field];
            assert_eq!(s["maxLength"].as_u64(), Some(name_max), "{schema}.{field}");
            assert_eq!(s["minLength"], 1, "{schema}.{field}");
            assert_eq!(s["pattern"], "^[ -~]+$", "{schema}.{field}");
        }
        let payload = &schemas["PayloadView"]["properties"]["payload"];
        assert!(payload.is_object() && payload.get("type").is_none(), "{payload}");
    }
}
