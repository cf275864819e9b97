//! Following the beacon: the shard pushes each newly sealed header to the validators with the
//! proof that it extends the header the beacon crosslinked before, and follows the certified
//! beacon chain with `urbis-core`'s light client, so that once a block's header is covered its
//! records' proofs reach level *final*.
//!
//! Nothing a validator says is trusted: every beacon block is checked by the light client and
//! its body against the header's crosslinks root before anything is recorded. The validators'
//! API is plain HTTP for that reason.

use crate::store::{Crosslinked, Store, StoreError, Tip};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use urbis_core::beacon::{BeaconHeader, CommitCertificate};
use urbis_core::crosslink::{CrosslinkEntry, Extension};
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::Hash32;
use urbis_core::light_client::{LightClient, LightClientUpdate};
use urbis_core::merkle::{Blake3Tree, ConsistencyProof, InclusionProof, root_from_leaf_hashes};
use urbis_core::record::CityId;

/// How long one block request may wait at a validator for its height.
const LONG_POLL: Duration = Duration::from_secs(10);
/// Pause after a failed request before trying the next validator.
const BACKOFF: Duration = Duration::from_millis(500);
/// An offered header that is still not crosslinked is offered again after this long.
const REOFFER: Duration = Duration::from_secs(2);

/// A beacon block as the validators' API serves it (only what the shard reads).
#[derive(Deserialize)]
struct BlockView {
    header: BeaconHeader,
    certificate: CommitCertificate,
    crosslinks: Vec<CrosslinkEntry>,
    /// The next set, when the header announces a change.
    #[serde(default)]
    next_validators: Option<urbis_core::validators::ValidatorSet>,
    /// The misbehaviour evidence the block records (only conflicting shard headers are read).
    #[serde(default)]
    evidence: Vec<EvidenceView>,
}

/// An evidence item of a beacon block, as far as a shard reads it.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EvidenceView {
    /// Two sealed headers of one city at one height.
    ShardHeaders(Box<urbis_core::crosslink::ShardEquivocation>),
    /// Anything else (a validator's double vote).
    #[serde(other)]
    Other,
}

/// Why a served block was refused.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The block is not certified under the light client's view.
    #[error("beacon block {height}: {error}")]
    Certificate {
        /// Its height.
        height: u64,
        /// Why.
        error: urbis_core::light_client::LightClientError,
    },
    /// The served body does not match the certified header.
    #[error("beacon block {0}: served crosslinks do not match the certified header")]
    Body(u64),
    /// The block crosslinks a header of this city that this shard did not seal.
    #[error(
        "beacon block {beacon_height} crosslinks a header at height {height} that this shard did not seal"
    )]
    Foreign {
        /// The beacon height.
        beacon_height: u64,
        /// The shard height.
        height: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building a proof failed.
    #[error("{0}")]
    Proof(String),
    /// The shared light client's lock was poisoned by a panic.
    #[error("light client lock poisoned")]
    Poisoned,
}

/// What the pure part of following decided for one certified block.
pub struct Followed {
    /// The shard height crosslinked by the block and its link, if the block crosslinked this
    /// city.
    pub crosslinked: Option<(u64, Crosslinked)>,
    /// The light-client update, when the block changes the validator set (kept for proofs
    /// that offline verifiers check from genesis).
    pub set_update: Option<LightClientUpdate>,
}

/// Checks a served block with the light client and the shard's own headers; pure apart from
/// reading the shard's headers.
fn check_block(
    client: &mut LightClient,
    store: &Store,
    city: CityId,
    block: &BlockView,
) -> Result<Followed, FollowError> {
    let h = &block.header;
    let update = LightClientUpdate {
        header: h.clone(),
        certificate: block.certificate.clone(),
        next_set: block.next_validators.clone(),
    };
    client.apply(&update).map_err(|error| FollowError::Certificate { height: h.height, error })?;
    let set_update = (h.next_validator_set_hash != h.validator_set_hash).then_some(update);
    let tree = Blake3Tree::crosslinks();
    let leaves: Vec<Hash32> = block.crosslinks.iter().map(|e| e.crosslink().leaf_hash()).collect();
    if leaves.len() as u64 != h.crosslinks_count
        || root_from_leaf_hashes(&tree, &leaves) != h.crosslinks_root
    {
        return Err(FollowError::Body(h.height));
    }
    let Some(index) = block.crosslinks.iter().position(|e| e.city() == city) else {
        return Ok(Followed { crosslinked: None, set_update });
    };
    let entry = &block.crosslinks[index];
    let height = entry.header.header.height;
    let ours = store.header(height)?;
    if ours.as_ref().map(|s| s.header.hash()) != Some(entry.header.header.hash()) {
        return Err(FollowError::Foreign { beacon_height: h.height, height });
    }
    let path = InclusionProof::build(&tree, &leaves, index as u64)
        .map_err(|e| FollowError::Proof(e.to_string()))?;
    Ok(Followed {
        set_update,
        crosslinked: Some((
            height,
            Crosslinked { beacon_header: h.clone(), certificate: block.certificate.clone(), path },
        )),
    })
}

/// The entry offering header `height`, extending `base` (the city's last crosslinked height).
pub fn entry(store: &Store, height: u64, base: Option<u64>) -> Result<CrosslinkEntry, FollowError> {
    let header = store.header(height)?.ok_or(StoreError::Corrupt { what: "missing header" })?;
    let tree = Blake3Tree::history();
    let extension = match base {
        None => None,
        Some(p) => {
            let mut perfect = |level, index| store.history_node(level, index);
            let consistency = ConsistencyProof::build_from_subtrees(&tree, &mut perfect, p, height)
                .map_err(|e| FollowError::Proof(format!("{e:?}")))?;
            let inclusion = InclusionProof::build_from_subtrees(&tree, &mut perfect, height, p)
                .map_err(|e| FollowError::Proof(format!("{e:?}")))?;
            Some(Extension { consistency, inclusion })
        }
    };
    Ok(CrosslinkEntry { header, extension })
}

/// Where the validators' APIs are, and the shard's parts the follower uses.
pub struct Follower {
    /// The validators' API base URLs (`http://host:port`).
    pub apis: Vec<String>,
    /// The federation.
    pub genesis: Arc<ValidGenesis>,
    /// This shard's city.
    pub city: CityId,
    /// The store.
    pub store: Arc<Store>,
    /// The sealer's tip.
    pub tip: watch::Receiver<Option<Tip>>,
    /// Where following is counted.
    pub metrics: Arc<crate::metrics::ShardMetrics>,
    /// When a validator last answered (monotonic milliseconds), for readiness.
    pub contact: Arc<std::sync::atomic::AtomicU64>,
    /// The node's monotonic clock.
    pub monotonic: fn() -> std::time::Duration,
    /// The light client, shared with the API that verifies packets against it.
    pub client: Arc<std::sync::RwLock<LightClient>>,
    /// The highest beacon height followed durably (what the sealer writes as `BeaconView`).
    pub beacon_view: Arc<std::sync::atomic::AtomicU64>,
    /// The sealer, which freezes packets from a city shown to have sealed two headers at one
    /// height.
    pub sealer: crate::sealer::Sealer,
}

/// Runs the follower until `shutdown` fires: one task follows the beacon, one offers headers.
/// `crosslinked` announces each new crosslinked height of this city (the API's long polls
/// wait on it).
pub async fn run(
    follower: Follower,
    crosslinked_tx: watch::Sender<Option<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    if follower.apis.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder()
        .timeout(LONG_POLL + Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client; the shard will not follow the beacon");
            return;
        }
    };
    let follower = Arc::new(follower);
    let crosslinked = match follower.store.last_crosslinked() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "reading the last crosslink; not following the beacon");
            return;
        }
    };
    crosslinked_tx.send_replace(crosslinked);
    let crosslinked_rx = crosslinked_tx.subscribe();
    let follow = tokio::spawn(follow(follower.clone(), http.clone(), crosslinked_tx));
    let offer = tokio::spawn(offer(follower, http, crosslinked_rx));
    let _ = shutdown.wait_for(|stop| *stop).await;
    follow.abort();
    offer.abort();
    // Wait until both are gone, so their handles (the sealer's among them) are dropped.
    let _ = follow.await;
    let _ = offer.await;
}

/// Follows certified beacon blocks in order, recording each crosslink of this city.
async fn follow(f: Arc<Follower>, http: reqwest::Client, crosslinked: watch::Sender<Option<u64>>) {
    // The light client starts from genesis and applies the set changes already followed.
    {
        let mut client = match f.client.write() {
            Ok(c) => c,
            Err(_) => return,
        };
        *client = LightClient::from_genesis(&f.genesis);
        match f.store.set_updates() {
            Ok(updates) => {
                if let Err((i, e)) = client.apply_all(&updates) {
                    tracing::error!(index = i, error = %e, "a stored set change no longer applies");
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reading stored set changes; not following the beacon");
                return;
            }
        }
    }
    let mut next = match f.store.beacon_next() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "reading the beacon position; not following the beacon");
            return;
        }
    };
    let mut api = 0usize;
    loop {
        let url = format!(
            "{}/v1/beacon/blocks/{next}?wait_ms={}",
            f.apis[api % f.apis.len()],
            LONG_POLL.as_millis()
        );
        let response = http.get(&url).send().await;
        if let Ok(r) = &response
            && (r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND)
        {
            let now = (f.monotonic)().as_millis() as u64;
            f.contact.store(now, std::sync::atomic::Ordering::Relaxed);
        }
        let block = match response {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                // Not decided within the wait (or this validator lags): ask the next one.
                api += 1;
                continue;
            }
            Ok(r) if r.status().is_success() => r.json::<BlockView>().await,
            Ok(r) => {
                tracing::debug!(status = %r.status(), "beacon block request refused");
                api += 1;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "beacon unreachable");
                api += 1;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let block = match block {
            Ok(b) if b.header.height == next => b,
            Ok(_) | Err(_) => {
                tracing::warn!(height = next, "a validator served a malformed beacon block");
                api += 1;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        // Conflicting headers of another city freeze its packets here, sealed before the block
        // counts as followed (so a crash in between freezes again on the retry). The evidence
        // verifies on its own; the beacon is not trusted for it.
        if !freeze_on_evidence(&f, &block).await {
            api += 1;
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        let store = f.store.clone();
        let city = f.city;
        let shared = f.client.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let Ok(mut client) = shared.write() else {
                return Err(FollowError::Poisoned);
            };
            check_block(&mut client, &store, city, &block).and_then(|f| {
                store.follow_beacon(
                    next,
                    f.crosslinked.as_ref().map(|(h, l)| (*h, l)),
                    f.set_update.as_ref(),
                )?;
                Ok(f)
            })
        })
        .await;
        // A light client that refuses a block keeps its state (or halts for good on
        // conflicting certified blocks); the block is asked again from another validator.
        let followed = match checked {
            Ok(Err(FollowError::Poisoned)) | Err(_) => {
                tracing::error!("beacon follower task failed");
                return;
            }
            Ok(followed) => followed,
        };
        match followed {
            Ok(followed) => {
                f.beacon_view.store(next, std::sync::atomic::Ordering::Release);
                f.metrics.beacon_height.set(next as i64);
                if let Some((height, link)) = followed.crosslinked {
                    tracing::debug!(beacon_height = next, height, "header crosslinked");
                    crosslinked.send_replace(Some(height));
                    f.metrics.crosslinked_height.set(height as i64);
                    if let Ok(Some(h)) = f.store.header(height) {
                        let lag = link.beacon_header.time_ms.saturating_sub(h.header.time_ms);
                        f.metrics.finality_lag_seconds.set(lag as f64 / 1e3);
                    }
                }
                next += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "beacon block refused");
                api += 1;
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Seals a freeze for each city the block's evidence shows sealing two headers at one height;
/// false when a freeze could not be sealed (the block is followed again later).
async fn freeze_on_evidence(f: &Follower, block: &BlockView) -> bool {
    for item in &block.evidence {
        let EvidenceView::ShardHeaders(e) = item else { continue };
        let Ok((city, height)) = urbis_core::crosslink::verify_equivocation(&f.genesis, e) else {
            tracing::warn!(
                beacon_height = block.header.height,
                "beacon block records evidence that does not verify"
            );
            continue;
        };
        if city == f.city {
            tracing::error!(height, "this city's sealing key signed two headers at one height");
            continue;
        }
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let op = crate::ledger::PacketOp::Freeze { source: city, evidence: e.clone() };
        let submission = crate::sealer::Submission::packet(op, None, reply);
        if f.sealer.submit_wait(submission).await.is_err() {
            return false;
        }
        match outcome.await {
            Ok(crate::sealer::Outcome::PacketSealed { height: at, .. }) => {
                tracing::warn!(%city, height, sealed_at = at, "packets from a city are frozen: it sealed two headers at one height");
            }
            _ => return false,
        }
    }
    true
}

/// Offers each newly sealed header to every validator, extending the last crosslinked one.
async fn offer(
    f: Arc<Follower>,
    http: reqwest::Client,
    mut crosslinked: watch::Receiver<Option<u64>>,
) {
    let mut tip = f.tip.clone();
    // (offered height, its base) and when it was offered.
    let mut last: Option<((u64, Option<u64>), tokio::time::Instant)> = None;
    loop {
        let sealed = tip.borrow_and_update().map(|t| t.height);
        let base = *crosslinked.borrow_and_update();
        if let Some(height) = sealed
            && base.is_none_or(|b| b < height)
        {
            let stale =
                last.is_none_or(|((h, b), at)| h != height || b != base || at.elapsed() >= REOFFER);
            if stale {
                offer_to_all(&f, &http, height, base).await;
                last = Some(((height, base), tokio::time::Instant::now()));
            }
        }
        tokio::select! {
            changed = tip.changed() => if changed.is_err() { return },
            changed = crosslinked.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(REOFFER) => {}
        }
    }
}

async fn offer_to_all(f: &Arc<Follower>, http: &reqwest::Client, height: u64, base: Option<u64>) {
    let store = f.store.clone();
    let built = tokio::task::spawn_blocking(move || entry(&store, height, base)).await;
    let offer = match built {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::error!(error = %e, height, "building a crosslink entry");
            return;
        }
        Err(_) => return,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for api in &f.apis {
        let (http, f, offered, url) =
            (http.clone(), f.clone(), offer.clone(), format!("{api}/v1/beacon/crosslinks"));
        tasks.spawn(async move {
            let r = http.post(&url).json(&offered).send().await;
            // A validator whose chain crosslinked another height than the shard knows yet
            // says which; the shard extends from there instead.
            let their_base = match &r {
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => r
                    .headers()
                    .get("urbis-crosslinked-height")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok()),
                Ok(r) if !r.status().is_success() => {
                    tracing::debug!(status = %r.status(), %url, "crosslink offer refused");
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %e, %url, "crosslink offer failed");
                    None
                }
                Ok(_) => None,
            };
            if let Some(b) = their_base.filter(|b| Some(*b) != base && *b < height) {
                let store = f.store.clone();
                if let Ok(Ok(e)) =
                    tokio::task::spawn_blocking(move || entry(&store, height, Some(b))).await
                {
                    let _ = http.post(&url).json(&e).send().await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
