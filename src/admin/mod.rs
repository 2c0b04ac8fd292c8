//! The admin server (axum): `/metrics`, `/livez` and `/readyz` on `TCPIE_ADMIN_PORT`.
//!
//! It runs on its own listener, never behind the admission path, so probes and scrapes
//! answer promptly while the TCP port sheds load; its connections are bounded and timed
//! apart from the TCP port's ([`server`]). Every answer says `Cache-Control: no-store`: a
//! cached probe or scrape would report a state that has passed. Readiness follows queue saturation and
//! shutdown; liveness fails only for a wedged worker pool, never for saturation alone
//! (restarting a saturated pod would make an overload worse). Readiness has no hysteresis:
//! each probe reads the queue as it is, and the kubelet's `failureThreshold` and
//! `successThreshold` smooth it.

use std::sync::Arc;

pub mod healthcheck;
mod server;

pub(crate) use server::Limits;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::server::Core;

#[derive(Clone)]
struct AdminState {
    core: Arc<Core>,
    registry: Registry,
}

/// The body of both probes.
#[derive(Debug, Serialize)]
struct ProbeBody {
    status: &'static str,
    queue_depth: usize,
    queue_capacity: usize,
    workers: usize,
    workers_busy: usize,
    tokens_available: f64,
    shutting_down: bool,
}

impl ProbeBody {
    fn new(core: &Core, status: &'static str) -> ProbeBody {
        ProbeBody {
            status,
            queue_depth: core.pool().depth(),
            queue_capacity: core.pool().queue_size(),
            workers: core.pool().workers(),
            workers_busy: core.pool().busy(),
            tokens_available: core.tokens(Instant::now()),
            shutting_down: core.shutting_down(),
        }
    }
}

/// The routes, for serving and for tests.
fn router(core: Arc<Core>, registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::map_response(no_store))
        .with_state(AdminState { core, registry })
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: the admin port serves /metrics, /livez and /readyz\n",
    )
        .into_response()
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves until `stop` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    core: Arc<Core>,
    registry: Registry,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let limits = Limits::new(&core.config);
    let metrics = core.metrics.clone();
    server::serve(listener, router(core, registry), limits, metrics, stop).await
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let core = &state.core;
    let m = &core.metrics;
    m.queue_depth.set(core.pool().depth() as i64);
    m.workers_busy.set(core.pool().busy() as i64);
    m.rate_limit_tokens.set(core.tokens(Instant::now()));
    m.rate_limit_clients
        .set(core.admission.limits().clients_tracked() as i64);
    m.ready.set(i64::from(core.ready()));
    let mut body = Vec::with_capacity(8 * 1024);
    let encoder = TextEncoder::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn livez(State(state): State<AdminState>) -> Response {
    if state.core.live(Instant::now()) {
        (StatusCode::OK, Json(ProbeBody::new(&state.core, "ok"))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ProbeBody::new(&state.core, "stalled")),
        )
            .into_response()
    }
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let core = &state.core;
    if core.ready() {
        (StatusCode::OK, Json(ProbeBody::new(core, "ready"))).into_response()
    } else {
        let status = if core.shutting_down() {
            "shutting down"
        } else {
            "saturated"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ProbeBody::new(core, status)),
        )
            .into_response()
    }
}
