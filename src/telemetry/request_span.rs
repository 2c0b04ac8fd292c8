//! The span of one request: its name, kind and attributes after the OpenTelemetry HTTP and
//! network semantic conventions, plus TCPie's own `tcpie.*` attributes.
//!
//! A span is made for every request, rejected ones included, so a trace shows why a
//! request was refused. A `traceparent` (and `tracestate`) header makes it the child of
//! the caller's span. When no exporter listens (see `telemetry`), the span is disabled at
//! its call site and every method here returns at once.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::REQUEST_TARGET;
use crate::handler::Request;
use crate::metrics::Outcome;

/// The server span of one request.
#[derive(Clone)]
pub(crate) struct RequestSpan(Span);

impl RequestSpan {
    pub fn new(peer: std::net::SocketAddr, server_port: u16, connection_id: u64) -> RequestSpan {
        let span = tracing::debug_span!(
            target: REQUEST_TARGET,
            "request",
            otel.name = "HTTP",
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = Empty,
            url.path = Empty,
            http.response.status_code = Empty,
            network.peer.address = Empty,
            network.peer.port = Empty,
            server.port = i64::from(server_port),
            network.protocol.version = Empty,
            error.type = Empty,
            tcpie.outcome = Empty,
            tcpie.queue_wait_ms = Empty,
            tcpie.rate_limit.dry_run_rejected = Empty,
            tcpie.connection_id = i64::try_from(connection_id).unwrap_or(i64::MAX),
        );
        if !span.is_disabled() {
            span.record("network.peer.address", peer.ip().to_string());
            span.record("network.peer.port", i64::from(peer.port()));
        }
        RequestSpan(span)
    }

    /// Records what the head said, and joins the caller's trace if it sent one.
    pub fn request(&self, request: &Request) {
        let span = &self.0;
        if span.is_disabled() {
            return;
        }
        let parent = TraceContextPropagator::new().extract(&Headers(request));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let method = request.method();
        span.record("otel.name", method);
        span.record("http.request.method", method);
        let path = request.path();
        span.record("url.path", path.split_once('?').map_or(path, |(p, _)| p));
        span.record("network.protocol.version", request.version());
    }

    /// The child span of the wait for a worker; it ends when dropped.
    pub fn queue_span(&self) -> Span {
        tracing::debug_span!(target: REQUEST_TARGET, parent: &self.0, "queue")
    }

    /// The child span of the worker's processing.
    pub fn process_span(&self) -> Span {
        tracing::debug_span!(target: REQUEST_TARGET, parent: &self.0, "process")
    }

    /// The wait for a permit ended (at once, or after queueing).
    pub fn queued(&self, wait: std::time::Duration) {
        if !self.0.is_disabled() {
            self.0
                .record("tcpie.queue_wait_ms", wait.as_secs_f64() * 1000.0);
        }
    }

    /// A rate limit would have refused the request, which dry run serves.
    pub fn dry_run_rejected(&self, limit: crate::ratelimit::Limit) {
        if !self.0.is_disabled() {
            self.0
                .record("tcpie.rate_limit.dry_run_rejected", limit.as_str());
        }
    }

    /// The client closed after sending part of a request.
    pub fn closed_early(&self) {
        if !self.0.is_disabled() {
            self.0.record("tcpie.outcome", "closed_before_request");
        }
    }

    /// Records how the request ended; the span ends when this value is dropped.
    pub fn finish(&self, outcome: Outcome, status: Option<u16>) {
        let span = &self.0;
        if span.is_disabled() {
            return;
        }
        span.record("tcpie.outcome", outcome.as_str());
        if let Some(status) = status {
            span.record("http.response.status_code", i64::from(status));
            // Server spans: 4xx is the client's doing and leaves the status unset.
            if status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
        }
        let error_type = match (outcome, status) {
            (Outcome::ReadTimeout, _) => Some("timeout".to_string()),
            (Outcome::WriteError, _) => Some("write_error".to_string()),
            (_, Some(s)) if s >= 400 => Some(s.to_string()),
            _ => None,
        };
        if let Some(error_type) = error_type {
            span.record("error.type", error_type);
        }
        tracing::debug!(
            target: REQUEST_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            status,
            "request finished"
        );
    }
}

/// The request's headers, as the propagator reads them.
struct Headers<'a>(&'a Request);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}
