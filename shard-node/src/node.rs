//! Running a shard: configuration (file plus `URBIS_*` environment), key files, start-up,
//! serving, and graceful shutdown (stop accepting, seal what is pending, close RocksDB).

use crate::api::{self, ApiLimits, AppState};
use crate::sealer::{self, BlockLimits, SealerParts};
use crate::store::Store;
use crate::tokens::Tokens;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use urbis_core::genesis::{Genesis, ValidGenesis};
use urbis_core::sealing::SealingKey;

/// A shard's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// This shard's city name (as in genesis).
    pub city: String,
    /// Path of the genesis document.
    pub genesis: PathBuf,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// The city's sealing key file (mode 0600).
    pub sealing_key_file: PathBuf,
    /// The service token file (hashes only).
    pub tokens_file: PathBuf,
    /// Most records per block.
    #[serde(default = "defaults::block_records_max")]
    pub block_records_max: usize,
    /// Most encoded record bytes per block.
    #[serde(default = "defaults::block_bytes_max")]
    pub block_bytes_max: usize,
    /// Most records per request.
    #[serde(default = "defaults::batch_records_max")]
    pub batch_records_max: usize,
    /// Largest request body.
    #[serde(default = "defaults::body_bytes_max")]
    pub body_bytes_max: usize,
    /// Longest wait for a seal before answering 503.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Submissions queued for the sealer before the API answers 503.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
    /// Write requests (submissions, erasures) per second per token before 429; 0 turns the
    /// limit off.
    #[serde(default = "defaults::rate_limit_per_second")]
    pub rate_limit_per_second: u32,
    /// Burst of write requests per token above the rate.
    #[serde(default = "defaults::rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// The beacon validators' API base URLs (`http://host:port`); the shard offers its headers
    /// to them and follows their certified blocks. Empty: proofs stay at level committed. In
    /// the environment, comma-separated.
    #[serde(default)]
    pub beacon_apis: Vec<String>,
    /// With `beacon_apis` set, `/readyz` answers 503 once no validator has answered the
    /// shard's light client for this long (the node is cut off from the beacon).
    #[serde(default = "defaults::beacon_contact_timeout_ms")]
    pub beacon_contact_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests may take to finish before they are cut off
    /// (what was queued is sealed either way; only acknowledged records count).
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Beacon blocks an outbound packet may take to be received before its timeout can be
    /// proven and it is refunded.
    #[serde(default = "defaults::packet_timeout_blocks")]
    pub packet_timeout_blocks: u64,
}

/// Every setting's name (`URBIS_` + upper case in the environment).
const SETTINGS: &[&str] = &[
    "city",
    "genesis",
    "data_dir",
    "listen",
    "sealing_key_file",
    "tokens_file",
    "block_records_max",
    "block_bytes_max",
    "batch_records_max",
    "body_bytes_max",
    "request_timeout_ms",
    "queue",
    "rate_limit_per_second",
    "rate_limit_burst",
    "beacon_apis",
    "beacon_contact_timeout_ms",
    "packet_timeout_blocks",
    "shutdown_grace_ms",
];

mod defaults {
    pub fn block_records_max() -> usize {
        10_000
    }
    pub fn block_bytes_max() -> usize {
        16 * 1024 * 1024
    }
    pub fn batch_records_max() -> usize {
        1_000
    }
    pub fn body_bytes_max() -> usize {
        4 * 1024 * 1024
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
    pub fn queue() -> usize {
        4_096
    }
    pub fn rate_limit_per_second() -> u32 {
        1_000
    }
    pub fn rate_limit_burst() -> u32 {
        2_000
    }
    pub fn shutdown_grace_ms() -> u64 {
        20_000
    }
    pub fn packet_timeout_blocks() -> u64 {
        crate::ledger::DEFAULT_PACKET_TIMEOUT_BLOCKS
    }
    pub fn beacon_contact_timeout_ms() -> u64 {
        30_000
    }
}

impl ShardConfig {
    /// Loads a config file, then applies `URBIS_*` environment overrides (`URBIS_LISTEN`,
    /// `URBIS_DATA_DIR`, ...). Any setting may instead come from a file named by
    /// `URBIS_<SETTING>_FILE` (a mounted secret or config map; surrounding white space is
    /// trimmed); naming a setting both ways is an error.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        Self::load_with(path, std::env::vars())
    }

    /// [`ShardConfig::load`] with the environment given.
    pub fn load_with(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut builder = config::Config::builder();
        if let Some(p) = path {
            builder = builder.add_source(config::File::from(p).format(config::FileFormat::Toml));
        }
        let env = settings_env(vars, SETTINGS)?;
        builder = builder.add_source(
            config::Environment::with_prefix("URBIS")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("beacon_apis")
                .source(Some(env)),
        );
        let cfg: ShardConfig = builder.build()?.try_deserialize().context("shard configuration")?;
        if cfg.block_records_max == 0 || cfg.batch_records_max == 0 {
            bail!("block_records_max and batch_records_max must be positive");
        }
        Ok(cfg)
    }
}

/// The `URBIS_*` overrides of `settings` among `vars`, each given directly (`URBIS_LISTEN`) or
/// read from the file named by `URBIS_<SETTING>_FILE` (trimmed); naming a setting both ways is
/// an error. Only variables naming a setting are read, so unrelated `URBIS_*` variables (test
/// settings, Kubernetes service links) do not stop a node.
pub fn settings_env(
    vars: impl IntoIterator<Item = (String, String)>,
    settings: &[&str],
) -> Result<std::collections::HashMap<String, String>> {
    let setting = |k: &str| {
        k.strip_prefix("URBIS_")
            .map(str::to_ascii_lowercase)
            .filter(|f| settings.contains(&f.as_str()))
    };
    let mut env = std::collections::HashMap::new();
    let mut from_files = Vec::new();
    for (k, v) in vars {
        if setting(&k).is_some() {
            env.insert(k, v);
        } else if let Some(name) =
            k.strip_suffix("_FILE").and_then(|b| setting(b).map(|_| b.to_string()))
        {
            from_files.push((name, PathBuf::from(v)));
        }
    }
    for (name, file) in from_files {
        if env.contains_key(&name) {
            bail!("{name} and {name}_FILE are both set; keep one");
        }
        let value = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {name}_FILE ({})", file.display()))?;
        env.insert(name, value.trim().to_string());
    }
    Ok(env)
}

/// Reads the hex secret of a key file written by `urbis keys generate` (or a bare hex file),
/// refusing files that group or others can read.
pub fn read_secret_hex<const N: usize>(path: &Path) -> Result<[u8; N]> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by group or others; run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let hex_text = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => {
            v.get("secret_hex").and_then(|s| s.as_str()).map(str::to_string).unwrap_or_default()
        }
        Err(_) => text.trim().to_string(),
    };
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_text.trim(), &mut out)
        .with_context(|| format!("{} does not hold {N} hex-encoded bytes", path.display()))?;
    Ok(out)
}

/// Reads and validates a genesis document.
pub fn load_genesis(path: &Path) -> Result<ValidGenesis> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let genesis: Genesis =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    genesis.validate().with_context(|| format!("validating {}", path.display()))
}

/// Milliseconds since the Unix epoch: the shard's one clock.
#[allow(clippy::disallowed_methods)]
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Time since the process started, never going back: for rate limits.
#[allow(clippy::disallowed_methods)]
fn monotonic() -> std::time::Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    // The OS random source failing is unrecoverable for a node that must salt commitments.
    if let Err(e) = getrandom::getrandom(&mut b) {
        tracing::error!(error = %e, "no randomness available");
        std::process::abort();
    }
    b
}

/// Runs a shard until `shutdown` completes, then drains and closes.
pub async fn run(
    config: ShardConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_with(config, None, shutdown).await
}

/// [`run`], also serving the API in `local` for a role in this process (the city's bridge in
/// `urbis devnet`): the same router as on `listen`, withdrawn when the shard starts to drain.
pub async fn run_with(
    config: ShardConfig,
    local: Option<urbis_ops::in_process::InProcess>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let genesis = Arc::new(load_genesis(&config.genesis)?);
    let city = genesis
        .city_by_name(&config.city)
        .with_context(|| format!("city {} is not in genesis", config.city))?
        .id;
    let genesis_max = genesis.genesis().parameters.block_records_max;
    if config.batch_records_max > config.block_records_max
        || config.block_records_max as u64 > genesis_max
    {
        bail!(
            "limits must satisfy batch_records_max ({}) ≤ block_records_max ({}) ≤ genesis block_records_max ({genesis_max})",
            config.batch_records_max,
            config.block_records_max
        );
    }
    let seed = read_secret_hex::<32>(&config.sealing_key_file).context("sealing key")?;
    let key = SealingKey::from_seed(&seed);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store =
        Arc::new(Store::open(&config.data_dir.join("db")).context("opening the shard store")?);
    let next_height = store.tip()?.map_or(0, |t| t.height + 1);
    let in_force = genesis.sealing_key(city, next_height).context("city has no sealing key")?;
    if key.public_key() != *in_force {
        bail!(
            "the sealing key file does not hold the key genesis names for {} at height {next_height}",
            config.city
        );
    }
    let metrics = Arc::new(crate::metrics::ShardMetrics::default());
    let beacon_view =
        Arc::new(std::sync::atomic::AtomicU64::new(store.beacon_next()?.saturating_sub(1)));
    let light_client = Arc::new(std::sync::RwLock::new(
        urbis_core::light_client::LightClient::from_genesis(&genesis),
    ));
    let (sealer, sealer_thread) = sealer::start(
        SealerParts {
            store: store.clone(),
            genesis: genesis.clone(),
            city,
            key,
            limits: BlockLimits {
                records_max: config.block_records_max,
                bytes_max: config.block_bytes_max,
            },
            clock: wall_clock_ms,
            metrics: metrics.clone(),
            beacon_view: beacon_view.clone(),
            packet_timeout_blocks: config.packet_timeout_blocks,
        },
        config.queue,
    )?;
    let (stop_follower, follower_stop) = tokio::sync::watch::channel(false);
    // The follower notes when a validator last answered; readiness reads it. The grace period
    // runs from the start.
    let contact = Arc::new(std::sync::atomic::AtomicU64::new(monotonic().as_millis() as u64));
    let beacon = (!config.beacon_apis.is_empty()).then(|| api::BeaconContact {
        last_ms: contact.clone(),
        timeout_ms: config.beacon_contact_timeout_ms,
    });
    let (crosslinked_tx, crosslinked) = tokio::sync::watch::channel(None);
    let follower = tokio::spawn(crate::follower::run(
        crate::follower::Follower {
            apis: config.beacon_apis.iter().map(|a| a.trim_end_matches('/').to_string()).collect(),
            genesis: genesis.clone(),
            city,
            store: store.clone(),
            tip: sealer.watch_tip(),
            metrics: metrics.clone(),
            contact,
            monotonic,
            client: light_client.clone(),
            beacon_view: beacon_view.clone(),
            sealer: sealer.clone(),
        },
        crosslinked_tx,
        follower_stop,
    ));
    let tokens = Tokens::open(&config.tokens_file).context("opening the token file")?;
    let state = Arc::new(AppState {
        store: store.clone(),
        sealer,
        tokens,
        genesis,
        city,
        limits: ApiLimits {
            body_bytes_max: config.body_bytes_max,
            batch_records_max: config.batch_records_max,
            batch_reads_max: 1_000,
            request_timeout_ms: config.request_timeout_ms,
        },
        clock: wall_clock_ms,
        random: random32,
        ready: AtomicBool::new(true),
        monotonic,
        rate: api::limit::RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst),
        pending: api::limit::PendingTable::new(100_000),
        metrics,
        beacon,
        client: light_client,
        beacon_view,
        unsettled_from: Default::default(),
        packet_traces: Default::default(),
        outbound_blocks: Default::default(),
        recent_receipts: Default::default(),
        crosslinked,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(city = %config.city, listen = %listener.local_addr()?, height = next_height, "shard serving");
    let drain = state.clone();
    let app = api::router(state.clone());
    if let Some(local) = &local {
        local.serve(app.clone());
    }
    let (draining_tx, mut draining) = tokio::sync::watch::channel(false);
    let withdraw = local.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        drain.ready.store(false, Ordering::Relaxed);
        if let Some(local) = withdraw {
            local.withdraw();
        }
        tracing::info!("shutting down: draining requests");
        let _ = draining_tx.send(true);
    });
    let grace = std::time::Duration::from_millis(config.shutdown_grace_ms);
    let served = tokio::select! {
        served = server => served,
        _ = async {
            let _ = draining.wait_for(|d| *d).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_ms = config.shutdown_grace_ms, "grace period over; requests still in flight are cut off");
            Ok(())
        }
    };
    // Withdrawn on a failure to serve as well, so no caller in this process keeps calling a
    // shard that is gone.
    if let Some(local) = &local {
        local.withdraw();
    }
    served?;
    let _ = stop_follower.send(true);
    let _ = follower.await;
    // The router is gone; dropping the last state closes the queue, and the sealer seals what
    // is pending before it stops.
    drop(state);
    tokio::task::spawn_blocking(move || sealer_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("sealer thread panicked"))?;
    drop(store);
    tracing::info!("shard stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn settings_come_from_the_environment_or_from_files_named_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let city = dir.path().join("city");
        std::fs::write(&city, "athens\n").unwrap();
        let base = [
            ("URBIS_GENESIS", "/g.json"),
            ("URBIS_DATA_DIR", "/data"),
            ("URBIS_LISTEN", "127.0.0.1:9000"),
            ("URBIS_SEALING_KEY_FILE", "/keys/sealing.json"),
            ("URBIS_TOKENS_FILE", "/tokens.json"),
            ("URBIS_UNRELATED_SETTING", "ignored"),
        ];
        let mut env = vars(&base);
        env.push(("URBIS_CITY_FILE".into(), city.display().to_string()));
        env.push(("URBIS_RATE_LIMIT_PER_SECOND".into(), "7".into()));
        let c = ShardConfig::load_with(None, env.clone()).unwrap();
        assert_eq!(c.city, "athens", "read from the file, trimmed");
        assert_eq!(c.sealing_key_file, PathBuf::from("/keys/sealing.json"));
        assert_eq!((c.rate_limit_per_second, c.rate_limit_burst), (7, 2_000));
        // Both ways at once is refused; so is a missing file.
        let mut both = env.clone();
        both.push(("URBIS_CITY".into(), "berlin".into()));
        assert!(ShardConfig::load_with(None, both).unwrap_err().to_string().contains("both set"));
        let mut missing = vars(&base);
        missing.push(("URBIS_CITY_FILE".into(), "/nonexistent/city".into()));
        assert!(ShardConfig::load_with(None, missing).is_err());
    }
}
