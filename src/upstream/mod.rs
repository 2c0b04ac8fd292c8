//! Upstream mode (`TCPIE_UPSTREAM`): TCPie in front of another HTTP service, as a
//! [`Handler`] like any other. Admission is unchanged; an admitted request is forwarded
//! under its permit, which is held until the upstream's answer is written to the client, so
//! `TCPIE_WORKERS` is exactly the concurrency the upstream sees.
//!
//! The parts: [`headers`] (what a careful proxy passes on and what it drops) and [`client`]
//! (the pool of kept-alive connections to the upstream, and the connections counted). Bodies stream both ways, never
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
use hyper::body::Incoming;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tokio::time::error::Elapsed;
use tokio::time::{sleep, timeout, Instant, Sleep};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{Config, Upstream as UpstreamTarget};
use crate::handler::{
    Failure, Handler, Request, RequestBody, Response, ResponseStream, StreamError,
};
use crate::metrics::{UpstreamClass, UpstreamMetrics};
use crate::telemetry::REQUEST_TARGET;
use client::{Lease, Pool, SendError};

/// The handler that forwards every admitted request to the upstream.
pub(crate) struct Upstream {
    pool: std::sync::Arc<Pool>,
    authority: String,
    /// `Host` for a request that has none (HTTP/1.0): the upstream's authority.
    host_field: http::HeaderValue,
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
            pool: Pool::new(
                target.host.clone(),
                target.port,
                Duration::from_millis(config.upstream_connect_timeout_ms),
                Duration::from_millis(config.upstream_idle_timeout_ms),
                config.workers,
                metrics.clone(),
            ),
            authority: target.authority.clone(),
            host_field: http::HeaderValue::from_str(&target.authority)
                .unwrap_or(http::HeaderValue::from_static("localhost")),
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
        // Built in a block so that nothing of the building lives on across the wait: this
        // future is moved a few times on its way to being polled, and stays small.
        let sent = {
            let Some(body) = request.take_body() else {
                return self.fail(&span, UpstreamClass::Error, "no_body");
            };
            let forward = match self.forward(request, &span, body) {
                Ok(forward) => forward,
                Err(not) => return not.answer(),
            };
            let span = &span;
            self.pool.send(forward, move || {
                self.forward(request, span, RequestBody::empty()).ok()
            })
        };
        let started = Instant::now();
        let answer = timeout(self.timeout, sent).instrument(span.clone()).await;
        self.answered(span, started, answer)
    }
}

impl Upstream {
    /// The request to forward to the upstream, with `body`; or why it is not forwarded.
    fn forward(
        &self,
        request: &Request,
        span: &tracing::Span,
        body: RequestBody,
    ) -> Result<http::Request<RequestBody>, NotForwarded> {
        // Origin form for the upstream; the absolute form a client may send becomes it.
        let target = request.path();
        let path = match target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
            None if target.starts_with('/') => target,
            None => return Err(NotForwarded::TargetForm),
        };
        let traced = !span.is_disabled();
        let Ok(mut fields) = headers::request_fields(
            request.head_bytes(),
            request.peer().ip(),
            traced,
            &self.host_field,
        ) else {
            return Err(NotForwarded::Upgrade);
        };
        if traced {
            span.record(
                "url.full",
                format!("http://{}{path}", self.authority).as_str(),
            );
            let context = span.context();
            if context.span().span_context().is_valid() {
                TraceContextPropagator::new().inject_context(&context, &mut Fields(&mut fields));
            }
        }
        let path = if path.len() == target.len() {
            request.path_bytes()
        } else {
            bytes::Bytes::copy_from_slice(path.as_bytes())
        };
        // Origin form on the wire (RFC 9112 §3.2.1): hyper's connection writes the URI as
        // given, and many servers (busybox httpd, for one) refuse the absolute form.
        let mut uri = http::uri::Parts::default();
        uri.path_and_query = http::uri::PathAndQuery::from_maybe_shared(path).ok();
        let mut forward = http::Request::new(body);
        *forward.method_mut() = match http::Method::from_bytes(request.method().as_bytes()) {
            Ok(method) => method,
            Err(_) => return Err(NotForwarded::Method),
        };
        *forward.uri_mut() = match http::Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(_) => return Err(NotForwarded::Target),
        };
        *forward.headers_mut() = fields;
        Ok(forward)
    }

    /// The answer to the client, from what the upstream answered (by `started` + the
    /// timeout, or not).
    fn answered(
        &self,
        span: tracing::Span,
        started: Instant,
        answer: Result<Result<(http::Response<Incoming>, Lease), SendError>, Elapsed>,
    ) -> Response {
        let (response, lease) = match answer {
            Err(_) => return self.fail(&span, UpstreamClass::Timeout, "timeout"),
            Ok(Err(e)) => {
                let kind = match e {
                    SendError::Connect(_) => "connect",
                    SendError::Response(_) => "response",
                };
                tracing::debug!(target: REQUEST_TARGET, parent: &span, error = %e, "upstream failed");
                return self.fail(&span, UpstreamClass::Error, kind);
            }
            Ok(Ok(answered)) => answered,
        };
        self.metrics
            .head_duration
            .observe(started.elapsed().as_secs_f64());
        let status = response.status().as_u16();
        self.metrics.request(UpstreamClass::of_status(status));
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        let (mut parts, incoming) = response.into_parts();
        // The length a HEAD or 304 answer states is the representation's: keep it.
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| incoming.size_hint().exact());
        // A body already at its end (a HEAD's, a 304's) is not read: the connection is
        // free now.
        let lease = if incoming.is_end_stream() {
            lease.release();
            None
        } else {
            Some(lease)
        };
        let body = Watched {
            inner: incoming,
            idle: self.timeout,
            timer: None,
            started,
            metrics: self.metrics.clone(),
            span: Some(span),
            lease,
        };
        let mut answer = Response::streaming(
            status,
            ResponseStream {
                length,
                body: Box::pin(body),
            },
        );
        headers::strip_response_fields(&mut parts.headers);
        answer.headers = parts.headers;
        answer.marks.from_upstream = true;
        answer
    }
}

/// Why a request is answered by TCPie rather than forwarded.
#[derive(Debug, Clone, Copy)]
enum NotForwarded {
    /// A protocol upgrade (WebSocket, `h2c`): a tunnel is not held under a permit.
    Upgrade,
    /// An authority-form or asterisk-form target.
    TargetForm,
    /// A method the HTTP library refuses.
    Method,
    /// A target the HTTP library refuses.
    Target,
}

impl NotForwarded {
    fn answer(self) -> Response {
        match self {
            NotForwarded::Upgrade => Response::text(
                501,
                "protocol upgrades (WebSocket, h2c) are not forwarded by TCPie\n",
            ),
            NotForwarded::TargetForm => {
                Response::text(501, "only origin-form targets are forwarded\n")
            }
            NotForwarded::Method => Response::text(501, "method not forwarded\n"),
            NotForwarded::Target => Response::text(400, "request target not forwarded\n"),
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream's response body on its way to the client: a piece must come within the
    /// upstream timeout (a stalled upstream would otherwise hold the permit), and the end,
    /// or the break, is counted. The upstream span ends with it.
    struct Watched {
        inner: Incoming,
        idle: Duration,
        // Made when a piece is first waited for: a body whose pieces are there when asked
        // (most small answers) never makes a timer.
        timer: Option<Pin<Box<Sleep>>>,
        started: Instant,
        metrics: UpstreamMetrics,
        span: Option<tracing::Span>,
        // Given back to the pool at the body's end; dropped (the connection with it) if
        // the body breaks off or the client goes first.
        lease: Option<Lease>,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body stopped for longer than TCPIE_UPSTREAM_TIMEOUT_MS")]
struct Stalled;

impl Body for Watched {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.project();
        match Pin::new(&mut *this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // The next piece has its own while to come.
                if let Some(timer) = this.timer {
                    timer.as_mut().reset(Instant::now() + *this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                broke(this.metrics, this.span, "body");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.metrics
                    .response_duration
                    .observe(this.started.elapsed().as_secs_f64());
                *this.span = None;
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = *this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        broke(this.metrics, this.span, "body_timeout");
                        Poll::Ready(Some(Err(Box::new(Stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that broke off: counted, and marked on the upstream span.
fn broke(metrics: &UpstreamMetrics, span: &mut Option<tracing::Span>, error: &str) {
    metrics.truncated.inc();
    if let Some(span) = span.take() {
        span.record("error.type", error);
        span.record("otel.status_code", "ERROR");
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
