//! The accept loop: takes connections until the listener closes (the `Draining` phase),
//! never more than `TCPIE_MAX_CONNECTIONS` open. Accept errors never stop it: they are
//! counted, logged at most every few seconds, and retried with a backoff.
//!
//! A connection gets a task of its own ([`super::exchange`]) only once its first bytes
//! arrive. Until then it waits in the loop's idle set: its socket's readiness is watched
//! with a waker that names it, and its read deadline sits in one FIFO (deadlines come in
//! accept order) behind a single timer. A silent connection costs its socket, a slot and
//! a waker, not a task: a few hundred bytes. One whose deadline passes without a byte is
//! closed without an answer (a connection closed before a request); at the end of the
//! loop, every idle one gets its task.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::task::TaskTracker;

use super::connection::{Conn, OpenGuard};
use super::{exchange, Core};
use crate::handler::Handler;
use crate::lifecycle::Phase;

/// Accept errors back off from this ...
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// ... to this, doubling while errors continue.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept errors are logged at most this often.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Accepts connections until the `Draining` phase, never more than `max_connections`
/// open, then closes the listener. One loop: a second one on the same listener was
/// measured (bench/RESULTS.md) and cost more than it spread, both loops being woken for
/// every connection.
pub(crate) async fn accept_loop<H: Handler>(
    core: Arc<Core>,
    handler: Arc<H>,
    listener: TcpListener,
    connections: TaskTracker,
) {
    let spawn = |conn: Conn, accepted: Instant| {
        // Boxed: the task's own state is then a pointer. tokio copies a task's whole
        // future when it spawns it and again as it finishes (callgrind: six copies of
        // 3.4 KB a connection unboxed); boxed, the connection's state is copied once.
        connections.spawn(Box::pin(exchange::serve(
            core.clone(),
            handler.clone(),
            conn,
            accepted,
        )));
    };
    let limit = core.connection_cap.clone();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut idle = Idle::new(ready_tx);
    let mut errors = AcceptErrors::new("tcp");
    // One wait for the end, registered once for the life of the loop.
    let mut stop = pin!(core.lifecycle.until(Phase::Draining));
    let mut expiry = pin!(sleep_until(Instant::now()));
    let mut permit = None;
    loop {
        let next_deadline = idle.next_deadline();
        if let Some(at) = next_deadline {
            if expiry.deadline() != at {
                expiry.as_mut().reset(at);
            }
        }
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some((key, id)) = ready_rx.recv() => {
                if let Some((conn, accepted)) = idle.take(key, id) {
                    spawn(conn, accepted);
                }
            }
            _ = &mut expiry, if next_deadline.is_some() => {
                for (mut conn, accepted) in idle.expired(Instant::now()) {
                    // A connection that never sent a byte is closed without an answer, as
                    // nginx and HAProxy (`http-ignore-probes`) do: clients open spare
                    // connections they may never use, and an unasked-for 408 on one would be
                    // read as the answer to their next request. Bytes that came just now
                    // are a request, late: it gets its task, and its 408.
                    if conn.try_first_bytes(core.config.max_header_bytes) {
                        spawn(conn, accepted);
                    } else {
                        core.metrics.connections_closed_before_request.inc();
                    }
                }
            }
            // The permit comes before accept(): at the cap, new connections wait in the
            // kernel's backlog instead of in tasks of ours.
            p = limit.clone().acquire_owned(), if permit.is_none() => match p {
                Ok(p) => permit = Some(p),
                Err(_) => break,
            },
            accepted = listener.accept(), if permit.is_some() => match accepted {
                Ok((stream, peer)) => {
                    errors.accepted();
                    let Some(permit) = permit.take() else { continue };
                    let accepted = Instant::now();
                    core.metrics.connections_accepted.inc();
                    core.metrics.connections_open.inc();
                    let id = core.next_connection_id.fetch_add(1, Ordering::Relaxed);
                    let open = OpenGuard::new(permit, core.metrics.connections_open.clone());
                    let conn = Conn::new(stream, peer, id, open);
                    if core.config.keep_alive {
                        conn.set_nodelay();
                    }
                    let deadline = accepted + core.config.read_timeout();
                    let max_head = core.config.max_header_bytes;
                    if let Some(conn) = idle.park(conn, accepted, deadline, max_head) {
                        spawn(conn, accepted);
                    }
                }
                Err(error) => {
                    core.metrics.accept_errors.inc();
                    if let Some(wait) = errors.failed(&error, Instant::now()).wait {
                        tokio::select! {
                            biased;
                            _ = &mut stop => break,
                            _ = sleep(wait) => {}
                        }
                    }
                }
            },
        }
    }
    // The listener closes here; connections still silent wait on in tasks of their own
    // (an accepted connection is served, even one still to send its head).
    drop(listener);
    for (conn, accepted) in idle.drain() {
        spawn(conn, accepted);
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// What a failed `accept()` calls for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// How long to wait before accepting again, if at all.
    pub wait: Option<Duration>,
    /// Whether this one was logged (at most one every few seconds).
    pub logged: bool,
}

/// Accept errors of one port: logged at most every 5 s (with the count left unlogged), and
/// retried after a backoff from 5 ms to 1 s that doubles while they continue.
#[derive(Debug)]
pub(crate) struct AcceptErrors {
    port: &'static str,
    backoff: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    pub fn new(port: &'static str) -> AcceptErrors {
        AcceptErrors {
            port,
            backoff: Duration::ZERO,
            last_log: None,
            unlogged: 0,
        }
    }

    /// A connection was accepted: the next error starts from the shortest backoff.
    pub fn accepted(&mut self) {
        self.backoff = Duration::ZERO;
    }

    pub fn failed(&mut self, error: &std::io::Error, now: Instant) -> Failure {
        let logged = self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY);
        if logged {
            tracing::error!(port = self.port, %error, suppressed = self.unlogged, "accept failed; backing off");
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        // A connection reset before we took it is the client's problem, not ours; anything
        // else (out of file descriptors, of memory) would fail again at once, so wait
        // before retrying rather than spin.
        let wait = (!is_connection_error(error)).then(|| {
            self.backoff = (self.backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
            self.backoff
        });
        Failure { wait, logged }
    }
}

/// Connections accepted but silent so far.
struct Idle {
    /// Each with the time it was accepted.
    conns: Slab<(Conn, Instant)>,
    /// Read deadlines in accept order, so in time order: (deadline, slot, connection id).
    /// An entry whose connection has left the slot is stale and skipped.
    deadlines: VecDeque<(Instant, usize, u64)>,
    ready: mpsc::UnboundedSender<(usize, u64)>,
}

/// Wakes the accept loop with the slot and id of a connection whose bytes arrived.
struct Ready {
    key: usize,
    id: u64,
    to: mpsc::UnboundedSender<(usize, u64)>,
}

impl Wake for Ready {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.to.send((self.key, self.id));
    }
}

impl Idle {
    fn new(ready: mpsc::UnboundedSender<(usize, u64)>) -> Idle {
        Idle {
            conns: Slab::new(),
            deadlines: VecDeque::new(),
            ready,
        }
    }

    /// Keeps `conn` until its first bytes arrive; gives it back if they already have
    /// (read into its buffer: the common case, a client that sent its request at once).
    fn park(
        &mut self,
        mut conn: Conn,
        accepted: Instant,
        deadline: Instant,
        max_head: usize,
    ) -> Option<Conn> {
        if conn.try_first_bytes(max_head) {
            return Some(conn);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let waker = Waker::from(Arc::new(Ready {
            key,
            id: conn.id,
            to: self.ready.clone(),
        }));
        match conn.poll_first_bytes(&mut Context::from_waker(&waker)) {
            Poll::Ready(()) => Some(conn),
            Poll::Pending => {
                self.deadlines.push_back((deadline, key, conn.id));
                entry.insert((conn, accepted));
                None
            }
        }
    }

    /// The connection in `key`, if it is still the one with `id`.
    fn take(&mut self, key: usize, id: u64) -> Option<(Conn, Instant)> {
        let taken = match self.conns.get(key) {
            Some((conn, _)) if conn.id == id => Some(self.conns.remove(key)),
            _ => None,
        };
        self.drop_stale();
        taken
    }

    /// Removes the deadlines of connections that are gone, from the front, so the timer
    /// is only armed for one that is still waiting.
    fn drop_stale(&mut self) {
        while let Some(&(_, key, id)) = self.deadlines.front() {
            if self.conns.get(key).is_some_and(|(c, _)| c.id == id) {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _, _)| *at)
    }

    /// The connections whose deadline has passed.
    fn expired(&mut self, now: Instant) -> Vec<(Conn, Instant)> {
        let mut out = Vec::new();
        while let Some(&(at, key, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if self.conns.get(key).is_some_and(|(c, _)| c.id == id) {
                out.push(self.conns.remove(key));
            }
        }
        self.drop_stale();
        out
    }

    /// Every connection still waiting.
    fn drain(&mut self) -> impl Iterator<Item = (Conn, Instant)> + '_ {
        self.deadlines.clear();
        self.conns.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_and_are_logged_at_most_every_five_seconds() {
        let mut errors = AcceptErrors::new("tcp");
        let emfile = Error::from_raw_os_error(24);
        let mut now = Instant::now();
        let mut waits = Vec::new();
        let mut logged = 0;
        for _ in 0..13 {
            let f = errors.failed(&emfile, now);
            logged += usize::from(f.logged);
            let wait = f.wait.expect("out of descriptors waits");
            waits.push(wait.as_millis());
            now += wait;
        }
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
        // 6.3 s of errors: logged at the first, and once 5 s had passed.
        assert_eq!(logged, 2);
        // A reset by the client costs no wait; an accepted connection resets the backoff.
        let reset = errors.failed(&Error::from(ErrorKind::ConnectionReset), now);
        assert_eq!(reset.wait, None);
        errors.accepted();
        assert_eq!(errors.failed(&emfile, now).wait, Some(ACCEPT_BACKOFF_MIN));
    }
}
