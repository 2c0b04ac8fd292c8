//! The connections to the upstream: hyper's HTTP/1.1 client connections, kept alive in a
//! small pool of idle ones (at most one a permit, each closed after
//! `TCPIE_UPSTREAM_IDLE_TIMEOUT_MS`), made on demand within
//! `TCPIE_UPSTREAM_CONNECT_TIMEOUT_MS`, the upstream's name resolved again for every new
//! connection (as a Kubernetes Service needs).
//!
//! A connection goes back to the pool only once the response on it has been read to its
//! end, the only point at which HTTP/1.1 can carry another request on it; a response that
//! breaks off takes its connection with it. A request that finds its idle connection closed
//! by the upstream before a byte of it was sent is sent again, once, on a new one; so is an
//! idempotent request without a body that went out as the upstream closed it (a FIN or a
//! reset before any answer).

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use crate::handler::RequestBody;
use crate::metrics::{ConnectionEvent, UpstreamMetrics};

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream failed before its response head: {0}")]
    Response(#[from] hyper::Error),
}

/// The pool of one upstream.
pub(crate) struct Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Idle connections, the most recently used last (reused first: it is the warmest).
    idle: Mutex<Vec<(SendRequest<RequestBody>, Instant)>>,
    metrics: UpstreamMetrics,
}

/// A connection lent to one request, given back when its response has been read whole.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    sender: Option<SendRequest<RequestBody>>,
}

impl Lease {
    /// The response was read to its end: the connection may carry another request.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.give_back(sender);
        }
    }
}

impl Pool {
    /// The pool, and a task that closes connections idle for longer than `idle_timeout`.
    pub fn new(
        host: String,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        metrics: UpstreamMetrics,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            host,
            port,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            metrics,
        });
        tokio::spawn(sweep(Arc::downgrade(&pool), idle_timeout));
        pool
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(SendRequest<RequestBody>, Instant)>> {
        // Every change is one push, pop or retain: a poisoned lock holds a valid list.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn give_back(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
        }
    }

    /// The most recently used idle connection not yet idle too long, if one is.
    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let now = Instant::now();
        let mut idle = self.idle();
        while let Some((sender, since)) = idle.pop() {
            if self.reusable(&sender, since, now) {
                return Some(sender);
            }
        }
        None
    }

    /// Whether an idle connection may still carry a request: open, and idle for less than
    /// the idle timeout.
    fn reusable(&self, sender: &SendRequest<RequestBody>, since: Instant, now: Instant) -> bool {
        now.duration_since(since) < self.idle_timeout && !sender.is_closed()
    }

    /// An idle connection ready for a request. One given back the moment its response
    /// ended may not be ready yet (its task has still to see the end): it is waited for,
    /// not thrown away; one the upstream closed is.
    async fn reuse(&self) -> Option<SendRequest<RequestBody>> {
        while let Some(mut sender) = self.checkout() {
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, SendError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.metrics.connection(ConnectionEvent::Failed);
                return Err(SendError::Connect(e.to_string()));
            }
            Err(_) => {
                self.metrics.connection(ConnectionEvent::Failed);
                return Err(SendError::Connect(format!(
                    "no connection within {} ms (TCPIE_UPSTREAM_CONNECT_TIMEOUT_MS)",
                    self.connect_timeout.as_millis()
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .inspect_err(|_| self.metrics.connection(ConnectionEvent::Failed))?;
        self.metrics.connection(ConnectionEvent::Opened);
        // The connection's own task: it ends when the sender is dropped (closed for
        // good, or idle too long) or the upstream closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends `request` on an idle connection, or a new one; the response head, and the
    /// connection to give back once its body has been read. `again` makes the request
    /// anew (without a body) if an idempotent one must be sent again.
    pub async fn send(
        self: &Arc<Pool>,
        mut request: http::Request<RequestBody>,
        again: impl FnOnce() -> Option<http::Request<RequestBody>>,
    ) -> Result<(http::Response<Incoming>, Lease), SendError> {
        if let Some(mut sender) = self.reuse().await {
            self.metrics.connection(ConnectionEvent::Reused);
            // The upstream may close an idle connection just as the request goes out on
            // it (its keep-alive timeout racing ours). An idempotent request without a
            // body is then safe to send again (RFC 9112 §9.3.1): made anew, so that no
            // copy of it is kept for the rare race.
            let replayable = request.method().is_idempotent() && request.body().is_end_stream();
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(sender))),
                // Closed by the upstream while idle, before a byte of the request went:
                // sent again, once, on a new connection.
                Err(mut e) => match e.take_message() {
                    Some(unsent) if e.error().is_canceled() || e.error().is_closed() => {
                        request = unsent;
                    }
                    // Sent, and the connection closed (a FIN, or a reset: the upstream
                    // closed with our request unread) before a byte of an answer.
                    None if replayable && closed_before_answer(e.error()) => match again() {
                        Some(anew) => request = anew,
                        None => return Err(SendError::Response(e.into_error())),
                    },
                    _ => return Err(SendError::Response(e.into_error())),
                },
            }
        }
        // Boxed: a new connection is rare, and its future (a name lookup, a connect, a
        // handshake) would otherwise make every request's future as large as it.
        let mut sender = Box::pin(self.connect()).await?;
        let response = sender.send_request(request).await?;
        Ok((response, self.lease(sender)))
    }

    fn lease(self: &Arc<Pool>, sender: SendRequest<RequestBody>) -> Lease {
        Lease {
            pool: self.clone(),
            sender: Some(sender),
        }
    }
}

/// Whether a request's connection ended before any answer: closed cleanly part way, or
/// reset (an upstream that closes a connection with a request unread resets it).
fn closed_before_answer(error: &hyper::Error) -> bool {
    use std::error::Error as _;
    error.is_incomplete_message()
        || error
            .source()
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                )
            })
}

/// Closes the connections idle for longer than `idle_timeout`, until the pool goes.
async fn sweep(pool: Weak<Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        pool.idle()
            .retain(|(sender, since)| pool.reusable(sender, *since, now));
    }
}
