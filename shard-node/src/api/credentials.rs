//! A verifier in this city asks whether a credential issued in another city is revoked: it
//! brings a final proof of the issuer's revocation key (from the issuer's public
//! `GET /v1/state/{key}/proof?level=final`), and this shard checks it against its own light
//! client, with the key built here, and judges its freshness against its own beacon view.

use super::problem::Problem;
use super::{ApiResult, AppState, internal, json_body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use urbis_core::hash::Hash32;
use urbis_core::proof::{CredentialStatus, ProofDocument, verify_credential_status};
use utoipa::ToSchema;

/// How many beacon blocks old a "not revoked" proof may be (a revocation never goes stale).
pub const NON_REVOCATION_MAX_AGE_BLOCKS: u64 = 30;

/// A status question with the issuer's proof.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialStatusRequest {
    /// The issuing city's name.
    pub issuer: String,
    /// The credential id, 64 hex digits.
    #[schema(value_type = String)]
    pub credential_id: Hash32,
    /// The issuer's final proof of `Revocation{credential_id}` (present or absent).
    #[schema(value_type = Object)]
    pub proof: ProofDocument,
}

/// The verified answer.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CredentialStatusView {
    /// `valid` or `revoked`.
    pub status: String,
    /// The issuer's height that revoked it.
    pub revoked_at_height: Option<u64>,
    /// The issuer's shard height the proof is about.
    pub shard_height: u64,
    /// The certified beacon height covering it.
    pub beacon_height: u64,
    /// This shard's certified beacon view when it checked.
    pub checked_at_beacon_height: u64,
}

/// Verifies a credential's status at its issuing city against this shard's own light client.
/// 422 when the proof fails (the failing link named), is not final, or (for "not revoked") is
/// older than 30 beacon blocks.
#[utoipa::path(post, path = "/v1/credentials/status", request_body = CredentialStatusRequest,
    responses((status = 200, body = CredentialStatusView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn credential_status(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<CredentialStatusView>> {
    let (_, request): (_, CredentialStatusRequest) = json_body(body, app.limits.body_bytes_max)?;
    let issuer = app
        .genesis
        .genesis()
        .cities
        .iter()
        .find(|c| c.name == request.issuer)
        .map(|c| c.id)
        .ok_or_else(|| Problem::not_found(format!("no city named {}", request.issuer)))?;
    let ProofDocument::State(proof) = request.proof else {
        return Err(Problem::unprocessable("a credential status needs a state proof"));
    };
    let checker = app.clone();
    tokio::task::spawn_blocking(move || {
        let client = checker.client.read().map_err(|_| internal("light client lock poisoned"))?;
        let view = checker.beacon_view.load(std::sync::atomic::Ordering::Acquire);
        let checked = verify_credential_status(
            &checker.genesis,
            &client,
            issuer,
            request.credential_id,
            &proof,
        )
.map_err(|e| super::packets::failed(&checker, e.into()))?;
        if checked.status == CredentialStatus::Valid
            && checked.beacon_height.saturating_add(NON_REVOCATION_MAX_AGE_BLOCKS) < view
        {
            return Err(Problem::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "stale-proof",
                format!(
                    "the non-revocation proof is certified at beacon height {}, this city's view is {view}; ask the issuer for a fresh one",
                    checked.beacon_height
                ),
            ));
        }
        let (status, revoked_at_height) = match checked.status {
            CredentialStatus::Valid => ("valid", None),
            CredentialStatus::Revoked { height } => ("revoked", Some(height)),
        };
        Ok(Json(CredentialStatusView {
            status: status.into(),
            revoked_at_height,
            shard_height: checked.shard_height,
            beacon_height: checked.beacon_height,
            checked_at_beacon_height: view,
        }))
    })
    .await
    .map_err(internal)?
}
