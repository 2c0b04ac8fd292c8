//! The admin port's connections: accepted, bounded and timed so that nobody who can reach
//! the port can take the probes, or the process, down with it.
//!
//! Prometheus and the kubelet are not the only ones who can connect: so can every pod a
//! NetworkPolicy lets in. So each connection has a deadline for its request head
//! (`TCPIE_ADMIN_READ_TIMEOUT_MS`, from the accept or from a kept-alive connection's next
//! byte) and an idle timeout between requests (`TCPIE_ADMIN_IDLE_TIMEOUT_MS`), and at most
//! `TCPIE_ADMIN_MAX_CONNECTIONS` are open, a number of descriptors of its own that the TCP
//! port never shares. A new connection over the cap makes room by closing the oldest one
//! that is not being answered: one whose head is under way (and stalls) or that idles,
//! else one that has sent nothing for a grace of 50 ms. A slow client thus loses its place
//! to the probe that just arrived, instead of the probe waiting behind it; a head already
//! complete at the accept counts as being answered. While nothing can go, new connections
//! wait in the kernel's backlog, where their heads arrive.
//!
//! HTTP/1.1 itself is hyper's; the routes are axum's ([`super`]). This file decides only
//! which connections live.

use std::collections::VecDeque;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::Config;
use crate::metrics::{AdminShed, Metrics};
use crate::server::AcceptErrors;

/// How long connections still open at shutdown may finish what they are answering.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Largest request head hyper buffers on the admin port (its smallest allowed buffer is
/// 8 KiB; probes and scrapes send a few hundred bytes).
const MAX_BUFFER: usize = 16 * 1024;

/// The admin port's bounds, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        Limits {
            max_connections: config.admin_max_connections,
            read_timeout: Duration::from_millis(config.admin_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.admin_idle_timeout_ms),
        }
    }
}

/// Where a connection is: what its clock measures, and whether it may be closed for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted, no byte yet: the read deadline runs from the accept.
    Waiting,
    /// Part of a request head received: the read deadline runs (from the accept, or from
    /// a kept-alive connection's first byte).
    Head,
    /// Being answered: never closed for room.
    Busy,
    /// Between requests: the idle timeout runs.
    Idle,
}

/// One connection's phase, shared by its task, its socket and the accept loop.
struct Watch {
    state: Mutex<(Phase, Instant)>,
    changed: Notify,
    evict: Notify,
    done: AtomicBool,
}

impl Watch {
    fn new(phase: Phase, now: Instant) -> Watch {
        Watch {
            state: Mutex::new((phase, now)),
            changed: Notify::new(),
            evict: Notify::new(),
            done: AtomicBool::new(false),
        }
    }

    fn get(&self) -> (Phase, Instant) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = (phase, Instant::now());
        self.changed.notify_waiters();
    }

    /// Bytes arrived: they start a head (on a kept-alive connection, its deadline too).
    fn bytes_read(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match state.0 {
            Phase::Waiting => state.1,
            Phase::Idle => Instant::now(),
            Phase::Head | Phase::Busy => return,
        };
        *state = (Phase::Head, since);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Resolves with the phase whose time ran out.
    async fn expired(&self, limits: Limits) -> Phase {
        loop {
            // Made before the phase is read, so that a change in between is not missed.
            let changed = self.changed.notified();
            let (phase, since) = self.get();
            let limit = match phase {
                Phase::Waiting | Phase::Head => limits.read_timeout,
                Phase::Idle => limits.idle_timeout,
                Phase::Busy => {
                    changed.await;
                    continue;
                }
            };
            tokio::select! {
                _ = sleep_until(since + limit) => {
                    if self.get() == (phase, since) {
                        return phase;
                    }
                }
                _ = changed => {}
            }
        }
    }
}

/// The socket, telling its watch when bytes arrive.
struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How long a connection that has sent nothing yet keeps its place against newer ones: a
/// client that has just connected is about to write its head.
const GRACE: Duration = Duration::from_millis(50);

/// Frees a place under the cap if none is free, closing the connection that should go
/// first, and waits while none may go yet; false if `stop` fired meanwhile.
async fn make_room(
    open: &mut VecDeque<Arc<Watch>>,
    limits: Limits,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> bool {
    loop {
        open.retain(|w| !w.done.load(Ordering::Acquire));
        if open.len() < limits.max_connections {
            return true;
        }
        let now = Instant::now();
        // The oldest of those that have shown what they are (a head under way, an idle
        // keep-alive), else the oldest silent one past its grace.
        let mut retry = now + Duration::from_millis(1);
        let mut victim = None;
        for (i, w) in open.iter().enumerate() {
            let (phase, since) = w.get();
            match phase {
                Phase::Head | Phase::Idle => {
                    victim = Some(i);
                    break;
                }
                Phase::Waiting if since + GRACE <= now => {
                    victim = victim.or(Some(i));
                }
                Phase::Waiting => retry = retry.min(since + GRACE),
                Phase::Busy => {}
            }
        }
        if let Some(w) = victim.and_then(|i| open.remove(i)) {
            w.evict.notify_one();
            metrics.admin_shed(AdminShed::Evicted);
            return true;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return false,
            _ = sleep_until(retry) => {}
        }
    }
}

/// A new connection's phase, from what already waits in its socket (looked at without
/// reading it, and without waiting): a whole head (a probe's or a scrape's, sent as it
/// connected) is as good as being answered, so no newer connection may take its place
/// before its task reads it; part of a head is a head under way; nothing is nothing yet.
fn first_phase(stream: &TcpStream) -> Phase {
    let mut space = [0u8; 4096];
    let mut peeked = ReadBuf::new(&mut space);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_peek(&mut cx, &mut peeked) {
        Poll::Ready(Ok(_)) if peeked.filled().windows(4).any(|w| w == b"\r\n\r\n") => Phase::Busy,
        Poll::Ready(Ok(n)) if n > 0 => Phase::Head,
        _ => Phase::Waiting,
    }
}

/// Serves `router` on `listener` until `stop` fires, then lets open connections finish
/// what they are answering (for up to a second).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Metrics,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    // Open connections in accept order, oldest first.
    let mut open: VecDeque<Arc<Watch>> = VecDeque::with_capacity(limits.max_connections + 1);
    let mut errors = AcceptErrors::new("admin");
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                errors.accepted();
                stream
            }
            Err(error) => {
                metrics.accept_errors.inc();
                if let Some(wait) = errors.failed(&error, Instant::now()).wait {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = sleep(wait) => {}
                    }
                }
                continue;
            }
        };
        // At the cap, the connection just accepted waits for a place (and further ones
        // wait in the kernel's backlog, where their heads arrive meanwhile).
        if !make_room(&mut open, limits, &metrics, &stop).await {
            break;
        }
        let phase = first_phase(&stream);
        let watch = Arc::new(Watch::new(phase, Instant::now()));
        open.push_back(watch.clone());
        connections.spawn(connection(
            stream,
            router.clone(),
            watch,
            limits,
            metrics.clone(),
            stop.clone(),
        ));
        // Let the new connection read its head (a probe's is there at once) before the
        // next accept could take its place.
        tokio::task::yield_now().await;
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One admin connection, until it closes, runs out of time, is closed for room, or the
/// server stops.
async fn connection(
    stream: TcpStream,
    router: Router,
    watch: Arc<Watch>,
    limits: Limits,
    metrics: Metrics,
    stop: CancellationToken,
) {
    metrics.admin_connections_open.inc();
    let _ = stream.set_nodelay(true);
    let answering = watch.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        answering.set(Phase::Busy);
        let mut router = router.clone();
        let watch = answering.clone();
        async move {
            let response = router.call(request.map(Body::new)).await;
            watch.set(Phase::Idle);
            response
        }
    });
    let io = TokioIo::new(Watched {
        stream,
        watch: watch.clone(),
    });
    let mut conn = pin!(http1::Builder::new()
        .max_buf_size(MAX_BUFFER)
        .keep_alive(true)
        .serve_connection(io, service));
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = watch.evict.notified() => {}
        phase = watch.expired(limits) => {
            if phase != Phase::Idle {
                metrics.admin_shed(AdminShed::ReadTimeout);
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
    watch.done.store(true, Ordering::Release);
    metrics.admin_connections_open.dec();
}
