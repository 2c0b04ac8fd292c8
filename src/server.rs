//! The TCP side: the accept loop, one task per connection, the worker pool, and the order
//! in which they stop.
//!
//! A connection task reads one request head under an absolute deadline (holding nothing
//! but its own connection), then asks for admission: a token from the bucket (else 429),
//! then a slot in the queue (else 503). An admitted request travels to a worker together
//! with its connection; the worker processes it, writes the response under the write
//! deadline, releases the slot and hands the connection back, so the connection task can
//! close it gracefully (send FIN, then read until the client closes) without holding a
//! worker. Every request ends with exactly one counted [`Outcome`].
//!
//! This module does not parse HTTP (`http`), decide admission arithmetic (`ratelimit`,
//! `queue`) or serve probes (`admin`).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::chunked;
use crate::config::Config;
use crate::date;
use crate::handler::{Handler, Request, Response};
use crate::http::{self, Answer, Body, Parsed, Reject};
use crate::metrics::{Metrics, Outcome};
use crate::queue::{Queue, Reservation};
use crate::ratelimit::{retry_after_secs, TokenBucket};
use crate::request_span::RequestSpan;

/// First read buffer of a connection, allocated only once the client has sent something.
const INITIAL_READ_BUFFER: usize = 1024;
/// How long a closed connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering.
const LINGER_BYTES: usize = 256 * 1024;
/// Accept errors back off from this ...
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// ... to this, doubling while errors continue.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept errors are logged at most this often.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
/// 429 responses prebuilt for these `Retry-After` values; larger ones are formatted.
const PREBUILT_RETRY_AFTER: u64 = 60;

/// State shared by the accept loop, connection tasks, workers and the admin server.
pub(crate) struct Core {
    pub config: Config,
    pub metrics: Metrics,
    pub bucket: Option<TokenBucket>,
    pub queue: Queue<Job>,
    /// Set when a stop signal arrives: readiness fails from then on.
    pub shutting_down: AtomicBool,
    /// Fired when the drain deadline passes: whatever is left is answered 503.
    pub hard_stop: CancellationToken,
    /// Fired when the listener closes: idle kept-alive connections close then.
    pub draining: CancellationToken,
    next_connection_id: AtomicU64,
    responses: Responses,
    /// The TCP port, for the `server.port` span attribute.
    pub server_port: u16,
}

/// Rejections, built once.
struct Responses {
    rate_limited: Vec<Answer>,
    queue_full: Answer,
    shutting_down: Answer,
    head_timeout: Answer,
    body_timeout: Answer,
    bad_request: Answer,
    payload_too_large: Answer,
    uri_too_long: Answer,
    header_too_large: Answer,
    unknown_coding: Answer,
    connect: Answer,
    internal_error: Answer,
}

impl Responses {
    fn new() -> Responses {
        Responses {
            rate_limited: (1..=PREBUILT_RETRY_AFTER)
                .map(|s| Answer::prebuilt(429, Some(s), "rate limited\n"))
                .collect(),
            queue_full: Answer::prebuilt(503, Some(1), "queue full\n"),
            shutting_down: Answer::prebuilt(503, Some(1), "shutting down\n"),
            head_timeout: Answer::prebuilt(408, None, "request head not received in time\n"),
            body_timeout: Answer::prebuilt(408, None, "request body not received in time\n"),
            bad_request: Answer::prebuilt(400, None, "malformed request\n"),
            payload_too_large: Answer::prebuilt(413, None, "request body too large\n"),
            uri_too_long: Answer::prebuilt(414, None, "request target too long\n"),
            header_too_large: Answer::prebuilt(431, None, "request head too large\n"),
            unknown_coding: Answer::prebuilt(
                501,
                None,
                "transfer coding not implemented: send chunked or Content-Length\n",
            ),
            connect: Answer::prebuilt(
                501,
                None,
                "CONNECT is not implemented: TCPie is not a proxy\n",
            ),
            internal_error: Answer::prebuilt(500, None, "internal error\n"),
        }
    }

    fn rate_limited(&self, retry_after: u64) -> Answer {
        match self
            .rate_limited
            .get(retry_after.saturating_sub(1) as usize)
        {
            Some(r) => r.clone(),
            None => Answer::prebuilt(429, Some(retry_after), "rate limited\n"),
        }
    }

    /// The answer, outcome and status of a request refused before admission.
    fn refused(&self, reject: Reject) -> (&Answer, Outcome) {
        match reject {
            Reject::BadRequest => (&self.bad_request, Outcome::BadRequest),
            Reject::PayloadTooLarge => (&self.payload_too_large, Outcome::BadRequest),
            Reject::UnknownCoding => (&self.unknown_coding, Outcome::BadRequest),
            Reject::Connect => (&self.connect, Outcome::BadRequest),
            Reject::UriTooLong => (&self.uri_too_long, Outcome::HeaderTooLarge),
            Reject::HeaderTooLarge => (&self.header_too_large, Outcome::HeaderTooLarge),
        }
    }
}

impl Core {
    pub fn new(config: Config, metrics: Metrics, server_port: u16) -> Core {
        let now = Instant::now();
        let bucket = config
            .rate_limited()
            .then(|| TokenBucket::new(config.rate_per_second, config.burst, now));
        metrics.workers.set(config.workers as i64);
        metrics.queue_capacity.set(config.queue_size as i64);
        Core {
            queue: Queue::new(config.workers, config.queue_size, now),
            bucket,
            metrics,
            config,
            shutting_down: AtomicBool::new(false),
            hard_stop: CancellationToken::new(),
            draining: CancellationToken::new(),
            next_connection_id: AtomicU64::new(0),
            responses: Responses::new(),
            server_port,
        }
    }

    /// Tokens in the bucket now; with rate limiting off, the bucket is "infinite" and
    /// this reports 0 so dashboards do not plot a meaningless figure.
    pub fn tokens(&self, now: Instant) -> f64 {
        self.bucket.as_ref().map_or(0.0, |b| b.available(now))
    }

    /// Whether the server should receive new traffic.
    pub fn ready(&self) -> bool {
        let threshold = self.config.ready_queue_threshold;
        !(self.shutting_down.load(Ordering::Acquire)
            || (threshold > 0.0 && self.queue.fill() >= threshold))
    }

    /// Whether the worker pool makes progress.
    pub fn live(&self, now: Instant) -> bool {
        !self.queue.stalled(now, self.config.liveness_stall())
    }
}

/// An admitted request on its way to a worker.
pub(crate) struct Job {
    conn: Conn,
    request: Request,
    enqueued: Instant,
    reply: oneshot::Sender<(Conn, Outcome, u16)>,
    span: RequestSpan,
    /// Ends when a worker takes the job.
    queue_span: tracing::Span,
    /// Answer with `Connection: keep-alive` rather than `close`.
    keep_alive: bool,
    /// A `HEAD` request: the answer's headers without its body.
    head_only: bool,
}

/// An accepted connection and the buffer its requests are read into.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    peer: SocketAddr,
    id: u64,
    _open: OpenGuard,
}

/// Holds the connection-cap permit and the open-connections gauge while a connection lives.
struct OpenGuard {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Accepts connections until `stop` fires, never more than `max_connections` open.
pub(crate) async fn accept_loop(
    core: Arc<Core>,
    listener: TcpListener,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(core.config.max_connections));
    let mut backoff = Duration::ZERO;
    let mut last_log: Option<Instant> = None;
    let mut unlogged: u64 = 0;
    loop {
        // The permit comes before accept(): at the cap, new connections wait in the
        // kernel's backlog instead of in tasks of ours.
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                core.metrics.connections_accepted.inc();
                core.metrics.connections_open.inc();
                // A response is written whole, so Nagle can only delay the next one on a
                // kept-alive connection; without keep-alive, skip the system call.
                if core.config.keep_alive {
                    let _ = stream.set_nodelay(true);
                }
                let conn = Conn {
                    stream,
                    buf: BytesMut::new(),
                    peer,
                    id: core.next_connection_id.fetch_add(1, Ordering::Relaxed),
                    _open: OpenGuard {
                        _permit: permit,
                        gauge: core.metrics.connections_open.clone(),
                    },
                };
                connections.spawn(serve_connection(core.clone(), conn));
            }
            Err(error) => {
                core.metrics.accept_errors.inc();
                let now = Instant::now();
                if last_log.is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY) {
                    tracing::error!(%error, suppressed = unlogged, "accept failed; backing off");
                    last_log = Some(now);
                    unlogged = 0;
                } else {
                    unlogged += 1;
                }
                // A connection reset before we took it is the client's problem, not ours;
                // anything else (out of file descriptors, of memory) would fail again at
                // once, so wait before retrying rather than spin.
                if is_connection_error(&error) {
                    continue;
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = sleep(backoff) => {}
                }
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// What reading a request produced.
enum Read {
    /// The first bytes arrived; the rest of the head is still to read.
    Started,
    /// A complete head; its body (if any) is still to read.
    Head(http::Head, bytes::Bytes),
    /// The client closed or reset before a complete request.
    Closed,
    Rejected(Reject),
    /// The head did not arrive by the read deadline.
    TimedOut,
    /// The head arrived, its body did not, by the read deadline.
    BodyTimedOut,
    Stopped,
    /// A kept-alive connection stayed idle, or the server is draining: close it quietly.
    Idle,
}

/// How one request ended: counted, traced, and whether its connection may carry more.
struct Ended {
    outcome: Outcome,
    status: u16,
}

/// Serves one connection: one request, or with keep-alive as many as it may carry.
async fn serve_connection(core: Arc<Core>, mut conn: Conn) {
    let accepted = Instant::now();
    let mut served: u64 = 0;
    let conn = loop {
        let first = served == 0;
        // The first request's head has an absolute deadline from the accept; a kept-alive
        // connection may idle up to its idle time, then its head gets the read deadline.
        let wait_until = if first {
            accepted + core.config.read_timeout()
        } else {
            Instant::now() + core.config.keep_alive_idle()
        };
        let mut read = if !conn.buf.is_empty() {
            // A pipelined request is already (partly) in the buffer.
            Read::Started
        } else {
            tokio::select! {
                biased;
                _ = core.hard_stop.cancelled() => if first { Read::Stopped } else { Read::Idle },
                _ = core.draining.cancelled(), if !first => Read::Idle,
                read = timeout_at(wait_until, first_bytes(&mut conn, &core.config)) => {
                    read.unwrap_or(if first { Read::TimedOut } else { Read::Idle })
                }
            }
        };
        if !first && matches!(read, Read::Closed | Read::Idle) {
            break Some(conn);
        }
        let started = if first { accepted } else { Instant::now() };
        let deadline = if first {
            wait_until
        } else {
            started + core.config.read_timeout()
        };
        // The request, and its span, begin with its first bytes: a connection closed
        // without sending anything (a port scan, a TCP probe) is no request.
        let span = match read {
            Read::Closed => None,
            _ => Some(RequestSpan::new(conn.peer, core.server_port, conn.id)),
        };
        // A HEAD is answered without a body whatever the answer is; the method is
        // known from the first bytes, even when the rest of the head is refused.
        let head_only = http::is_head(&conn.buf);
        if let Read::Started = read {
            read = tokio::select! {
                biased;
                _ = core.hard_stop.cancelled() => Read::Stopped,
                read = timeout_at(deadline, read_head(&mut conn, &core.config)) => {
                    read.unwrap_or(Read::TimedOut)
                }
            };
        }
        let mut keep = false;
        let responses = &core.responses;
        let (conn_back, ended) = match (read, &span) {
            (Read::Head(head, bytes), Some(span)) => {
                let request = Request::new(bytes, &head);
                span.request(&request);
                // Each request on a kept-alive connection is admitted on its own; one that
                // is rejected, the last one allowed, or one during shutdown closes it.
                keep = core.config.keep_alive
                    && request.wants_keep_alive
                    && served + 1 < core.config.max_requests_per_connection
                    && !core.shutting_down.load(Ordering::Acquire);
                let admitted = AdmitRequest {
                    request,
                    span,
                    keep_alive: keep,
                    head_only,
                };
                receive(
                    &core,
                    conn,
                    head.body,
                    head.expect_continue,
                    deadline,
                    admitted,
                )
                .await
            }
            (Read::Closed | Read::Started | Read::Idle, _) | (Read::Head(..), None) => {
                (Some(conn), None)
            }
            (Read::TimedOut, _) => {
                respond(&core, &mut conn, &responses.head_timeout, head_only).await;
                (Some(conn), Some(ended(Outcome::ReadTimeout, 408)))
            }
            (Read::BodyTimedOut, _) => {
                respond(&core, &mut conn, &responses.body_timeout, head_only).await;
                (Some(conn), Some(ended(Outcome::ReadTimeout, 408)))
            }
            (Read::Stopped, _) => {
                respond(&core, &mut conn, &responses.shutting_down, head_only).await;
                (Some(conn), Some(ended(Outcome::ShuttingDown, 503)))
            }
            (Read::Rejected(reject), _) => {
                let (answer, outcome) = responses.refused(reject);
                respond(&core, &mut conn, answer, head_only).await;
                (Some(conn), Some(ended(outcome, reject.status())))
            }
        };
        match ended {
            Some(Ended { outcome, status }) => {
                if outcome == Outcome::Processed {
                    core.metrics
                        .request_duration
                        .observe(started.elapsed().as_secs_f64());
                }
                core.metrics.record(outcome);
                if let Some(span) = &span {
                    span.finish(outcome, Some(status));
                }
                keep &= outcome == Outcome::Processed;
            }
            None => {
                if first {
                    core.metrics.connections_closed_before_request.inc();
                }
                if let Some(span) = &span {
                    span.closed_early();
                }
            }
        }
        served += 1;
        match conn_back {
            Some(back) if keep => conn = back,
            other => break other,
        }
    };
    if let Some(conn) = conn {
        close_gracefully(&core, conn).await;
    }
}

fn ended(outcome: Outcome, status: u16) -> Ended {
    Ended { outcome, status }
}

/// Waits for the client's first bytes. Idle connections cost no buffer until then.
async fn first_bytes(conn: &mut Conn, config: &Config) -> Read {
    if conn.stream.readable().await.is_err() {
        return Read::Closed;
    }
    conn.buf
        .reserve(INITIAL_READ_BUFFER.min(config.max_header_bytes));
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) | Err(_) => Read::Closed,
        Ok(_) => Read::Started,
    }
}

/// Reads one request head into `conn.buf` and splits it off.
async fn read_head(conn: &mut Conn, config: &Config) -> Read {
    let max_head = config.max_header_bytes;
    let head = loop {
        if !conn.buf.is_empty() {
            match http::parse_head(&conn.buf, max_head) {
                Ok(Parsed::Complete(head)) => break head,
                Ok(Parsed::Partial) => {}
                Err(reject) => return Read::Rejected(reject),
            }
        }
        if conn.buf.capacity() == conn.buf.len() {
            // Grow by doubling, never much past the largest head allowed.
            let grow = conn
                .buf
                .capacity()
                .min(max_head - conn.buf.len().min(max_head))
                .max(1);
            conn.buf.reserve(grow);
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) | Err(_) => return Read::Closed,
            Ok(_) => {}
        }
    };
    // `HTTP/1.2` reads as the HTTP/1.1 it is answered as, for the handler and tracing too.
    if let Some(at) = head.later_minor_at {
        conn.buf[at] = b'1';
    }
    let bytes = conn.buf.split_to(head.len).freeze();
    Read::Head(head, bytes)
}

/// Reads and discards a request body, `Content-Length` or chunked, from `conn.buf` and
/// the socket. Bytes after it stay in the buffer (the next request on a kept-alive
/// connection).
async fn read_body(conn: &mut Conn, body: Body) -> Result<(), Read> {
    let mut decoder = chunked::Decoder::default();
    let mut remaining = match body {
        Body::Empty => return Ok(()),
        Body::Length(n) => n,
        Body::Chunked => 0,
    };
    loop {
        if body == Body::Chunked {
            let (consumed, done) = decoder.feed(&conn.buf).map_err(Read::Rejected)?;
            let _ = conn.buf.split_to(consumed);
            if done {
                return Ok(());
            }
        } else {
            let take = remaining.min(conn.buf.len() as u64);
            let _ = conn.buf.split_to(take as usize);
            remaining -= take;
            if remaining == 0 {
                return Ok(());
            }
        }
        if conn.buf.capacity() - conn.buf.len() < INITIAL_READ_BUFFER {
            conn.buf.reserve(INITIAL_READ_BUFFER);
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) | Err(_) => return Err(Read::Closed),
            Ok(_) => {}
        }
    }
}

/// A read request on its way to admission.
struct AdmitRequest<'a> {
    request: Request,
    span: &'a RequestSpan,
    keep_alive: bool,
    head_only: bool,
}

/// Reads the request's body and passes it to admission. With `Expect: 100-continue`
/// (and no body bytes sent yet), admission is decided first: a request that will be
/// refused is answered at once, and its client never uploads the body for nothing
/// (RFC 9110 §10.1.1); an admitted one holds its place while the body arrives.
async fn receive(
    core: &Core,
    mut conn: Conn,
    body: Body,
    expect_continue: bool,
    deadline: Instant,
    req: AdmitRequest<'_>,
) -> (Option<Conn>, Option<Ended>) {
    let mut reserved = None;
    if body != Body::Empty && expect_continue && conn.buf.is_empty() {
        match decide(core) {
            Ok(slot) => reserved = Some(slot),
            Err((answer, outcome, status)) => {
                respond(core, &mut conn, &answer, req.head_only).await;
                return (Some(conn), Some(ended(outcome, status)));
            }
        }
        if !write_all(core, &mut conn, http::CONTINUE).await {
            return (None, None);
        }
    }
    let read = tokio::select! {
        biased;
        _ = core.hard_stop.cancelled() => Err(Read::Stopped),
        read = timeout_at(deadline, read_body(&mut conn, body)) => {
            read.unwrap_or(Err(Read::BodyTimedOut))
        }
    };
    let refusal = match read {
        Ok(()) => return admit(core, conn, req, reserved).await,
        Err(Read::Closed) => return (Some(conn), None),
        Err(Read::Rejected(reject)) => {
            let (answer, outcome) = core.responses.refused(reject);
            (answer, outcome, reject.status())
        }
        Err(Read::Stopped) => (&core.responses.shutting_down, Outcome::ShuttingDown, 503),
        Err(_) => (&core.responses.body_timeout, Outcome::ReadTimeout, 408),
    };
    respond(core, &mut conn, refusal.0, req.head_only).await;
    (Some(conn), Some(ended(refusal.1, refusal.2)))
}

/// The admission decision: a reserved place among the workers and the queue, or the
/// answer that refuses the request.
fn decide(core: &Core) -> Result<Reservation<'_, Job>, (Answer, Outcome, u16)> {
    if core.hard_stop.is_cancelled() {
        return Err((
            core.responses.shutting_down.clone(),
            Outcome::ShuttingDown,
            503,
        ));
    }
    if let Some(bucket) = &core.bucket {
        if let Err(wait) = bucket.try_acquire(Instant::now()) {
            let answer = core.responses.rate_limited(retry_after_secs(wait));
            return Err((answer, Outcome::RateLimited, 429));
        }
    }
    core.queue
        .try_reserve()
        .ok_or_else(|| (core.responses.queue_full.clone(), Outcome::QueueFull, 503))
}

/// Rate limit, then queue (unless already decided). Returns the connection (unless it
/// was lost) and how the request ended.
async fn admit(
    core: &Core,
    mut conn: Conn,
    req: AdmitRequest<'_>,
    reserved: Option<Reservation<'_, Job>>,
) -> (Option<Conn>, Option<Ended>) {
    let slot = match reserved.map_or_else(|| decide(core), Ok) {
        Ok(slot) => slot,
        Err((answer, outcome, status)) => {
            respond(core, &mut conn, &answer, req.head_only).await;
            return (Some(conn), Some(ended(outcome, status)));
        }
    };
    let (reply, answered) = oneshot::channel();
    let job = Job {
        conn,
        request: req.request,
        enqueued: Instant::now(),
        reply,
        span: req.span.clone(),
        queue_span: req.span.queue_span(),
        keep_alive: req.keep_alive,
        head_only: req.head_only,
    };
    match slot.submit(job, Instant::now()) {
        Ok(()) => match answered.await {
            Ok((conn, outcome, status)) => (Some(conn), Some(ended(outcome, status))),
            // The worker dropped the job without answering (it cannot, short of a bug):
            // the connection went with it.
            Err(_) => {
                tracing::error!("a worker dropped a request without answering it");
                (None, Some(ended(Outcome::WriteError, 500)))
            }
        },
        // Only after the queue closed, at the end of shutdown.
        Err(job) => {
            let mut conn = job.conn;
            respond(
                core,
                &mut conn,
                &core.responses.shutting_down,
                req.head_only,
            )
            .await;
            (Some(conn), Some(ended(Outcome::ShuttingDown, 503)))
        }
    }
}

/// Writes a whole answer, with its `Date`, within the write deadline; false if it could
/// not.
async fn respond(core: &Core, conn: &mut Conn, answer: &Answer, head_only: bool) -> bool {
    let (before, after) = answer.parts(head_only);
    respond_parts(core, conn, before, after).await
}

/// Writes `before`, the `Date` line, then `after`, in one system call when the socket
/// takes it all (it almost always does), within the write deadline.
async fn respond_parts(core: &Core, conn: &mut Conn, before: &[u8], after: &[u8]) -> bool {
    let date = date::line();
    let parts = [before, &date[..], after];
    matches!(
        timeout(
            core.config.write_timeout(),
            write_parts(&mut conn.stream, parts)
        )
        .await,
        Ok(Ok(()))
    )
}

async fn write_parts(stream: &mut TcpStream, parts: [&[u8]; 3]) -> std::io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut written = 0;
    while written < total {
        let mut slices = [IoSlice::new(&[]); 3];
        let mut n = 0;
        let mut skip = written;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices[n] = IoSlice::new(&part[skip..]);
            skip = 0;
            n += 1;
        }
        match stream.write_vectored(&slices[..n]).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            w => written += w,
        }
    }
    Ok(())
}

/// Writes bytes as they are (the interim `100 Continue`) within the write deadline.
async fn write_all(core: &Core, conn: &mut Conn, bytes: &[u8]) -> bool {
    matches!(
        timeout(core.config.write_timeout(), conn.stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Sends FIN, then, if the client may still be sending, reads until it closes, so that
/// data it sent after the part we read does not make the kernel answer our response with
/// a reset.
///
/// Like nginx's `lingering_close on`, it lingers only when that can matter: when bytes
/// beyond the request were seen, or some are waiting in the socket. A client that sent
/// exactly one request (the common case) is closed at once, without another wake-up.
async fn close_gracefully(core: &Core, mut conn: Conn) {
    if conn.stream.shutdown().await.is_err() {
        return;
    }
    if conn.buf.is_empty() {
        let mut probe = [0u8; 1];
        match conn.stream.try_read(&mut probe) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            _ => {}
        }
    }
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0;
    loop {
        conn.buf.clear();
        if conn.buf.capacity() < 512 {
            conn.buf.reserve(512);
        }
        let read = tokio::select! {
            biased;
            _ = core.hard_stop.cancelled() => return,
            read = timeout_at(deadline, conn.stream.read_buf(&mut conn.buf)) => read,
        };
        match read {
            Ok(Ok(n)) if n > 0 && discarded < LINGER_BYTES => discarded += n,
            _ => return,
        }
    }
}

/// One worker: takes requests from the queue until it is closed and empty.
pub(crate) async fn worker<H: Handler>(id: usize, core: Arc<Core>, handler: Arc<H>) {
    let mut out = Vec::with_capacity(256);
    // Handlers mostly answer the same thing (the built-in one always does): the bytes of
    // the last answer are reused while status, type, body and keep-alive are unchanged,
    // which saves formatting the head on every request.
    let mut last: Option<(Response, bool)> = None;
    let (mut status_end, mut body_start) = (0, 0);
    while let Some(job) = core.queue.recv().await {
        let Job {
            mut conn,
            request,
            enqueued,
            reply,
            span,
            queue_span,
            keep_alive,
            head_only,
        } = job;
        drop(queue_span);
        let waited = enqueued.elapsed();
        core.metrics.queue_wait.observe(waited.as_secs_f64());
        span.queued(waited, id);
        let response = if core.hard_stop.is_cancelled() {
            None
        } else {
            tokio::select! {
                biased;
                _ = core.hard_stop.cancelled() => None,
                response = process(&core, &*handler, &request).instrument(span.process_span()) => {
                    Some(response)
                }
            }
        };
        let (outcome, status) = match response {
            Some(response) => {
                let written = match &response {
                    Ok(response) => {
                        let same =
                            matches!(&last, Some((r, k)) if *k == keep_alive && r == response);
                        if !same {
                            body_start = http::write_response(
                                &mut out,
                                response.status,
                                response.content_type,
                                None,
                                keep_alive,
                                &response.body,
                            );
                            status_end =
                                out.iter().position(|b| *b == b'\n').map_or(0, |at| at + 1);
                            last = Some((response.clone(), keep_alive));
                        }
                        let (before, after) = http::parts(&out, status_end, body_start, head_only);
                        respond_parts(&core, &mut conn, before, after).await
                    }
                    Err(()) => {
                        respond(&core, &mut conn, &core.responses.internal_error, head_only).await
                    }
                };
                let status = response.map_or(500, |r| r.status);
                if written {
                    (Outcome::Processed, status)
                } else {
                    (Outcome::WriteError, status)
                }
            }
            None => {
                respond(&core, &mut conn, &core.responses.shutting_down, head_only).await;
                (Outcome::ShuttingDown, 503)
            }
        };
        core.queue.done(Instant::now());
        // The connection task may be gone only if the runtime is shutting down.
        let _ = reply.send((conn, outcome, status));
    }
}

/// Runs the handler (after the simulated work); `Err` if it panicked.
async fn process<H: Handler>(core: &Core, handler: &H, request: &Request) -> Result<Response, ()> {
    let work = core.config.simulated_work();
    if !work.is_zero() {
        sleep(work).await;
    }
    match AssertUnwindSafe(handler.handle(request))
        .catch_unwind()
        .await
    {
        Ok(response) => Ok(response),
        Err(_) => {
            tracing::error!(path = request.path(), "the handler panicked; answered 500");
            Err(())
        }
    }
}
