//! The TCP side: connections accepted, requests read, admitted, processed and answered,
//! each in its own connection's task.
//!
//! The parts, one file each:
//! - [`accept`]: the accept loop: the connection cap, accept errors and their backoff.
//! - [`connection`]: one connection's bytes: read a head and a body under a deadline,
//!   write an answer with its `Date`, close gracefully.
//! - [`admission`]: the token bucket, then a permit or a place in the queue
//!   ([`crate::pool`]): a decision, with the permit as an RAII guard.
//! - [`ending`]: every way a request ends (outcome, status, prebuilt answer), and the one
//!   `finish` that counts and traces it.
//! - [`exchange`]: one connection's requests from first byte to close, in that order.
//!
//! The lifecycle (running, stopping, draining, hard stop) is [`crate::lifecycle`]; what a
//! request means is [`crate::handler`]; the wire format is [`crate::http`].

mod accept;
mod admission;
mod connection;
mod ending;
mod exchange;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::Config;
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::pool::Pool;

pub(crate) use accept::{accept_loop, AcceptErrors};
pub(crate) use admission::Admission;
pub(crate) use ending::Answers;

/// State shared by the accept loop, the connections and the admin server.
pub(crate) struct Core {
    pub config: Config,
    pub metrics: Metrics,
    pub admission: Admission,
    pub lifecycle: Lifecycle,
    pub answers: Answers,
    next_connection_id: AtomicU64,
    /// `TCPIE_MAX_CONNECTIONS` permits, shared by the accept loops.
    connection_cap: Arc<Semaphore>,
    /// The TCP port, for the `server.port` span attribute.
    pub server_port: u16,
}

impl Core {
    pub fn new(config: Config, metrics: Metrics, server_port: u16) -> Core {
        metrics.workers.set(config.workers as i64);
        metrics.queue_capacity.set(config.queue_size as i64);
        metrics.connections_max.set(config.max_connections as i64);
        Core {
            connection_cap: Arc::new(Semaphore::new(config.max_connections)),
            admission: Admission::new(&config, &metrics, Instant::now()),
            lifecycle: Lifecycle::new(),
            answers: Answers::new(),
            metrics,
            config,
            next_connection_id: AtomicU64::new(0),
            server_port,
        }
    }

    pub fn pool(&self) -> &Pool {
        self.admission.pool()
    }

    /// Tokens in the bucket now; with rate limiting off, the bucket is "infinite" and
    /// this reports 0 so dashboards do not plot a meaningless figure.
    pub fn tokens(&self, now: Instant) -> f64 {
        self.admission.tokens(now)
    }

    /// Whether a stop signal has arrived.
    pub fn shutting_down(&self) -> bool {
        self.lifecycle.reached(Phase::Stopping)
    }

    /// Whether the server should receive new traffic.
    pub fn ready(&self) -> bool {
        let threshold = self.config.ready_queue_threshold;
        !(self.shutting_down() || (threshold > 0.0 && self.pool().fill() >= threshold))
    }

    /// Whether the worker pool makes progress.
    pub fn live(&self, now: Instant) -> bool {
        !self.pool().stalled(now, self.config.liveness_stall())
    }
}
