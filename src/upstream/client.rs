//! The connections to the upstream: hyper's client and its pool (kept alive, reused, idle
//! ones closed after `TCPIE_UPSTREAM_IDLE_TIMEOUT_MS`), over a connector that resolves the
//! upstream's name for every new connection and counts what becomes of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::handler::RequestBody;
use crate::metrics::{ConnectionEvent, UpstreamMetrics};

/// The client of the upstream.
pub(crate) type UpstreamClient = Client<Counting, RequestBody>;

/// How many requests a connection has carried, seen in each response's extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Uses(Arc<AtomicU64>);

impl Uses {
    /// Counts a request on the connection; whether it came after another (a reuse).
    pub fn reused(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) > 0
    }
}

/// hyper's HTTP connector, counting connections opened and failed.
#[derive(Clone)]
pub(crate) struct Counting {
    http: HttpConnector,
    metrics: UpstreamMetrics,
}

/// A connection to the upstream, tagged so that its reuse shows.
pub(crate) struct Tagged {
    io: TokioIo<TcpStream>,
    uses: Uses,
}

impl Service<Uri> for Counting {
    type Response = Tagged;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Tagged, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            match connecting.await {
                Ok(io) => {
                    metrics.connection(ConnectionEvent::Opened);
                    Ok(Tagged {
                        io,
                        uses: Uses::default(),
                    })
                }
                Err(e) => {
                    metrics.connection(ConnectionEvent::Failed);
                    Err(e.into())
                }
            }
        })
    }
}

impl Connection for Tagged {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl Read for Tagged {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Tagged {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The client: connections made within `connect_timeout`, at most `idle_per_host` kept
/// idle (the permits bound how many are busy), each for `idle_timeout`.
pub(crate) fn build(
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle_per_host: usize,
    metrics: UpstreamMetrics,
) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(true);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(idle_per_host)
        .pool_timer(TokioTimer::new())
        // Host is the client's, as it sent it.
        .set_host(false)
        .build(Counting { http, metrics })
}
