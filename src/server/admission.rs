//! Admission: the client's own bucket (when `TCPIE_CLIENT_KEY` names clients), the
//! global bucket (429 when either is empty), then a permit to be processed now or a place
//! in the FIFO queue (503 when both are full), decided without waiting.
//!
//! This file owns the order of the checks, what each refusal is, and what the rate limits
//! say of a request (the `RateLimit` fields); the arithmetic is the buckets'
//! ([`crate::ratelimit`], [`crate::clients`]) and the pool's ([`crate::pool`]). A refused
//! request spends nothing of what comes after the check that refused it, nor of the
//! client's bucket when the global one refuses it: a client is not charged for a request
//! it was not served. In dry run (`TCPIE_RATE_LIMIT_DRY_RUN`) the rate limits decide and
//! count exactly as they would, and the request goes on to the pool.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::ending::End;
use crate::client_key::{self, ClientKey};
use crate::clients::{ClientId, ClientTable};
use crate::config::Config;
use crate::handler::Request;
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::{Limit, Metrics};
use crate::pool::{Entry, Pool};
use crate::ratelimit::{retry_after_secs, Gcra, TokenBucket};

/// The buckets and the pool.
pub(crate) struct Admission {
    bucket: Option<TokenBucket>,
    clients: Option<Clients>,
    dry_run: bool,
    /// `RateLimit` fields on every answer, not only on 429.
    headers: bool,
    pool: Pool,
}

/// The per-client limit: how clients are named, and their buckets.
struct Clients {
    key: ClientKey,
    trusted_hops: u32,
    table: ClientTable,
}

/// What a rate limit says of a request: its policy and its state (the `RateLimit-Policy`
/// and `RateLimit` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub limit: Limit,
    /// The bucket's capacity, and the time it takes to refill from empty.
    pub burst: u32,
    pub window: Duration,
    /// Whole tokens left, and the time until the bucket is full again.
    pub remaining: u32,
    pub full_in: Duration,
}

/// What admission decided for one request.
pub(crate) enum Decision<'a> {
    /// Admitted: a permit now, or a place in the queue.
    Enter(Entry<'a>),
    /// Refused, and how the request ends.
    Refuse(End),
}

/// A decision, what the rate limits said, and the limit that dry run overruled.
pub(crate) struct Verdict<'a> {
    pub decision: Decision<'a>,
    /// On a refusal by a rate limit, and on every answer with `TCPIE_RATE_LIMIT_HEADERS`.
    pub quota: Option<Quota>,
    pub dry_run_refused: Option<Limit>,
}

impl Admission {
    pub fn new(config: &Config, metrics: &Metrics, now: Instant) -> Admission {
        let clients = (config.client_key != ClientKey::None).then(|| Clients {
            key: config.client_key.clone(),
            trusted_hops: config.trusted_hops,
            table: ClientTable::new(
                config.client_rate_per_second,
                config.client_burst,
                config.client_table_size,
                now,
                metrics.clients_dropped_refilled.clone(),
                metrics.clients_dropped_evicted.clone(),
            ),
        });
        metrics
            .rate_limit_client_table_size
            .set(clients.as_ref().map_or(0, |c| c.table.size() as i64));
        Admission {
            bucket: config
                .rate_limited()
                .then(|| TokenBucket::new(config.rate_per_second, config.burst, now)),
            clients,
            dry_run: config.rate_limit_dry_run,
            headers: config.rate_limit_headers,
            pool: Pool::new(config.workers, config.queue_size, now),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn tokens(&self, now: Instant) -> f64 {
        self.bucket.as_ref().map_or(0.0, |b| b.available(now))
    }

    /// Clients tracked now (0 without a per-client limit).
    pub fn clients_tracked(&self) -> usize {
        self.clients.as_ref().map_or(0, |c| c.table.len())
    }

    /// The client that sent `request` over a connection from `peer`, hashed; `None`
    /// without a per-client limit.
    pub fn client(&self, peer: IpAddr, request: &Request) -> Option<ClientId> {
        let clients = self.clients.as_ref()?;
        let identity = client_key::identify(&clients.key, clients.trusted_hops, peer, request)?;
        Some(clients.table.id(&identity))
    }

    /// The client's bucket, then the global one, then a permit or a place; past the
    /// drain deadline, nothing.
    pub fn decide(
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
            return verdict(Decision::Refuse(End::ShuttingDown), None, None);
        }
        let (refused, quota) = self.rate_limits(now, client);
        let mut dry_run_refused = None;
        if let Some((limit, wait)) = refused {
            metrics.rate_limited(limit, self.dry_run);
            if !self.dry_run {
                let retry_after = retry_after_secs(wait);
                let end = match limit {
                    Limit::Global => End::RateLimited { retry_after },
                    Limit::Client => End::ClientRateLimited { retry_after },
                };
                return verdict(Decision::Refuse(end), quota, None);
            }
            dry_run_refused = Some(limit);
        }
        let decision = match self.pool.try_enter(now) {
            Some(entry) => Decision::Enter(entry),
            None if lifecycle.reached(Phase::HardStop) => Decision::Refuse(End::ShuttingDown),
            None => Decision::Refuse(End::QueueFull),
        };
        verdict(decision, quota, dry_run_refused)
    }

    /// The rate limits' answer: which refused (and for how long), and the quota to
    /// report (when refused, or with `TCPIE_RATE_LIMIT_HEADERS`).
    fn rate_limits(
        &self,
        now: Instant,
        client: Option<ClientId>,
    ) -> (Option<(Limit, Duration)>, Option<Quota>) {
        let global_quota = |bucket: &TokenBucket, tat| {
            let (remaining, full_in) = bucket.state(tat, now);
            quota(Limit::Global, bucket.gcra(), remaining, full_in)
        };
        let (Some(clients), Some(id)) = (&self.clients, client) else {
            // The global bucket alone: the path every request took before per-client
            // limits, with nothing more to do unless the fields are wanted.
            let Some(bucket) = &self.bucket else {
                return (None, None);
            };
            return match bucket.take(now) {
                Ok(tat) => (None, self.headers.then(|| global_quota(bucket, Some(tat)))),
                Err(wait) => (
                    Some((Limit::Global, wait)),
                    Some(global_quota(bucket, None)),
                ),
            };
        };
        // The global bucket is asked while the client's state is held, so that a client
        // is charged only when both agree.
        let mut global = None;
        let taken = clients.table.take(id, now, || match &self.bucket {
            None => true,
            Some(bucket) => {
                let result = bucket.take(now);
                let ok = result.is_ok();
                global = Some(result);
                ok
            }
        });
        let gcra = clients.table.gcra();
        match (taken, global) {
            (Err(refused), _) => (
                Some((Limit::Client, refused.wait)),
                Some(quota(Limit::Client, gcra, 0, refused.full_in)),
            ),
            (Ok(_), Some(Err(wait))) => {
                let bucket = self.bucket.as_ref().map(|b| global_quota(b, None));
                (Some((Limit::Global, wait)), bucket)
            }
            (Ok(taken), global) => {
                if !self.headers {
                    return (None, None);
                }
                // Admitted by both: report the one closer to refusing (fewer tokens
                // left; on a tie, the one that takes longer to refill).
                let (remaining, full_in) = taken.map_or((gcra.burst(), Duration::ZERO), |t| {
                    (t.remaining(gcra), t.full_in())
                });
                let client = quota(Limit::Client, gcra, remaining, full_in);
                let global = match (&self.bucket, global) {
                    (Some(bucket), Some(Ok(tat))) => Some(global_quota(bucket, Some(tat))),
                    _ => None,
                };
                match global {
                    Some(g) if (g.remaining, client.full_in) < (client.remaining, g.full_in) => {
                        (None, Some(g))
                    }
                    _ => (None, Some(client)),
                }
            }
        }
    }
}

fn quota(limit: Limit, gcra: &Gcra, remaining: u32, full_in: Duration) -> Quota {
    Quota {
        limit,
        burst: gcra.burst(),
        window: gcra.window(),
        remaining,
        full_in,
    }
}
