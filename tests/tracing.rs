//! Traces and logs end to end: the built binary exports the spans of real requests to an
//! OTLP receiver running in the test (gRPC, and HTTP/protobuf), and keeps serving at the
//! same latency when the collector is down or never answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{spawn, Tcpie};
use common::{metric_value, request};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, Instant};

/// A span with its resource's attributes.
type ResourceSpan = (Vec<KeyValue>, Span);

/// What the receiver got.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ResourceSpan>>>);

impl Received {
    fn store(&self, request: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in request.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push((resource.clone(), span));
                }
            }
        }
    }

    fn spans(&self) -> Vec<ResourceSpan> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.store(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn grpc_receiver() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, received)
}

async fn http_receiver() -> (SocketAddr, Received) {
    use axum::routing::post;
    use prost::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.store(ExportTraceServiceRequest::decode(body).unwrap());
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(attrs: &[KeyValue], key: &str) -> String {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?} in {attrs:?}"),
    }
}

fn int(attrs: &[KeyValue], key: &str) -> i64 {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(i)) => *i,
        other => panic!("{key}: {other:?} in {attrs:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `n` requests, each of which must be answered 200.
async fn get_ok(tcpie: &Tcpie, n: usize) {
    for _ in 0..n {
        let reply = request(tcpie.tcp, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
}

async fn stop(tcpie: &mut Tcpie, within: Duration) {
    tcpie.signal("TERM");
    let status = tcpie.wait_exit(within).await;
    assert_eq!(status.code(), Some(0), "{}", tcpie.log.lock().unwrap());
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn every_request_gets_a_server_span_with_semantic_attributes() {
    let (collector, received) = grpc_receiver().await;
    let endpoint = format!("http://{collector}");
    let mut tcpie = spawn(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("TCPIE_WORKERS", "1"),
            ("TCPIE_QUEUE_SIZE", "0"),
            ("TCPIE_BURST", "2"),
            ("TCPIE_RATE_PER_SECOND", "0.001"),
            ("TCPIE_SIMULATED_WORK_MS", "500"),
            ("TCPIE_READ_TIMEOUT_MS", "300"),
        ],
    );
    let addr = tcpie.tcp;
    // A: processed, inside the caller's trace.
    let traced = tokio::spawn(async move {
        request(
            addr,
            format!(
                "GET /traced?q=1 HTTP/1.1\r\nHost: t\r\ntraceparent: 00-{TRACE_ID}-{PARENT_ID}-01\r\n\
                 tracestate: vendor=x\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
    });
    tcpie.wait_admitted(1).await;
    // B: the only worker is busy and there is no queue: 503.
    assert_eq!(
        request(addr, b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        503
    );
    // C: both tokens spent: 429.
    assert_eq!(
        request(addr, b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        429
    );
    // D: malformed: 400. E: head never finished: 408.
    assert_eq!(request(addr, b"BROKEN\r\n\r\n").await.unwrap().status, 400);
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /slow HT").await.unwrap();
    assert_eq!(common::read_reply(&mut slow).await.unwrap().status, 408);
    assert_eq!(traced.await.unwrap().unwrap().status, 200);
    stop(&mut tcpie, Duration::from_secs(10)).await;

    let spans = received.spans();
    let servers: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 5, "{spans:#?}");
    let by_outcome = |outcome: &str| {
        servers
            .iter()
            .find(|(_, s)| text(&s.attributes, "tcpie.outcome") == outcome)
            .unwrap_or_else(|| panic!("no {outcome} span"))
    };

    let (resource, a) = by_outcome("processed");
    assert_eq!(text(resource, "service.name"), "tcpie");
    assert_eq!(text(resource, "service.version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(text(resource, "deployment.environment"), "test");
    assert_eq!(a.name, "GET");
    assert_eq!(hex(&a.trace_id), TRACE_ID);
    assert_eq!(hex(&a.parent_span_id), PARENT_ID);
    let attrs = &a.attributes;
    assert_eq!(text(attrs, "http.request.method"), "GET");
    assert_eq!(text(attrs, "url.path"), "/traced");
    assert_eq!(int(attrs, "http.response.status_code"), 200);
    assert_eq!(text(attrs, "network.peer.address"), "127.0.0.1");
    assert!(int(attrs, "network.peer.port") > 0);
    assert_eq!(int(attrs, "server.port"), i64::from(addr.port()));
    assert_eq!(text(attrs, "network.protocol.version"), "1.1");
    // Requests are processed in their own connection's task: there is no worker number.
    assert!(attr(attrs, "tcpie.worker").is_none());
    assert!(attr(attrs, "tcpie.queue_wait_ms").is_some());
    assert!(attr(attrs, "tcpie.connection_id").is_some());
    assert!(attr(attrs, "error.type").is_none());
    assert_eq!(
        a.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Unset as i32
    );
    // The span covers the processing (500 ms of simulated work).
    assert!(a.end_time_unix_nano - a.start_time_unix_nano >= 500_000_000);
    // Its children: the queue wait and the processing.
    let children: Vec<&str> = spans
        .iter()
        .filter(|(_, s)| s.parent_span_id == a.span_id)
        .map(|(_, s)| s.name.as_str())
        .collect();
    assert!(
        children.contains(&"queue") && children.contains(&"process"),
        "{children:?}"
    );

    let (_, b) = by_outcome("queue_full");
    assert_eq!(int(&b.attributes, "http.response.status_code"), 503);
    assert_eq!(text(&b.attributes, "error.type"), "503");
    assert_eq!(b.status.as_ref().unwrap().code, StatusCode::Error as i32);
    // No traceparent: a new trace.
    assert_ne!(hex(&b.trace_id), TRACE_ID);
    assert!(b.parent_span_id.is_empty());

    let (_, c) = by_outcome("rate_limited");
    assert_eq!(int(&c.attributes, "http.response.status_code"), 429);
    assert_eq!(
        c.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Unset as i32
    );

    let (_, d) = by_outcome("bad_request");
    assert_eq!(int(&d.attributes, "http.response.status_code"), 400);
    assert_eq!(d.name, "HTTP");

    let (_, e) = by_outcome("read_timeout");
    assert_eq!(int(&e.attributes, "http.response.status_code"), 408);
    assert_eq!(text(&e.attributes, "error.type"), "timeout");
}

#[tokio::test]
async fn http_protobuf_export_appends_the_signal_path() {
    let (collector, received) = http_receiver().await;
    let endpoint = format!("http://{collector}");
    let mut tcpie = spawn(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "tcpie-http"),
            ("TCPIE_BURST", "0"),
        ],
    );
    get_ok(&tcpie, 3).await;
    // The schedule delay is the default 5 s: the spans arrive with the shutdown flush.
    stop(&mut tcpie, Duration::from_secs(10)).await;
    let spans = received.spans();
    let servers: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 3);
    assert_eq!(text(&servers[0].0, "service.name"), "tcpie-http");
}

#[tokio::test]
async fn with_the_sdk_disabled_no_span_is_exported() {
    let (collector, received) = grpc_receiver().await;
    let endpoint = format!("http://{collector}");
    let mut tcpie = spawn(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("TCPIE_BURST", "0"),
        ],
    );
    get_ok(&tcpie, 3).await;
    sleep(Duration::from_millis(300)).await;
    stop(&mut tcpie, Duration::from_secs(10)).await;
    assert!(received.spans().is_empty());
}

/// Median latency of `n` sequential requests, and the server's dropped-span count.
async fn latency(tcpie: &Tcpie, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let reply = request(tcpie.tcp, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

async fn unreachable_collector_costs_nothing(endpoint: String) {
    let base_env: [(&str, &str); 2] = [("TCPIE_BURST", "0"), ("TCPIE_SHUTDOWN_TIMEOUT_MS", "2000")];
    let mut baseline = spawn(&[], &base_env);
    let mut env = base_env.to_vec();
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
    ]);
    let mut traced = spawn(&[], &env);
    // Interleave the two so machine noise hits both alike.
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        base.push(latency(&baseline, 40).await);
        with.push(latency(&traced, 40).await);
    }
    base.sort();
    with.sort();
    let (base, with) = (base[2], with[2]);
    assert!(
        with <= base * 3 + Duration::from_millis(2),
        "median {with:?} against {base:?}"
    );
    // The spans were dropped, and counted.
    sleep(Duration::from_millis(800)).await;
    let (_, metrics) = traced.admin("/metrics").await;
    assert!(
        metric_value(&metrics, "tcpie_trace_spans_dropped_total").unwrap() > 0.0,
        "{metrics}"
    );
    // Logged, but not once per failure.
    let log = traced.log.lock().unwrap().clone();
    assert!(log.matches("exporting spans failed").count() <= 2, "{log}");
    let started = Instant::now();
    stop(&mut traced, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    stop(&mut baseline, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_collector_that_is_down_costs_nothing() {
    // A port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    unreachable_collector_costs_nothing(format!("http://127.0.0.1:{port}")).await;
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_nothing() {
    // Accepts connections, reads nothing, answers nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    unreachable_collector_costs_nothing(format!("http://{addr}")).await;
    held.abort();
}

#[tokio::test]
async fn json_logs_parse_and_carry_the_trace_id() {
    let (collector, _received) = grpc_receiver().await;
    let endpoint = format!("http://{collector}");
    let mut tcpie = spawn(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("TCPIE_LOG_FORMAT", "json"),
            ("RUST_LOG", "info,tcpie::request=debug"),
            ("TCPIE_BURST", "0"),
        ],
    );
    let head =
        format!("GET / HTTP/1.1\r\nHost: t\r\ntraceparent: 00-{TRACE_ID}-{PARENT_ID}-01\r\n\r\n");
    assert_eq!(
        request(tcpie.tcp, head.as_bytes()).await.unwrap().status,
        200
    );
    stop(&mut tcpie, Duration::from_secs(10)).await;
    let log = tcpie.log.lock().unwrap().clone();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message", "fields"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let finished = lines
        .iter()
        .find(|l| l["message"] == "request finished")
        .unwrap_or_else(|| panic!("no per-request line in\n{log}"));
    assert_eq!(finished["level"], "DEBUG");
    assert_eq!(finished["trace_id"], TRACE_ID);
    assert_eq!(finished["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(finished["fields"]["outcome"], "processed");
    // Start-up logs the configuration on one line, and both addresses.
    assert!(lines.iter().any(|l| l["message"] == "starting tcpie"
        && l["fields"]["config"]
            .as_str()
            .unwrap()
            .contains("workers=2")));
    assert!(lines
        .iter()
        .any(|l| l["message"] == "listening" && l["fields"]["admin"].is_string()));
}

#[tokio::test]
async fn nothing_per_request_is_logged_at_info() {
    let mut tcpie = spawn(&[], &[("TCPIE_BURST", "0"), ("RUST_LOG", "info")]);
    let before = tcpie.log.lock().unwrap().lines().count();
    for _ in 0..20 {
        request(tcpie.tcp, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
    }
    request(tcpie.tcp, b"BROKEN\r\n\r\n").await.unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(tcpie.log.lock().unwrap().lines().count(), before);
    stop(&mut tcpie, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn dry_run_marks_the_span_and_a_client_key_never_leaves_the_process() {
    let (collector, received) = grpc_receiver().await;
    let endpoint = format!("http://{collector}");
    let mut tcpie = spawn(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("RUST_LOG", "debug"),
            ("TCPIE_CLIENT_KEY", "header:Authorization"),
            ("TCPIE_CLIENT_RATE_PER_SECOND", "0.001"),
            ("TCPIE_CLIENT_BURST", "1"),
            ("TCPIE_RATE_LIMIT_DRY_RUN", "true"),
        ],
    );
    // Three requests with one credential: the second and third would be refused, and are
    // served.
    for _ in 0..3 {
        let reply = request(
            tcpie.tcp,
            b"GET / HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cr3t-token\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
    }
    let (_, metrics) = common::admin_get(tcpie.admin, "/metrics").await;
    stop(&mut tcpie, Duration::from_secs(10)).await;

    let spans = received.spans();
    let marked: Vec<String> = spans
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Server as i32)
        .map(
            |(_, s)| match attr(&s.attributes, "tcpie.rate_limit.dry_run_rejected") {
                Some(any_value::Value::StringValue(v)) => v.clone(),
                _ => String::new(),
            },
        )
        .collect();
    assert_eq!(
        marked.iter().filter(|m| *m == "client").count(),
        2,
        "{marked:?}"
    );
    // The key is hashed and dropped: not in a span, a log line or a metric.
    let everything = format!("{spans:?}{}{metrics}", tcpie.log.lock().unwrap());
    assert!(!everything.contains("s3cr3t"), "the credential leaked");
    assert!(everything.contains("tcpie_rate_limit_dry_run_rejections_total{limit=\"client\"} 2"));
}
