//! One connection's requests, from its first byte to its close, in its own task: read the
//! head (absolute deadline), then the body; admission; a permit now or a wait in the
//! queue; the handler; the answer; the permit back. With keep-alive, again.
//!
//! Every request ends in exactly one [`End`], passed to [`finish`] (or, when the client
//! leaves before its request is complete, in none: it is counted as a connection closed
//! before a request). A step that cannot go on stops the exchange with a [`Stop`]: the
//! client left, or the request is refused, and one place writes every refusal. Reading
//! holds neither a permit nor a place in the queue (except the body of an admitted
//! `Expect: 100-continue` request). Phase changes reach a request only where it waits
//! (see [`crate::lifecycle`]): past the drain deadline, whatever is left is answered 503.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::time::{sleep, sleep_until, timeout, Instant, Sleep};
use tracing::Instrument;

use super::connection::{BodyReader, Conn, ReadError, Truncated};
use super::ending::{finish, End};
use super::Core;
use crate::admission::pool::{Entry, Permit, Wait};
use crate::admission::Decision;
use crate::handler::{
    BodyError, BodySender, Failure, Handler, Request, RequestBody, Response, ResponseStream,
    StreamError,
};
use crate::http::{self, Body, Framing, Reject};
use crate::lifecycle::{Phase, Waited, Watch};
use crate::metrics::Outcome;
use crate::ratelimit::client_table::ClientId;
use crate::ratelimit::Quota;
use crate::telemetry::request_span::RequestSpan;

/// How one request went.
struct Ended {
    end: End,
    /// The request was read to its end (nothing of it is left in the socket).
    complete: bool,
    /// The connection may carry another request.
    keep_alive: bool,
}

/// Why an exchange stopped before its request was processed.
enum Stop {
    /// The client closed or reset before its request was complete: nothing to answer.
    Left,
    /// Refused: answered with `end`'s prebuilt answer and the `RateLimit` fields of
    /// `quota`; `complete` if the request had been read to its end.
    Refused {
        end: End,
        quota: Option<Quota>,
        complete: bool,
    },
}

fn refused(end: End, quota: Option<Quota>, complete: bool) -> Stop {
    Stop::Refused {
        end,
        quota,
        complete,
    }
}

/// Serves one connection (accepted at `accepted`): one request, or with keep-alive as
/// many as it may carry.
pub(crate) async fn serve<H: Handler>(
    core: Arc<Core>,
    handler: Arc<H>,
    mut conn: Conn,
    accepted: Instant,
) {
    let read_timeout = core.config.read_timeout();
    let mut served: u64 = 0;
    let mut between = Between::new(&core, conn.id);
    let complete = loop {
        let first = served == 0;
        // The first request's head has an absolute deadline from the accept; a kept-alive
        // connection may idle up to its idle time, then its head gets the read deadline.
        let started = if first {
            if !first_bytes(&core, &mut conn, accepted + read_timeout).await {
                // Closed without a byte (a port scan, a TCP probe), or never a byte by the
                // deadline or the hard stop (a client's spare connection): no request, and
                // no answer nobody asked for.
                core.metrics.connections_closed_before_request.inc();
                break true;
            }
            accepted
        } else {
            if !next_bytes(&core, &mut conn, &mut between).await {
                break true;
            }
            Instant::now()
        };

        let span = RequestSpan::new(conn.peer, core.server_port, conn.id);
        let exchange = Exchange {
            core: &core,
            span: &span,
            // A HEAD is answered without a body whatever the answer is; the method is
            // known from the first bytes, even when the rest of the head is refused.
            head_only: conn.is_head(),
        };
        let may_keep =
            core.config.keep_alive && served + 1 < core.config.max_requests_per_connection;
        // In the connection's own task, not boxed: a box per request (malloc, a copy of
        // the whole state, free) cost more than the built-in answer's every other step
        // (callgrind: 8.1K -> 6.3K instructions a keep-alive request without it). The
        // price is a task of about 3 KB for a connection, idle or not.
        let steps = exchange.steps(&mut conn, &*handler, started + read_timeout, may_keep);
        let ended = match steps.await {
            Ok(ended) => Some(ended),
            Err(Stop::Left) => None,
            Err(Stop::Refused {
                end,
                quota,
                complete,
            }) => {
                // Not boxed either: under overload, refusals are most answers, and the
                // room the steps took serves (they are over).
                exchange.answer_refusal(&mut conn, end, quota).await;
                Some(Ended {
                    end,
                    complete,
                    keep_alive: false,
                })
            }
        };
        served += 1;
        let Some(ended) = ended else {
            if first {
                core.metrics.connections_closed_before_request.inc();
            }
            span.closed_early();
            break false;
        };
        finish(&core, &span, ended.end, started);
        if !(ended.keep_alive && ended.complete && ended.end.outcome() == Outcome::Processed) {
            break ended.complete;
        }
    };
    // Closed at once when nothing more can come (the common case: no shutdown(), no
    // wait); otherwise with a lingering close, boxed like the other waits.
    if !conn.closes_at_once(complete) {
        Box::pin(conn.linger(&core.lifecycle)).await;
    }
}

/// Waits for the first request's first bytes until `deadline` (or the hard stop); false
/// if none came.
async fn first_bytes(core: &Core, conn: &mut Conn, deadline: Instant) -> bool {
    if conn.has_buffered() {
        return true;
    }
    let (id, max_head) = (conn.id, core.config.max_header_bytes);
    // Boxed, like every wait: the task holds only a pointer to it.
    let wait = core.lifecycle.within(
        Phase::HardStop,
        id,
        Some(deadline),
        conn.first_bytes(max_head),
    );
    matches!(Box::pin(wait).await, Waited::Done(Ok(())))
}

/// What a kept-alive connection waits with between its requests: a timer reset for each
/// wait and a standing registration for phase changes, both made at its first wait and
/// kept, so that waiting for the next request arms no new timer and joins no waiter list.
struct Between<'a> {
    timer: Option<Pin<Box<Sleep>>>,
    watch: Watch<'a>,
}

impl<'a> Between<'a> {
    fn new(core: &'a Core, id: u64) -> Between<'a> {
        Between {
            timer: None,
            watch: Watch::new(&core.lifecycle, id),
        }
    }
}

/// Waits for a kept-alive connection's next request, for its idle time at most; false if
/// none came, or the listener closed first (idle connections close with it).
async fn next_bytes(core: &Core, conn: &mut Conn, between: &mut Between<'_>) -> bool {
    if conn.has_buffered() {
        return true;
    }
    let max_head = core.config.max_header_bytes;
    let idle_until = Instant::now() + core.config.keep_alive_idle();
    match &mut between.timer {
        // A later deadline than the last one: no change to the timer wheel.
        Some(timer) => timer.as_mut().reset(idle_until),
        None => between.timer = Some(Box::pin(sleep_until(idle_until))),
    }
    poll_fn(|cx| {
        if let Poll::Ready(came) = conn.poll_next_bytes(cx, max_head) {
            return Poll::Ready(came);
        }
        if let Some(timer) = &mut between.timer {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
        }
        between
            .watch
            .poll_reached(Phase::Draining, cx)
            .map(|()| false)
    })
    .await
}

/// One request, from its head on.
struct Exchange<'a> {
    core: &'a Core,
    span: &'a RequestSpan,
    head_only: bool,
}

impl<'a> Exchange<'a> {
    /// Head, body, admission, a permit, processing, answer.
    async fn steps<H: Handler>(
        &self,
        conn: &mut Conn,
        handler: &H,
        deadline: Instant,
        may_keep: bool,
    ) -> Result<Ended, Stop> {
        let core = self.core;
        let id = conn.id;
        let lifecycle = &core.lifecycle;
        let streams = handler.streams_body();
        let max_body = if streams {
            core.config.max_body_bytes
        } else {
            http::MAX_BODY_BYTES
        };
        let head = conn.read_head(core.config.max_header_bytes, max_body);
        let read = lifecycle
            .within(Phase::HardStop, id, Some(deadline), head)
            .await;
        let (head, bytes) = read_or_stop(read, End::HeadTimeout)?;
        let request = Request::new(bytes, &head, conn.peer);
        self.span.request(&request);
        let client = core
            .admission
            .client(conn.peer.ip(), &request, &mut conn.last_client);
        // Each request on a kept-alive connection is admitted on its own; one that is
        // refused, the last one allowed, or one during shutdown closes it.
        let keep_alive = may_keep && request.wants_keep_alive && !core.shutting_down();

        // With `Expect: 100-continue` (and no body bytes sent yet), admission comes first:
        // a request that will be refused is answered at once, and its client never uploads
        // the body for nothing (RFC 9110 §10.1.1); an admitted one holds its place while
        // the body arrives.
        let early = head.body != Body::Empty && head.expect_continue && !conn.has_buffered();
        let admitted = if early {
            let admitted = self.admit(client, false).await?;
            if !conn
                .write_raw(http::CONTINUE, core.config.write_timeout())
                .await
            {
                return Err(Stop::Left);
            }
            Some(admitted)
        } else {
            None
        };
        if !streams {
            let body = conn.read_body(head.body);
            let read = lifecycle
                .within(Phase::HardStop, id, Some(deadline), body)
                .await;
            read_or_stop(read, End::BodyTimeout)?;
        } else if !early {
            // A body that streams is admitted once its first 64 KiB are in: a small body is
            // then read whole before admission, and a slow one never takes a permit.
            let body = conn.prefetch_body(head.body, max_body, http::MAX_BODY_BYTES as usize);
            let read = lifecycle
                .within(Phase::HardStop, id, Some(deadline), body)
                .await;
            read_or_stop(read, End::BodyTimeout)?;
        }
        let complete = !streams || head.body == Body::Empty;
        let (entry, quota) = match admitted {
            Some(admitted) => admitted,
            None => self.admit(client, complete).await?,
        };
        let admitted_at = Instant::now();
        // The `queue` span covers the wait for a permit: empty when one was free.
        let queue_span = self.span.queue_span();
        let permit = match entry {
            Entry::Now(permit) => permit,
            Entry::Wait(wait) => self.wait(id, wait, admitted_at, &queue_span, quota).await?,
        };
        drop(queue_span);
        let waited = admitted_at.elapsed();
        core.metrics.queue_wait.observe(waited.as_secs_f64());
        self.span.queued(waited);
        if streams {
            let body = (head.body, max_body);
            return self
                .process_streaming(conn, handler, &request, body, permit, keep_alive, quota)
                .await;
        }
        let end = self
            .process(conn, handler, &request, permit, keep_alive, quota)
            .await;
        Ok(Ended {
            end,
            complete: true,
            keep_alive,
        })
    }

    /// The one place admission is decided: a permit or a place, and what the rate limits
    /// said of the request; `complete` if it has been read to its end.
    async fn admit(
        &self,
        client: Option<ClientId>,
        complete: bool,
    ) -> Result<(Entry<'a>, Option<Quota>), Stop> {
        let core = self.core;
        let verdict = core
            .admission
            .decide(&core.lifecycle, Instant::now(), client, &core.metrics)
            .await;
        if let Some(limit) = verdict.dry_run_refused {
            self.span.dry_run_rejected(limit);
        }
        match verdict.decision {
            Decision::Enter(entry) => Ok((entry, verdict.quota)),
            Decision::Refuse(refusal) => Err(refused(refusal.into(), verdict.quota, complete)),
        }
    }

    /// A wait in the queue for a permit, within `TCPIE_QUEUE_TIMEOUT_MS` when set: a
    /// request still waiting then would be served too late to matter, and gives up its
    /// place.
    async fn wait(
        &self,
        id: u64,
        wait: Wait<'a>,
        admitted_at: Instant,
        queue_span: &tracing::Span,
        quota: Option<Quota>,
    ) -> Result<Permit<'a>, Stop> {
        let core = self.core;
        let deadline = core.config.queue_timeout().map(|t| admitted_at + t);
        let waiting = wait.permit().instrument(queue_span.clone());
        match core
            .lifecycle
            .within(Phase::HardStop, id, deadline, waiting)
            .await
        {
            Waited::Done(Some(permit)) => Ok(permit),
            Waited::TimedOut => Err(refused(End::QueueTimeout, quota, true)),
            Waited::Done(None) | Waited::Stopped => Err(refused(End::ShuttingDown, quota, true)),
        }
    }

    /// Runs the handler under the permit and writes its answer; the permit goes back once
    /// the answer is written (or could not be).
    async fn process<H: Handler>(
        &self,
        conn: &mut Conn,
        handler: &H,
        request: &Request,
        permit: Permit<'_>,
        keep_alive: bool,
        quota: Option<Quota>,
    ) -> End {
        let core = self.core;
        let fields = quota.map(|q| q.fields());
        let fields = fields.as_ref().map_or(&[][..], |f| f.as_bytes());
        let work = run_handler(core, handler, request).instrument(self.span.process_span());
        let limit = core.config.write_timeout();
        let end = match core
            .lifecycle
            .within(Phase::HardStop, conn.id, None, work)
            .await
        {
            Waited::Done(Ok(response)) => {
                let head = http::answer_head(
                    response.status,
                    response.content_type,
                    response.body.len(),
                    keep_alive,
                );
                let written = conn
                    .answer_with_body(&head, fields, &response.body, self.head_only, limit)
                    .await;
                processed(response.status, written)
            }
            Waited::Done(Err(())) => {
                let written = conn
                    .answer(&core.answers.internal_error, fields, self.head_only, limit)
                    .await;
                processed(500, written)
            }
            Waited::TimedOut | Waited::Stopped => {
                self.answer_refusal(conn, End::ShuttingDown, quota).await;
                End::ShuttingDown
            }
        };
        drop(permit);
        end
    }

    /// Runs a handler that streams bodies under the permit: the request body is passed to
    /// it as it arrives while it works, and its answer (streamed, or whole) is written; the
    /// permit goes back once the answer is written, or could not be.
    #[allow(clippy::too_many_arguments)]
    async fn process_streaming<H: Handler>(
        &self,
        conn: &mut Conn,
        handler: &H,
        request: &Request,
        (framing, max_body): (Body, u64),
        permit: Permit<'_>,
        keep_alive: bool,
        quota: Option<Quota>,
    ) -> Result<Ended, Stop> {
        let core = self.core;
        let limit = core.config.write_timeout();
        let id = conn.id;
        let mut reader = BodyReader::new(framing, max_body);
        let work = run_handler(core, handler, request).instrument(self.span.process_span());
        let answered = if framing == Body::Empty {
            // Nothing to pass on: the handler alone, and no channel.
            request.set_body(RequestBody::empty());
            match core.lifecycle.within(Phase::HardStop, id, None, work).await {
                Waited::Done(response) => Some((response, Some(Pumped::Complete))),
                Waited::TimedOut | Waited::Stopped => None,
            }
        } else {
            let (tx, body) = RequestBody::channel(request.body_length());
            request.set_body(body);
            let idle = core.config.read_timeout();
            let both = async {
                let mut work = pin!(work);
                let mut pump = pin!(pump(conn, &mut reader, tx, idle));
                let mut pumped = None;
                loop {
                    tokio::select! {
                        biased;
                        response = &mut work => break (response, pumped),
                        done = &mut pump, if pumped.is_none() => pumped = Some(done),
                    }
                }
            };
            match Box::pin(core.lifecycle.within(Phase::HardStop, id, None, both)).await {
                Waited::Done(answered) => Some(answered),
                Waited::TimedOut | Waited::Stopped => None,
            }
        };
        let Some((response, pumped)) = answered else {
            self.answer_refusal(conn, End::ShuttingDown, quota).await;
            return Ok(ended(End::ShuttingDown, false));
        };
        // A body that failed decides the answer, whatever the handler made of it.
        let complete = match pumped {
            Some(Pumped::Complete) => true,
            None if matches!(reader, BodyReader::Done) => true,
            Some(Pumped::Failed(BodyError::Closed)) => return Err(Stop::Left),
            Some(Pumped::Failed(failure)) => {
                let end = match failure {
                    BodyError::TooLarge => End::Refused(Reject::PayloadTooLarge),
                    BodyError::TimedOut => End::BodyTimeout,
                    BodyError::Malformed | BodyError::Closed => End::Refused(Reject::BadRequest),
                };
                self.answer_refusal(conn, end, quota).await;
                return Ok(ended(end, false));
            }
            Some(Pumped::Abandoned) | None => false,
        };
        let response = match response {
            Ok(response) => response,
            Err(()) => {
                let written = conn
                    .answer(&core.answers.internal_error, &[], self.head_only, limit)
                    .await;
                return Ok(ended(processed(500, written), complete));
            }
        };
        if let Some(failure) = response.marks.failure {
            let end = match failure {
                Failure::UpstreamTimeout => End::UpstreamTimeout,
                Failure::UpstreamError => End::UpstreamError,
            };
            self.answer_refusal(conn, end, quota).await;
            return Ok(ended(end, complete));
        }
        let end = self
            .write_response(conn, request, response, keep_alive && complete, quota)
            .await;
        drop(permit);
        let keep = keep_alive && complete && end.1;
        Ok(Ended {
            end: end.0,
            complete: complete && end.1,
            keep_alive: keep,
        })
    }

    /// Writes a handler's answer with headers of its own or a streamed body; its end, and
    /// whether the connection may carry on.
    async fn write_response(
        &self,
        conn: &mut Conn,
        request: &Request,
        mut response: Response,
        keep_alive: bool,
        quota: Option<Quota>,
    ) -> (End, bool) {
        let core = self.core;
        let limit = core.config.write_timeout();
        let status = response.status;
        if let Some(q) = quota {
            let fields = q.fields();
            for line in fields.as_bytes().split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(colon) = line.iter().position(|b| *b == b':') {
                    let (name, value) = (&line[..colon], &line[colon + 1..]);
                    if let (Ok(n), Ok(v)) = (
                        ::http::HeaderName::from_bytes(name),
                        ::http::HeaderValue::from_bytes(value.trim_ascii()),
                    ) {
                        response.headers.append(n, v);
                    }
                }
            }
        }
        let date = !response.headers.contains_key(::http::header::DATE);
        let no_body = self.head_only || status == 204 || status == 304 || status < 200;
        let Some(mut stream) = response.stream.take() else {
            let framing = if status == 204 || status < 200 {
                Framing::Nothing
            } else {
                Framing::Length(response.body.len() as u64)
            };
            let mut head = Vec::with_capacity(256);
            http::full_head(
                &mut head,
                status,
                response.content_type,
                &response.headers,
                framing,
                keep_alive,
            );
            let body = http_body_util::Full::new(std::mem::take(&mut response.body));
            let mut whole =
                ResponseStream {
                    length: Some(body.size_hint().exact().unwrap_or(0)),
                    body: Box::pin(body.map_err(
                        |never: std::convert::Infallible| -> StreamError { match never {} },
                    )),
                };
            let framing = if framing == Framing::Nothing || no_body {
                Framing::Nothing
            } else {
                framing
            };
            let written = conn
                .answer_stream(&head, date, &mut whole, framing, limit)
                .await;
            return (
                processed(status, written.is_ok()),
                keep_alive && written.is_ok(),
            );
        };
        let framing = match stream.length {
            _ if status == 204 || status < 200 => Framing::Nothing,
            Some(n) => Framing::Length(n),
            None if no_body => Framing::Nothing,
            None if request.version() == "1.0" => Framing::Close,
            None => Framing::Chunked,
        };
        let keep_alive = keep_alive && framing != Framing::Close;
        let mut head = Vec::with_capacity(512);
        http::full_head(
            &mut head,
            status,
            response.content_type,
            &response.headers,
            framing,
            keep_alive,
        );
        // A HEAD or 304 answer says the length of the body it does not carry.
        let on_wire = if no_body { Framing::Nothing } else { framing };
        let lifecycle = &core.lifecycle;
        let id = conn.id;
        let write = conn.answer_stream(&head, date, &mut stream, on_wire, limit);
        match lifecycle.within(Phase::HardStop, id, None, write).await {
            Waited::Done(Ok(())) => (End::Processed { status }, keep_alive),
            Waited::Done(Err(Truncated::Body)) => (
                End::Truncated {
                    status,
                    upstream: response.marks.from_upstream,
                },
                false,
            ),
            Waited::Done(Err(Truncated::Write)) => (End::WriteError { status }, false),
            Waited::TimedOut | Waited::Stopped => (
                End::Truncated {
                    status,
                    upstream: false,
                },
                false,
            ),
        }
    }

    /// Writes the prebuilt answer of a refusal, with the `RateLimit` fields of `quota`.
    async fn answer_refusal(&self, conn: &mut Conn, end: End, quota: Option<Quota>) {
        if let Some(answer) = end.answer(&self.core.answers) {
            let fields = quota.map(|q| q.fields());
            let fields = fields.as_ref().map_or(&[][..], |f| f.as_bytes());
            conn.answer(
                &answer,
                fields,
                self.head_only,
                self.core.config.write_timeout(),
            )
            .await;
        }
    }
}

/// What a read under the deadline and the lifecycle comes to: the value, or how the
/// exchange stops (`timed_out` is the end of a request that misses the deadline).
fn read_or_stop<T>(read: Waited<Result<T, ReadError>>, timed_out: End) -> Result<T, Stop> {
    match read {
        Waited::Done(Ok(value)) => Ok(value),
        Waited::Done(Err(ReadError::Closed)) => Err(Stop::Left),
        Waited::Done(Err(ReadError::Rejected(reject))) => {
            Err(refused(End::Refused(reject), None, false))
        }
        Waited::TimedOut => Err(refused(timed_out, None, false)),
        Waited::Stopped => Err(refused(End::ShuttingDown, None, false)),
    }
}

fn ended(end: End, complete: bool) -> Ended {
    Ended {
        end,
        complete,
        keep_alive: false,
    }
}

/// How passing a request body on ended.
enum Pumped {
    /// Read to its end.
    Complete,
    /// The handler stopped taking it.
    Abandoned,
    Failed(BodyError),
}

/// Passes a request body from the socket to the handler as it arrives, each read within
/// `idle` (a body that stops arriving ends in `TimedOut`).
async fn pump(conn: &mut Conn, reader: &mut BodyReader, to: BodySender, idle: Duration) -> Pumped {
    loop {
        let failure = match timeout(idle, conn.body_piece(reader)).await {
            Ok(Ok(Some(data))) => {
                if to.send(Ok(data)).await.is_err() {
                    return Pumped::Abandoned;
                }
                continue;
            }
            Ok(Ok(None)) => return Pumped::Complete,
            Ok(Err(ReadError::Closed)) => BodyError::Closed,
            Ok(Err(ReadError::Rejected(Reject::PayloadTooLarge))) => BodyError::TooLarge,
            Ok(Err(ReadError::Rejected(_))) => BodyError::Malformed,
            Err(_) => BodyError::TimedOut,
        };
        let _ = to.send(Err(failure)).await;
        return Pumped::Failed(failure);
    }
}

fn processed(status: u16, written: bool) -> End {
    if written {
        End::Processed { status }
    } else {
        End::WriteError { status }
    }
}

/// Runs the handler (after the simulated work); `Err` if it panicked.
async fn run_handler<H: Handler>(
    core: &Core,
    handler: &H,
    request: &Request,
) -> Result<Response, ()> {
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
