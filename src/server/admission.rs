//! Admission: the token bucket (429 when empty), then a permit to be processed now or a
//! place in the FIFO queue (503 when both are full), decided without waiting.
//!
//! This file owns the order of the checks and what each refusal is; the arithmetic is
//! the bucket's ([`crate::ratelimit`]) and the pool's ([`crate::pool`]). A refused request
//! spends nothing of what comes after the check that refused it.

use tokio::time::Instant;

use super::ending::End;
use crate::config::Config;
use crate::lifecycle::{Lifecycle, Phase};
use crate::pool::{Entry, Pool};
use crate::ratelimit::{retry_after_secs, TokenBucket};

/// The bucket and the pool.
pub(crate) struct Admission {
    bucket: Option<TokenBucket>,
    pool: Pool,
}

/// What admission decided for one request.
pub(crate) enum Decision<'a> {
    /// Admitted: a permit now, or a place in the queue.
    Enter(Entry<'a>),
    /// Refused, and how the request ends.
    Refuse(End),
}

impl Admission {
    pub fn new(config: &Config, now: Instant) -> Admission {
        Admission {
            bucket: config
                .rate_limited()
                .then(|| TokenBucket::new(config.rate_per_second, config.burst, now)),
            pool: Pool::new(config.workers, config.queue_size, now),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn tokens(&self, now: Instant) -> f64 {
        self.bucket.as_ref().map_or(0.0, |b| b.available(now))
    }

    /// A token, then a permit or a place; past the drain deadline, nothing.
    pub fn decide(&self, lifecycle: &Lifecycle, now: Instant) -> Decision<'_> {
        if lifecycle.reached(Phase::HardStop) {
            return Decision::Refuse(End::ShuttingDown);
        }
        if let Some(bucket) = &self.bucket {
            if let Err(wait) = bucket.try_acquire(now) {
                return Decision::Refuse(End::RateLimited {
                    retry_after: retry_after_secs(wait),
                });
            }
        }
        match self.pool.try_enter(now) {
            Some(entry) => Decision::Enter(entry),
            None if lifecycle.reached(Phase::HardStop) => Decision::Refuse(End::ShuttingDown),
            None => Decision::Refuse(End::QueueFull),
        }
    }
}
