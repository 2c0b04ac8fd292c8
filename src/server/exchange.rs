//! One connection's requests, from its first byte to its close, in its own task: read the
//! head (absolute deadline), then the body; admission; a permit now or a wait in the
//! queue; the handler; the answer; the permit back. With keep-alive, again.
//!
//! Every request ends in exactly one [`End`], passed to [`finish`] (or, when the client
//! leaves before its request is complete, in none: it is counted as a connection closed
//! before a request). Reading holds neither a permit nor a place in the queue (except the
//! body of an admitted `Expect: 100-continue` request). Phase changes reach a request
//! only where it waits (see [`crate::lifecycle`]): past the drain deadline, whatever is
//! left is answered 503.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tracing::Instrument;

use super::admission::{Decision, Quota, Verdict};
use super::connection::{Conn, ReadError};
use super::ending::{finish, End};
use super::Core;
use crate::handler::{Handler, Request, Response};
use crate::http::{self, Body};
use crate::lifecycle::Phase;
use crate::metrics::Outcome;
use crate::pool::{Entry, Permit};
use crate::request_span::RequestSpan;

/// How one request went.
struct Ended {
    end: End,
    /// The request was read to its end (nothing of it is left in the socket).
    complete: bool,
    /// The connection may carry another request.
    keep_alive: bool,
}

/// Serves one connection (accepted at `accepted`): one request, or with keep-alive as
/// many as it may carry.
pub(crate) async fn serve<H: Handler>(
    core: Arc<Core>,
    handler: Arc<H>,
    mut conn: Conn,
    accepted: Instant,
) {
    let lifecycle = &core.lifecycle;
    let read_timeout = core.config.read_timeout();
    let max_head = core.config.max_header_bytes;
    let id = conn.id;
    let mut served: u64 = 0;
    let complete = loop {
        let first = served == 0;
        // Wait for the request's first bytes. The first request's head has an absolute
        // deadline from the accept; a kept-alive connection may idle up to its idle time
        // (and closes quietly then, or when the listener closes), then its head gets the
        // read deadline.
        let (started, deadline) = if first {
            if !conn.has_buffered() {
                // Boxed, like every wait below: the task holds only a pointer to it.
                let wait = timeout_at(accepted + read_timeout, conn.first_bytes(max_head));
                match Box::pin(lifecycle.unless(Phase::HardStop, id, wait)).await {
                    Some(Ok(Ok(()))) => {}
                    // Closed without a byte (a port scan, a TCP probe), or never a byte by
                    // the deadline or the hard stop (a client's spare connection): no
                    // request, and no answer nobody asked for.
                    Some(Ok(Err(_))) | Some(Err(_)) | None => {
                        core.metrics.connections_closed_before_request.inc();
                        break true;
                    }
                }
            }
            (accepted, accepted + read_timeout)
        } else {
            if !conn.has_buffered() {
                let idle_until = Instant::now() + core.config.keep_alive_idle();
                let wait = timeout_at(idle_until, conn.first_bytes(max_head));
                if !matches!(
                    Box::pin(lifecycle.unless(Phase::Draining, id, wait)).await,
                    Some(Ok(Ok(())))
                ) {
                    break true;
                }
            }
            let now = Instant::now();
            (now, now + read_timeout)
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
        // Boxed: only a request in progress needs this state, so the connection's task
        // stays small (it is copied when spawned, and kept while idle).
        let ended = Box::pin(exchange.run(&mut conn, &*handler, deadline, may_keep)).await;
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
        Box::pin(conn.linger(lifecycle)).await;
    }
}

/// One request, from its head on.
struct Exchange<'a> {
    core: &'a Core,
    span: &'a RequestSpan,
    head_only: bool,
}

impl Exchange<'_> {
    /// Head, body, admission, processing, answer. `None` when the client left before its
    /// request was complete.
    async fn run<H: Handler>(
        &self,
        conn: &mut Conn,
        handler: &H,
        deadline: Instant,
        may_keep: bool,
    ) -> Option<Ended> {
        let core = self.core;
        let id = conn.id;
        let refused = |end| Ended {
            end,
            complete: false,
            keep_alive: false,
        };
        let read = timeout_at(deadline, conn.read_head(core.config.max_header_bytes));
        let (head, bytes) = match core.lifecycle.unless(Phase::HardStop, id, read).await {
            Some(Ok(Ok(head))) => head,
            Some(Ok(Err(ReadError::Closed))) => return None,
            Some(Ok(Err(ReadError::Rejected(reject)))) => {
                return Some(refused(self.refuse(conn, End::Refused(reject)).await))
            }
            Some(Err(_)) => return Some(refused(self.refuse(conn, End::HeadTimeout).await)),
            None => return Some(refused(self.refuse(conn, End::ShuttingDown).await)),
        };
        let request = Request::new(bytes, &head);
        self.span.request(&request);
        let client = core.admission.client(conn.peer.ip(), &request);
        let decide = || {
            let Verdict {
                decision,
                quota,
                dry_run_refused,
            } = core
                .admission
                .decide(&core.lifecycle, Instant::now(), client, &core.metrics);
            if let Some(limit) = dry_run_refused {
                self.span.dry_run_rejected(limit);
            }
            (decision, quota)
        };
        // What the rate limits said, for the `RateLimit` fields of the answer.
        let mut quota = None;
        // Each request on a kept-alive connection is admitted on its own; one that is
        // rejected, the last one allowed, or one during shutdown closes it.
        let keep_alive = may_keep && request.wants_keep_alive && !core.shutting_down();

        // With `Expect: 100-continue` (and no body bytes sent yet), admission comes first:
        // a request that will be refused is answered at once, and its client never uploads
        // the body for nothing (RFC 9110 §10.1.1); an admitted one holds its place while
        // the body arrives.
        let mut admitted = None;
        if head.body != Body::Empty && head.expect_continue && !conn.has_buffered() {
            let (decision, said) = decide();
            quota = said;
            match decision {
                Decision::Enter(entry) => admitted = Some(entry),
                Decision::Refuse(end) => {
                    return Some(refused(self.refuse_with(conn, end, quota).await))
                }
            }
            if !conn
                .write_raw(http::CONTINUE, core.config.write_timeout())
                .await
            {
                return None;
            }
        }
        let read = timeout_at(deadline, conn.read_body(head.body));
        match core.lifecycle.unless(Phase::HardStop, id, read).await {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(ReadError::Closed))) => return None,
            Some(Ok(Err(ReadError::Rejected(reject)))) => {
                return Some(refused(self.refuse(conn, End::Refused(reject)).await))
            }
            Some(Err(_)) => return Some(refused(self.refuse(conn, End::BodyTimeout).await)),
            None => return Some(refused(self.refuse(conn, End::ShuttingDown).await)),
        }

        let read_whole = |end| Ended {
            end,
            complete: true,
            keep_alive,
        };
        let entry = match admitted {
            Some(entry) => entry,
            None => {
                let (decision, said) = decide();
                quota = said;
                match decision {
                    Decision::Enter(entry) => entry,
                    Decision::Refuse(end) => {
                        return Some(read_whole(self.refuse_with(conn, end, quota).await))
                    }
                }
            }
        };
        let admitted_at = Instant::now();
        // The `queue` span covers the wait for a permit: empty when one was free.
        let queue_span = self.span.queue_span();
        let permit = match entry {
            Entry::Now(permit) => Ok(permit),
            Entry::Wait(wait) => {
                let waiting = wait.permit().instrument(queue_span.clone());
                // A request still waiting after TCPIE_QUEUE_TIMEOUT_MS would be served too
                // late to matter: it gives up its place (the Wait's drop) and gets a 503.
                let limited = async {
                    match core.config.queue_timeout() {
                        Some(limit) => timeout(limit, waiting).await.map_err(|_| End::QueueTimeout),
                        None => Ok(waiting.await),
                    }
                };
                match core.lifecycle.unless(Phase::HardStop, id, limited).await {
                    Some(Ok(Some(permit))) => Ok(permit),
                    Some(Err(end)) => Err(end),
                    Some(Ok(None)) | None => Err(End::ShuttingDown),
                }
            }
        };
        drop(queue_span);
        let permit = match permit {
            Ok(permit) => permit,
            Err(end) => return Some(read_whole(self.refuse_with(conn, end, quota).await)),
        };
        let waited = admitted_at.elapsed();
        core.metrics.queue_wait.observe(waited.as_secs_f64());
        self.span.queued(waited);
        let end = self
            .process(conn, handler, &request, permit, keep_alive, quota)
            .await;
        Some(read_whole(end))
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
        let fields = quota.map(fields);
        let fields = fields.as_ref().map_or(&[][..], |f| f.as_bytes());
        let work = run_handler(core, handler, request).instrument(self.span.process_span());
        let limit = core.config.write_timeout();
        let end = match core.lifecycle.unless(Phase::HardStop, conn.id, work).await {
            Some(Ok(response)) => {
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
            Some(Err(())) => {
                let written = conn
                    .answer(&core.answers.internal_error, fields, self.head_only, limit)
                    .await;
                processed(500, written)
            }
            None => self.refuse_with(conn, End::ShuttingDown, quota).await,
        };
        drop(permit);
        end
    }

    /// Writes the prebuilt answer of `end` and returns `end`.
    async fn refuse(&self, conn: &mut Conn, end: End) -> End {
        self.refuse_with(conn, end, None).await
    }

    /// Writes the prebuilt answer of `end`, with the `RateLimit` fields of `quota`, and
    /// returns `end`.
    async fn refuse_with(&self, conn: &mut Conn, end: End, quota: Option<Quota>) -> End {
        if let Some(answer) = end.answer(&self.core.answers) {
            let fields = quota.map(fields);
            let fields = fields.as_ref().map_or(&[][..], |f| f.as_bytes());
            conn.answer(
                &answer,
                fields,
                self.head_only,
                self.core.config.write_timeout(),
            )
            .await;
        }
        end
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields of what a rate limit said.
fn fields(quota: Quota) -> http::RateLimitFields {
    http::RateLimitFields::new(
        quota.limit.as_str(),
        quota.burst,
        quota.window,
        quota.remaining,
        quota.full_in,
    )
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
