//! `urbis keys` and `urbis genesis`: key files (mode 0600, public parts printed) and genesis
//! documents.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use urbis_core::bls::SecretKey;
use urbis_core::genesis::{Asset, City, GENESIS_VERSION, Genesis, Parameters, SealingKeyEntry};
use urbis_core::hash::Hash32;
use urbis_core::record::CityId;
use urbis_core::sealing::SealingKey;
use urbis_core::validators::{Quorum, Validator, ValidatorSet};
use zeroize::Zeroize;

/// Key kinds.
#[derive(Clone, Copy, ValueEnum)]
pub enum KeyKind {
    /// A city's Ed25519 sealing key.
    Sealing,
    /// A validator's BLS12-381 key with its proof of possession.
    Validator,
    /// The federation's subject key (32 random bytes; adapters only).
    Subject,
    /// A validator's TLS key (Ed25519 seed); its fingerprint goes into the validator set.
    ValidatorTls,
}

/// `urbis keys ...`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate a key; writes the secret to `--out` (mode 0600, never overwritten) and prints
    /// only the public parts.
    Generate {
        /// What kind of key.
        #[arg(long)]
        kind: KeyKind,
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `urbis genesis ...`
#[derive(Subcommand)]
pub enum GenesisCommand {
    /// Create a federation: keys for every city and validator, and the genesis document.
    Create {
        /// Federation name.
        #[arg(long)]
        name: String,
        /// City names, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        cities: Vec<String>,
        /// Validators per city (at least 4 validators in all).
        #[arg(long, default_value_t = 2)]
        validators_per_city: usize,
        /// Assets as `ID:city`, e.g. `EUR:athens`.
        #[arg(long = "asset")]
        assets: Vec<String>,
        /// Output directory (genesis.json and keys/).
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Validate a genesis document and print its federation id.
    Validate {
        /// The genesis document (JSON).
        file: PathBuf,
    },
}

/// The JSON of a key file.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    kind: String,
    secret_hex: String,
    public: serde_json::Value,
}

/// Runs `urbis keys`.
pub fn keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Generate { kind, out } => {
            let public = generate(kind, &out)?;
            println!("{}", serde_json::to_string_pretty(&public)?);
            Ok(())
        }
    }
}

/// Generates a key of `kind` into `out` and returns its public parts.
fn generate(kind: KeyKind, out: &Path) -> Result<serde_json::Value> {
    let mut secret = random32()?;
    let (name, public, secret_hex) = match kind {
        KeyKind::Sealing => {
            let key = SealingKey::from_seed(&secret);
            let public =
                serde_json::json!({"public_key": hex::encode(key.public_key().to_bytes())});
            ("sealing", public, hex::encode(secret))
        }
        KeyKind::Validator => {
            let key = SecretKey::key_gen(&secret).context("BLS KeyGen")?;
            let public = serde_json::json!({
                "bls_key": hex::encode(key.public_key().to_bytes()),
                "proof_of_possession": hex::encode(key.pop_prove().to_bytes()),
            });
            ("validator", public, hex::encode(key.to_bytes()))
        }
        KeyKind::Subject => ("subject", serde_json::json!({}), hex::encode(secret)),
        KeyKind::ValidatorTls => {
            let identity = urbis_beacon::transport::TlsIdentity::from_ed25519_seed(&secret)
                .map_err(|e| anyhow::anyhow!("TLS key: {e}"))?;
            let public =
                serde_json::json!({"tls_fingerprint": hex::encode(identity.fingerprint())});
            ("validator-tls", public, hex::encode(secret))
        }
    };
    secret.zeroize();
    let file = KeyFile { kind: name.into(), secret_hex, public: public.clone() };
    write_private(out, &serde_json::to_vec_pretty(&file)?)?;
    Ok(serde_json::json!({"kind": name, "file": out, "public": public}))
}

pub use urbis_shard::node::read_secret_hex;

/// Runs `urbis genesis`.
pub fn genesis(command: GenesisCommand) -> Result<()> {
    match command {
        GenesisCommand::Validate { file } => {
            let g = crate::load_genesis(&file)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "federation_id": g.federation_id(),
                    "name": g.genesis().name,
                    "cities": g.genesis().cities.len(),
                    "validators": g.validators().len(),
                    "total_weight": g.validators().total_weight(),
                }))?
            );
            Ok(())
        }
        GenesisCommand::Create { name, cities, validators_per_city, assets, out_dir } => {
            create(&name, &cities, validators_per_city, &assets, &out_dir)
        }
    }
}

fn create(
    name: &str,
    cities: &[String],
    per_city: usize,
    assets: &[String],
    out_dir: &Path,
) -> Result<()> {
    let summary = create_federation(name, cities, per_city, assets, out_dir)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Creates keys for every city and validator and a validated genesis under `out_dir`.
pub fn create_federation(
    name: &str,
    cities: &[String],
    per_city: usize,
    assets: &[String],
    out_dir: &Path,
) -> Result<serde_json::Value> {
    let keys_dir = out_dir.join("keys");
    std::fs::create_dir_all(&keys_dir)
        .with_context(|| format!("creating {}", keys_dir.display()))?;
    let mut city_list = Vec::new();
    let mut validators = Vec::new();
    for (i, city) in cities.iter().enumerate() {
        let id = CityId(u32::try_from(i)?);
        let sealing = generate(KeyKind::Sealing, &keys_dir.join(format!("{city}-sealing.json")))?;
        let public_key = hex_array::<32>(&sealing["public"]["public_key"])?;
        // The city's bridge CA (in genesis) and the bridge certificate it issues.
        let ca = urbis_bridge::tls::generate_ca(city)?;
        let bridge = urbis_bridge::tls::issue_bridge_certificate(city, &ca)?;
        std::fs::write(keys_dir.join(format!("{city}-bridge-ca.pem")), &ca.certificate_pem)?;
        write_private(&keys_dir.join(format!("{city}-bridge-ca-key.pem")), ca.key_pem.as_bytes())?;
        std::fs::write(keys_dir.join(format!("{city}-bridge.pem")), &bridge.certificate_pem)?;
        write_private(&keys_dir.join(format!("{city}-bridge-key.pem")), bridge.key_pem.as_bytes())?;
        city_list.push(City {
            id,
            name: city.clone(),
            sealing_keys: vec![SealingKeyEntry { from_height: 0, public_key }],
            tls_ca_pem: ca.certificate_pem,
            first_height: 0,
        });
        for v in 0..per_city {
            let label = format!("{city}-validator-{v}");
            let key = generate(KeyKind::Validator, &keys_dir.join(format!("{label}.json")))?;
            let tls = generate(KeyKind::ValidatorTls, &keys_dir.join(format!("{label}-tls.json")))?;
            validators.push(Validator {
                name: label,
                city: Some(id),
                bls_key: hex_array::<48>(&key["public"]["bls_key"])?,
                proof_of_possession: hex_array::<96>(&key["public"]["proof_of_possession"])?,
                weight: 1,
                tls_fingerprint: Hash32(hex_array::<32>(&tls["public"]["tls_fingerprint"])?),
            });
        }
    }
    generate(KeyKind::Subject, &keys_dir.join("subject.json"))?;
    let mut asset_list = Vec::new();
    for a in assets {
        let (id, city) = a.split_once(':').context("--asset must be ID:city")?;
        let issuer = cities
            .iter()
            .position(|c| c == city)
            .with_context(|| format!("asset {id}: unknown city {city}"))?;
        asset_list.push(Asset { id: id.to_string(), issuer: CityId(u32::try_from(issuer)?) });
    }
    // The CLI is the shell: reading the wall clock for the genesis time is its job.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    let genesis_time_ms = u64::try_from(now.duration_since(std::time::UNIX_EPOCH)?.as_millis())?;
    let genesis = Genesis {
        version: GENESIS_VERSION,
        name: name.to_string(),
        genesis_time_ms,
        parameters: Parameters {
            quorum: Quorum::TWO_THIRDS,
            beacon_block_interval_ms: 500,
            block_records_max: 10_000,
            record_bytes_max: 128 * 1024,
        },
        cities: city_list,
        validators: ValidatorSet { validators },
        assets: asset_list,
    };
    let valid = genesis.clone().validate().context("the generated genesis is invalid")?;
    let path = out_dir.join("genesis.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&genesis)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(serde_json::json!({
        "genesis": path,
        "federation_id": valid.federation_id(),
        "keys": keys_dir,
    }))
}

fn hex_array<const N: usize>(v: &serde_json::Value) -> Result<[u8; N]> {
    let s = v.as_str().context("expected a hex string")?;
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)?;
    Ok(out)
}

fn random32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).context("reading the operating system's randomness")?;
    Ok(b)
}

/// Writes `bytes` to a new file readable only by its owner; never overwrites.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
