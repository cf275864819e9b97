//! What every node role (shard, validator, and later the bridge) shares to be operated: a
//! metrics registry carrying `urbis_build_info`, HTTP request durations by route template,
//! method and status (OpenTelemetry HTTP semantic conventions), and the `/metrics` answer in
//! the exposition format the scraper accepts.
//!
//! Labels here are route templates, methods and status codes, never a raw path.

pub mod exposition;
pub mod in_process;
pub mod sized_json;
pub mod tagged;
pub mod telemetry;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The longest a stopping role waits for its closing QUIC connections to drain. A connection
/// whose driver stalls would otherwise hold the process past its grace period; ending the
/// closing state early when the socket closes is allowed (RFC 9000 §10.2).
pub const QUIC_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits for `idle` (a QUIC endpoint's `wait_idle()` after `close`) at most
/// [`QUIC_CLOSE_WAIT`], and says so when it stops waiting.
pub async fn quic_closed(idle: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(QUIC_CLOSE_WAIT, idle).await.is_err() {
        tracing::warn!(
            waited_ms = QUIC_CLOSE_WAIT.as_millis() as u64,
            "QUIC connections still closing; stopping without waiting for them"
        );
    }
}

/// An HTTP request's route template, method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (`/v1/records/{id}`), never the raw path.
    pub http_route: String,
    /// The request method.
    pub http_request_method: String,
    /// The response status.
    pub http_response_status_code: u16,
}

/// HTTP request durations, by route, method and status.
pub type HttpDurations = Family<HttpLabels, Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    role: &'static str,
}

/// Buckets for durations from 0.5 ms to about 16 s.
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// A registry with the `urbis` prefix, `urbis_build_info{version, role}` set to 1, and the
/// role's HTTP request durations registered.
pub fn registry(role: &'static str, version: &'static str) -> (Registry, HttpDurations) {
    let mut registry = Registry::with_prefix("urbis");
    let build: Family<BuildLabels, Gauge> = Family::default();
    build.get_or_create(&BuildLabels { version, role }).set(1);
    registry.register("build_info", "Build of this node", build);
    let http = HttpDurations::new_with_constructor(duration_histogram);
    registry.register_with_unit(
        "http_server_request_duration",
        "HTTP request durations by route template, method and status",
        Unit::Seconds,
        http.clone(),
    );
    (registry, http)
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The `/metrics` answer: OpenMetrics for scrapers that accept it (Prometheus does), the
/// Prometheus text format for the others.
pub fn metrics_response(registry: &Registry, request_headers: &HeaderMap) -> Response {
    use exposition::{OPENMETRICS, PROMETHEUS_TEXT, accepts_openmetrics, to_prometheus_text};
    let accept = request_headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = encode(registry);
    let (body, kind) = if accepts_openmetrics(accept) {
        (text, OPENMETRICS)
    } else {
        (to_prometheus_text(&text), PROMETHEUS_TEXT)
    };
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

/// Middleware (`axum::middleware::from_fn_with_state(durations, time_request)`, as a
/// `route_layer` so the route is known): times every routed request, and runs it in a server
/// span named `{method} {route}` (OpenTelemetry HTTP semantic conventions) whose parent is the
/// caller's span when the request carries W3C trace context.
pub async fn time_request(
    axum::extract::State(durations): axum::extract::State<HttpDurations>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = request.method().to_string();
    let span = tracing::info_span!(
        "http request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    telemetry::set_parent_from_headers(&span, request.headers());
    // A duration only, never protocol time.
    let started = tokio::time::Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    durations
        .get_or_create(&HttpLabels {
            http_route: route,
            http_request_method: method,
            http_response_status_code: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
