//! The beacon's HTTP API: decided blocks with their certificates (what shards, bridges and
//! `urbis verify` need), health. Errors are RFC 9457 problem documents.

use crate::pool::{OfferError, Offered, Pool};
use crate::store::{BeaconStore, DecidedBlock};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use urbis_core::beacon::{BeaconHeader, CommitCertificate};
use urbis_core::crosslink::CrosslinkEntry;
use urbis_core::genesis::ValidGenesis;
use urbis_core::merkle::InclusionProof;
use urbis_core::record::CityId;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The validator's store.
    pub store: Arc<BeaconStore>,
    /// The federation.
    pub genesis: Arc<ValidGenesis>,
    /// Crosslink entries and set changes waiting for a block.
    pub pool: Arc<Pool>,
    /// The validator sets in force by height.
    pub sets: Arc<std::sync::RwLock<crate::sets::Sets>>,
    /// The validator's metrics.
    pub metrics: Arc<crate::metrics::BeaconMetrics>,
    /// The wall clock, milliseconds since the Unix epoch (readiness compares block times with
    /// it).
    pub clock: fn() -> u64,
}

/// The longest a block request may wait for its height to be decided.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// A decided beacon block as served.
#[derive(Serialize)]
pub struct BlockView {
    /// Header hash.
    pub hash: String,
    /// The header.
    pub header: BeaconHeader,
    /// Its aggregate commit certificate.
    pub certificate: CommitCertificate,
    /// The body's crosslink entries (sealed headers with their extension proofs), in the
    /// order of the crosslinks tree's leaves.
    pub crosslinks: Vec<CrosslinkEntry>,
    /// The misbehaviour evidence the block records.
    pub evidence: Vec<crate::block::EvidenceItem>,
    /// The approved validator-set changes the block carries.
    pub set_changes: Vec<urbis_core::set_change::SignedSetChange>,
    /// The set the header announces for the next height, when it differs from this height's
    /// (what a light client needs to follow the change).
    pub next_validators: Option<urbis_core::validators::ValidatorSet>,
}

impl BlockView {
    fn new(d: DecidedBlock, sets: &crate::sets::Sets) -> Self {
        let h = &d.block.header;
        let next_validators = (h.next_validator_set_hash != h.validator_set_hash)
            .then(|| sets.at(h.height + 1).0.clone())
            .filter(|s| s.hash() == h.next_validator_set_hash);
        BlockView {
            hash: d.block.header.hash().to_hex(),
            header: d.block.header,
            certificate: d.certificate,
            crosslinks: d.block.body.crosslinks,
            evidence: d.block.body.evidence,
            set_changes: d.block.body.set_changes,
            next_validators,
        }
    }
}

fn read_sets(
    sets: &std::sync::RwLock<crate::sets::Sets>,
) -> std::sync::RwLockReadGuard<'_, crate::sets::Sets> {
    sets.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Serialize)]
struct Problem {
    #[serde(rename = "type")]
    problem_type: String,
    title: String,
    status: u16,
    detail: String,
}

fn problem(status: StatusCode, slug: &str, detail: impl Into<String>) -> Response {
    let body = Problem {
        problem_type: format!("https://urbis.example/problems/{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: detail.into(),
    };
    let mut r = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    r
}

/// A 500 problem; the cause goes to the node's log, not to the caller.
fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store read failed");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the node's log")
}

fn block_response(state: &ApiState, height: u64) -> Response {
    match state.store.block(height) {
        Ok(Some(d)) => Json(BlockView::new(d, &read_sets(&state.sets))).into_response(),
        Ok(None) => {
            problem(StatusCode::NOT_FOUND, "not-found", format!("no block at height {height}"))
        }
        Err(e) => internal(e),
    }
}

async fn latest(State(state): State<ApiState>) -> Response {
    match state.store.latest_height() {
        Ok(Some(h)) => block_response(&state, h),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not-found", "no block decided yet"),
        Err(e) => internal(e),
    }
}

/// `GET /v1/beacon/blocks/{height}` query.
#[derive(serde::Deserialize)]
pub struct BlockQuery {
    /// Wait up to this many milliseconds (at most 30 000) for the height to be decided.
    pub wait_ms: Option<u64>,
}

async fn by_height(
    State(state): State<ApiState>,
    stopping: Option<axum::Extension<Stopping>>,
    Path(height): Path<String>,
    query: Result<Query<BlockQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (Ok(h), Ok(Query(q))) = (height.parse::<u64>(), query) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "height and wait_ms must be non-negative integers",
        );
    };
    if let Some(wait) = q.wait_ms.filter(|w| *w > 0) {
        let mut latest = state.store.subscribe();
        let deadline = Duration::from_millis(wait).min(WAIT_MAX);
        // Whether it arrives, the wait ends or the server stops, the answer is what the store
        // has then.
        let stopped = async {
            match stopping {
                Some(axum::Extension(Stopping(mut stopping))) => {
                    // A dropped sender (the server is gone) also ends the wait.
                    let _ = stopping.wait_for(|s| *s).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(deadline, latest.wait_for(|l| *l >= h)) => {}
            _ = stopped => {}
        }
    }
    block_response(&state, h)
}

/// Accepted crosslink entry.
#[derive(Serialize)]
struct OfferView {
    city: CityId,
    height: u64,
    status: &'static str,
}

/// `POST /v1/beacon/crosslinks`: a shard offers its latest sealed header with the proof that
/// it extends the city's last crosslinked header.
async fn offer(
    State(ApiState { store, pool, metrics, .. }): State<ApiState>,
    body: Result<Json<CrosslinkEntry>, JsonRejection>,
) -> Response {
    let Ok(Json(entry)) = body else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "the body must be a crosslink entry (docs/protocol.md)",
        );
    };
    let (city, height) = (entry.city(), entry.header.header.height);
    let outcome = tokio::task::spawn_blocking(move || pool.offer(&store, entry)).await;
    match outcome {
        Ok(Ok(offered)) => {
            let status = match offered {
                Offered::Pending => "pending",
                Offered::Superseded => "superseded",
            };
            (StatusCode::ACCEPTED, Json(OfferView { city, height, status })).into_response()
        }
        Ok(Err(OfferError::Invalid { error, crosslinked_height })) => {
            use urbis_core::crosslink::CrosslinkError as E;
            let (status, slug) = match &error {
                E::NotNewer { .. } | E::Base { .. } => (StatusCode::CONFLICT, "crosslink-base"),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "crosslink-invalid"),
            };
            let mut r = problem(status, slug, error.to_string());
            if let Some(h) = crosslinked_height
                && let Ok(v) = HeaderValue::from_str(&h.to_string())
            {
                r.headers_mut().insert("urbis-crosslinked-height", v);
            }
            r
        }
        Ok(Err(OfferError::Conflict(e))) => {
            metrics
                .evidence
                .get_or_create(&crate::metrics::KindLabel { kind: "shard_headers" })
                .inc();
            problem(
                StatusCode::CONFLICT,
                "conflicting-header",
                format!(
                    "city {} sealed two different headers at height {}; the evidence is kept and served at /v1/beacon/evidence",
                    e.first.header.city, e.first.header.height
                ),
            )
        }
        Ok(Err(OfferError::Store(e))) => internal(e),
        Err(e) => internal(e),
    }
}

/// The first beacon block that covers a city's header, with the crosslink's Merkle path.
#[derive(Serialize)]
pub struct CoveringView {
    /// The covering beacon block's height.
    pub beacon_height: u64,
    /// Its header hash.
    pub hash: String,
    /// Its header.
    pub header: BeaconHeader,
    /// Its certificate.
    pub certificate: CommitCertificate,
    /// The crosslinked entry (the header asked about, or a later one whose history holds it).
    pub crosslinked: CrosslinkEntry,
    /// The crosslinked header's leaf path in the block's crosslinks tree.
    pub crosslink: InclusionProof,
}

async fn covering(
    State(ApiState { store, genesis, .. }): State<ApiState>,
    Path((city, shard_height)): Path<(String, String)>,
) -> Response {
    let city_id = match city.parse::<u32>() {
        Ok(id) => genesis.city(CityId(id)).map(|c| c.id),
        Err(_) => genesis.city_by_name(&city).map(|c| c.id),
    };
    let Some(city_id) = city_id else {
        return problem(StatusCode::NOT_FOUND, "unknown-city", format!("no city {city:?}"));
    };
    let Ok(shard_height) = shard_height.parse::<u64>() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "shard_height must be a non-negative integer",
        );
    };
    let at = match store.covering(city_id, shard_height) {
        Ok(Some(at)) => at,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "not-covered",
                format!("no certified beacon block covers {city} height {shard_height} yet"),
            );
        }
        Err(e) => return internal(e),
    };
    let decided = match store.block(at.beacon_height) {
        Ok(Some(d)) => d,
        Ok(None) => return internal("crosslink index names a missing block"),
        Err(e) => return internal(e),
    };
    match decided.block.body.crosslink_path(city_id) {
        Some(Ok((entry, path))) => Json(CoveringView {
            beacon_height: at.beacon_height,
            hash: decided.block.header.hash().to_hex(),
            crosslinked: entry.clone(),
            header: decided.block.header,
            certificate: decided.certificate,
            crosslink: path,
        })
        .into_response(),
        Some(Err(e)) => internal(e),
        None => internal("crosslink index names a block without the city"),
    }
}

async fn evidence(State(ApiState { store, .. }): State<ApiState>) -> Response {
    let recorded = match store.recorded_evidence(1_000) {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let recorded: Vec<serde_json::Value> = recorded
        .into_iter()
        .map(|(h, item)| serde_json::json!({"beacon_height": h, "hash": item.hash(), "item": item}))
        .collect();
    match (store.evidence(1_000), store.shard_evidence(1_000)) {
        (Ok(e), Ok(s)) => {
            Json(serde_json::json!({ "evidence": e, "shard_headers": s, "recorded": recorded }))
                .into_response()
        }
        (Err(e), _) | (_, Err(e)) => internal(e),
    }
}

/// `GET /v1/beacon/validators` query.
#[derive(serde::Deserialize)]
pub struct ValidatorsQuery {
    /// The beacon height (default: the latest).
    pub height: Option<u64>,
}

/// The validator set in force at a height, with the changes the chain carried up to it and
/// the light-client updates (certified headers announcing each new set, with the set) that lead
/// from genesis to it.
async fn validators(
    State(state): State<ApiState>,
    query: Result<Query<ValidatorsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "height must be a non-negative integer",
        );
    };
    let latest = match state.store.latest_height() {
        Ok(h) => h.unwrap_or(0),
        Err(e) => return internal(e),
    };
    let height = q.height.unwrap_or(latest);
    if height > latest + 1 {
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("height {height} is beyond the next ({})", latest + 1),
        );
    }
    let (set, changes, changed_at) = {
        let sets = read_sets(&state.sets);
        (sets.at(height).0.clone(), sets.history(height), sets.changed_at(height))
    };
    let mut updates = Vec::new();
    for e in changed_at {
        match state.store.block(e - 1) {
            Ok(Some(d)) => updates.push(urbis_core::light_client::LightClientUpdate {
                header: d.block.header,
                certificate: d.certificate,
                next_set: Some(read_sets(&state.sets).at(e).0.clone()),
            }),
            Ok(None) => return internal("a set-announcing block is missing"),
            Err(err) => return internal(err),
        }
    }
    let changes: Vec<serde_json::Value> = changes
        .into_iter()
        .map(|(h, c)| serde_json::json!({"carried_at": h, "change": c}))
        .collect();
    Json(serde_json::json!({
        "height": height,
        "validator_set_hash": set.hash(),
        "validators": set,
        "changes": changes,
        "updates": updates,
    }))
    .into_response()
}

/// `POST /v1/beacon/set-changes`: an approved validator-set change for the next blocks.
async fn offer_set_change(
    State(state): State<ApiState>,
    body: Result<Json<urbis_core::set_change::SignedSetChange>, JsonRejection>,
) -> Response {
    let Ok(Json(change)) = body else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "the body must be an approved set change (docs/protocol.md)",
        );
    };
    let next = match state.store.latest_height() {
        Ok(h) => h.unwrap_or(0) + 1,
        Err(e) => return internal(e),
    };
    let offered = state.pool.offer_set_change(&read_sets(&state.sets), next, change);
    match offered {
        Ok(new) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"status": if new { "pending" } else { "known" }})),
        )
            .into_response(),
        Err(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, "set-change-invalid", e.to_string()),
    }
}

/// Beacon blocks a validator's latest decided block may be behind the clock before it is not
/// ready (catching up, or the beacon stalled): it would serve stale blocks.
pub const READY_LAG_BLOCKS: u64 = 10;

/// Readiness: the latest decided block is at most [`READY_LAG_BLOCKS`] intervals old.
async fn readyz(State(state): State<ApiState>) -> Response {
    let latest = match state.store.latest_height() {
        Ok(Some(h)) => state.store.block(h),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let interval = state.genesis.genesis().parameters.beacon_block_interval_ms;
    let limit = interval.saturating_mul(READY_LAG_BLOCKS);
    match latest {
        Ok(Some(b)) => {
            let age = (state.clock)().saturating_sub(b.block.header.time_ms);
            if age <= limit {
                (StatusCode::OK, "ready").into_response()
            } else {
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not-ready",
                    format!(
                        "the latest decided block is {age} ms old (catching up, or the beacon is stalled)"
                    ),
                )
            }
        }
        Ok(None) => problem(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "no block decided yet"),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, "not-ready", e.to_string()),
    }
}

/// The router over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/beacon/blocks/latest", get(latest))
        .route("/v1/beacon/blocks/{height}", get(by_height))
        .route("/v1/beacon/crosslinks", post(offer))
        .route("/v1/beacon/crosslinks/{city}/{shard_height}", get(covering))
        .route("/v1/beacon/evidence", get(evidence))
        .route("/v1/beacon/validators", get(validators))
        .route("/v1/beacon/set-changes", post(offer_set_change))
        .route(
            "/metrics",
            get(|State(state): State<ApiState>, headers: axum::http::HeaderMap| async move {
                state.metrics.response(&headers)
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.http.clone(),
            urbis_ops::time_request,
        ))
        .route("/livez", get(|| async { "ok" }))
        // The API is served only once the store is open and the chain replayed.
        .route("/startupz", get(|| async { "started" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .with_state(state)
}

/// Whether the server is stopping: a block request waiting for its height answers at once
/// then, rather than holding the server's graceful shutdown for up to `WAIT_MAX`.
#[derive(Clone)]
struct Stopping(tokio::sync::watch::Receiver<bool>);

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight
/// finish: block requests that wait for a height answer with what the store has.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let app = router(state).layer(axum::Extension(Stopping(stopping)));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await
}
