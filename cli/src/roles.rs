//! Node roles and the devnet: `urbis shard`, `urbis tokens`, `urbis devnet`.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use urbis_core::record::RecordKind;
use urbis_ops::in_process::InProcess;
use urbis_shard::node::{self, ShardConfig};
use urbis_shard::tokens;

use crate::keys::write_private;

/// `urbis tokens ...` — service tokens of one shard.
#[derive(Subcommand)]
pub enum TokensCommand {
    /// Issue a token; it is printed once and stored only as a hash.
    Issue {
        /// The shard's token file.
        #[arg(long)]
        file: PathBuf,
        /// Service name (e.g. `tax-office`, `treasury`).
        #[arg(long)]
        service: String,
        /// Record kinds it may submit, comma separated (none for an operator's token).
        #[arg(long, value_delimiter = ',', required_unless_present = "operator")]
        kinds: Vec<String>,
        /// An operator's token: may erase any record's off-chain payload in this city.
        #[arg(long)]
        operator: bool,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List tokens (ids, services, kinds; never the tokens).
    List {
        /// The shard's token file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Revoke a token by id.
    Revoke {
        /// The shard's token file.
        #[arg(long)]
        file: PathBuf,
        /// Token id (from `list`).
        id: String,
    },
}

fn kind(s: &str) -> Result<RecordKind> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .with_context(|| format!("unknown record kind {s}"))
}

/// Runs `urbis tokens`.
pub fn tokens(command: TokensCommand) -> Result<()> {
    match command {
        TokensCommand::Issue { file, service, kinds, operator, out } => {
            let kinds = kinds.iter().map(|k| kind(k)).collect::<Result<Vec<_>>>()?;
            let (token, entry) = tokens::issue_token(&file, &service, kinds, operator)?;
            match out {
                Some(path) => {
                    write_private(&path, token.as_bytes())?;
                    println!(
                        "{}",
                        serde_json::json!({"id": entry.id, "service": entry.service, "token_file": path})
                    );
                }
                None => println!("{token}"),
            }
            Ok(())
        }
        TokensCommand::List { file } => {
            let f = tokens::read_file(&file)?;
            let list: Vec<_> = f.tokens.iter().map(|t| serde_json::json!({"id": t.id, "service": t.service, "kinds": t.kinds, "operator": t.operator, "revoked": t.revoked})).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(())
        }
        TokensCommand::Revoke { file, id } => {
            if !tokens::revoke(&file, &id)? {
                bail!("no token with id {id}");
            }
            println!("{}", serde_json::json!({"revoked": id}));
            Ok(())
        }
    }
}

/// Runs one shard from a config file and the environment until SIGTERM or Ctrl-C.
pub fn shard(config: Option<&Path>) -> Result<()> {
    let config = ShardConfig::load(config)?;
    run_role(|stop| node::run(config, stop))
}

/// Fewest worker threads a role's runtime runs, however few cores it may use.
///
/// Some request work is CPU-bound for milliseconds at a time (a batch of packets with their
/// proofs is a megabyte of JSON to read or write). With one worker per core, a pod limited to
/// one core has one worker, and while it reads such a body the QUIC and HTTP drivers wait
/// behind it: datagrams pile up in the socket, acknowledgements arrive late, and both cities'
/// cores sit idle while the pipeline between them stalls. With several workers the kernel
/// shares the core between them. `TOKIO_WORKER_THREADS` overrides the count.
const WORKERS_MIN: usize = 4;

fn runtime() -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        builder.worker_threads(cores.max(WORKERS_MIN));
    }
    Ok(builder.enable_all().build()?)
}

/// Completes on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled, so a SIGTERM during a role's startup is a graceful stop rather
/// than the default action (death by the signal). Call it inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(interrupt) => {}
            _ = wait(term) => {}
        }
    }
}

/// Runs a role on a new runtime, with its shutdown signal installed before anything else.
fn run_role<F, Fut>(role: F) -> Result<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let rt = runtime()?;
    let stop = {
        let _entered = rt.enter();
        Box::pin(shutdown_signal())
    };
    rt.block_on(role(stop))
}

/// The services each devnet city gets a token for, with the kinds they may submit.
const DEVNET_SERVICES: &[(&str, &[RecordKind])] = &[
    ("open-data-office", &[RecordKind::Information]),
    ("treasury", &[RecordKind::Capital]),
    ("hr-bureau", &[RecordKind::Talent]),
    ("credit-bureau", &[RecordKind::Credit]),
];
const DEVNET_CITIES: &[&str] =
    &["athens", "berlin", "copenhagen", "dublin", "espoo", "florence", "graz", "helsinki"];

#[derive(Serialize)]
struct DevnetCity {
    name: String,
    shard_api: String,
    service_tokens: std::collections::BTreeMap<String, String>,
    /// The city's bridge's `/metrics` and health (absent with `--no-bridges`).
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge_api: Option<String>,
}

/// Devnet settings beyond its size and ports.
pub struct DevnetOptions {
    /// Timeout of packets, in beacon blocks.
    pub packet_timeout_blocks: u64,
    /// Whether each city runs a bridge.
    pub bridges: bool,
    /// Validators the devnet does not start (they run elsewhere, at their devnet ports).
    pub external_validators: Vec<String>,
    /// The cities this process runs (shards, bridges, validators); empty for all.
    pub only_cities: Vec<String>,
}

/// Runs a whole federation on this machine under `data_dir`; resumes it when it exists.
pub fn devnet(
    data_dir: &Path,
    cities: usize,
    base_port: u16,
    options: DevnetOptions,
) -> Result<()> {
    if !(1..=DEVNET_CITIES.len()).contains(&cities) {
        bail!("--cities must be 1..={}", DEVNET_CITIES.len());
    }
    let names: Vec<String> = DEVNET_CITIES[..cities].iter().map(|s| s.to_string()).collect();
    // Before anything is created.
    if let Some(unknown) = options.only_cities.iter().find(|c| !names.contains(c)) {
        bail!("--only-cities: {unknown} is not one of the devnet's cities {names:?}");
    }
    // Devnet processes sharing `data_dir` (`--only-cities`) set it up one at a time: the first
    // creates the federation and issues the tokens, the others find them. The lock is held
    // until this process has written `devnet.json`, and released by the system if it dies.
    std::fs::create_dir_all(data_dir)?;
    let setup = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("devnet.lock"))?;
    setup.lock().context("waiting for another devnet process to set up the data directory")?;
    let genesis = data_dir.join("genesis.json");
    if !genesis.exists() {
        let per_city = 4usize.div_ceil(cities).max(1);
        let asset = format!("EUR:{}", names[0]);
        crate::keys::create_federation("urbis-devnet", &names, per_city, &[asset], data_dir)?;
    }
    // Whether this process runs the city's shard, bridge and validators.
    let here = |name: &str| {
        options.only_cities.is_empty() || options.only_cities.iter().any(|c| c == name)
    };
    let valid = node::load_genesis(&genesis)?;
    let mut configs = Vec::new();
    let mut listing = Vec::new();
    // Every shard offers its headers to every validator's API (base_port + 200 + k).
    let beacon_apis = (0..valid.genesis().validators.validators.len())
        .map(|k| {
            let port =
                base_port.checked_add(u16::try_from(200 + k)?).context("port out of range")?;
            Ok(format!("http://127.0.0.1:{port}"))
        })
        .collect::<Result<Vec<String>>>()?;
    for (i, name) in names.iter().enumerate() {
        if valid.city_by_name(name).is_none() {
            bail!("{} was created with other cities; use another --data-dir", data_dir.display());
        }
        let city_dir = data_dir.join(name);
        let token_dir = city_dir.join("tokens");
        std::fs::create_dir_all(&token_dir)?;
        let tokens_file = city_dir.join("tokens.json");
        let mut service_tokens = std::collections::BTreeMap::new();
        for (service, kinds) in DEVNET_SERVICES {
            let path = token_dir.join(format!("{service}.token"));
            if !path.exists() {
                let (token, _) = tokens::issue(&tokens_file, service, kinds.to_vec())?;
                write_private(&path, token.as_bytes())?;
            }
            service_tokens
                .insert(service.to_string(), std::fs::read_to_string(&path)?.trim().to_string());
        }
        let port = base_port.checked_add(u16::try_from(i)?).context("port out of range")?;
        let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let config = ShardConfig {
            city: name.clone(),
            genesis: genesis.clone(),
            data_dir: city_dir.clone(),
            listen,
            sealing_key_file: data_dir.join("keys").join(format!("{name}-sealing.json")),
            tokens_file,
            block_records_max: 10_000,
            block_bytes_max: 16 * 1024 * 1024,
            batch_records_max: 1_000,
            body_bytes_max: 4 * 1024 * 1024,
            request_timeout_ms: 30_000,
            queue: 4_096,
            rate_limit_per_second: 1_000,
            rate_limit_burst: 2_000,
            beacon_apis: beacon_apis.clone(),
            beacon_contact_timeout_ms: 30_000,
            packet_timeout_blocks: options.packet_timeout_blocks,
            shutdown_grace_ms: 20_000,
        };
        if here(name) {
            configs.push(config);
        }
        let bridge_port =
            base_port.checked_add(u16::try_from(300 + i)?).context("port out of range")?;
        listing.push(DevnetCity {
            name: name.clone(),
            shard_api: format!("http://{listen}"),
            service_tokens,
            bridge_api: options.bridges.then(|| format!("http://127.0.0.1:{bridge_port}")),
        });
    }
    // Validators: QUIC on base_port + 100 + k, API on base_port + 200 + k.
    let shared = std::sync::Arc::new(node::load_genesis(&genesis)?);
    let set = &valid.genesis().validators.validators;
    let port = |offset: usize| -> Result<u16> {
        base_port.checked_add(u16::try_from(offset)?).context("port out of range")
    };
    let mut quic = Vec::new();
    for k in 0..set.len() {
        quic.push(std::net::SocketAddr::from(([127, 0, 0, 1], port(100 + k)?)));
    }
    if let Some(unknown) =
        options.external_validators.iter().find(|n| !set.iter().any(|v| &v.name == *n))
    {
        bail!("--external-validators: {unknown} is not a validator in genesis");
    }
    let mut validators = Vec::new();
    let mut validator_listing = Vec::new();
    for (k, v) in set.iter().enumerate() {
        let api: std::net::SocketAddr = ([127, 0, 0, 1], port(200 + k)?).into();
        validator_listing
            .push(serde_json::json!({"name": v.name, "beacon_api": format!("http://{api}")}));
        // A validator runs with its city (one without a city, with the first city).
        let city = match v.city {
            Some(id) => valid.city(id).map(|c| c.name.as_str()),
            None => names.first().map(String::as_str),
        };
        if options.external_validators.contains(&v.name) || !city.is_some_and(here) {
            continue;
        }
        let keys = data_dir.join("keys");
        let (bls_key, tls) = validator_keys(
            &valid,
            &keys.join(format!("{}.json", v.name)),
            &keys.join(format!("{}-tls.json", v.name)),
        )
        .with_context(|| format!("validator {} (recreate an older --data-dir)", v.name))?;
        let peers = (0..set.len())
            .filter(|j| *j != k)
            .map(|j| (quic[j], set[j].tls_fingerprint.0))
            .collect();
        validators.push((
            v.name.clone(),
            urbis_beacon::node::ValidatorConfig {
                genesis: shared.clone(),
                listen: quic[k],
                bls_key: std::sync::Arc::new(bls_key),
                tls,
                peers,
                timeouts: timeouts(300, 150, 100),
                clock: node::wall_clock_ms,
                pool: std::sync::Arc::new(urbis_beacon::pool::Pool::new(shared.clone())),
                sets: std::sync::Arc::new(std::sync::RwLock::new(
                    urbis_beacon::sets::Sets::from_genesis(&shared),
                )),
                metrics: Default::default(),
            },
            data_dir.join("validators").join(&v.name),
            api,
        ));
    }
    // Bridges: QUIC on base_port + 300 + i.
    let mut bridges = Vec::new();
    let bridge_addr = |i: usize| -> Result<String> { Ok(format!("127.0.0.1:{}", port(300 + i)?)) };
    for (i, name) in names.iter().enumerate().filter(|(_, n)| options.bridges && here(n)) {
        let keys = data_dir.join("keys");
        let mut peers = std::collections::BTreeMap::new();
        for (j, other) in names.iter().enumerate() {
            if j != i {
                peers.insert(other.clone(), bridge_addr(j)?);
            }
        }
        bridges.push(urbis_bridge::BridgeConfig {
            city: name.clone(),
            genesis: genesis.clone(),
            shard_api: listing[i].shard_api.clone(),
            listen: bridge_addr(i)?.parse()?,
            peers,
            certificate_file: keys.join(format!("{name}-bridge.pem")),
            key_file: keys.join(format!("{name}-bridge-key.pem")),
            data_dir: data_dir.join(name).join("bridge"),
            // The bridge's /metrics and health on TCP, the same port number as its QUIC (UDP).
            api_listen: Some(bridge_addr(i)?.parse()?),
            poll_interval_ms: 100,
            ack_wait_ms: 20_000,
        });
    }
    let manifest = serde_json::json!({
        "federation_id": valid.federation_id(),
        "genesis": genesis,
        "cities": listing,
        "validators": validator_listing,
    });
    let manifest_path = data_dir.join("devnet.json");
    let _ = std::fs::remove_file(&manifest_path);
    write_private(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    setup.unlock()?;
    eprintln!("urbis devnet: federation {} with {} cities", valid.federation_id(), cities);
    for c in &listing {
        eprintln!("  {:<12} shard API {}", c.name, c.shard_api);
    }
    for v in &validator_listing {
        eprintln!(
            "  {:<22} beacon API {}",
            v["name"].as_str().unwrap_or(""),
            v["beacon_api"].as_str().unwrap_or("")
        );
    }
    let first = &listing[0];
    eprintln!(
        "\nTry (the token is read from its file, never shown):\n  curl -s -X POST {}/v1/records \\\n    -H \"Authorization: Bearer $(cat {}/{}/tokens/open-data-office.token)\" \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"records\":[{{\"kind\":\"information\",\"subject\":\"{}\",\"payload\":{{\"dataset\":\"street-trees\",\"media_type\":\"application/json\",\"content\":{{\"trees\":42}}}}}}]}}'\n",
        first.shard_api,
        data_dir.display(),
        first.name,
        "00".repeat(32)
    );
    eprintln!("Scripts: {} (mode 0600). Ctrl-C stops everything.", manifest_path.display());
    // A city's bridge in this process reaches its shard, also in this process, through the
    // router the shard serves here rather than over a loopback socket: the same API, without
    // TCP and HTTP framing on the busiest hop of a packet.
    let local: BTreeMap<String, InProcess> = bridges
        .iter()
        .filter(|b| configs.iter().any(|c: &ShardConfig| c.city == b.city))
        .map(|b| (b.city.clone(), InProcess::new()))
        .collect();
    run_role(|stop| async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for config in configs {
            let mut rx = stop_rx.clone();
            let name = config.city.clone();
            let served = local.get(&name).cloned();
            tasks.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                node::run_with(config, served, stop).await.with_context(|| format!("shard {name}"))
            }));
        }
        for config in bridges {
            let mut rx = stop_rx.clone();
            let name = config.city.clone();
            let shard = local.get(&name).cloned();
            tasks.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                urbis_bridge::run_with(config, shard, stop)
                    .await
                    .with_context(|| format!("bridge {name}"))
            }));
        }
        for (name, config, dir, api) in validators {
            let mut rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                run_validator(config, dir, api, stop)
                    .await
                    .with_context(|| format!("validator {name}"))
            }));
        }
        // Stop on a signal, or as soon as any shard fails (then stop the others too).
        let mut tasks: tokio::task::JoinSet<Result<()>> =
            tasks.into_iter().fold(tokio::task::JoinSet::new(), |mut set, t| {
                set.spawn(async move { t.await? });
                set
            });
        let mut result = Ok(());
        tokio::select! {
            _ = stop => {}
            Some(first) = tasks.join_next() => {
                result = first.map_err(anyhow::Error::from).and_then(|r| r);
                if result.is_ok() {
                    result = Err(anyhow::anyhow!("a shard or validator stopped unexpectedly"));
                }
            }
        }
        let _ = stop_tx.send(true);
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    })
}

/// A validator's settings (`urbis beacon --config beacon.toml`); scalar settings can be
/// overridden by `URBIS_*` variables or read from files named by `URBIS_<SETTING>_FILE`
/// (the same rules as the shard's, `urbis_shard::node::settings_env`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconSettings {
    /// The genesis document.
    pub genesis: PathBuf,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// QUIC address for the other validators.
    pub listen: std::net::SocketAddr,
    /// HTTP address of the API.
    pub api_listen: std::net::SocketAddr,
    /// This validator's BLS key file (`urbis keys generate --kind validator`, mode 0600).
    pub validator_key_file: PathBuf,
    /// This validator's TLS key file (`urbis keys generate --kind validator-tls`, mode 0600).
    pub tls_key_file: PathBuf,
    /// The other validators: where they listen and their name in genesis.
    #[serde(default)]
    pub peers: Vec<BeaconPeer>,
    /// Propose timeout of round 0, and its growth per round.
    #[serde(default = "beacon_defaults::propose_ms")]
    pub propose_timeout_ms: u64,
    /// Prevote and precommit timeouts of round 0.
    #[serde(default = "beacon_defaults::vote_ms")]
    pub vote_timeout_ms: u64,
    /// How much every timeout grows per round.
    #[serde(default = "beacon_defaults::delta_ms")]
    pub timeout_delta_ms: u64,
}

/// Another validator.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconPeer {
    /// Its QUIC address.
    pub address: std::net::SocketAddr,
    /// Its name in the genesis validator set (its TLS key is pinned from there).
    pub validator: String,
}

mod beacon_defaults {
    pub fn propose_ms() -> u64 {
        300
    }
    pub fn vote_ms() -> u64 {
        150
    }
    pub fn delta_ms() -> u64 {
        100
    }
}

const BEACON_SETTINGS: &[&str] = &[
    "genesis",
    "data_dir",
    "listen",
    "api_listen",
    "validator_key_file",
    "tls_key_file",
    "propose_timeout_ms",
    "vote_timeout_ms",
    "timeout_delta_ms",
];

/// Every scalar bridge setting (`URBIS_` + upper case in the environment).
const BRIDGE_SETTINGS: &[&str] = &[
    "city",
    "genesis",
    "shard_api",
    "listen",
    "certificate_file",
    "key_file",
    "data_dir",
    "poll_interval_ms",
    "ack_wait_ms",
];

/// `urbis bridge --config bridge.toml`.
pub fn bridge(path: &Path) -> Result<()> {
    let env = node::settings_env(std::env::vars(), BRIDGE_SETTINGS)?;
    let config: urbis_bridge::BridgeConfig = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(config::Environment::with_prefix("URBIS").try_parsing(true).source(Some(env)))
        .build()?
        .try_deserialize()
        .context("bridge configuration")?;
    run_role(|stop| urbis_bridge::run(config, stop))
}

impl BeaconSettings {
    /// Loads the file, then `URBIS_*` overrides.
    pub fn load(path: &Path) -> Result<Self> {
        let env = node::settings_env(std::env::vars(), BEACON_SETTINGS)?;
        let settings = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("URBIS").try_parsing(true).source(Some(env)),
            )
            .build()?
            .try_deserialize()
            .context("beacon configuration")?;
        Ok(settings)
    }
}

/// A validator's keys from its key files, checked against its genesis entry.
fn validator_keys(
    genesis: &urbis_core::genesis::ValidGenesis,
    key_file: &Path,
    tls_file: &Path,
) -> Result<(urbis_core::bls::SecretKey, urbis_beacon::transport::TlsIdentity)> {
    let bls_secret = crate::keys::read_secret_hex::<32>(key_file).context("validator key")?;
    let bls_key = urbis_core::bls::SecretKey::from_bytes(&bls_secret).context("validator key")?;
    let tls_seed = crate::keys::read_secret_hex::<32>(tls_file).context("TLS key")?;
    let tls = urbis_beacon::transport::TlsIdentity::from_ed25519_seed(&tls_seed)
        .map_err(|e| anyhow::anyhow!("TLS key: {e}"))?;
    // A key in genesis must come with the TLS key genesis names; a key rotated in later is
    // checked by the validator against the set in force once it has read its chain.
    if let Some(own) = genesis
        .genesis()
        .validators
        .validators
        .iter()
        .find(|v| v.bls_key == bls_key.public_key().to_bytes())
        && own.tls_fingerprint.0 != tls.fingerprint()
    {
        bail!("the TLS key file does not hold the key genesis names for {}", own.name);
    }
    Ok((bls_key, tls))
}

/// Linear consensus timeouts from round-0 values and a per-round growth, in milliseconds.
fn timeouts(propose: u64, vote: u64, delta: u64) -> urbis_beacon::consensus::LinearTimeouts {
    let ms = std::time::Duration::from_millis;
    urbis_beacon::consensus::LinearTimeouts {
        propose: ms(propose),
        propose_delta: ms(delta),
        prevote: ms(vote),
        prevote_delta: ms(delta),
        precommit: ms(vote),
        precommit_delta: ms(delta),
        rebroadcast: ms(propose + 2 * vote),
        max_timeout: std::time::Duration::from_secs(30),
    }
}

/// Runs a validator and its API until `stop`, on the current runtime.
async fn run_validator(
    config: urbis_beacon::node::ValidatorConfig,
    data_dir: PathBuf,
    api_listen: std::net::SocketAddr,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use std::sync::Arc;
    std::fs::create_dir_all(&data_dir)?;
    let store = Arc::new(
        urbis_beacon::store::BeaconStore::open(&data_dir.join("db"))
            .context("opening the beacon store")?,
    );
    let listener = tokio::net::TcpListener::bind(api_listen)
        .await
        .with_context(|| format!("binding {api_listen}"))?;
    tracing::info!(listen = %config.listen, api = %listener.local_addr()?, "validator serving");
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let state = urbis_beacon::api::ApiState {
        store: store.clone(),
        genesis: config.genesis.clone(),
        pool: config.pool.clone(),
        sets: config.sets.clone(),
        metrics: config.metrics.clone(),
        clock: config.clock,
    };
    let api = tokio::spawn(urbis_beacon::api::serve(listener, state, async {
        let _ = api_stopped.await;
    }));
    let (decisions, mut decided) =
        tokio::sync::mpsc::unbounded_channel::<urbis_beacon::node::Decision>();
    tokio::spawn(async move {
        while let Some(d) = decided.recv().await {
            tracing::debug!(height = d.height, block = %d.block, "decided");
        }
    });
    let result = urbis_beacon::node::run(config, store, stop, decisions).await;
    let _ = stop_api.send(());
    api.await??;
    result.map_err(anyhow::Error::from)?;
    tracing::info!("validator stopped cleanly");
    Ok(())
}

/// Runs `urbis beacon`.
pub fn beacon(path: &Path) -> Result<()> {
    use std::sync::Arc;
    use urbis_beacon::node::ValidatorConfig;
    let settings = BeaconSettings::load(path)?;
    let genesis = Arc::new(node::load_genesis(&settings.genesis)?);
    let (bls_key, tls) =
        validator_keys(&genesis, &settings.validator_key_file, &settings.tls_key_file)?;
    let mut peers = Vec::new();
    for p in &settings.peers {
        let v = genesis
            .genesis()
            .validators
            .validators
            .iter()
            .find(|v| v.name == p.validator)
            .with_context(|| format!("peer {} is not a validator in genesis", p.validator))?;
        peers.push((p.address, v.tls_fingerprint.0));
    }
    let timeouts =
        timeouts(settings.propose_timeout_ms, settings.vote_timeout_ms, settings.timeout_delta_ms);
    let config = ValidatorConfig {
        listen: settings.listen,
        bls_key: Arc::new(bls_key),
        tls,
        peers,
        pool: Arc::new(urbis_beacon::pool::Pool::new(genesis.clone())),
        sets: Arc::new(std::sync::RwLock::new(urbis_beacon::sets::Sets::from_genesis(&genesis))),
        metrics: Default::default(),
        genesis,
        timeouts,
        clock: node::wall_clock_ms,
    };
    run_role(|stop| run_validator(config, settings.data_dir, settings.api_listen, stop))
}
