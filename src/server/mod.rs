//! The TCP side: connections accepted, requests read, admitted, processed and answered,
//! each in its own connection's task.
//!
//! The parts, one file each:
//! - [`accept`]: the accept loop: the connection cap, the idle set of silent
//!   connections, accept errors and their backoff.
//! - [`connection`]: one connection's bytes: read a head and a body under a deadline,
//!   write an answer with its `Date`, close gracefully.
//! - [`exchange`]: one connection's requests from first byte to close, as steps.
//! - [`ending`]: every way a request ends (outcome, status, prebuilt answer), and the one
//!   `finish` that counts and traces it.
//! - [`descriptors`]: the open-file budget that sets the connection cap.
//!
//! Whether a request enters is [`crate::admission`]'s; the lifecycle (running, stopping,
//! draining, hard stop) is [`crate::lifecycle`]'s; what a request means is the
//! [`crate::Handler`]'s; the wire format is [`crate::http`]'s.

mod accept;
mod connection;
pub mod descriptors;
mod ending;
mod exchange;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::admission::pool::Pool;
use crate::admission::Admission;
use crate::config::Config;
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::ratelimit::fleet::Fleet;

pub(crate) use accept::{accept_loop, AcceptErrors};
pub(crate) use ending::Answers;

/// State shared by the accept loop, the connections and the admin server.
pub(crate) struct Core {
    pub config: Config,
    pub metrics: Metrics,
    pub admission: Admission,
    pub lifecycle: Lifecycle,
    pub answers: Answers,
    next_connection_id: AtomicU64,
    /// `TCPIE_MAX_CONNECTIONS` permits, taken by the accept loop before each accept.
    connection_cap: Arc<Semaphore>,
    /// The TCP port, for the `server.port` span attribute.
    pub server_port: u16,
}

impl Core {
    pub fn new(
        config: Config,
        metrics: Metrics,
        server_port: u16,
        fleet: Option<Arc<Fleet>>,
    ) -> Core {
        metrics.workers.set(config.workers as i64);
        metrics.queue_capacity.set(config.queue_size as i64);
        metrics.connections_max.set(config.max_connections as i64);
        Core {
            connection_cap: Arc::new(Semaphore::new(config.max_connections)),
            admission: Admission::new(&config, &metrics, Instant::now(), fleet),
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

    /// Tokens in the global bucket now (0 with rate limiting off).
    pub fn tokens(&self, now: Instant) -> f64 {
        self.admission.limits().tokens(now)
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
