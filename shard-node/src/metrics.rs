//! The shard's metrics, served at `/metrics` in OpenMetrics text: `urbis_` prefix, base units,
//! counters ending `_total`, and no label that could carry a subject, token or record id
//! (labels are record kinds, rejection reasons, routes as templates, and status codes).

use crate::ledger::Rejection;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A record kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `information`, `capital`, `talent` or `credit`.
    pub kind: String,
}

/// Why records were refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A fixed word per refusal rule.
    pub reason: &'static str,
}

/// Every metric a shard keeps.
pub struct ShardMetrics {
    registry: Registry,
    /// Records sealed, by kind.
    pub ingested: Family<KindLabel, Counter>,
    /// Records refused by the ledger's rules, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// From a block's first submission taken to its synced write.
    pub seal_seconds: Histogram,
    /// Synced writes (one per sealed block, one per purge).
    pub fsyncs: Counter,
    /// Height of the last sealed block.
    pub height: Gauge,
    /// The highest beacon height the light client followed.
    pub beacon_height: Gauge,
    /// The highest of this shard's heights a certified beacon block covers.
    pub crosslinked_height: Gauge,
    /// Seconds from sealing the last crosslinked header to the beacon block that covered it.
    pub finality_lag_seconds:
        prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Packet operations sealed, by what happened (`received`, `error_acknowledged`,
    /// `acknowledged`, `refunded`, `frozen`, `unfrozen`, `copy_erased`).
    pub packets: Family<ReasonLabel, Counter>,
    /// Proofs from other cities or relays that failed, by the link that failed.
    pub proof_failures: Family<LinkLabel, Counter>,
    /// Packets sent to each city so far.
    pub packets_sent: Family<DestinationLabel, Gauge>,
    /// Age of the oldest packet sent to each city and not settled (0 when none): the stuck
    /// packet signal.
    pub oldest_unsettled: Family<DestinationLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Time spent sealing blocks, by phase (`rules`, `state_tree`, `header`, `batch` on the
    /// sealing thread; `write` on the block writer): where a block's cost goes.
    pub seal_phases: Family<PhaseLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// HTTP request durations.
    pub http: urbis_ops::HttpDurations,
}

/// A phase of sealing a block.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// A fixed word per phase.
    pub phase: &'static str,
}

/// A destination city.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    /// Its name in genesis.
    pub destination: String,
}

/// The link of a proof chain that failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    /// A fixed word (`records_path`, `shard_header`, `beacon_certificate`, ...).
    pub link: &'static str,
}

impl ShardMetrics {
    /// Adds `seconds` to a sealing phase.
    pub fn seal_phase(&self, phase: &'static str, seconds: f64) {
        self.seal_phases.get_or_create(&PhaseLabel { phase }).inc_by(seconds);
    }
}

impl Default for ShardMetrics {
    fn default() -> Self {
        let (registry, http) = urbis_ops::registry("shard", env!("CARGO_PKG_VERSION"));
        let mut m = ShardMetrics {
            ingested: Family::default(),
            rejected: Family::default(),
            seal_seconds: urbis_ops::duration_histogram(),
            fsyncs: Counter::default(),
            height: Gauge::default(),
            beacon_height: Gauge::default(),
            crosslinked_height: Gauge::default(),
            finality_lag_seconds: Default::default(),
            packets: Family::default(),
            proof_failures: Family::default(),
            packets_sent: Family::default(),
            oldest_unsettled: Family::default(),
            seal_phases: Family::default(),
            http,
            registry,
        };
        let r = &mut m.registry;
        r.register("records_ingested", "Records sealed into blocks", m.ingested.clone());
        r.register("records_rejected", "Records refused by the ledger's rules", m.rejected.clone());
        r.register_with_unit(
            "seal_duration",
            "From a block's first submission to its synced write",
            prometheus_client::registry::Unit::Seconds,
            m.seal_seconds.clone(),
        );
        r.register("fsyncs", "Synced RocksDB writes", m.fsyncs.clone());
        r.register_with_unit(
            "shard_seal_phase",
            "Time spent sealing blocks, by phase: rules, state_tree, header and batch on the \
             sealing thread, write on the block writer",
            prometheus_client::registry::Unit::Seconds,
            m.seal_phases.clone(),
        );
        r.register(
            "shard_packets",
            "Packet operations sealed, by what happened",
            m.packets.clone(),
        );
        r.register("shard_packets_sent", "Packets sent to each city", m.packets_sent.clone());
        r.register_with_unit(
            "shard_oldest_unsettled_packet_age",
            "Age of the oldest packet sent to each city and not settled",
            prometheus_client::registry::Unit::Seconds,
            m.oldest_unsettled.clone(),
        );
        r.register(
            "proof_verification_failures",
            "Proofs from other cities or relays that failed, by the failing link",
            m.proof_failures.clone(),
        );
        r.register("shard_block_height", "Height of the last sealed block", m.height.clone());
        r.register(
            "shard_beacon_height",
            "Highest beacon height the shard's light client followed",
            m.beacon_height.clone(),
        );
        r.register(
            "shard_crosslinked_height",
            "Highest shard height covered by a certified beacon block",
            m.crosslinked_height.clone(),
        );
        r.register_with_unit(
            "shard_finality_lag",
            "From sealing the last crosslinked header to the beacon block that covered it",
            prometheus_client::registry::Unit::Seconds,
            m.finality_lag_seconds.clone(),
        );
        m
    }
}

/// The link a packet, acknowledgement, timeout or state proof failed at.
pub fn failed_link(e: &urbis_core::packet::PacketError) -> &'static str {
    use urbis_core::packet::PacketError as P;
    use urbis_core::proof::ProofError as E;
    match e {
        P::Proof(E::Record(_) | E::CityMismatch { .. }) => "record",
        P::Proof(E::RecordsCount { .. } | E::RecordsPath(_)) => "records_path",
        P::Proof(E::UnknownCity(_) | E::HeaderSeal(_) | E::HeaderVersion(_)) => "shard_header",
        P::Proof(E::StatePath(_) | E::StateKeyMismatch | E::WrongCity { .. } | E::Value) => {
            "state_path"
        }
        P::Proof(
            E::HistoryHeader
            | E::HistoryParameters { .. }
            | E::HistoryPath(_)
            | E::CrosslinkedSeal(_),
        ) => "history_path",
        P::Proof(E::CrosslinksCount { .. } | E::CrosslinkPath(_) | E::BeforeCityJoined { .. }) => {
            "crosslink_path"
        }
        P::Proof(E::Beacon(_)) => "beacon_certificate",
        P::Proof(E::NotFinal) => "finality",
        P::WrongDestination { .. } | P::SelfPacket(_) | P::WrongCity { .. } => "channel",
        P::BatchPath(_)
        | P::NotInBatch { .. }
        | P::BatchPosition { .. }
        | P::BatchRecordPath(_) => "batch_path",
        P::AcknowledgementPath(_) => "acknowledgement_path",
        P::ReceiptPath(_) => "receipt_absence_path",
        P::BeaconViewPath(_) => "beacon_view_path",
        P::NotTimedOut { .. } => "timeout",
    }
}

impl ShardMetrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        urbis_ops::encode(&self.registry)
    }

    /// The `/metrics` answer for a request with these headers.
    pub fn response(&self, headers: &axum::http::HeaderMap) -> axum::response::Response {
        urbis_ops::metrics_response(&self.registry, headers)
    }

    /// Counts a refusal under its rule's name.
    pub fn reject(&self, r: &Rejection) {
        let reason = match r {
            Rejection::UnknownAsset { .. } => "unknown_asset",
            Rejection::NotIssuer { .. } => "not_issuer",
            Rejection::InsufficientFunds { .. } => "insufficient_funds",
            Rejection::Overflow { .. } => "overflow",
            Rejection::SelfTransfer { .. } => "self_transfer",
            Rejection::UnknownDestination { .. } => "unknown_destination",
            Rejection::AlreadyRevoked { .. } => "already_revoked",
            Rejection::Duplicate { .. } => "duplicate",
            Rejection::UnknownRecord { .. } => "unknown_record",
            Rejection::AlreadyErased { .. } => "already_erased",
            Rejection::VoucherNotHome { .. } => "voucher_not_home",
            Rejection::PacketDuplicate { .. } => "packet_duplicate",
            Rejection::PacketTimedOut { .. } => "packet_timed_out",
            Rejection::PacketSettled { .. } => "packet_settled",
            Rejection::UnknownPacket { .. } => "unknown_packet",
            Rejection::NotFrozen { .. } => "not_frozen",
            Rejection::State(_) => "state",
        };
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }
}
