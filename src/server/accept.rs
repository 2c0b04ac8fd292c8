//! The accept loop: takes connections until the listener closes (the `Draining` phase),
//! never more than `TCPIE_MAX_CONNECTIONS` open, and gives each a task of its own
//! ([`super::exchange`]). Accept errors never stop it: they are counted, logged at most
//! every few seconds, and retried with a backoff.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};
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

/// Accepts connections until the listener closes, never more than `max_connections`
/// open. The listener is dropped (closed) when this returns.
pub(crate) async fn accept_loop<H: Handler>(
    core: Arc<Core>,
    handler: Arc<H>,
    listener: TcpListener,
    connections: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(core.config.max_connections));
    let mut backoff = Duration::ZERO;
    let mut last_log: Option<Instant> = None;
    let mut unlogged: u64 = 0;
    // One wait for the end, registered once for the life of the loop.
    let mut stop = pin!(core.lifecycle.until(Phase::Draining));
    loop {
        // The permit comes before accept(): at the cap, new connections wait in the
        // kernel's backlog instead of in tasks of ours.
        let permit = tokio::select! {
            biased;
            _ = &mut stop => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                core.metrics.connections_accepted.inc();
                core.metrics.connections_open.inc();
                let id = core.next_connection_id.fetch_add(1, Ordering::Relaxed);
                let open = OpenGuard::new(permit, core.metrics.connections_open.clone());
                let conn = Conn::new(stream, peer, id, open);
                if core.config.keep_alive {
                    conn.set_nodelay();
                }
                connections.spawn(exchange::serve(core.clone(), handler.clone(), conn));
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
                    _ = &mut stop => break,
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
