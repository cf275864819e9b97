//! Logs and traces of a process: JSON lines (RFC 3339 UTC time, level, target, message, the
//! current span and its parents, and the OpenTelemetry trace and span ids), spans exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, and W3C trace context (`traceparent`) carried in and out of a span.
//!
//! The standard variables are honoured: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
//! (the service name defaults to `urbis-<role>`), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, and `OTEL_SDK_DISABLED`
//! / `OTEL_TRACES_EXPORTER=none` to turn export off. The export protocol is `http/protobuf`.
//!
//! Without export, a process does not take part in traces (spans get no OpenTelemetry ids,
//! which nothing would read, and cost a few percent of a busy shard's CPU): it forwards the
//! trace context it is given unchanged, as W3C Trace Context lets a component that does not
//! trace do. A span whose parent came from a `traceparent` — or whose ancestor's did — hands
//! that same `traceparent` on, and its log lines name that trace; a span without one hands
//! nothing on.

use std::fmt;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, SpanData as _};
use tracing_subscriber::util::SubscriberInitExt;

/// The W3C trace-context header and field name.
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the trace pipeline alive; dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Export what is queued; a collector that is gone costs at most the export timeout.
        let _ = self.provider.shutdown();
    }
}

/// Installs the process's subscriber: `RUST_LOG` filters (default `info`), JSON lines to
/// stdout (`to_stdout`, the long-running roles) or stderr (one-shot commands), and spans to
/// OpenTelemetry, exported when the environment names an OTLP endpoint.
pub fn init(role: &'static str, to_stdout: bool) -> Telemetry {
    let exporter = otlp_exporter();
    let mut builder = SdkTracerProvider::builder().with_resource(resource(role));
    let mut exporting = false;
    let export_error = match exporter {
        Ok(Some(exporter)) => {
            builder = builder.with_batch_exporter(exporter);
            exporting = true;
            None
        }
        Ok(None) => None,
        Err(e) => Some(e),
    };
    let provider = builder.build();
    let tracer = provider.tracer("urbis");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = WithTraceIds(
        tracing_subscriber::fmt::format().json().with_current_span(true).with_span_list(true),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new());
    // `RUST_LOG` chooses what is logged, not what is traced: spans at info and above always
    // reach OpenTelemetry, so a quieter log does not cut traces apart.
    let registry = tracing_subscriber::registry()
        .with(exporting.then(|| {
            // Spans carry what they name, not the source location, thread or busy/idle timing
            // (less work on every request, less noise in every span).
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        }))
        .with((!exporting).then(forwarding));
    let _ = if to_stdout {
        registry
            .with(fmt.event_format(format).with_writer(std::io::stdout).with_filter(filter))
            .try_init()
    } else {
        registry
            .with(fmt.event_format(format).with_writer(std::io::stderr).with_filter(filter))
            .try_init()
    };
    if let Some(e) = export_error {
        tracing::error!(error = %e, "trace export is configured but cannot start; spans are not exported");
    }
    Telemetry { provider }
}

/// The resource: the standard variables, with `service.name` defaulting to `urbis-<role>`.
fn resource(role: &'static str) -> opentelemetry_sdk::Resource {
    let detected = opentelemetry_sdk::Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        opentelemetry_sdk::Resource::builder().with_service_name(format!("urbis-{role}")).build()
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// The OTLP/HTTP span exporter the environment asks for, if any.
fn otlp_exporter() -> Result<Option<opentelemetry_otlp::SpanExporter>, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    if disabled
        || !(env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    {
        return Ok(None);
    }
    for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
        if let Ok(p) = std::env::var(name)
            && p.trim() != "http/protobuf"
        {
            return Err(format!("{name}={p}: only http/protobuf is supported"));
        }
    }
    let client = BlockingClient::new().map_err(|e| e.to_string())?;
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client)
        .build()
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The exporter's HTTP client. The batch span processor exports from its own thread outside
/// any async runtime, so the client is reqwest's blocking one (the workspace's reqwest, no
/// second HTTP stack).
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

impl BlockingClient {
    fn new() -> reqwest::Result<Self> {
        let timeout = std::env::var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(10_000);
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_millis(timeout))
            .build()
            .map(Self)
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let answer = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = answer.bytes()?;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The JSON line of an event with the trace and span ids of the span it happened in added.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Read before the inner formatter borrows the span's extensions.
        let ids = ctx.event_scope().and_then(|mut scope| scope.next()).and_then(|span| {
            tracing::dispatcher::get_default(|d| {
                tracing_opentelemetry::get_otel_context(&span.id(), d)
            })
        });
        let ids = ids
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid())
            .map(|sc| (sc.trace_id(), Some(sc.span_id())));
        // Not exporting: the trace forwarded, which has no span of this process.
        let ids = ids.or_else(|| {
            let span = ctx.event_scope()?.next()?;
            let forwarded = span.extensions().get::<Forwarded>().map(|f| f.0.trace_id());
            forwarded.map(|trace| (trace, None))
        });
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match (ids, line.strip_suffix("}\n")) {
            (Some((trace, Some(span))), Some(open)) => {
                writeln!(writer, "{open},\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"}}")
            }
            (Some((trace, None)), Some(open)) => {
                writeln!(writer, "{open},\"trace_id\":\"{trace}\"}}")
            }
            _ => writer.write_str(&line),
        }
    }
}

/// The `traceparent` of a span (its trace and its own id; without export, the context it
/// forwards), or `None` when it has no valid trace context. Written directly (one string per
/// span, where the propagator's carrier is a map): a bridge writes one for every packet it
/// relays.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let sc = match span.with_subscriber(|(id, dispatch)| forwarded(id, dispatch)).flatten() {
        Some(Some(forwarded)) => forwarded,
        Some(None) => return None,
        None => span.context().span().span_context().clone(),
    };
    if !sc.is_valid() {
        return None;
    }
    let flags = sc.trace_flags() & TraceFlags::SAMPLED;
    Some(format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), flags.to_u8()))
}

/// Makes the remote span named by `traceparent` the parent of `span`. A malformed value
/// (untrusted input) is ignored: the span keeps its own trace.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(sc) = parse_traceparent(traceparent) {
        set_remote_context(span, sc);
    }
}

/// Makes `sc` the parent of `span`, or, without export, the context `span` forwards.
fn set_remote_context(span: &tracing::Span, sc: SpanContext) {
    let forwarding = span.with_subscriber(|(id, dispatch)| {
        if let Some(data) = forwarding_span(id, dispatch)? {
            data.extensions_mut().replace(Forwarded(sc.clone()));
        }
        Some(())
    });
    if forwarding.flatten().is_none() {
        let _ = span.set_parent(opentelemetry::Context::current().with_remote_span_context(sc));
    }
}

/// The trace context a span forwards when spans are not exported (see the module's
/// documentation), kept in the span's extensions.
#[derive(Clone)]
struct Forwarded(SpanContext);

/// Without export (the [`Forwarding`] layer installed): `Some` of span `id`'s data, if the
/// registry still has it. With export: `None`.
fn forwarding_span<'a>(
    id: &tracing::span::Id,
    dispatch: &'a tracing::Dispatch,
) -> Option<Option<tracing_subscriber::registry::Data<'a>>> {
    let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
    dispatch.downcast_ref::<Forwarding>()?;
    Some(registry.span_data(id))
}

/// Without export: `Some` of the context span `id` forwards, if any. With export: `None`.
fn forwarded(id: &tracing::span::Id, dispatch: &tracing::Dispatch) -> Option<Option<SpanContext>> {
    let data = forwarding_span(id, dispatch)?;
    Some(data.and_then(|d| d.extensions().get::<Forwarded>().map(|f| f.0.clone())))
}

/// The layer that takes OpenTelemetry's place when spans are not exported: a new span
/// forwards the context its parent forwards, if any. A span without one costs a look at its
/// parent's extensions.
struct Forwarding;

/// [`Forwarding`] for the spans OpenTelemetry would see: info and above. Unfiltered, it would
/// enable every callsite at every level for the whole subscriber, whatever `RUST_LOG` says:
/// each trace-level span of the QUIC stack (one per datagram sent or received, one per frame)
/// would be created and entered, and each debug event built, only for no layer to want them.
fn forwarding<S>()
-> tracing_subscriber::filter::Filtered<Forwarding, tracing_subscriber::filter::LevelFilter, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    Forwarding.with_filter(tracing_subscriber::filter::LevelFilter::INFO)
}

impl<S> tracing_subscriber::Layer<S> for Forwarding
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let parent = match attrs.parent() {
            Some(parent) => ctx.span(parent),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let Some(inherited) = parent.and_then(|p| p.extensions().get::<Forwarded>().cloned())
        else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(inherited);
        }
    }
}

/// The remote span context a `traceparent` value names (W3C Trace Context, level 1), read
/// directly: `<version>-<trace id>-<parent id>-<flags>`, lowercase hex of 2, 32, 16 and 2
/// digits, the version not `ff`, neither id all zeros; version `00` has exactly these four
/// parts, a later version may add parts after a `-`. Only the sampled flag is kept. `None` for
/// anything else, and for values over 128 bytes (untrusted input).
fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let v = value.trim().as_bytes();
    if v.len() > 128 || v.len() < 55 {
        return None;
    }
    let (head, rest) = v.split_at(55);
    let version = hex_field(head.get(0..2)?)?;
    if version == 0xff
        || (version == 0 && !rest.is_empty())
        || rest.first().is_some_and(|b| *b != b'-')
    {
        return None;
    }
    if head.get(2) != Some(&b'-') || head.get(35) != Some(&b'-') || head.get(52) != Some(&b'-') {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex_field(head.get(3..35)?)?.to_be_bytes());
    let span_id =
        SpanId::from_bytes(u64::try_from(hex_field(head.get(36..52)?)?).ok()?.to_be_bytes());
    let flags = u8::try_from(hex_field(head.get(53..55)?)?).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// A field of lowercase hex digits (at most 32) as a number.
fn hex_field(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, d| {
        let d = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((n << 4) | u128::from(d))
    })
}

/// Makes the span named by a request's W3C trace-context headers the parent of `span` (or,
/// without export, the context it forwards).
pub fn set_parent_from_headers(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        set_remote_context(span, sc);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// What the OpenTelemetry propagator reads from a `traceparent`.
    fn by_propagator(value: &str) -> Option<SpanContext> {
        let carrier = HashMap::from([(TRACEPARENT.to_string(), value.to_string())]);
        let cx = TraceContextPropagator::new()
            .extract_with_context(&opentelemetry::Context::new(), &carrier);
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    /// What the OpenTelemetry propagator writes for a span context.
    fn written_by_propagator(sc: &SpanContext) -> String {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(
            &opentelemetry::Context::new().with_remote_span_context(sc.clone()),
            &mut carrier,
        );
        carrier.remove(TRACEPARENT).unwrap()
    }

    /// Values read the same as the propagator reads them (well-formed ones of each flag, later
    /// versions with more parts, the malformed ones it refuses), but for ids of fewer digits,
    /// which it pads and W3C Trace Context refuses.
    #[test]
    fn a_traceparent_reads_as_the_propagator_reads_it() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let span = "00f067aa0ba902b7";
        let cases = [
            format!("00-{id}-{span}-01"),
            format!("00-{id}-{span}-00"),
            format!(" 00-{id}-{span}-01 "),
            format!("01-{id}-{span}-01"),
            format!("01-{id}-{span}-01-what-comes-later"),
            format!("cc-{id}-{span}-09-x"),
            format!("ff-{id}-{span}-01"),
            format!("00-{id}-{span}-01-x"),
            format!("00-{}-{span}-01", "0".repeat(32)),
            format!("00-{id}-{}-01", "0".repeat(16)),
            format!("00-{}-{span}-01", id.to_uppercase()),
            format!("00-{id}-{}-01", span.to_uppercase()),
            format!("00-{id}-{span}-0g"),
            format!("00-{id}-{span}"),
            format!("00_{id}-{span}-01"),
            format!("00-{id}x{span}-01"),
            format!("0x-{id}-{span}-01"),
            String::new(),
            "00".to_string(),
        ];
        for value in &cases {
            assert_eq!(parse_traceparent(value), by_propagator(value), "{value:?}");
        }
        // Stricter than the propagator, as W3C Trace Context is: an id of fewer digits.
        let short = format!("00-{}-{span}-01", &id[1..]);
        assert!(by_propagator(&short).is_some() && parse_traceparent(&short).is_none());
        assert!(parse_traceparent(&cases[0]).is_some_and(|sc| sc.is_sampled() && sc.is_remote()));
        assert!(parse_traceparent(&format!("00-{id}-{span}-01{}", "-".repeat(80))).is_none());
    }

    /// A span's `traceparent` is what the propagator writes for its context, and reads back.
    #[test]
    fn a_span_writes_the_traceparent_the_propagator_writes() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("packet");
            let written = traceparent(&span).unwrap();
            let sc = span.context().span().span_context().clone();
            assert_eq!(written, written_by_propagator(&sc));
            assert_eq!(
                parse_traceparent(&written).map(|p| (p.trace_id(), p.span_id())),
                Some((sc.trace_id(), sc.span_id()))
            );
            let child = tracing::info_span!("relayed");
            set_remote_parent(&child, &written);
            let parent = child.context().span().span_context().trace_id();
            assert_eq!(parent, sc.trace_id(), "the child continues the remote trace");
            let alone = tracing::info_span!("alone");
            set_remote_parent(&alone, "00-nonsense");
            let own = alone.context().span().span_context().trace_id();
            assert_ne!(own, sc.trace_id(), "a malformed value leaves the span its own trace");
        });
    }

    /// A log line's writer shared with the test.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Without export, a span hands on unchanged the context it was given (by a value or by a
    /// request's headers) and its descendants do too, its log lines name that trace, and a
    /// span given none (or a malformed value) hands nothing on.
    #[test]
    fn without_export_a_span_forwards_the_context_it_was_given() {
        let lines = Lines::default();
        let written = lines.clone();
        let format = WithTraceIds(tracing_subscriber::fmt::format().json());
        let subscriber = tracing_subscriber::registry().with(Some(forwarding())).with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(format)
                .with_writer(move || written.clone()),
        );
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deliver packet");
            set_remote_parent(&span, given);
            assert_eq!(traceparent(&span).as_deref(), Some(given));
            let child = span.in_scope(|| tracing::info_span!("receive packet"));
            assert_eq!(traceparent(&child).as_deref(), Some(given), "a contextual child");
            let explicit = tracing::info_span!(parent: &child, "settle packet");
            assert_eq!(traceparent(&explicit).as_deref(), Some(given), "an explicit child");
            explicit.in_scope(|| tracing::info!("settled"));
            let alone = tracing::info_span!("alone");
            assert_eq!(traceparent(&alone), None);
            set_remote_parent(&alone, "00-nonsense");
            assert_eq!(traceparent(&alone), None, "a malformed value is ignored");
            let unsampled = tracing::info_span!("unsampled");
            set_remote_parent(&unsampled, &given.replace("-01", "-00"));
            assert_eq!(traceparent(&unsampled), Some(given.replace("-01", "-00")));
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(TRACEPARENT, given.parse().unwrap());
            let request = tracing::info_span!("http request");
            set_parent_from_headers(&request, &headers);
            assert_eq!(traceparent(&request).as_deref(), Some(given));
            tracing::info!("outside any span");
        });
        let lines = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(lines[0].get("span_id").is_none(), "no span of this process is named");
        assert!(lines[1].get("trace_id").is_none());
    }

    /// Composed as `init` composes it without export, with a log quieter than info: the
    /// subscriber's level hint is info, so a callsite below it (a trace span of the QUIC
    /// stack, a debug event) is skipped where it stands, and an info span inside a debug span
    /// still forwards its ancestor's context.
    #[test]
    fn without_export_spans_and_events_below_info_are_never_built() {
        // `init` puts the OpenTelemetry layer first, absent without export.
        let quiet_log = |log: &str| {
            tracing_subscriber::registry()
                .with(None::<tracing_subscriber::layer::Identity>)
                .with(Some(forwarding()))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::sink)
                        .with_filter(tracing_subscriber::EnvFilter::new(log)),
                )
        };
        let hint = |log: &str| quiet_log(log).max_level_hint();
        use tracing_subscriber::filter::LevelFilter;
        assert_eq!(hint("warn"), Some(LevelFilter::INFO));
        assert_eq!(hint("debug"), Some(LevelFilter::DEBUG), "a debug log enables debug");
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        tracing::subscriber::with_default(quiet_log("warn"), || {
            let span = tracing::info_span!("deliver packet");
            set_remote_parent(&span, given);
            let child = span.in_scope(|| {
                tracing::debug_span!("drive").in_scope(|| tracing::info_span!("receive packet"))
            });
            assert_eq!(traceparent(&child).as_deref(), Some(given));
        });
    }
}
