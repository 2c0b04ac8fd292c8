//! TCPie: an HTTP/1.1 server that protects itself under load, as a library.
//!
//! Each connection's request is read whole under an absolute deadline, then admitted in
//! two steps: a token bucket (the global one, and with `TCPIE_CLIENT_KEY` each client's
//! own: `429` when empty), then one of `TCPIE_WORKERS` permits or one of
//! `TCPIE_QUEUE_SIZE` places to wait for one, in FIFO order (`503` when both are full).
//! An admitted request runs your [`Handler`] under its permit and is answered. Metrics and
//! probes are served on a separate admin port, bounded apart from the TCP port.
//!
//! The binary `tcpie` is a thin wrapper around this crate, and an application embeds it
//! the same way: read a [`Config`], [`bind`] both listeners, call [`run`] with a
//! Prometheus registry, a handler and a future that says when to stop.
//!
//! ```no_run
//! use tcpie::{Config, Handler, Listeners, Request, Response};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     async fn handle(&self, request: &Request) -> Response {
//!         Response::text(200, format!("you asked for {}\n", request.path()))
//!     }
//! }
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_env()?;
//! let listeners = Listeners {
//!     tcp: tcpie::bind("127.0.0.1:8080".parse()?)?,
//!     admin: tcpie::bind("127.0.0.1:9090".parse()?)?,
//! };
//! let stop = tcpie::signals::install()?;
//! tcpie::run(config, listeners, prometheus::Registry::new(), Echo, stop).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Admission, deadlines, metrics, traces and the graceful stop stay TCPie's: a handler
//! only answers. `examples/embedded.rs` is a complete program.

mod admin;
mod admission;
pub mod config;
mod handler;
mod http;
mod lifecycle;
mod metrics;
mod ratelimit;
mod server;
pub mod telemetry;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::healthcheck;
pub use config::{Config, ConfigError, ConfigErrors};
pub use handler::{
    BodyError, Handler, Hello, Request, RequestBody, Response, ResponseStream, StreamError,
};
pub use lifecycle::signals;
pub use server::descriptors;

/// The listeners [`run`] serves, bound by the caller.
pub struct Listeners {
    /// The admission-controlled TCP port.
    pub tcp: TcpListener,
    /// The admin port: metrics and probes.
    pub admin: TcpListener,
}

/// Why [`run`] could not serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("registering metrics failed (is the registry shared with another server?): {0}")]
    Metrics(#[from] prometheus::Error),
    /// The fleet's Redis cannot be set up (its URL or its password file).
    #[error("{0}")]
    Redis(String),
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

/// Serves until `shutdown` resolves, then stops gracefully and returns.
///
/// The stop: readiness fails at once; after `TCPIE_SHUTDOWN_DELAY_MS` the listener
/// closes; every request already accepted is read, processed and answered within
/// `TCPIE_SHUTDOWN_TIMEOUT_MS`; past it, what is left is answered 503 (`shutting_down`).
/// Then the admin server stops. Metrics are registered in `registry`, which must not be
/// shared with another server.
pub async fn run<H: Handler>(
    config: Config,
    listeners: Listeners,
    registry: prometheus::Registry,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(config, listeners, registry, |_| handler, shutdown).await
}

/// [`run`] with the binary's handler as `config` says: forwarding to `TCPIE_UPSTREAM` when
/// it is set (upstream mode), the built-in [`Hello`] otherwise.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    registry: prometheus::Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    if let Some(target) = config.upstream().cloned() {
        let settings = config.clone();
        let make = move |metrics: &metrics::Metrics| {
            upstream::Upstream::new(&target, &settings, metrics.upstream.clone())
        };
        return run_with(config, listeners, registry, make, shutdown).await;
    }
    run(config, listeners, registry, Hello, shutdown).await
}

async fn run_with<H: Handler>(
    config: Config,
    listeners: Listeners,
    registry: prometheus::Registry,
    handler: impl FnOnce(&metrics::Metrics) -> H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = metrics::Metrics::register(&registry)?;
    let handler = handler(&metrics);
    let server_port = listeners.tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    let fleet = match config.redis_url() {
        Some(url) => {
            let fleet = ratelimit::fleet::Fleet::new(
                &config,
                url,
                metrics.fleet.clone(),
                tokio::time::Instant::now(),
            )
            .map_err(RunError::Redis)?;
            Some(Arc::new(fleet))
        }
        None => None,
    };
    let fleet_stop = CancellationToken::new();
    let refresher = fleet
        .clone()
        .map(|fleet| tokio::spawn(fleet.refresh(fleet_stop.clone())));
    let core = Arc::new(server::Core::new(config, metrics, server_port, fleet));

    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        core.clone(),
        registry,
        admin_stop.clone(),
    ));
    let connections = TaskTracker::new();
    let accept = tokio::spawn(server::accept_loop(
        core.clone(),
        Arc::new(handler),
        listeners.tcp,
        connections.clone(),
    ));

    shutdown.await;
    let running = lifecycle::stop::Running {
        accept,
        connections,
        admin,
        admin_stop,
    };
    let server = lifecycle::stop::Server {
        lifecycle: &core.lifecycle,
        config: &core.config,
        metrics: &core.metrics,
        close_pool: || core.pool().close(),
    };
    lifecycle::stop::stop(server, running).await;
    // Once every request is answered, the lease goes back and the pod leaves the fleet.
    fleet_stop.cancel();
    if let Some(refresher) = refresher {
        let _ = refresher.await;
    }
    Ok(())
}

/// What the tests, benchmarks and fuzz targets reach inside the crate. Not part of the
/// interface: it changes without notice.
#[doc(hidden)]
pub mod internal {
    pub use crate::admission::pool::{Entry, Permit, Pool, Wait};
    pub use crate::http::chunked::Decoder;
    pub use crate::http::date::format_line;
    pub use crate::http::{header_value, parse_head, Body, Parsed, MAX_BODY_BYTES};
    pub use crate::metrics::{Metrics, Outcome};
    pub use crate::ratelimit::client_key::{forwarded, Identity};
    pub use crate::ratelimit::client_table::ClientTable;
    pub use crate::ratelimit::fleet::lease::{grant, Granted};
    pub use crate::ratelimit::gcra::{Gcra, TokenBucket};
}
