//! One cross-city packet, one trace: a devnet exporting its spans over OTLP/HTTP to a receiver
//! in this test carries the trace a submitting service starts in city A through A's shard, A's
//! bridge, B's bridge and B's shard, and back to A's shard with the acknowledgement; the
//! devnet's JSON logs name the same trace.

use crate::devnet::running_devnet_logged;
use crate::packets::wait_packet;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as the receiver got it.
#[derive(Clone, Debug)]
struct Seen {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: BTreeMap<String, String>,
    service: String,
}

/// An OTLP/HTTP receiver (protobuf over HTTP/1.1, `POST /v1/traces`) on loopback, keeping
/// every span it is sent.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Seen>>>,
}

fn receiver() -> Receiver {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &kept);
            });
        }
    });
    Receiver { url, spans }
}

fn serve(stream: std::net::TcpStream, kept: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let status = match (path.as_str(), ExportTraceServiceRequest::decode(body.as_slice())) {
            ("/v1/traces", Ok(export)) => {
                kept.lock().unwrap().extend(spans_of(export));
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        )?;
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn spans_of(export: ExportTraceServiceRequest) -> Vec<Seen> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Seen {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

/// The span of `trace` named `name` whose attributes include `attributes`, once received.
fn find(spans: &[Seen], trace: &str, name: &str, attributes: &[(&str, &str)]) -> Option<Seen> {
    spans
        .iter()
        .find(|s| {
            s.trace_id == trace
                && s.name == name
                && attributes
                    .iter()
                    .all(|(k, v)| s.attributes.get(*k).map(String::as_str) == Some(v))
        })
        .cloned()
}

#[test]
fn one_cross_city_packet_is_one_trace_from_the_submitting_service_to_the_acknowledgement() {
    let collector = receiver();
    let (dir, _devnet, m) = running_devnet_logged(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("RUST_LOG", "info,urbis_shard=debug"),
        ],
        true,
    );
    let cities = m["cities"].as_array().unwrap().clone();
    let client = Client::new();
    let (a, b) = (&cities[0], &cities[1]);
    let (an, bn) = (a["name"].as_str().unwrap(), b["name"].as_str().unwrap());

    // The submitting service's own span, as a W3C traceparent.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let trace = format!("{:032x}", nanos.as_nanos() ^ 0x5eed_0000_0000_0000_0000_0000_0000_0001);
    let service_span = "00f067aa0ba902b7";
    let r = client
        .post(format!("{}/v1/records", a["shard_api"].as_str().unwrap()))
        .bearer_auth(a["service_tokens"]["open-data-office"].as_str().unwrap())
        .header("traceparent", format!("00-{trace}-{service_span}-01"))
        .json(&json!({ "records": [{
            "kind": "information", "subject": "44".repeat(32), "to_city": bn,
            "payload": {"dataset": "permits", "media_type": "application/json", "content": {"permit": 9}},
        }] }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let sequence = r.json::<Value>().unwrap()["records"][0]["sequence"].as_u64().unwrap();
    wait_packet(&client, a, &format!("{an}/{bn}/{sequence}"), "acknowledged in A", |v| {
        v["state"] == "acknowledged"
    });

    // Every hop's span arrives at the collector, in one trace, each the child of the last.
    let seq = sequence.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let chain = loop {
        let spans = collector.spans.lock().unwrap().clone();
        let submit = find(&spans, &trace, "POST /v1/records", &[]);
        let send = find(
            &spans,
            &trace,
            "send packet",
            &[("urbis.role", "bridge"), ("urbis.city", an), ("packet.sequence", &seq)],
        );
        let deliver = find(
            &spans,
            &trace,
            "deliver packet",
            &[("urbis.role", "bridge"), ("urbis.city", bn), ("packet.sequence", &seq)],
        );
        let receive = find(
            &spans,
            &trace,
            "receive packet",
            &[("urbis.role", "shard"), ("urbis.city", bn), ("packet.sequence", &seq)],
        );
        let settle = find(
            &spans,
            &trace,
            "settle packet",
            &[("urbis.role", "shard"), ("urbis.city", an), ("packet.sequence", &seq)],
        );
        if let (Some(submit), Some(send), Some(deliver), Some(receive), Some(settle)) =
            (submit, send, deliver, receive, settle)
        {
            break [submit, send, deliver, receive, settle];
        }
        let names: Vec<(String, BTreeMap<String, String>)> = spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .map(|s| (s.name.clone(), s.attributes.clone()))
            .collect();
        assert!(Instant::now() < deadline, "spans of the trace so far: {names:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let [submit, send, deliver, receive, settle] = chain;
    assert_eq!(submit.parent_span_id, service_span, "the shard continues the service's span");
    assert_eq!(submit.attributes.get("http.response.status_code").map(String::as_str), Some("200"));
    assert_eq!(send.parent_span_id, submit.span_id, "A's bridge continues the submission");
    assert_eq!(deliver.parent_span_id, send.span_id, "B's bridge continues A's bridge");
    assert_eq!(receive.parent_span_id, deliver.span_id, "B's shard continues B's bridge");
    assert_eq!(receive.attributes.get("packet.status").map(String::as_str), Some("200"));
    assert_eq!(settle.parent_span_id, send.span_id, "A's shard settles under A's bridge's span");
    assert_eq!(send.attributes.get("packet.result").map(String::as_str), Some("settled"));
    assert_eq!(deliver.attributes.get("packet.result").map(String::as_str), Some("acknowledged"));
    assert!(chain_services(&[&submit, &send, &deliver, &receive, &settle]) == ["urbis-devnet"]);

    // The JSON log lines of B's shard inside the packet's span carry its trace and span ids.
    let logs = std::fs::read_to_string(dir.path().join("devnet.log")).unwrap();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["trace_id"] == trace.as_str() && l["span_id"] == receive.span_id.as_str())
        .unwrap_or_else(|| panic!("no log line names the trace {trace} and B's receive span"));
    assert_eq!(line["level"], "DEBUG");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
}

/// The distinct service names of spans.
fn chain_services(spans: &[&Seen]) -> Vec<String> {
    let mut names: Vec<String> = spans.iter().map(|s| s.service.clone()).collect();
    names.dedup();
    names
}
