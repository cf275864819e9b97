//! The validator's metrics, served at `/metrics` in OpenMetrics text (`urbis_` prefix, base
//! units, counters ending `_total`; labels are fixed words and city names, never keys).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// A fixed word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What is counted.
    pub kind: &'static str,
}

/// A city of the federation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CityLabel {
    /// Its name in genesis.
    pub city: String,
}

/// Every metric a validator keeps.
pub struct BeaconMetrics {
    registry: Registry,
    /// Highest decided height.
    pub height: Gauge,
    /// Round in which the last height was decided (0 when the first proposal went through).
    pub decision_round: Gauge,
    /// Consensus timeouts that fired, by step.
    pub timeouts: Family<KindLabel, Counter>,
    /// Evidence kept, by kind.
    pub evidence: Family<KindLabel, Counter>,
    /// Crosslinks decided.
    pub crosslinks: Counter,
    /// Set changes carried by decided blocks.
    pub set_changes: Counter,
    /// Per city: from its last crosslinked header's seal to the beacon block covering it.
    pub finality_lag: Family<CityLabel, Gauge<f64, AtomicU64>>,
    /// HTTP request durations of the validator's API.
    pub http: urbis_ops::HttpDurations,
}

impl Default for BeaconMetrics {
    fn default() -> Self {
        let (registry, http) = urbis_ops::registry("beacon", env!("CARGO_PKG_VERSION"));
        let mut m = BeaconMetrics {
            registry,
            height: Gauge::default(),
            decision_round: Gauge::default(),
            timeouts: Family::default(),
            evidence: Family::default(),
            crosslinks: Counter::default(),
            set_changes: Counter::default(),
            finality_lag: Family::default(),
            http,
        };
        let r = &mut m.registry;
        r.register("beacon_height", "Highest decided beacon height", m.height.clone());
        r.register(
            "consensus_decision_round",
            "Round in which the last height was decided",
            m.decision_round.clone(),
        );
        r.register(
            "consensus_timeouts",
            "Consensus timeouts that fired, by step",
            m.timeouts.clone(),
        );
        r.register("beacon_evidence", "Misbehaviour evidence kept, by kind", m.evidence.clone());
        r.register("beacon_crosslinks", "Crosslinks in decided blocks", m.crosslinks.clone());
        r.register("beacon_set_changes", "Validator-set changes carried", m.set_changes.clone());
        r.register_with_unit(
            "beacon_finality_lag",
            "Per city: from sealing its last crosslinked header to the block covering it",
            Unit::Seconds,
            m.finality_lag.clone(),
        );
        m
    }
}

impl BeaconMetrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        urbis_ops::encode(&self.registry)
    }

    /// The `/metrics` answer for a request with these headers.
    pub fn response(&self, headers: &axum::http::HeaderMap) -> axum::response::Response {
        urbis_ops::metrics_response(&self.registry, headers)
    }
}
