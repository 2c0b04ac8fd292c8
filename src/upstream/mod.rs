//! Upstream mode (`TCPIE_UPSTREAM`): TCPie in front of another HTTP service, as a
//! [`Handler`] like any other. Admission is unchanged; an admitted request is forwarded
//! under its permit, which is held until the upstream's answer is written to the client, so
//! `TCPIE_WORKERS` is exactly the concurrency the upstream sees.
//!
//! The parts: [`headers`] (what a careful proxy passes on and what it drops) and [`client`]
//! (hyper's client, its pool, and the connections counted). Bodies stream both ways, never
//! held whole: the request's from the client's connection as it arrives, the response's
//! from the upstream as it comes, each re-framed by TCPie. A failure before the response
//! head is a 502 (`upstream_error`), no head in time a 504 (`upstream_timeout`); a body
//! that breaks off part way closes the client's connection without a forged end.

mod client;
mod headers;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tokio::time::{sleep, timeout, Instant, Sleep};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{Config, Upstream as UpstreamTarget};
use crate::handler::{Failure, Handler, Request, Response, ResponseStream, StreamError};
use crate::metrics::{ConnectionEvent, UpstreamClass, UpstreamMetrics};
use crate::telemetry::REQUEST_TARGET;
use client::{UpstreamClient, Uses};

/// The handler that forwards every admitted request to the upstream.
pub(crate) struct Upstream {
    client: UpstreamClient,
    authority: String,
    host: String,
    port: u16,
    /// To the response head, and between pieces of the response body.
    timeout: Duration,
    metrics: UpstreamMetrics,
}

impl Upstream {
    /// Forwarding to `target`, with the timeouts and the pool size of `config`.
    pub fn new(target: &UpstreamTarget, config: &Config, metrics: UpstreamMetrics) -> Upstream {
        Upstream {
            client: client::build(
                Duration::from_millis(config.upstream_connect_timeout_ms),
                Duration::from_millis(config.upstream_idle_timeout_ms),
                config.workers,
                metrics.clone(),
            ),
            authority: target.authority.clone(),
            host: target.host.clone(),
            port: target.port,
            timeout: Duration::from_millis(config.upstream_timeout_ms),
            metrics,
        }
    }

    fn fail(&self, span: &tracing::Span, class: UpstreamClass, error: &str) -> Response {
        self.metrics.request(class);
        span.record("error.type", error);
        span.record("otel.status_code", "ERROR");
        Response::failed(if class == UpstreamClass::Timeout {
            Failure::UpstreamTimeout
        } else {
            Failure::UpstreamError
        })
    }
}

impl Handler for Upstream {
    fn streams_body(&self) -> bool {
        true
    }

    async fn handle(&self, request: &Request) -> Response {
        if headers::asks_upgrade(request.head()) {
            return Response::text(
                501,
                "protocol upgrades (WebSocket, h2c) are not forwarded by TCPie\n",
            );
        }
        // Origin form for the upstream; the absolute form a client may send becomes it.
        let target = request.path();
        let path = match target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
            None if target.starts_with('/') => target,
            None => return Response::text(501, "only origin-form targets are forwarded\n"),
        };
        let span = tracing::debug_span!(
            target: REQUEST_TARGET,
            "upstream",
            otel.name = request.method(),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = request.method(),
            server.address = self.host.as_str(),
            server.port = i64::from(self.port),
            url.full = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
        );
        let traced = !span.is_disabled();
        let mut fields = headers::request_fields(request.head(), request.peer().ip(), traced);
        if traced {
            span.record("url.full", format!("http://{}{path}", self.authority));
            let context = span.context();
            if context.span().span_context().is_valid() {
                TraceContextPropagator::new().inject_context(&context, &mut Fields(&mut fields));
            }
        }
        if !fields.contains_key(http::header::HOST) {
            if let Ok(host) = http::HeaderValue::from_str(&self.authority) {
                fields.insert(http::header::HOST, host);
            }
        }
        let uri = format!("http://{}{path}", self.authority);
        let Some(body) = request.take_body() else {
            return self.fail(&span, UpstreamClass::Error, "no_body");
        };
        let mut forward = http::Request::new(body);
        *forward.method_mut() = match http::Method::from_bytes(request.method().as_bytes()) {
            Ok(method) => method,
            Err(_) => return Response::text(501, "method not forwarded\n"),
        };
        *forward.uri_mut() = match uri.parse() {
            Ok(uri) => uri,
            Err(_) => return Response::text(400, "request target not forwarded\n"),
        };
        *forward.headers_mut() = fields;
        let started = Instant::now();
        let answer = timeout(self.timeout, self.client.request(forward))
            .instrument(span.clone())
            .await;
        let response = match answer {
            Err(_) => return self.fail(&span, UpstreamClass::Timeout, "timeout"),
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    "connect"
                } else {
                    "response"
                };
                tracing::debug!(target: REQUEST_TARGET, parent: &span, error = %e, "upstream failed");
                return self.fail(&span, UpstreamClass::Error, kind);
            }
            Ok(Ok(response)) => response,
        };
        self.metrics
            .head_duration
            .observe(started.elapsed().as_secs_f64());
        let status = response.status().as_u16();
        self.metrics.request(UpstreamClass::of_status(status));
        if response
            .extensions()
            .get::<Uses>()
            .is_some_and(Uses::reused)
        {
            self.metrics.connection(ConnectionEvent::Reused);
        }
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        let (parts, incoming) = response.into_parts();
        // The length a HEAD or 304 answer states is the representation's: keep it.
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| incoming.size_hint().exact());
        let body = Watched {
            inner: incoming,
            idle: self.timeout,
            timer: Box::pin(sleep(self.timeout)),
            started,
            metrics: self.metrics.clone(),
            span: Some(span),
        };
        let mut answer = Response::streaming(
            status,
            ResponseStream {
                length,
                body: Box::pin(body),
            },
        );
        answer.headers = headers::response_fields(&parts.headers);
        answer.marks.from_upstream = true;
        answer
    }
}

/// The upstream's response body on its way to the client: a piece must come within the
/// upstream timeout (a stalled upstream would otherwise hold the permit), and the end, or
/// the break, is counted. The upstream span ends with it.
struct Watched {
    inner: hyper::body::Incoming,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    started: Instant,
    metrics: UpstreamMetrics,
    span: Option<tracing::Span>,
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body stopped for longer than TCPIE_UPSTREAM_TIMEOUT_MS")]
struct Stalled;

impl Body for Watched {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.broke("body");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.metrics
                    .response_duration
                    .observe(this.started.elapsed().as_secs_f64());
                this.span = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.broke("body_timeout");
                    Poll::Ready(Some(Err(Box::new(Stalled))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Watched {
    fn broke(&mut self, error: &str) {
        self.metrics.truncated.inc();
        if let Some(span) = self.span.take() {
            span.record("error.type", error);
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The forwarded request's fields, as the propagator writes the trace context into them.
struct Fields<'a>(&'a mut http::HeaderMap);

impl Injector for Fields<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
