//! The genesis document: the federation's cities, validators, assets and parameters. Its hash
//! is the federation id that every signature binds.

use crate::encoding::{encode, hex_bytes};
use crate::hash::{Domain, Hash32};
use crate::record::CityId;
use crate::sealing::{Ed25519Error, SealingPublicKey};
use crate::validators::{KeyCache, Quorum, TrustedSet, ValidatorSet, ValidatorSetError};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Genesis format version.
pub const GENESIS_VERSION: u16 = 1;

/// The genesis document.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Genesis {
    /// [`GENESIS_VERSION`].
    pub version: u16,
    /// Federation name (for people).
    pub name: String,
    /// Genesis time, milliseconds since the Unix epoch.
    pub genesis_time_ms: u64,
    /// Protocol parameters.
    pub parameters: Parameters,
    /// Member cities.
    pub cities: Vec<City>,
    /// The first validator set.
    pub validators: ValidatorSet,
    /// Assets and their issuing cities.
    pub assets: Vec<Asset>,
}

/// Protocol parameters fixed at genesis.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Parameters {
    /// Certificate threshold, strictly exceeded; at least 2/3.
    pub quorum: Quorum,
    /// Target beacon block interval.
    pub beacon_block_interval_ms: u64,
    /// Most records a shard block may hold (also the records tree's largest size).
    pub block_records_max: u64,
    /// Largest encoded record.
    pub record_bytes_max: u64,
}

/// A member city.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct City {
    /// Numeric id used on the wire.
    pub id: CityId,
    /// Unique name (`to_city` in APIs).
    pub name: String,
    /// Sealing keys by the shard height from which each is in force (ascending, first at 0).
    pub sealing_keys: Vec<SealingKeyEntry>,
    /// PEM of the city's TLS certificate authority (bridges authenticate each other with it).
    pub tls_ca_pem: String,
    /// First beacon height from which the city's crosslinks are accepted.
    pub first_height: u64,
}

/// A sealing key and the shard height from which it signs.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SealingKeyEntry {
    /// First shard height sealed with this key.
    pub from_height: u64,
    /// Ed25519 public key.
    #[serde(with = "hex_bytes")]
    pub public_key: [u8; 32],
}

/// An asset and its issuing city.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Asset {
    /// Asset id (e.g. `EUR`).
    pub id: String,
    /// The only city whose treasury issues it.
    pub issuer: CityId,
}

/// Why a genesis document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// Unknown format version.
    #[error("genesis version {0} is not supported")]
    Version(u16),
    /// The certificate threshold is not strictly above 2/3.
    #[error(
        "quorum {numerator}/{denominator} is not at least 2/3 (certificates must exceed 2/3 of the weight)"
    )]
    WeakQuorum {
        /// Numerator.
        numerator: u64,
        /// Denominator.
        denominator: u64,
    },
    /// The validator set is invalid.
    #[error("validator set: {0}")]
    Validators(#[from] ValidatorSetError),
    /// No cities.
    #[error("a federation needs at least one city")]
    NoCities,
    /// A city id or name used twice.
    #[error("city {0} is declared twice")]
    DuplicateCity(String),
    /// A city without a sealing key at height 0, or keys out of order.
    #[error("city {0}: sealing keys must start at height 0 and ascend strictly")]
    SealingKeyOrder(String),
    /// A sealing key that is not a valid Ed25519 key.
    #[error("city {city}: invalid sealing key: {source}")]
    SealingKey {
        /// City name.
        city: String,
        /// Why.
        source: Ed25519Error,
    },
    /// The same sealing key in two places.
    #[error("sealing key used twice")]
    DuplicateSealingKey,
    /// An asset id used twice.
    #[error("asset {0} is declared twice")]
    DuplicateAsset(String),
    /// An asset issued by an unknown city.
    #[error("asset {asset} names unknown issuer city {issuer}")]
    UnknownIssuer {
        /// Asset id.
        asset: String,
        /// City id.
        issuer: CityId,
    },
    /// A validator names an unknown city.
    #[error("validator {0} names an unknown city")]
    UnknownValidatorCity(String),
    /// A parameter out of range.
    #[error("parameter {0} must be positive")]
    Parameter(&'static str),
}

/// A genesis document that passed every check, with its derived facts.
#[derive(Clone, Debug)]
pub struct ValidGenesis {
    genesis: Genesis,
    federation_id: Hash32,
    validators: TrustedSet,
    sealing_keys: Vec<(CityId, Vec<(u64, SealingPublicKey)>)>,
}

impl Genesis {
    /// The federation id: `H_Genesis(encode(genesis))`.
    pub fn federation_id(&self) -> Hash32 {
        Domain::Genesis.hash(&encode(self))
    }

    /// Checks every rule: PoPs, weights, at least 4 validators, quorum above 2/3, no duplicates.
    pub fn validate(self) -> Result<ValidGenesis, GenesisError> {
        if self.version != GENESIS_VERSION {
            return Err(GenesisError::Version(self.version));
        }
        let q = self.parameters.quorum;
        if !q.is_safe() {
            return Err(GenesisError::WeakQuorum {
                numerator: q.numerator,
                denominator: q.denominator,
            });
        }
        if self.parameters.block_records_max == 0 {
            return Err(GenesisError::Parameter("block_records_max"));
        }
        if self.parameters.record_bytes_max == 0 {
            return Err(GenesisError::Parameter("record_bytes_max"));
        }
        if self.cities.is_empty() {
            return Err(GenesisError::NoCities);
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut all_sealing = BTreeSet::new();
        let mut sealing_keys = Vec::new();
        for c in &self.cities {
            if !ids.insert(c.id) || !names.insert(c.name.clone()) {
                return Err(GenesisError::DuplicateCity(c.name.clone()));
            }
            let ordered = c.sealing_keys.first().is_some_and(|k| k.from_height == 0)
                && c.sealing_keys.windows(2).all(|w| w[0].from_height < w[1].from_height);
            if !ordered {
                return Err(GenesisError::SealingKeyOrder(c.name.clone()));
            }
            let mut keys = Vec::new();
            for k in &c.sealing_keys {
                let pk = SealingPublicKey::from_bytes(&k.public_key)
                    .map_err(|source| GenesisError::SealingKey { city: c.name.clone(), source })?;
                if !all_sealing.insert(k.public_key) {
                    return Err(GenesisError::DuplicateSealingKey);
                }
                keys.push((k.from_height, pk));
            }
            sealing_keys.push((c.id, keys));
        }
        let mut assets = BTreeSet::new();
        for a in &self.assets {
            if !assets.insert(a.id.clone()) {
                return Err(GenesisError::DuplicateAsset(a.id.clone()));
            }
            if !ids.contains(&a.issuer) {
                return Err(GenesisError::UnknownIssuer { asset: a.id.clone(), issuer: a.issuer });
            }
        }
        for v in &self.validators.validators {
            if v.city.is_some_and(|c| !ids.contains(&c)) {
                return Err(GenesisError::UnknownValidatorCity(v.name.clone()));
            }
        }
        let validators = TrustedSet::new(&self.validators, q, &mut KeyCache::default())?;
        let federation_id = self.federation_id();
        Ok(ValidGenesis { genesis: self, federation_id, validators, sealing_keys })
    }
}

impl ValidGenesis {
    /// The document.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }
    /// The federation id.
    pub fn federation_id(&self) -> Hash32 {
        self.federation_id
    }
    /// The first validator set, checked.
    pub fn validators(&self) -> &TrustedSet {
        &self.validators
    }
    /// The certificate threshold.
    pub fn quorum(&self) -> Quorum {
        self.genesis.parameters.quorum
    }
    /// The sealing key of `city` at shard `height`, if the city exists.
    pub fn sealing_key(&self, city: CityId, height: u64) -> Option<&SealingPublicKey> {
        let (_, keys) = self.sealing_keys.iter().find(|(c, _)| *c == city)?;
        keys.iter().rev().find(|(from, _)| *from <= height).map(|(_, k)| k)
    }
    /// A city by id.
    pub fn city(&self, id: CityId) -> Option<&City> {
        self.genesis.cities.iter().find(|c| c.id == id)
    }
    /// A city by name.
    pub fn city_by_name(&self, name: &str) -> Option<&City> {
        self.genesis.cities.iter().find(|c| c.name == name)
    }
}
