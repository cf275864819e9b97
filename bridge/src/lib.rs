//! A city's bridge: relays packets between city shards over QUIC with mutual TLS, and
//! carries each destination's acknowledgement (or proven timeout) back to the source shard.
//!
//! The bridge is trusted for nothing. It reads its own shard's final outbound packets, hands
//! each to the destination city's bridge, which hands it to its shard's public
//! `POST /v1/packets`; the destination shard checks the whole proof chain against its own
//! light client. The answer travels back the same way and the source shard checks it just as
//! hard. A bridge that crashes loses nothing: the source shard's state says which packets are
//! unsettled, and a repeated delivery is refused as a duplicate and answered with the
//! acknowledgement it already has.

pub mod metrics;
mod shard;
pub mod tls;
pub mod wire;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use urbis_core::genesis::{Genesis, ValidGenesis};
use urbis_core::packet::PacketId;
use wire::{Request, Response};

/// Largest message read from a QUIC stream.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;
/// Most packets in one batch (the shard's outbound page).
pub const OUTBOUND_BATCH_MAX: usize = 256;
/// Batches in flight at once per destination.
const BATCHES_IN_FLIGHT: usize = 64;

/// A bridge's configuration (`bridge.toml`, every setting overridable as `URBIS_*`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// This bridge's city (as named in genesis).
    pub city: String,
    /// Path of the genesis document.
    pub genesis: PathBuf,
    /// The city's own shard API (`http://host:port`).
    pub shard_api: String,
    /// QUIC (UDP) listen address.
    pub listen: SocketAddr,
    /// The other cities' bridges: city name → `host:port`.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    /// This bridge's certificate (PEM), issued by the city CA that genesis names.
    pub certificate_file: PathBuf,
    /// Its private key (PKCS#8 PEM, mode 0600).
    pub key_file: PathBuf,
    /// Where the bridge keeps its cursors.
    pub data_dir: PathBuf,
    /// HTTP address of `/metrics`, `/livez` and `/readyz` (none: not served).
    #[serde(default)]
    pub api_listen: Option<SocketAddr>,
    /// Pause between polls of the shard's outbound packets when nothing is waiting.
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long a destination bridge waits for its shard's final acknowledgement before it
    /// answers "pending".
    #[serde(default = "defaults::ack_wait_ms")]
    pub ack_wait_ms: u64,
}

mod defaults {
    pub fn poll_interval_ms() -> u64 {
        100
    }
    pub fn ack_wait_ms() -> u64 {
        20_000
    }
}

/// The UDP socket buffers a bridge asks for: a batch of packets is a burst of a megabyte or
/// more, and a datagram the kernel drops for want of buffer is a loss that QUIC's congestion
/// control answers by slowing the whole connection.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// The bridge's UDP socket, bound to `listen`, with buffers of [`UDP_BUFFER_BYTES`] where the
/// kernel allows it (it caps them at `net.core.rmem_max` and `net.core.wmem_max`; smaller
/// buffers are logged, with the setting to raise).
fn udp_socket(listen: SocketAddr) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(Protocol::UDP))?;
    if listen.is_ipv6() {
        // Both families on `[::]`, as a std socket bound there would.
        let _ = socket.set_only_v6(false);
    }
    // Asking is best effort: a smaller buffer costs throughput, never correctness.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    // Linux reports twice what it grants (the doubled value includes its bookkeeping).
    let reported = if cfg!(target_os = "linux") { 2 * UDP_BUFFER_BYTES } else { UDP_BUFFER_BYTES };
    let (recv, send) = (socket.recv_buffer_size()?, socket.send_buffer_size()?);
    if recv < reported || send < reported {
        tracing::warn!(
            recv_buffer = recv,
            send_buffer = send,
            wanted = UDP_BUFFER_BYTES,
            "the kernel granted smaller UDP buffers than the bridge asks for; raise \
             net.core.rmem_max and net.core.wmem_max to at least the wanted size"
        );
    }
    socket.bind(&listen.into())?;
    Ok(socket.into())
}

/// Reads and validates a genesis document.
pub fn load_genesis(path: &Path) -> Result<ValidGenesis> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let genesis: Genesis =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    genesis.validate().with_context(|| format!("validating {}", path.display()))
}

struct Bridge {
    config: BridgeConfig,
    genesis: ValidGenesis,
    tls: tls::BridgeTls,
    endpoint: quinn::Endpoint,
    shard: shard::Shard,
    connections: Mutex<BTreeMap<String, quinn::Connection>>,
    cursors: Mutex<Cursors>,
    metrics: metrics::BridgeMetrics,
}

/// Runs the bridge until `shutdown` completes.
pub async fn run(
    config: BridgeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    run_with(config, None, shutdown).await
}

/// [`run`], reaching its own shard through `local` — the router the shard serves in this
/// process (`urbis_shard::node::run_with`) — instead of over HTTP at `shard_api`.
pub async fn run_with(
    config: BridgeConfig,
    local: Option<urbis_ops::in_process::InProcess>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let genesis = load_genesis(&config.genesis)?;
    if !genesis.genesis().cities.iter().any(|c| c.name == config.city) {
        bail!("city {} is not in genesis", config.city);
    }
    let certificate = std::fs::read_to_string(&config.certificate_file)
        .with_context(|| format!("reading {}", config.certificate_file.display()))?;
    let key = std::fs::read_to_string(&config.key_file)
        .with_context(|| format!("reading {}", config.key_file.display()))?;
    let tls = tls::BridgeTls::new(&certificate, &key)?;
    let socket =
        udp_socket(config.listen).with_context(|| format!("binding QUIC on {}", config.listen))?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(tls.server(&genesis)?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .with_context(|| format!("starting QUIC on {}", config.listen))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let cursors = Cursors::load(&config.data_dir.join("cursors.json"))?;
    let timeout = Duration::from_millis(config.ack_wait_ms + 10_000);
    let shard = match local {
        Some(router) => shard::Shard::in_process(&config.shard_api, router, timeout),
        None => shard::Shard::http(&config.shard_api, timeout)?,
    };
    let bridge = Arc::new(Bridge {
        config,
        genesis,
        tls,
        endpoint,
        shard,
        connections: Mutex::new(BTreeMap::new()),
        cursors: Mutex::new(cursors),
        metrics: metrics::BridgeMetrics::default(),
    });
    tracing::info!(
        city = %bridge.config.city,
        listen = %bridge.config.listen,
        peers = bridge.config.peers.len(),
        "bridge started"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(accept(bridge.clone()))];
    if let Some(addr) = bridge.config.api_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tasks.push(tokio::spawn(serve_api(bridge.clone(), listener)));
    }
    for (city, address) in bridge.config.peers.clone() {
        if city == bridge.config.city {
            continue;
        }
        tasks.push(tokio::spawn(erasures(
            bridge.clone(),
            city.clone(),
            address.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(outbound(bridge.clone(), city, address, stop_rx.clone())));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    bridge.endpoint.close(0u32.into(), b"shutdown");
    for t in tasks {
        t.abort();
    }
    urbis_ops::quic_closed(bridge.endpoint.wait_idle()).await;
    tracing::info!("bridge stopped");
    Ok(())
}

/// `/metrics`, `/livez`, `/readyz` (ready once the own shard answers).
async fn serve_api(bridge: Arc<Bridge>, listener: tokio::net::TcpListener) {
    use axum::routing::get;
    let metrics = bridge.clone();
    let ready = bridge.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let m = metrics.clone();
                async move { m.metrics.response(&headers) }
            }),
        )
        .route("/livez", get(|| async { "live" }))
        // Served only once genesis, keys and the QUIC endpoint are set up.
        .route("/startupz", get(|| async { "started" }))
        .route(
            "/readyz",
            get(move || {
                let b = ready.clone();
                async move {
                    match b.shard.get("/livez").await {
                        Ok(r) if r.is_success() => (axum::http::StatusCode::OK, "ready"),
                        _ => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "the own shard does not answer",
                        ),
                    }
                }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            bridge.metrics.http.clone(),
            urbis_ops::time_request,
        ));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "bridge API stopped");
    }
}

/// Accepts bridge connections; each request is one bidirectional stream.
async fn accept(bridge: Arc<Bridge>) {
    while let Some(incoming) = bridge.endpoint.accept().await {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "bridge handshake refused");
                    return;
                }
            };
            let grouped = tls::speaks_groups(&connection);
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let bridge = bridge.clone();
                tokio::spawn(async move {
                    let refused = |status, detail| wire::Answers {
                        results: vec![Response::Refused { status, detail }],
                    };
                    let response = match recv.read_to_end(MESSAGE_BYTES_MAX).await {
                        Ok(bytes) => match serde_json::from_slice::<Request>(&bytes) {
                            Ok(request) => serve(&bridge, request).await,
                            Err(e) => refused(400, format!("malformed request: {e}")),
                        },
                        Err(e) => refused(413, e.to_string()),
                    };
                    let bytes = wire::answers_body(&response, grouped);
                    drop(response);
                    let _ = send.write_all(&bytes).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
        });
    }
}

/// Problem details the shard answers with (RFC 9457).
#[derive(Clone, Debug, Deserialize)]
pub struct Problem {
    /// The problem type URI.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// What went wrong.
    #[serde(default)]
    pub detail: String,
}

fn problem_slug(p: &Problem) -> String {
    p.kind.rsplit('/').next().unwrap_or_default().to_string()
}

fn city_name(genesis: &ValidGenesis, id: urbis_core::record::CityId) -> std::borrow::Cow<'_, str> {
    genesis.city(id).map_or_else(|| id.to_string().into(), |c| c.name.as_str().into())
}

fn packet_path(bridge: &Bridge, id: &PacketId) -> String {
    format!(
        "/v1/packets/{}/{}/{}",
        city_name(&bridge.genesis, id.source),
        city_name(&bridge.genesis, id.destination),
        id.sequence
    )
}

/// The destination side: hand the packets to the shard in one batch, then wait for their
/// final acknowledgements (or fetch the timeout proof of those the shard says timed out).
async fn serve(bridge: &Bridge, request: Request) -> wire::Answers {
    let items = match request {
        Request::Deliver { items } => items,
        Request::Erase { source, record_id, proof } => {
            return wire::Answers { results: vec![erase(bridge, source, record_id, proof).await] };
        }
    };
    // Counted before the packets are laid out one by one.
    let n: usize = items.iter().map(wire::Carried::len).sum();
    if n == 0 || n > OUTBOUND_BATCH_MAX {
        return wire::Answers {
            results: vec![Response::Refused { status: 413, detail: format!("{n} packets") }],
        };
    }
    let arrived: Vec<wire::Arrived<'_>> = items.iter().flat_map(wire::Carried::packets).collect();
    let mut ids = Vec::with_capacity(n);
    let mut spans = Vec::with_capacity(n);
    for a in &arrived {
        let span = tracing::info_span!(
            "deliver packet",
            urbis.role = "bridge",
            urbis.city = %bridge.config.city,
            packet.source = %city_name(&bridge.genesis, a.id.source),
            packet.sequence = a.id.sequence,
            packet.result = tracing::field::Empty,
        );
        if let Some(t) = a.trace_context {
            urbis_ops::telemetry::set_remote_parent(&span, t);
        }
        ids.push((a.id, a.timeout_height));
        spans.push(span);
    }
    let traces: Vec<Option<String>> = spans.iter().map(urbis_ops::telemetry::traceparent).collect();
    let packets: Vec<wire::PacketOut<'_>> = arrived
        .iter()
        .zip(&traces)
        .map(|(a, trace)| wire::PacketOut {
            proof: a.proof,
            payload: a.payload,
            trace_context: trace.as_deref(),
        })
        .collect();
    let body = wire::delivery_batch_body(&packets);
    drop(packets);
    drop(traces);
    drop(arrived);
    // What came is in `body` now; the wait for acknowledgements need not hold it twice.
    drop(items);
    let answers = deliver(bridge, n, ids, body).await;
    for (span, answer) in spans.iter().zip(&answers.results) {
        span.record("packet.result", answer.name());
    }
    answers
}

/// The body of the shard's acknowledgements long poll, written straight from the ids (a
/// `json!` value built a map for each of them first).
#[derive(serde::Serialize)]
struct AcknowledgementsAsked<'a> {
    packets: &'a [PacketId],
}

/// The longest wait the bridge asks of its shard's acknowledgements long poll.
const ACK_LONG_POLL_MS: u128 = 1_000;

/// Hands a batch of packets to the shard (`body`, one result per packet) and waits for their
/// final acknowledgements.
async fn deliver(
    bridge: &Bridge,
    n: usize,
    ids: Vec<(PacketId, u64)>,
    body: Vec<u8>,
) -> wire::Answers {
    let pending = |detail: String| wire::Answers {
        results: (0..n).map(|_| Response::Pending { detail: detail.clone() }).collect(),
    };
    let answer = match bridge.shard.post("/v1/packets/batch", body).await {
        Ok(r) if r.is_success() => r.json::<wire::BatchAnswer>(),
        Ok(r) => return pending(format!("shard answered {}", r.status)),
        Err(e) => return pending(format!("shard unreachable: {e}")),
    };
    let Ok(answer) = answer else { return pending("shard answer does not parse".into()) };
    if answer.results.len() != n {
        return pending("shard answered another number of items".into());
    }
    let mut results: Vec<Option<Response>> = (0..n).map(|_| None).collect();
    let mut awaiting = Vec::new();
    for (i, item) in answer.results.iter().enumerate() {
        let slug = item.problem.as_ref().map(problem_slug).unwrap_or_default();
        let detail = item.problem.as_ref().map(|p| p.detail.clone()).unwrap_or_default();
        match (item.status, slug.as_str()) {
            (200, _) | (409, "packet-duplicate") => awaiting.push(i),
            (409, "packet-timed-out") => {
                results[i] = Some(timeout_proof(bridge, &ids[i].0, ids[i].1).await);
            }
            (400 | 404 | 413 | 422, _) => {
                tracing::warn!(packet = %ids[i].0, status = item.status, %detail, "shard refused a packet");
                results[i] = Some(Response::Refused { status: item.status, detail });
            }
            _ => results[i] = Some(Response::Pending { detail }),
        }
    }
    // Received (now or before): wait until their acknowledgements are final.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(bridge.config.ack_wait_ms);
    while !awaiting.is_empty() {
        let packets: Vec<PacketId> = awaiting.iter().map(|i| ids[*i].0).collect();
        // A long poll: the shard answers when its next header is crosslinked (what makes
        // acknowledgements final) or after the wait, instead of being asked every 50 ms.
        let wait_ms = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_millis()
            .min(ACK_LONG_POLL_MS);
        let asked = tokio::time::Instant::now();
        let asking = serde_json::to_vec(&AcknowledgementsAsked { packets: &packets })
            .expect("packet ids always serialize");
        if let Ok(r) = bridge
            .shard
            .post(&format!("/v1/packets/acknowledgements/groups?wait_ms={wait_ms}"), asking)
            .await
            && r.is_success()
            && let Ok(acks) = r.json::<wire::AcknowledgementGroup>()
            && acks.acknowledgements.len() == awaiting.len()
        {
            let mut still = Vec::new();
            for (i, ack) in awaiting.iter().zip(acks.acknowledgements) {
                match ack {
                    Some(proof) => results[*i] = Some(Response::Acknowledged { proof }),
                    None => still.push(*i),
                }
            }
            awaiting = still;
        }
        if awaiting.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        // A shard that answered at once (nothing final yet and no long poll, or an error) is
        // asked again after a pause, not in a tight loop.
        if asked.elapsed() < Duration::from_millis(50) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    wire::Answers {
        results: results
            .into_iter()
            .map(|r| {
                r.unwrap_or(Response::Pending {
                    detail: "the acknowledgement is not final yet".into(),
                })
            })
            .collect(),
    }
}

/// The destination side of an erasure: the shard checks the proof and erases its copy.
async fn erase(
    bridge: &Bridge,
    source: String,
    record_id: urbis_core::hash::Hash32,
    proof: Box<urbis_core::proof::ProofDocument>,
) -> Response {
    let body = serde_json::json!({ "source": source, "record_id": record_id, "proof": proof });
    let body = serde_json::to_vec(&body).expect("a JSON value always serializes");
    match bridge.shard.post("/v1/packets/erasures", body).await {
        Ok(r) if r.is_success() => Response::Erased,
        Ok(r) if r.status.is_client_error() => {
            Response::Refused { status: r.status.as_u16(), detail: r.text() }
        }
        Ok(r) => Response::Pending { detail: format!("shard answered {}", r.status) },
        Err(e) => Response::Pending { detail: e.to_string() },
    }
}

/// The source side of erasures: each erasure of a record sent to `destination`, with the final
/// proof of it, carried to the destination's bridge; the cursor is the height of the last one
/// carried.
async fn erasures(
    bridge: Arc<Bridge>,
    destination: String,
    address: String,
    mut stop: watch::Receiver<bool>,
) {
    let cursor_name = format!("erasures/{destination}");
    let source = bridge.config.city.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stop.changed()).await;
        let after = bridge.cursors.lock().await.get(&cursor_name);
        let path = format!("/v1/packets/erasures?destination={destination}&after={after}");
        let Ok(Ok(list)) =
            bridge.shard.get(&path).await.map(|r| r.json::<wire::OutboundErasures>())
        else {
            continue;
        };
        for e in list.erasures {
            let key = urbis_core::state::StateKey::Erasure { record_id: e.record_id };
            let hex_key = hex::encode(urbis_core::encoding::encode(&key));
            let proof =
                match bridge.shard.get(&format!("/v1/state/{hex_key}/proof?level=final")).await {
                    Ok(r) if r.is_success() => r.json::<wire::StateProofView>().ok(),
                    _ => None,
                };
            // Not final yet (or present only at level committed): next round.
            let Some(proof) = proof.filter(|p| p.present && p.level == "final") else { break };
            let request = |_| wire::erase_request(&source, &e.record_id, &proof.proof);
            match call(&bridge, &destination, &address, request).await {
                Ok(a) if matches!(a.results.first(), Some(Response::Erased)) => {
                    bridge.cursors.lock().await.set(&cursor_name, e.height);
                    bridge
                        .metrics
                        .erasures
                        .get_or_create(&metrics::ChannelLabel { destination: destination.clone() })
                        .inc();
                }
                Ok(a) => {
                    tracing::warn!(?a.results, "the destination did not erase a copy");
                    break;
                }
                Err(err) => {
                    tracing::debug!(error = %err, "destination bridge unreachable");
                    break;
                }
            }
        }
    }
}

async fn timeout_proof(bridge: &Bridge, id: &PacketId, timeout_height: u64) -> Response {
    let path = format!("{}/timeout-proof?timeout_height={timeout_height}", packet_path(bridge, id));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(bridge.config.ack_wait_ms);
    loop {
        match bridge.shard.get(&path).await {
            Ok(r) if r.is_success() => match r.json() {
                Ok(proof) => return Response::TimedOut { proof },
                Err(e) => return Response::Pending { detail: e.to_string() },
            },
            Ok(r) if r.status.as_u16() == 409 => {}
            Ok(r) => return Response::Pending { detail: format!("shard answered {}", r.status) },
            Err(e) => return Response::Pending { detail: e.to_string() },
        }
        if tokio::time::Instant::now() >= deadline {
            return Response::Pending { detail: "no final timeout proof yet".into() };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The source side towards one destination: final unsettled packets out in batches (a few
/// batches in flight at once), answers back in, each settled at the own shard.
async fn outbound(
    bridge: Arc<Bridge>,
    destination: String,
    address: String,
    mut stop: watch::Receiver<bool>,
) {
    let poll = Duration::from_millis(bridge.config.poll_interval_ms);
    // Sequences handed to a batch in flight, and what the finished batches settled.
    let state = Arc::new(std::sync::Mutex::new(Flight::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut scan_after: Option<u64> = None;
    // Whether the last pages came back full: then the next ones are asked for side by side.
    let mut backlog = false;
    loop {
        if *stop.borrow() {
            tasks.abort_all();
            return;
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        let cursor = bridge.cursors.lock().await.get(&destination);
        // The cursor moves over the settled prefix; a packet left unsettled is sent again.
        let advanced = {
            let mut f = state.lock().unwrap_or_else(|e| e.into_inner());
            let mut c = cursor;
            while f.settled.remove(&(c + 1)) {
                c += 1;
            }
            f.settled.retain(|s| *s > c);
            c
        };
        if advanced > cursor {
            bridge.cursors.lock().await.set(&destination, advanced);
        }
        if tasks.len() >= BATCHES_IN_FLIGHT {
            let _ = tokio::time::timeout(poll, tasks.join_next()).await;
            continue;
        }
        let after = scan_after.unwrap_or(advanced).max(advanced);
        let page =
            outbound_pages(&bridge, &destination, after, if backlog { PAGES_AHEAD } else { 1 })
                .await;
        let Some(page) = page else {
            let _ = tokio::time::timeout(poll * 5, stop.changed()).await;
            continue;
        };
        let fresh: Vec<wire::OutboundPacketView> = {
            let f = state.lock().unwrap_or_else(|e| e.into_inner());
            page.packets.into_iter().filter(|p| !f.in_flight.contains(&p.sequence)).collect()
        };
        if fresh.is_empty() {
            backlog = false;
            if !tasks.is_empty() {
                // Batches are in flight: look past them, and rescan from the cursor only once
                // they are done (so a packet they left unsettled is sent again).
                scan_after =
                    state.lock().ok().and_then(|f| f.in_flight.last().copied()).or(scan_after);
                let _ = tokio::time::timeout(poll, tasks.join_next()).await;
                continue;
            }
            scan_after = None;
            let idle =
                tasks.is_empty() && state.lock().map(|f| f.in_flight.is_empty()).unwrap_or(false);
            if idle
                && page.waiting_for_finality.is_none()
                && page.sent > advanced
                && after == advanced
            {
                // Everything up to `sent` is settled.
                bridge.cursors.lock().await.set(&destination, page.sent);
            }
            let _ = tokio::time::timeout(poll, stop.changed()).await;
            continue;
        }
        scan_after = fresh.last().map(|p| p.sequence);
        backlog = fresh.len() >= OUTBOUND_BATCH_MAX;
        {
            let mut f = state.lock().unwrap_or_else(|e| e.into_inner());
            f.in_flight.extend(fresh.iter().map(|p| p.sequence));
            let now = tokio::time::Instant::now();
            for p in &fresh {
                f.first_seen.entry(p.sequence).or_insert(now);
            }
            let label = metrics::ChannelLabel { destination: destination.clone() };
            bridge.metrics.in_flight.get_or_create(&label).set(f.in_flight.len() as i64);
        }
        let mut fresh = fresh.into_iter().peekable();
        while fresh.peek().is_some() {
            let batch: Vec<wire::OutboundPacketView> =
                fresh.by_ref().take(OUTBOUND_BATCH_MAX).collect();
            let bridge = bridge.clone();
            let destination = destination.clone();
            let address = address.clone();
            let state = state.clone();
            tasks.spawn(async move {
                let sequences: Vec<u64> = batch.iter().map(|p| p.sequence).collect();
                let settled = relay(&bridge, &destination, &address, batch).await;
                let mut f = state.lock().unwrap_or_else(|e| e.into_inner());
                for (sequence, done) in sequences.into_iter().zip(settled) {
                    f.in_flight.remove(&sequence);
                    if done {
                        f.settled.insert(sequence);
                        f.first_seen.remove(&sequence);
                    }
                }
                let label = metrics::ChannelLabel { destination: destination.clone() };
                bridge.metrics.in_flight.get_or_create(&label).set(f.in_flight.len() as i64);
                let oldest = f.first_seen.values().min().map_or(0.0, |t| t.elapsed().as_secs_f64());
                bridge.metrics.oldest_unsettled.get_or_create(&label).set(oldest);
            });
        }
    }
}

/// Pages asked for at once while a backlog lasts, each starting `OUTBOUND_BATCH_MAX`
/// sequences after the one before: the shard builds them side by side instead of the bridge
/// waiting for one page before asking for the next.
const PAGES_AHEAD: u64 = 4;

/// The shard's final unsettled packets after `after`, from `pages` pages asked for at once
/// and merged in sequence order (pages that overlap, where settled packets left gaps, give
/// each packet once); `None` when the first page could not be read.
async fn outbound_pages(
    bridge: &Arc<Bridge>,
    destination: &str,
    after: u64,
    pages: u64,
) -> Option<wire::OutboundPage> {
    let mut set = tokio::task::JoinSet::new();
    for k in 0..pages {
        let path = format!(
            "/v1/packets/outbound/groups?destination={destination}&after={}&limit={OUTBOUND_BATCH_MAX}",
            after.saturating_add(k * OUTBOUND_BATCH_MAX as u64),
        );
        let shard = bridge.shard.clone();
        set.spawn(async move {
            let page = match shard.get(&path).await {
                Ok(r) if r.is_success() => match r.json::<wire::OutboundPage>() {
                    Ok(page) => Some(page),
                    Err(e) => {
                        tracing::warn!(error = %e, "the shard's outbound page does not parse");
                        None
                    }
                },
                Ok(r) => {
                    tracing::debug!(status = %r.status, "the shard refused the outbound page");
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %e, "own shard unreachable");
                    None
                }
            };
            (k, page)
        });
    }
    let mut got: Vec<(u64, wire::OutboundPage)> = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((k, Some(page))) => got.push((k, page)),
            Ok((0, None)) => return None,
            Ok(_) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return None,
        }
    }
    got.sort_by_key(|(k, _)| *k);
    let mut pages = got.into_iter().map(|(_, p)| p);
    let mut merged = pages.next()?;
    for page in pages {
        merged.sent = merged.sent.max(page.sent);
        merged.waiting_for_finality = match (merged.waiting_for_finality, page.waiting_for_finality)
        {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        merged.packets.extend(page.packets);
    }
    merged.packets.sort_by_key(|p| p.sequence);
    merged.packets.dedup_by_key(|p| p.sequence);
    Some(merged)
}

/// What the batches of one destination are doing.
#[derive(Default)]
struct Flight {
    in_flight: std::collections::BTreeSet<u64>,
    settled: std::collections::BTreeSet<u64>,
    /// When this bridge first saw each unsettled packet (for the stuck-packet age).
    first_seen: BTreeMap<u64, tokio::time::Instant>,
}

/// Relays a batch of packets and settles each at the source; for each, whether the source
/// shard now holds its outcome.
async fn relay(
    bridge: &Bridge,
    destination: &str,
    address: &str,
    packets: Vec<wire::OutboundPacketView>,
) -> Vec<bool> {
    let ids: Vec<PacketId> =
        packets.iter().map(|p| PacketId { sequence: p.sequence, ..p.proof.id() }).collect();
    let spans: Vec<tracing::Span> = packets
        .iter()
        .map(|p| {
            let span = tracing::info_span!(
                "send packet",
                urbis.role = "bridge",
                urbis.city = %bridge.config.city,
                packet.destination = %destination,
                packet.sequence = p.sequence,
                packet.result = tracing::field::Empty,
            );
            if let Some(t) = &p.trace_context {
                urbis_ops::telemetry::set_remote_parent(&span, t);
            }
            span
        })
        .collect();
    let traces: Vec<Option<String>> = spans.iter().map(urbis_ops::telemetry::traceparent).collect();
    let out: Vec<wire::PacketOut<'_>> = packets
        .iter()
        .zip(&traces)
        .map(|(p, trace)| wire::PacketOut {
            proof: p.proof.out(),
            payload: p.payload.as_deref(),
            trace_context: trace.as_deref(),
        })
        .collect();
    let settled = settle(bridge, destination, address, &ids, &traces, &out).await;
    for (span, (done, result)) in spans.iter().zip(&settled) {
        span.record("packet.result", if *done { "settled" } else { result });
    }
    settled.into_iter().map(|(done, _)| done).collect()
}

/// Sends a batch to the destination's bridge and hands its answers, as they came, to the own
/// shard (`POST /v1/packets/answers`), which reads them and settles what they prove; for each
/// packet, whether the source shard now holds its outcome, and what became of it.
async fn settle(
    bridge: &Bridge,
    destination: &str,
    address: &str,
    ids: &[PacketId],
    traces: &[Option<String>],
    packets: &[wire::PacketOut<'_>],
) -> Vec<(bool, &'static str)> {
    let n = ids.len();
    let count = |result: &'static str, k: usize| {
        bridge
            .metrics
            .packets
            .get_or_create(&metrics::ResultLabel { destination: destination.to_string(), result })
            .inc_by(k as u64);
    };
    let request = |grouped| wire::deliver_request(packets, grouped);
    let answers = match call_raw(bridge, destination, address, request).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(%destination, error = %e, "destination bridge unreachable");
            count("unreachable", n);
            return vec![(false, "unreachable"); n];
        }
    };
    let mut settled = vec![(false, "pending"); n];
    let body = wire::answers_handed_on(ids, traces, &answers);
    drop(answers);
    let results = match bridge.shard.post("/v1/packets/answers", body).await {
        Ok(r) if r.is_success() => match r.json::<wire::AnswersSettled>() {
            Ok(a) if a.results.len() == n => a.results,
            _ => {
                tracing::warn!("own shard's answer about the destination's answers does not parse");
                return settled;
            }
        },
        Ok(r) if matches!(r.status.as_u16(), 400 | 422) => {
            // The destination's answers are not an answers document, one answer per packet:
            // as if it was not reached, and its connection is not used again.
            let detail = bounded(&r.text());
            tracing::debug!(%destination, status = %r.status, %detail, "the destination's answers do not read");
            bridge.connections.lock().await.remove(destination);
            count("unreachable", n);
            return vec![(false, "unreachable"); n];
        }
        Ok(r) => {
            let detail = bounded(&r.text());
            tracing::warn!(status = %r.status, %detail, "own shard did not take the destination's answers");
            return settled;
        }
        Err(e) => {
            tracing::debug!(error = %e, "own shard unreachable");
            return settled;
        }
    };
    for (i, result) in results.into_iter().enumerate() {
        match (result.answer.as_str(), result.settlement) {
            ("acknowledged" | "timed_out", Some(item)) => {
                let slug = item.problem.as_ref().map(problem_slug).unwrap_or_default();
                settled[i].0 = item.status == 200 || slug == "packet-settled";
                if !settled[i].0 {
                    settled[i].1 = "settlement_refused";
                    tracing::warn!(packet = %ids[i], status = item.status, "own shard refused a settlement");
                }
            }
            ("pending", _) => {
                let detail = result.detail.unwrap_or_default();
                tracing::debug!(packet = %ids[i], %detail, "packet pending at the destination");
                count("pending", 1);
            }
            ("unreadable", _) => {
                let detail = bounded(&result.detail.unwrap_or_default());
                tracing::debug!(packet = %ids[i], %detail, "the destination's answer about a packet does not read");
                count("unreachable", 1);
                settled[i].1 = "unreachable";
            }
            ("refused", _) => {
                let detail = result.detail.unwrap_or_default();
                let status = result.destination_status.unwrap_or_default();
                tracing::warn!(packet = %ids[i], status, %detail, "destination refused a packet");
                count("refused", 1);
                settled[i].1 = "refused";
            }
            _ => {}
        }
    }
    count("settled", settled.iter().filter(|s| s.0).count());
    settled
}

/// One request to a city's bridge over QUIC (connection reused): `request` writes its body,
/// grouped when the connection speaks `urbis-bridge/2`.
async fn call(
    bridge: &Bridge,
    city: &str,
    address: &str,
    request: impl FnOnce(bool) -> Vec<u8>,
) -> Result<wire::Answers> {
    let bytes = call_raw(bridge, city, address, request).await?;
    let answers = serde_json::from_slice(&bytes);
    if answers.is_err() {
        bridge.connections.lock().await.remove(city);
    }
    Ok(answers?)
}

/// At most 256 characters of `text` (a detail that may quote another city's bytes), for logs.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(256) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// [`call`], answering the answers document's bytes as they came, unread.
async fn call_raw(
    bridge: &Bridge,
    city: &str,
    address: &str,
    request: impl FnOnce(bool) -> Vec<u8>,
) -> Result<Vec<u8>> {
    let connection = connection(bridge, city, address).await?;
    let body = request(tls::speaks_groups(&connection));
    let result = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(&body).await?;
        drop(body);
        send.finish()?;
        Ok::<_, anyhow::Error>(recv.read_to_end(MESSAGE_BYTES_MAX).await?)
    }
    .await;
    if result.is_err() {
        bridge.connections.lock().await.remove(city);
    }
    result
}

async fn connection(bridge: &Bridge, city: &str, address: &str) -> Result<quinn::Connection> {
    if let Some(c) = bridge.connections.lock().await.get(city)
        && c.close_reason().is_none()
    {
        return Ok(c.clone());
    }
    let addr = tokio::net::lookup_host(address)
        .await?
        .next()
        .with_context(|| format!("{address} does not resolve"))?;
    let config = bridge.tls.client(&bridge.genesis, city)?;
    let connection = bridge.endpoint.connect_with(config, addr, &tls::server_name(city))?.await?;
    bridge.connections.lock().await.insert(city.to_string(), connection.clone());
    Ok(connection)
}

/// Per destination, the highest sequence up to which every packet is settled; kept in a file
/// replaced atomically.
struct Cursors {
    path: PathBuf,
    map: BTreeMap<String, u64>,
}

impl Cursors {
    fn load(path: &Path) -> Result<Self> {
        let map = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Cursors { path: path.to_path_buf(), map })
    }

    fn get(&self, destination: &str) -> u64 {
        self.map.get(destination).copied().unwrap_or(0)
    }

    fn set(&mut self, destination: &str, sequence: u64) {
        self.map.insert(destination.to_string(), sequence);
        if let Err(e) = self.save() {
            // A lost cursor costs a rescan, never a packet.
            tracing::warn!(error = %e, "saving the bridge cursors");
        }
    }

    fn save(&self) -> Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&self.map)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's cap on a socket buffer, from `/proc` (Linux); `None` elsewhere.
    fn kernel_max(name: &str) -> Option<usize> {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}")).ok()?.trim().parse().ok()
    }

    #[test]
    fn the_quic_socket_gets_the_buffers_asked_for_up_to_the_kernels_cap() {
        let socket = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let socket = socket2::Socket::from(socket);
        for (granted, cap) in [
            (socket.recv_buffer_size().unwrap(), kernel_max("rmem_max")),
            (socket.send_buffer_size().unwrap(), kernel_max("wmem_max")),
        ] {
            // Without the request the buffer would stay at the default (about 208 KiB).
            let Some(cap) = cap else { continue };
            assert!(
                granted >= UDP_BUFFER_BYTES.min(cap),
                "granted {granted} bytes; asked {UDP_BUFFER_BYTES}, the kernel allows {cap}"
            );
        }
    }
}
