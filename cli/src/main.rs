//! The `urbis` binary: keys, genesis, subject ids, offline proof verification, and (as their
//! issues land) every node role.

mod keys;
mod roles;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use urbis_core::light_client::{Checkpoint, LightClient};
use urbis_core::proof::{ProofDocument, verify_record_proof, verify_state_proof};
use urbis_core::state::StateKey;
use urbis_core::subject::{IdentifierScheme, SubjectKey, subject_id};

/// mimalloc rather than glibc's allocator: the request, ledger and proof paths allocate many
/// small, short-lived buffers, and glibc's malloc/free showed as about 9 % of a node's CPU under
/// ingest load (benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. The allocator asks for them on its
/// regions, and returns memory it has not used for a while to the system; a node's megabyte
/// bodies and batches then keep touching fresh regions, and the kernel zeroed 2 MiB for each
/// first touch: about a fifth of each city's CPU while packets flowed (benches/README.md).
/// Ordinary 4 KiB pages are zeroed only as far as they are used. Failing (an old kernel, a
/// sandbox refusing `prctl`) only leaves the system's setting in force.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Urbis: verifiable public records across a federation of cities.
#[derive(Parser)]
#[command(name = "urbis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate and inspect keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Create or validate a genesis document.
    #[command(subcommand)]
    Genesis(keys::GenesisCommand),
    /// Compute a pseudonymous subject id (the identifier is read from stdin unless given).
    SubjectId {
        /// File holding the federation's 32-byte subject key as 64 hex digits.
        #[arg(long)]
        key_file: PathBuf,
        /// `national:CC` (ISO 3166 country), `lei`, or `uscc`.
        #[arg(long)]
        scheme: String,
        /// The identifier; omit it to read one line from stdin (keeps it out of shell history).
        identifier: Option<String>,
    },
    /// Verify a self-contained proof offline against the genesis file alone.
    Verify {
        /// The proof document (JSON), as the shard API returns it.
        proof: PathBuf,
        /// The federation's genesis document.
        #[arg(long)]
        genesis: PathBuf,
        /// Start the light client from this trusted checkpoint instead of genesis.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// For state proofs: the key you are asking about, as JSON (built by you, not taken
        /// from the proof), e.g. '{"type":"revocation","credential_id":"<64 hex>"}'.
        #[arg(long)]
        key: Option<String>,
        /// For state proofs: the city whose state you are asking about.
        #[arg(long)]
        city: Option<String>,
    },
    /// Manage a shard's service tokens.
    #[command(subcommand)]
    Tokens(roles::TokensCommand),
    /// Run a city's shard node.
    Shard {
        /// Configuration file (TOML); every setting can be overridden by `URBIS_*` variables.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a beacon validator.
    Beacon {
        /// Configuration file (TOML); scalar settings can be overridden by `URBIS_*` variables.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a city's bridge (relays packets to and from the other cities' bridges).
    Bridge {
        /// Configuration file (TOML); scalar settings can be overridden by `URBIS_*` variables.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a whole federation on this machine (resumes an existing data directory).
    Devnet {
        /// Where the federation lives.
        #[arg(long, default_value = "./devnet-data")]
        data_dir: PathBuf,
        /// Number of cities.
        #[arg(long, default_value_t = 3)]
        cities: usize,
        /// Port of the first city's shard API; the others follow.
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// Beacon blocks a packet may take to be received before it can be refunded.
        #[arg(long, default_value_t = 600)]
        packet_timeout_blocks: u64,
        /// Start no bridges (packets then travel only through relays that call
        /// `POST /v1/packets` themselves).
        #[arg(long)]
        no_bridges: bool,
        /// Validators of genesis that run elsewhere (comma-separated names): the devnet does
        /// not start them, and its validators and shards expect them at the ports the devnet
        /// would have given them.
        #[arg(long, value_delimiter = ',')]
        external_validators: Vec<String>,
        /// Run only these cities (comma-separated names): their shards, bridges and
        /// validators. The other cities' validators are expected at their devnet ports, as
        /// with `--external-validators`, from another `urbis devnet` on the same data
        /// directory. They may be started together: they set the directory up one at a time
        /// (the first creates the federation and every city's tokens).
        #[arg(long, value_delimiter = ',')]
        only_cities: Vec<String>,
    },
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    // The long-running roles log to stdout, where a container's log collector reads; one-shot
    // commands keep stdout for their answer and log to stderr.
    let role = match cli.command {
        Command::Shard { .. } => Some("shard"),
        Command::Beacon { .. } => Some("beacon"),
        Command::Bridge { .. } => Some("bridge"),
        Command::Devnet { .. } => Some("devnet"),
        _ => None,
    };
    // Flushes the spans not yet exported when main returns.
    let _telemetry = urbis_ops::telemetry::init(role.unwrap_or("cli"), role.is_some());
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keys(c) => keys::keys(c).map(|()| ExitCode::SUCCESS),
        Command::Genesis(c) => keys::genesis(c).map(|()| ExitCode::SUCCESS),
        Command::SubjectId { key_file, scheme, identifier } => {
            subject(&key_file, &scheme, identifier).map(|()| ExitCode::SUCCESS)
        }
        Command::Verify { proof, genesis, checkpoint, key, city } => {
            verify(&proof, &genesis, checkpoint.as_deref(), key.as_deref(), city.as_deref())
        }
        Command::Tokens(c) => roles::tokens(c).map(|()| ExitCode::SUCCESS),
        Command::Shard { config } => roles::shard(config.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Beacon { config } => roles::beacon(&config).map(|()| ExitCode::SUCCESS),
        Command::Bridge { config } => roles::bridge(&config).map(|()| ExitCode::SUCCESS),
        Command::Devnet {
            data_dir,
            cities,
            base_port,
            packet_timeout_blocks,
            no_bridges,
            external_validators,
            only_cities,
        } => {
            let options = roles::DevnetOptions {
                packet_timeout_blocks,
                bridges: !no_bridges,
                external_validators,
                only_cities,
            };
            roles::devnet(&data_dir, cities, base_port, options).map(|()| ExitCode::SUCCESS)
        }
    }
}

pub use urbis_shard::node::load_genesis;

fn verify(
    proof: &Path,
    genesis: &Path,
    checkpoint: Option<&Path>,
    key: Option<&str>,
    city: Option<&str>,
) -> Result<ExitCode> {
    let genesis = load_genesis(genesis)?;
    let text =
        std::fs::read_to_string(proof).with_context(|| format!("reading {}", proof.display()))?;
    let document: ProofDocument =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", proof.display()))?;
    let mut client = match checkpoint {
        None => LightClient::from_genesis(&genesis),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cp: Checkpoint = serde_json::from_str(&text).context("parsing the checkpoint")?;
            LightClient::from_checkpoint(&genesis, &cp).context("checkpoint")?
        }
    };
    let finality = match &document {
        ProofDocument::Record(p) => p.finality.as_ref(),
        ProofDocument::State(p) => p.finality.as_ref(),
    };
    if let Some(f) = finality
        && let Err((i, e)) = client.apply_all(&f.set_updates)
    {
        println!(
            "{}",
            serde_json::json!({"verified": false, "link": "validator_set_update", "index": i, "error": e.to_string()})
        );
        return Ok(ExitCode::from(1));
    }
    let outcome = match &document {
        ProofDocument::Record(p) => verify_record_proof(&genesis, &client, p).map(|v| {
            serde_json::json!({
                "verified": true,
                "level": v.level,
                "record_id": v.id,
                "city": v.record.city,
                "height": v.height,
                "beacon_height": v.beacon_height,
                "record": v.record,
            })
        }),
        ProofDocument::State(p) => {
            let Some(key) = key else {
                bail!("a state proof needs --key: the key you ask about, built by you");
            };
            let key: StateKey = serde_json::from_str(key).context("parsing --key")?;
            let Some(city) = city else {
                bail!("a state proof needs --city: the city whose state you ask about");
            };
            let city = genesis
                .city_by_name(city)
                .with_context(|| format!("no city {city} in genesis"))?
                .id;
            verify_state_proof(&genesis, &client, city, &key, p).map(|v| {
                serde_json::json!({
                    "verified": true,
                    "level": v.level,
                    "height": v.height,
                    "beacon_height": v.beacon_height,
                    "key": key,
                    "present": v.value.is_some(),
                    "value_hex": v.value.map(hex::encode),
                })
            })
        }
    };
    match outcome {
        Ok(json) => {
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"verified": false, "link": link_name(&e), "error": e.to_string()})
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// A stable name for the link of the chain that failed.
fn link_name(e: &urbis_core::proof::ProofError) -> &'static str {
    use urbis_core::proof::ProofError as E;
    match e {
        E::Record(_) | E::CityMismatch { .. } => "record",
        E::RecordsCount { .. } | E::RecordsPath(_) => "records_path",
        E::UnknownCity(_) | E::HeaderSeal(_) | E::HeaderVersion(_) => "shard_header",
        E::StatePath(_) | E::StateKeyMismatch | E::WrongCity { .. } => "state_path",
        E::HistoryHeader
        | E::HistoryParameters { .. }
        | E::HistoryPath(_)
        | E::CrosslinkedSeal(_) => "history_path",
        E::CrosslinksCount { .. } | E::CrosslinkPath(_) | E::BeforeCityJoined { .. } => {
            "crosslink_path"
        }
        E::Beacon(_) => "beacon_certificate",
        E::NotFinal => "finality",
        E::Value => "state_value",
    }
}

fn subject(key_file: &Path, scheme: &str, identifier: Option<String>) -> Result<()> {
    let scheme = match scheme.split_once(':') {
        Some(("national", country)) => IdentifierScheme::National { country: country.to_string() },
        None if scheme == "lei" => IdentifierScheme::Lei,
        None if scheme == "uscc" => IdentifierScheme::Uscc,
        _ => bail!("--scheme must be national:CC, lei or uscc"),
    };
    let key = keys::read_secret_hex::<32>(key_file).context("reading the subject key")?;
    let identifier = match identifier {
        Some(i) => i,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the identifier from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let id = subject_id(&SubjectKey::from_bytes(key), &scheme, &identifier)?;
    println!("{}", id.0);
    Ok(())
}
