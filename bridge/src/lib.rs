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
/// Packets relayed at once per destination.
const IN_FLIGHT: usize = 16;

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
    http: reqwest::Client,
    connections: Mutex<BTreeMap<String, quinn::Connection>>,
    cursors: Mutex<Cursors>,
}

/// Runs the bridge until `shutdown` completes.
pub async fn run(
    config: BridgeConfig,
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
    let endpoint = quinn::Endpoint::server(tls.server(&genesis)?, config.listen)
        .with_context(|| format!("binding QUIC on {}", config.listen))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let cursors = Cursors::load(&config.data_dir.join("cursors.json"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.ack_wait_ms + 10_000))
        .connect_timeout(Duration::from_secs(2))
        .build()?;
    let bridge = Arc::new(Bridge {
        config,
        genesis,
        tls,
        endpoint,
        http,
        connections: Mutex::new(BTreeMap::new()),
        cursors: Mutex::new(cursors),
    });
    tracing::info!(
        city = %bridge.config.city,
        listen = %bridge.config.listen,
        peers = bridge.config.peers.len(),
        "bridge started"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(accept(bridge.clone()))];
    for (city, address) in bridge.config.peers.clone() {
        if city == bridge.config.city {
            continue;
        }
        tasks.push(tokio::spawn(outbound(bridge.clone(), city, address, stop_rx.clone())));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    bridge.endpoint.close(0u32.into(), b"shutdown");
    for t in tasks {
        t.abort();
    }
    bridge.endpoint.wait_idle().await;
    tracing::info!("bridge stopped");
    Ok(())
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
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let bridge = bridge.clone();
                tokio::spawn(async move {
                    let response = match recv.read_to_end(MESSAGE_BYTES_MAX).await {
                        Ok(bytes) => match serde_json::from_slice::<Request>(&bytes) {
                            Ok(request) => serve(&bridge, request).await,
                            Err(e) => Response::Refused {
                                status: 400,
                                detail: format!("malformed request: {e}"),
                            },
                        },
                        Err(e) => Response::Refused { status: 413, detail: e.to_string() },
                    };
                    if let Ok(bytes) = serde_json::to_vec(&response) {
                        let _ = send.write_all(&bytes).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    }
                });
            }
        });
    }
}

/// Problem details the shard answers with (RFC 9457).
#[derive(Deserialize)]
struct Problem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    detail: String,
}

fn problem_slug(p: &Problem) -> &str {
    p.kind.rsplit('/').next().unwrap_or_default()
}

fn city_name(genesis: &ValidGenesis, id: urbis_core::record::CityId) -> String {
    genesis.city(id).map_or_else(|| id.to_string(), |c| c.name.clone())
}

fn packet_url(bridge: &Bridge, id: &PacketId) -> String {
    format!(
        "{}/v1/packets/{}/{}/{}",
        bridge.config.shard_api.trim_end_matches('/'),
        city_name(&bridge.genesis, id.source),
        city_name(&bridge.genesis, id.destination),
        id.sequence
    )
}

/// The destination side: hand the packet to the shard, then wait for its final
/// acknowledgement (or fetch the timeout proof when the shard says it timed out).
async fn serve(bridge: &Bridge, request: Request) -> Response {
    let Request::Deliver { proof, payload } = request;
    let Some(destination) = proof.record.destination else {
        return Response::Refused { status: 422, detail: "record has no destination".into() };
    };
    let id = PacketId { source: proof.record.city, destination, sequence: proof.sequence };
    let timeout_height = proof.commitment.timeout_height;
    let body = serde_json::json!({ "type": "packet", "proof": proof, "payload": payload });
    let url = format!("{}/v1/packets", bridge.config.shard_api.trim_end_matches('/'));
    let answer = match bridge.http.post(&url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => return Response::Pending { detail: format!("shard unreachable: {e}") },
    };
    let status = answer.status().as_u16();
    if !(200..300).contains(&status) {
        let problem: Problem =
            answer.json().await.unwrap_or(Problem { kind: String::new(), detail: String::new() });
        match (status, problem_slug(&problem)) {
            (409, "packet-duplicate") => {}
            (409, "packet-timed-out") => return timeout_proof(bridge, &id, timeout_height).await,
            (400 | 404 | 413 | 422, _) => {
                tracing::warn!(packet = %id, status, detail = %problem.detail, "shard refused a packet");
                return Response::Refused { status, detail: problem.detail };
            }
            _ => return Response::Pending { detail: problem.detail },
        }
    }
    // Received (now or before): wait until the acknowledgement is final.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(bridge.config.ack_wait_ms);
    let url = packet_url(bridge, &id);
    loop {
        if let Ok(r) = bridge.http.get(&url).send().await
            && r.status().is_success()
            && let Ok(status) = r.json::<wire::PacketStatus>().await
            && let Some(proof) = status.acknowledgement_proof
        {
            return Response::Acknowledged { proof };
        }
        if tokio::time::Instant::now() >= deadline {
            return Response::Pending { detail: "the acknowledgement is not final yet".into() };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn timeout_proof(bridge: &Bridge, id: &PacketId, timeout_height: u64) -> Response {
    let url = format!("{}/timeout-proof?timeout_height={timeout_height}", packet_url(bridge, id));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(bridge.config.ack_wait_ms);
    loop {
        match bridge.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(proof) => return Response::TimedOut { proof },
                Err(e) => return Response::Pending { detail: e.to_string() },
            },
            Ok(r) if r.status().as_u16() == 409 => {}
            Ok(r) => return Response::Pending { detail: format!("shard answered {}", r.status()) },
            Err(e) => return Response::Pending { detail: e.to_string() },
        }
        if tokio::time::Instant::now() >= deadline {
            return Response::Pending { detail: "no final timeout proof yet".into() };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The source side towards one destination: final unsettled packets out, answers back in.
async fn outbound(
    bridge: Arc<Bridge>,
    destination: String,
    address: String,
    mut stop: watch::Receiver<bool>,
) {
    let poll = Duration::from_millis(bridge.config.poll_interval_ms);
    let mut scan_after = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let cursor = bridge.cursors.lock().await.get(&destination);
        let after = scan_after.unwrap_or(cursor);
        let url = format!(
            "{}/v1/packets/outbound?destination={destination}&after={after}",
            bridge.config.shard_api.trim_end_matches('/')
        );
        let page = match bridge.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => match r.json::<wire::OutboundPage>().await {
                Ok(page) => Some(page),
                Err(e) => {
                    tracing::warn!(error = %e, "the shard's outbound page does not parse");
                    None
                }
            },
            Ok(r) => {
                tracing::debug!(status = %r.status(), "the shard refused the outbound page");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "own shard unreachable");
                None
            }
        };
        let Some(page) = page else {
            let _ = tokio::time::timeout(poll * 5, stop.changed()).await;
            continue;
        };
        if page.packets.is_empty() {
            scan_after = None;
            if page.waiting_for_finality.is_none() && page.sent > cursor {
                // Everything up to `sent` is settled.
                bridge.cursors.lock().await.set(&destination, page.sent);
            }
            let _ = tokio::time::timeout(poll, stop.changed()).await;
            continue;
        }
        let full = page.packets.len() >= 64;
        let last = page.packets.last().map_or(after, |p| p.sequence);
        let mut settled = Vec::with_capacity(page.packets.len());
        let mut packets = page.packets.into_iter();
        loop {
            let batch: Vec<_> = packets.by_ref().take(IN_FLIGHT).collect();
            if batch.is_empty() {
                break;
            }
            let results = futures_join(batch.into_iter().map(|p| {
                let bridge = bridge.clone();
                let destination = destination.clone();
                let address = address.clone();
                async move {
                    let sequence = p.sequence;
                    (sequence, relay(&bridge, &destination, &address, p).await)
                }
            }))
            .await;
            settled.extend(results);
        }
        // The cursor moves over the settled prefix only: a packet left behind is retried.
        // Sequences the page skipped were settled already (their commitments are gone).
        if after == cursor {
            let mut new_cursor = cursor;
            for (sequence, done) in &settled {
                if !*done {
                    break;
                }
                new_cursor = *sequence;
            }
            if new_cursor > cursor {
                bridge.cursors.lock().await.set(&destination, new_cursor);
            }
        }
        let all_done = settled.iter().all(|(_, d)| *d);
        scan_after = full.then_some(last);
        if !all_done && !full {
            let _ = tokio::time::timeout(poll * 5, stop.changed()).await;
        }
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// Relays one packet and settles it at the source; true once the source shard holds its
/// outcome.
async fn relay(
    bridge: &Bridge,
    destination: &str,
    address: &str,
    p: wire::OutboundPacketView,
) -> bool {
    let id = PacketId {
        source: p.proof.record.city,
        destination: p.proof.record.destination.unwrap_or(p.proof.record.city),
        sequence: p.sequence,
    };
    let request = Request::Deliver { proof: p.proof, payload: p.payload };
    let response = match call(bridge, destination, address, &request).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(packet = %id, error = %e, "destination bridge unreachable");
            return false;
        }
    };
    let body = match response {
        Response::Acknowledged { proof } => {
            serde_json::json!({ "type": "acknowledgement", "packet": id, "proof": proof })
        }
        Response::TimedOut { proof } => {
            serde_json::json!({ "type": "timeout", "packet": id, "proof": proof })
        }
        Response::Pending { detail } => {
            tracing::debug!(packet = %id, %detail, "packet pending at the destination");
            return false;
        }
        Response::Refused { status, detail } => {
            tracing::warn!(packet = %id, status, %detail, "destination refused a packet");
            return false;
        }
    };
    let url = format!("{}/v1/packets", bridge.config.shard_api.trim_end_matches('/'));
    match bridge.http.post(&url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {
            tracing::debug!(packet = %id, "packet settled");
            true
        }
        Ok(r) if r.status().as_u16() == 409 => true,
        Ok(r) => {
            let status = r.status();
            let detail = r.text().await.unwrap_or_default();
            tracing::warn!(packet = %id, %status, %detail, "own shard refused a settlement");
            false
        }
        Err(e) => {
            tracing::debug!(packet = %id, error = %e, "own shard unreachable");
            false
        }
    }
}

/// One request to a city's bridge over QUIC (connection reused).
async fn call(bridge: &Bridge, city: &str, address: &str, request: &Request) -> Result<Response> {
    let connection = connection(bridge, city, address).await?;
    let result = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(&serde_json::to_vec(request)?).await?;
        send.finish()?;
        let bytes = recv.read_to_end(MESSAGE_BYTES_MAX).await?;
        Ok::<_, anyhow::Error>(serde_json::from_slice(&bytes)?)
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
