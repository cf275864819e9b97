//! The bridge's metrics, served at `/metrics` (`urbis_` prefix, base units, counters ending
//! `_total`; labels are city names and fixed words, never record ids or keys).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// A channel to a destination city and what happened to a packet on it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The other city.
    pub destination: String,
    /// `settled`, `pending`, `refused` or `unreachable`.
    pub result: &'static str,
}

/// A channel to a destination city.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// The other city.
    pub destination: String,
}

/// Every metric a bridge keeps.
pub struct BridgeMetrics {
    registry: Registry,
    /// Packets relayed, by destination and result.
    pub packets: Family<ResultLabel, Counter>,
    /// Packets handed over and not settled yet, by destination.
    pub in_flight: Family<ChannelLabel, Gauge>,
    /// Age of the oldest packet this bridge has seen unsettled, by destination (0 when none):
    /// the "stuck packet" signal.
    pub oldest_unsettled: Family<ChannelLabel, Gauge<f64, AtomicU64>>,
    /// Packets received from other bridges and handed to the own shard, by source answer.
    pub delivered: Family<ResultLabel, Counter>,
    /// Erasures carried to a destination.
    pub erasures: Family<ChannelLabel, Counter>,
    /// HTTP request durations of the bridge's own API.
    pub http: urbis_ops::HttpDurations,
}

impl Default for BridgeMetrics {
    fn default() -> Self {
        let (registry, http) = urbis_ops::registry("bridge", env!("CARGO_PKG_VERSION"));
        let mut m = BridgeMetrics {
            registry,
            packets: Family::default(),
            in_flight: Family::default(),
            oldest_unsettled: Family::default(),
            delivered: Family::default(),
            erasures: Family::default(),
            http,
        };
        let r = &mut m.registry;
        r.register(
            "bridge_packets",
            "Outbound packets relayed, by destination and result",
            m.packets.clone(),
        );
        r.register(
            "bridge_packets_in_flight",
            "Outbound packets handed over and not settled yet",
            m.in_flight.clone(),
        );
        r.register_with_unit(
            "bridge_oldest_unsettled_packet_age",
            "Age of the oldest outbound packet this bridge has seen unsettled",
            Unit::Seconds,
            m.oldest_unsettled.clone(),
        );
        r.register(
            "bridge_inbound_packets",
            "Inbound packets handed to the own shard, by result",
            m.delivered.clone(),
        );
        r.register("bridge_erasures", "Erasures carried to a destination", m.erasures.clone());
        m
    }
}

impl BridgeMetrics {
    /// The `/metrics` answer for a request with these headers.
    pub fn response(&self, headers: &axum::http::HeaderMap) -> axum::response::Response {
        urbis_ops::metrics_response(&self.registry, headers)
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        urbis_ops::encode(&self.registry)
    }
}
