//! TCPie: a TCP server that protects itself under load.
//!
//! Each connection's HTTP/1.1 request is read under an absolute deadline, then admitted
//! in two steps: a token bucket ([`ratelimit`], 429 when empty), then one of
//! `TCPIE_WORKERS` permits or one of `TCPIE_QUEUE_SIZE` places to wait for one, FIFO
//! ([`pool`], 503 when both are full). An admitted request runs a [`Handler`] in its own
//! connection's task ([`server`]) and is answered. Metrics and probes are served by a
//! separate admin server ([`admin`], [`metrics`]); configuration comes from the
//! environment ([`config`]); [`shutdown`] turns signals into the phases of
//! [`lifecycle`], a graceful drain.
//!
//! The binary is a thin wrapper: read the [`Config`], set up [`telemetry`], [`bind`] both
//! listeners and call [`run`]. Tests and embedding applications do the same with listeners
//! bound to `127.0.0.1:0`, their own registry, handler and shutdown future.

pub mod admin;
pub mod chunked;
pub mod client_key;
pub mod clients;
pub mod config;
pub mod date;
pub mod descriptors;
pub mod handler;
pub mod healthcheck;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod pool;
pub mod ratelimit;
mod request_span;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod trace_export;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use lifecycle::Phase;

pub use config::{Config, ConfigError, ConfigErrors, LogFormat};
pub use handler::{Handler, Hello, Request, Response};
pub use metrics::{Limit, Metrics, Outcome};

/// The listeners `run` serves, bound by the caller.
pub struct Listeners {
    /// The admission-controlled TCP port.
    pub tcp: TcpListener,
    /// The admin port: metrics and probes.
    pub admin: TcpListener,
}

/// Why `run` could not serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("registering metrics failed (is the registry shared with another server?): {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The listen backlog: connections beyond `TCPIE_MAX_CONNECTIONS` wait here.
const BACKLOG: u32 = 4096;

/// Binds a listener the way TCPie does (address reuse, a deep backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves until `shutdown` resolves, then drains and returns.
///
/// The stop sequence: readiness fails at once; after `TCPIE_SHUTDOWN_DELAY_MS` the
/// listener closes; every request already accepted is read, processed and answered
/// within `TCPIE_SHUTDOWN_TIMEOUT_MS`; past it, what is left is answered 503
/// (`shutting_down`). Then the admin server stops.
pub async fn run<H: Handler>(
    config: Config,
    listeners: Listeners,
    registry: prometheus::Registry,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Metrics::register(&registry)?;
    let server_port = listeners.tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    let core = Arc::new(server::Core::new(config, metrics, server_port));
    let handler = Arc::new(handler);

    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        core.clone(),
        registry,
        admin_stop.clone(),
    ));

    let connections = TaskTracker::new();
    // One accept loop: a second one on the same listener was measured (bench/RESULTS.md)
    // and cost more than it spread, both loops being woken for every connection.
    let accept = tokio::spawn(server::accept_loop(
        core.clone(),
        handler,
        Arc::new(listeners.tcp),
        connections.clone(),
    ));

    shutdown.await;
    core.lifecycle.advance(Phase::Stopping);
    let delay = core.config.shutdown_delay();
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "shutdown: stop signal received, readiness now fails"
    );
    if !delay.is_zero() {
        sleep(delay).await;
    }

    core.lifecycle.advance(Phase::Draining);
    let _ = accept.await;
    connections.close();
    let drain = core.config.shutdown_timeout();
    tracing::info!(
        open = connections.len(),
        drain_timeout_ms = drain.as_millis() as u64,
        "shutdown: listener closed, draining accepted requests"
    );
    // Answers still being written after the hard stop get their write deadline, no more.
    let grace = core.config.write_timeout() + std::time::Duration::from_millis(100);
    if timeout(drain, connections.wait()).await.is_err() {
        tracing::warn!(
            left = connections.len(),
            "shutdown: drain deadline passed, answering what is left with 503"
        );
        core.lifecycle.advance(Phase::HardStop);
        core.pool().close();
        if timeout(grace, connections.wait()).await.is_err() {
            tracing::warn!(
                left = connections.len(),
                "shutdown: abandoning unanswered connections"
            );
        }
    }
    core.lifecycle.advance(Phase::HardStop);
    tracing::info!("shutdown: requests drained, workers stopped");
    admin_stop.cancel();
    match admin.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "admin server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "admin server task failed"),
    }
    // The final counters, so that every accepted connection can be accounted for even
    // after the last scrape.
    let m = &core.metrics;
    let answered: u64 = Outcome::ALL.iter().map(|o| m.requests(*o)).sum();
    tracing::info!(
        accepted = m.connections_accepted.get(),
        requests = answered,
        processed = m.requests(Outcome::Processed),
        rate_limited = m.requests(Outcome::RateLimited),
        queue_full = m.requests(Outcome::QueueFull),
        read_timeout = m.requests(Outcome::ReadTimeout),
        bad_request = m.requests(Outcome::BadRequest),
        header_too_large = m.requests(Outcome::HeaderTooLarge),
        write_error = m.requests(Outcome::WriteError),
        shutting_down = m.requests(Outcome::ShuttingDown),
        queue_timeout = m.requests(Outcome::QueueTimeout),
        closed_before_request = m.connections_closed_before_request.get(),
        "shutdown: complete"
    );
    Ok(())
}
