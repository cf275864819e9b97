//! The beacon's HTTP API: decided blocks with their certificates (what shards, bridges and
//! `urbis verify` need), health. Errors are RFC 9457 problem documents.

use crate::store::{BeaconStore, DecidedBlock};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use urbis_core::beacon::{BeaconHeader, CommitCertificate, Crosslink};
use urbis_core::validators::ValidatorSet;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The validator's store.
    pub store: Arc<BeaconStore>,
    /// The genesis validator set (the set in force until set changes exist).
    pub validators: Arc<ValidatorSet>,
}

/// A decided beacon block as served.
#[derive(Serialize)]
pub struct BlockView {
    /// Header hash.
    pub hash: String,
    /// The header.
    pub header: BeaconHeader,
    /// Its aggregate commit certificate.
    pub certificate: CommitCertificate,
    /// The crosslinks of the body.
    pub crosslinks: Vec<Crosslink>,
}

impl From<DecidedBlock> for BlockView {
    fn from(d: DecidedBlock) -> Self {
        BlockView {
            hash: d.block.header.hash().to_hex(),
            header: d.block.header,
            certificate: d.certificate,
            crosslinks: d.block.body.crosslinks,
        }
    }
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

fn block_response(store: &BeaconStore, height: u64) -> Response {
    match store.block(height) {
        Ok(Some(d)) => Json(BlockView::from(d)).into_response(),
        Ok(None) => {
            problem(StatusCode::NOT_FOUND, "not-found", format!("no block at height {height}"))
        }
        Err(e) => internal(e),
    }
}

async fn latest(State(ApiState { store, .. }): State<ApiState>) -> Response {
    match store.latest_height() {
        Ok(Some(h)) => block_response(&store, h),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not-found", "no block decided yet"),
        Err(e) => internal(e),
    }
}

async fn by_height(
    State(ApiState { store, .. }): State<ApiState>,
    Path(height): Path<String>,
) -> Response {
    match height.parse::<u64>() {
        Ok(h) => block_response(&store, h),
        Err(_) => problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "height must be a non-negative integer",
        ),
    }
}

async fn evidence(State(ApiState { store, .. }): State<ApiState>) -> Response {
    match store.evidence(1_000) {
        Ok(e) => Json(serde_json::json!({ "evidence": e })).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /v1/beacon/validators` query.
#[derive(serde::Deserialize)]
pub struct ValidatorsQuery {
    /// The beacon height (default: the latest).
    pub height: Option<u64>,
}

/// The validator set in force at a height, with the certified changes that led to it (none
/// until validator-set changes exist: the genesis set is in force at every height).
async fn validators(
    State(ApiState { store, validators }): State<ApiState>,
    query: Result<Query<ValidatorsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "height must be a non-negative integer",
        );
    };
    let latest = match store.latest_height() {
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
    Json(serde_json::json!({
        "height": height,
        "validator_set_hash": validators.hash(),
        "validators": validators.as_ref(),
        "changes": [],
    }))
    .into_response()
}

/// The router over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/beacon/blocks/latest", get(latest))
        .route("/v1/beacon/blocks/{height}", get(by_height))
        .route("/v1/beacon/evidence", get(evidence))
        .route("/v1/beacon/validators", get(validators))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
