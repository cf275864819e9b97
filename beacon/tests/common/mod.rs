//! A federation of validators on loopback for the network tests and the finality benchmark:
//! keys from the testkit, a fresh TLS identity per validator pinned in genesis, one free UDP
//! port each, and the configuration each validator runs with.
#![allow(dead_code, clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use urbis_beacon::consensus::LinearTimeouts;
use urbis_beacon::node::ValidatorConfig;
use urbis_beacon::transport::TlsIdentity;
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::Hash32;
use urbis_core::testkit::Federation;

pub fn clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The devnet's timeouts.
pub fn timeouts() -> LinearTimeouts {
    LinearTimeouts {
        propose: Duration::from_millis(300),
        propose_delta: Duration::from_millis(100),
        prevote: Duration::from_millis(150),
        prevote_delta: Duration::from_millis(50),
        precommit: Duration::from_millis(150),
        precommit_delta: Duration::from_millis(50),
        rebroadcast: Duration::from_millis(600),
        max_timeout: Duration::from_secs(5),
    }
}

pub struct Cluster {
    /// The federation, its genesis naming each validator's TLS key.
    pub fed: Federation,
    pub genesis: Arc<ValidGenesis>,
    pub tls: Vec<TlsIdentity>,
    pub addrs: Vec<SocketAddr>,
}

impl Cluster {
    pub fn new(name: &str, cities: u32, validators: usize) -> Self {
        let base = Federation::new(name, cities, validators);
        let tls: Vec<TlsIdentity> =
            (0..validators).map(|_| TlsIdentity::generate().unwrap()).collect();
        let mut genesis = base.genesis.genesis().clone();
        for (v, t) in genesis.validators.validators.iter_mut().zip(&tls) {
            v.tls_fingerprint = Hash32(t.fingerprint());
        }
        let fed = Federation {
            genesis: genesis.validate().unwrap(),
            validator_keys: base.validator_keys,
            sealing_keys: base.sealing_keys,
        };
        let sockets: Vec<std::net::UdpSocket> =
            (0..validators).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let addrs = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let genesis = Arc::new(fed.genesis.clone());
        Cluster { fed, genesis, tls, addrs }
    }

    /// Validator `i`'s configuration: every other validator a peer, a fresh pool, set record
    /// and metrics.
    pub fn config(&self, i: usize) -> ValidatorConfig {
        let n = self.addrs.len();
        ValidatorConfig {
            genesis: self.genesis.clone(),
            listen: self.addrs[i],
            bls_key: Arc::new(self.fed.validator_keys[i].clone()),
            tls: TlsIdentity::from_pkcs8(self.tls[i].key_pkcs8()).unwrap(),
            peers: (0..n)
                .filter(|j| *j != i)
                .map(|j| (self.addrs[j], self.tls[j].fingerprint()))
                .collect(),
            timeouts: timeouts(),
            clock,
            pool: Arc::new(urbis_beacon::pool::Pool::new(self.genesis.clone())),
            sets: Arc::new(std::sync::RwLock::new(urbis_beacon::sets::Sets::from_genesis(
                &self.genesis,
            ))),
            metrics: Default::default(),
        }
    }
}
