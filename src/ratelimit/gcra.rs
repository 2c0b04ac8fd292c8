//! The token bucket that decides whether a request may enter at all (429 otherwise).
//!
//! It owns the arithmetic and nothing else: no clock (every call takes `now`), no metrics,
//! no HTTP. The state is one atomic word, so every connection task can ask at once without
//! a lock.
//!
//! The bucket is kept in its "virtual scheduling" form (GCRA): instead of a token count
//! and a refill timestamp, it stores the theoretical arrival time (TAT) of the next request,
//! in nanoseconds since the bucket was created. Taking a token pushes the TAT one emission
//! interval (1 / rate) forward; the bucket is empty when the TAT runs more than
//! `burst × interval` ahead of now. That is exactly a bucket of capacity `burst` refilled
//! continuously at `rate`, fractional tokens included, so over any window of length `t`
//! it admits at most `burst + rate × t` requests. (The Go original truncated fractional
//! tokens and reset its clock on every call, so steady traffic faster than its rate never
//! refilled it.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The slowest refill: one token every 10^15 ns (about 11.6 days). Rates below it (and
/// invalid ones, which the configuration refuses anyway) are clamped to it.
const MAX_INTERVAL_NS: u64 = 1_000_000_000_000_000;

/// The arithmetic of one bucket (capacity and refill), apart from where its state lives:
/// the global bucket keeps its TAT in an atomic, each client's in the client table
/// (`ratelimit::client_table`). Both use exactly this, so a client's bucket is as exact as the
/// global one.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    /// Nanoseconds per token: 1 / rate.
    interval_ns: u64,
    /// How far ahead of now the TAT may run: burst × interval (u128: it must not
    /// saturate, or a huge interval would mean "always a token").
    tolerance_ns: u128,
    burst: u32,
}

impl Gcra {
    /// A bucket of `burst` tokens refilled at `rate_per_second`.
    ///
    /// `burst` must be at least 1 and `rate_per_second` positive and finite (the
    /// configuration guarantees both); out-of-range values are clamped, never a panic.
    pub fn new(rate_per_second: f64, burst: u32) -> Gcra {
        let interval = if rate_per_second.is_finite() && rate_per_second > 0.0 {
            (1e9 / rate_per_second).round()
        } else {
            MAX_INTERVAL_NS as f64
        };
        // `as` saturates for floats; an interval of 0 would mean "no limit", and one near
        // u64::MAX would push the TAT past what a u64 holds.
        let interval_ns = (interval as u64).clamp(1, MAX_INTERVAL_NS);
        let burst = burst.max(1);
        Gcra {
            interval_ns,
            tolerance_ns: u128::from(interval_ns) * u128::from(burst),
            burst,
        }
    }

    /// The TAT after taking one token at `now_ns` from a bucket at `tat`, or how long
    /// until a token is available. A TAT at or before now is a full bucket.
    #[inline]
    pub fn take(&self, tat: u64, now_ns: u64) -> Result<u64, Duration> {
        let next = u128::from(tat.max(now_ns)) + u128::from(self.interval_ns);
        let ahead = next - u128::from(now_ns);
        if ahead > self.tolerance_ns {
            let wait = u64::try_from(ahead - self.tolerance_ns).unwrap_or(u64::MAX);
            return Err(Duration::from_nanos(wait));
        }
        // A TAT beyond u64 is centuries away: no token until then.
        u64::try_from(next).map_err(|_| Duration::from_nanos(u64::MAX))
    }

    /// Tokens available at `now_ns` in a bucket at `tat`, fractions included.
    pub fn available(&self, tat: u64, now_ns: u64) -> f64 {
        let debt = tat.saturating_sub(now_ns);
        let tokens =
            (self.tolerance_ns.saturating_sub(u128::from(debt))) as f64 / self.interval_ns as f64;
        tokens.clamp(0.0, f64::from(self.burst))
    }

    /// How long until a bucket at `tat` is full again.
    pub fn full_in(tat: u64, now_ns: u64) -> Duration {
        Duration::from_nanos(tat.saturating_sub(now_ns))
    }

    /// The bucket's capacity.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds per token.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// The time a bucket takes to refill from empty to full.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(u64::try_from(self.tolerance_ns).unwrap_or(u64::MAX))
    }
}

/// Nanoseconds from `origin` to `now` (0 before it, saturating far after it).
pub fn nanos_since(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// A token bucket shared by all connections.
#[derive(Debug)]
pub struct TokenBucket {
    origin: Instant,
    gcra: Gcra,
    /// Theoretical arrival time, nanoseconds since `origin`.
    tat_ns: AtomicU64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_second` (see [`Gcra::new`]).
    pub fn new(rate_per_second: f64, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            origin: now,
            gcra: Gcra::new(rate_per_second, burst),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_acquire(&self, now: Instant) -> Result<(), Duration> {
        self.take(now).map(|_| ())
    }

    /// Takes one token and returns the bucket's TAT after it (see [`TokenBucket::state`]),
    /// or says how long until a token is available.
    pub fn take(&self, now: Instant) -> Result<u64, Duration> {
        let now_ns = nanos_since(self.origin, now);
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = self.gcra.take(tat, now_ns)?;
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(next),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Whole tokens left and the time until full, for a bucket at `tat` (as
    /// [`TokenBucket::take`] returned it, or the current one with `None`).
    pub fn state(&self, tat: Option<u64>, now: Instant) -> (u32, Duration) {
        let now_ns = nanos_since(self.origin, now);
        let tat = tat.unwrap_or_else(|| self.tat_ns.load(Ordering::Relaxed));
        (
            self.gcra.available(tat, now_ns).floor() as u32,
            Gcra::full_in(tat, now_ns),
        )
    }

    /// Tokens available at `now`, fractions included (for metrics and probes).
    pub fn available(&self, now: Instant) -> f64 {
        let now_ns = nanos_since(self.origin, now);
        self.gcra
            .available(self.tat_ns.load(Ordering::Relaxed), now_ns)
    }

    /// The bucket's arithmetic.
    pub fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    /// The bucket's capacity.
    pub fn burst(&self) -> u32 {
        self.gcra.burst
    }
}

/// The `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, pause};

    fn drain(bucket: &TokenBucket) -> usize {
        let mut n = 0;
        while bucket.try_acquire(Instant::now()).is_ok() {
            n += 1;
            assert!(n < 1_000_000, "the bucket never empties");
        }
        n
    }

    #[tokio::test]
    async fn a_full_bucket_admits_exactly_the_burst() {
        pause();
        let bucket = TokenBucket::new(2.0, 5, Instant::now());
        assert_eq!(bucket.available(Instant::now()), 5.0);
        assert_eq!(drain(&bucket), 5);
        assert_eq!(bucket.available(Instant::now()), 0.0);
        let wait = bucket.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
    }

    #[tokio::test]
    async fn refill_is_continuous() {
        pause();
        let bucket = TokenBucket::new(2.0, 5, Instant::now());
        drain(&bucket);
        advance(Duration::from_millis(250)).await;
        assert_eq!(bucket.available(Instant::now()), 0.5);
        assert!(bucket.try_acquire(Instant::now()).is_err());
        advance(Duration::from_millis(250)).await;
        assert!(bucket.try_acquire(Instant::now()).is_ok());
        assert!(bucket.try_acquire(Instant::now()).is_err());
        // A long pause refills up to the capacity, never past it.
        advance(Duration::from_secs(3600)).await;
        assert_eq!(bucket.available(Instant::now()), 5.0);
        assert_eq!(drain(&bucket), 5);
    }

    #[tokio::test]
    async fn fractional_rates_keep_fractional_tokens() {
        pause();
        // 0.4 tokens per second: one token every 2.5 s, accumulated from fractions.
        let bucket = TokenBucket::new(0.4, 2, Instant::now());
        assert_eq!(drain(&bucket), 2);
        for expected in [0.4, 0.8] {
            advance(Duration::from_secs(1)).await;
            assert!((bucket.available(Instant::now()) - expected).abs() < 1e-9);
            // Failed attempts cost nothing and do not reset the refill.
            assert!(bucket.try_acquire(Instant::now()).is_err());
        }
        let wait = bucket.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        advance(wait).await;
        assert!(bucket.try_acquire(Instant::now()).is_ok());
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }

    #[tokio::test]
    async fn steady_traffic_faster_than_the_rate_still_gets_the_rate() {
        // The Go original reset its clock on every call and truncated the refill, so a
        // request every 300 ms against 2 tokens/s (0.6 tokens per call, truncated to 0)
        // never refilled it after the burst. Ours admits burst + rate × elapsed.
        pause();
        let bucket = TokenBucket::new(2.0, 5, Instant::now());
        let mut admitted = 0;
        for _ in 0..100 {
            if bucket.try_acquire(Instant::now()).is_ok() {
                admitted += 1;
            }
            advance(Duration::from_millis(300)).await;
        }
        // 100 calls over 29.7 s: 5 + 2 × 29.7 = 64.4.
        assert_eq!(admitted, 64);
    }

    #[tokio::test]
    async fn admits_burst_plus_rate_times_elapsed_under_a_flood() {
        pause();
        let bucket = TokenBucket::new(3.0, 5, Instant::now());
        let mut admitted = 0;
        for _ in 0..10_000 {
            if bucket.try_acquire(Instant::now()).is_ok() {
                admitted += 1;
            }
            advance(Duration::from_millis(1)).await;
        }
        // 10 s (the last call at 9.999 s): 5 + 3 × 9.999 = 34.99.
        assert_eq!(admitted, 34);
    }

    #[tokio::test]
    async fn wait_reflects_the_next_token() {
        pause();
        let bucket = TokenBucket::new(0.1, 2, Instant::now());
        drain(&bucket);
        let wait = bucket.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(retry_after_secs(wait), 10);
        advance(Duration::from_millis(7500)).await;
        assert_eq!(
            retry_after_secs(bucket.try_acquire(Instant::now()).unwrap_err()),
            3
        );
    }

    #[test]
    fn two_threads_never_take_more_than_the_burst() {
        let now = Instant::now();
        let bucket = std::sync::Arc::new(TokenBucket::new(1e-3, 1000, now));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let bucket = bucket.clone();
                std::thread::spawn(move || {
                    (0..5000)
                        .filter(|_| bucket.try_acquire(now).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn an_invalid_rate_never_refills_and_never_floods() {
        // Found by the admission fuzzer: a rate of 0 made the interval saturate, and the
        // saturated arithmetic then admitted everything.
        let now = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, 1e-300] {
            let bucket = TokenBucket::new(rate, 4, now);
            let later = now + Duration::from_secs(86_400 * 365);
            let admitted = (0..100)
                .filter(|_| bucket.try_acquire(later).is_ok())
                .count();
            assert_eq!(admitted, 4, "rate {rate}");
        }
    }

    #[test]
    fn extreme_rates_do_not_panic() {
        let now = Instant::now();
        for rate in [
            f64::MIN_POSITIVE,
            1e-300,
            1e300,
            f64::INFINITY,
            f64::NAN,
            -1.0,
        ] {
            let bucket = TokenBucket::new(rate, u32::MAX, now);
            let _ = bucket.try_acquire(now);
            let _ = bucket.available(now);
        }
    }
}
