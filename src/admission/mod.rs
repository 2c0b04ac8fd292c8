//! Admission: whether a read request enters, decided without waiting. The client's own
//! bucket and the global one first ([`crate::ratelimit`], 429 when either is empty), then
//! a permit to be processed now or a place in the FIFO queue ([`pool`], 503 when both are
//! full).
//!
//! This module owns the order of the checks and what each refusal is; the arithmetic is
//! the buckets' and the pool's. A refused request spends nothing of what comes after the
//! check that refused it. In dry run (`TCPIE_RATE_LIMIT_DRY_RUN`) the rate limits decide
//! and count exactly as they would, and the request goes on to the pool.

pub(crate) mod pool;

use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::Config;
use crate::handler::Request;
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::ratelimit::client_key::LastClient;
use crate::ratelimit::client_table::ClientId;
use crate::ratelimit::fleet::Fleet;
use crate::ratelimit::gcra::retry_after_secs;
use crate::ratelimit::{Limit, Quota, RateLimits};
use pool::{Entry, Pool};

/// The rate limits and the pool.
pub(crate) struct Admission {
    limits: RateLimits,
    pool: Pool,
}

/// Why admission refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 429: a rate limit's bucket is empty; retry in so many seconds.
    RateLimited { limit: Limit, retry_after: u64 },
    /// 503: no permit and no place in the queue.
    QueueFull,
    /// 503: past the drain deadline.
    ShuttingDown,
}

/// What admission decided for one request.
pub(crate) enum Decision<'a> {
    /// Admitted: a permit now, or a place in the queue.
    Enter(Entry<'a>),
    /// Refused.
    Refuse(Refusal),
}

/// A decision, what the rate limits said, and the limit that dry run overruled.
pub(crate) struct Verdict<'a> {
    pub decision: Decision<'a>,
    /// On a refusal by a rate limit, and on every answer with `TCPIE_RATE_LIMIT_HEADERS`.
    pub quota: Option<Quota>,
    pub dry_run_refused: Option<Limit>,
}

impl Admission {
    pub fn new(
        config: &Config,
        metrics: &Metrics,
        now: Instant,
        fleet: Option<Arc<Fleet>>,
    ) -> Admission {
        let limits = RateLimits::new(
            config,
            now,
            metrics.clients_dropped_refilled.clone(),
            metrics.clients_dropped_evicted.clone(),
            fleet,
        );
        metrics
            .rate_limit_client_table_size
            .set(limits.client_table_size() as i64);
        Admission {
            limits,
            pool: Pool::new(config.workers, config.queue_size, now),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The client that sent `request` over a connection from `peer`, if clients are named;
    /// `last` is the connection's last client.
    pub fn client(
        &self,
        peer: IpAddr,
        request: &Request,
        last: &mut LastClient,
    ) -> Option<ClientId> {
        self.limits.client(peer, request, last)
    }

    /// The client's bucket, then the global one, then a permit or a place; past the
    /// drain deadline, nothing. Only a fleet's client bucket waits (for Redis, within
    /// `TCPIE_REDIS_TIMEOUT_MS`); everything else is decided at once.
    pub async fn decide(
        &self,
        lifecycle: &Lifecycle,
        now: Instant,
        client: Option<ClientId>,
        metrics: &Metrics,
    ) -> Verdict<'_> {
        let verdict = |decision, quota, dry_run_refused| Verdict {
            decision,
            quota,
            dry_run_refused,
        };
        if lifecycle.reached(Phase::HardStop) {
            return verdict(Decision::Refuse(Refusal::ShuttingDown), None, None);
        }
        let said = self.limits.check(now, client).await;
        let mut dry_run_refused = None;
        if let Some((limit, wait)) = said.refused {
            metrics.rate_limited(limit, self.limits.dry_run);
            if !self.limits.dry_run {
                let retry_after = retry_after_secs(wait);
                let refusal = Refusal::RateLimited { limit, retry_after };
                return verdict(Decision::Refuse(refusal), said.quota, None);
            }
            dry_run_refused = Some(limit);
        }
        let now = if self.limits.fleet().is_some() {
            Instant::now()
        } else {
            now
        };
        let decision = match self.pool.try_enter(now) {
            Some(entry) => Decision::Enter(entry),
            None if lifecycle.reached(Phase::HardStop) => Decision::Refuse(Refusal::ShuttingDown),
            None => Decision::Refuse(Refusal::QueueFull),
        };
        verdict(decision, said.quota, dry_run_refused)
    }
}
