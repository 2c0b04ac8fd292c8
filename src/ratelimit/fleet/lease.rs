//! The global bucket when it is shared: the tokens this pod leased from Redis, spent
//! with one atomic on the request path, and the pod's fair share of the bucket for when
//! Redis cannot be reached.
//!
//! It also holds the arithmetic of the lease script in Rust ([`grant`]), the reference
//! the property tests hold the Lua to, and how big a lease to ask for ([`lease_size`]).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::ratelimit::gcra::{nanos_since, Gcra};

/// How much of the fleet's rate the outstanding leases may hold at most: 100 ms of it
/// (plus one token per pod). This is the whole over-admission of the shared bucket, so it
/// sets the bound stated in the README.
pub const HORIZON: Duration = Duration::from_millis(100);

/// How long a leased token may wait to be spent. Past it the pod stops spending what it
/// holds and gives it back: a token leased long ago and spent now would be one the
/// bucket has since refilled.
pub const LEASE_TTL: Duration = Duration::from_millis(500);

/// What the lease script did, in the script's units (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Tokens granted (at most the `want` asked).
    pub granted: u64,
    /// Microseconds until the shared bucket has a token again (0 when it has one).
    pub wait_us: u64,
    /// Whole tokens left in the shared bucket after the grant.
    pub remaining: u64,
}

/// The lease script's arithmetic on the bucket's TAT (microseconds, in Redis's clock):
/// `back` unspent tokens given back, then up to `want` taken. Giving back undoes a take
/// (the TAT moves back one interval per token, never before now, so a full bucket does not
/// overflow); taking is GCRA's, `want` times at once.
pub fn grant(
    tat: &mut f64,
    now_us: f64,
    interval_us: f64,
    tolerance_us: f64,
    back: u64,
    want: u64,
) -> Granted {
    let mut t = *tat - back as f64 * interval_us;
    if t < now_us {
        t = now_us;
    }
    let room = ((now_us + tolerance_us - t) / interval_us).floor().max(0.0) as u64;
    let granted = want.min(room);
    t += granted as f64 * interval_us;
    // Stored as a whole number of microseconds, as the script stores it.
    *tat = t.round();
    let wait = (*tat + interval_us - tolerance_us - now_us).max(0.0);
    Granted {
        granted,
        wait_us: wait.ceil() as u64,
        remaining: room - granted,
    }
}

/// Tokens to hold for a pod that asks `demand` per second, in a fleet that asks `total`
/// (this pod's included) of a bucket refilled at `rate`: `HORIZON` of the pod's demand,
/// scaled down in proportion when the fleet asks more than the rate, so that all the
/// leases together hold at most `HORIZON × rate` (plus one token per pod).
pub fn lease_size(rate: f64, demand: f64, total: f64) -> u64 {
    let horizon = HORIZON.as_secs_f64();
    let share = if total > rate {
        demand / total
    } else {
        demand / rate.max(f64::MIN_POSITIVE)
    };
    let size = horizon * rate * share.clamp(0.0, 1.0);
    (size.ceil() as u64).max(1)
}

/// Tokens a pod that ran dry may ask for at once, whatever its demand estimate says: an
/// equal part of what the fleet leaves unasked (`rate − total` over the horizon). A quiet
/// pod that turns busy is followed within one round trip instead of refusing requests
/// while its estimate catches up, and all the leases together still hold at most
/// `HORIZON × rate` (plus one token per pod): each pod's share-based lease covers its part
/// of `total`, the dry ones split the rest.
pub fn dry_lease(rate: f64, total: f64, pods: u32) -> u64 {
    let spare = (rate - total).max(0.0) * HORIZON.as_secs_f64();
    (spare / f64::from(pods.max(1))).ceil() as u64
}

/// The global bucket of a fleet: the pod's lease, and its fair share for fallback.
#[derive(Debug)]
pub struct SharedBucket {
    origin: Instant,
    /// The whole fleet's bucket (what Redis holds).
    gcra: Gcra,
    rate: f64,
    /// Leased tokens not yet spent.
    leased: AtomicI64,
    /// When the lease stops being spent (nanoseconds since `origin`).
    expires_ns: AtomicU64,
    /// Requests that asked for a token since the refresher last looked: the demand.
    asked: AtomicU64,
    /// Microseconds until the shared bucket has a token, as Redis last said: the
    /// `Retry-After` of a refusal.
    wait_us: AtomicU64,
    /// Tokens left in the shared bucket as Redis last said, for the `RateLimit` fields.
    remaining: AtomicU64,
    /// The fair share, for when Redis cannot be reached.
    fallback: FairShare,
}

impl SharedBucket {
    pub fn new(rate: f64, burst: u32, pods: u32, now: Instant) -> SharedBucket {
        SharedBucket {
            origin: now,
            gcra: Gcra::new(rate, burst),
            rate,
            leased: AtomicI64::new(0),
            expires_ns: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            remaining: AtomicU64::new(u64::from(burst)),
            fallback: FairShare::new(rate, burst, pods, now),
        }
    }

    pub fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn fallback(&self) -> &FairShare {
        &self.fallback
    }

    /// Takes a token: from the lease while it is valid; when `shared` is false (Redis out
    /// of reach), from the fair share once the lease is spent. `Err` carries the wait to
    /// report; with `shared`, the caller wakes the refresher.
    #[inline]
    pub fn take(&self, now: Instant, shared: bool) -> Result<Taken, Duration> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let now_ns = nanos_since(self.origin, now);
        if now_ns < self.expires_ns.load(Ordering::Relaxed) {
            let mut n = self.leased.load(Ordering::Relaxed);
            while n > 0 {
                match self.leased.compare_exchange_weak(
                    n,
                    n - 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(Taken::Leased { left: n - 1 }),
                    Err(actual) => n = actual,
                }
            }
        }
        if shared {
            let wait = self.wait_us.load(Ordering::Relaxed);
            return Err(Duration::from_micros(wait.max(1)));
        }
        self.fallback.take(now).map(|_| Taken::FairShare)
    }

    /// Gives back a token taken for a request that another limit then refused.
    pub fn give_back(&self, taken: Taken, now: Instant) {
        match taken {
            Taken::Leased { .. } => {
                self.leased.fetch_add(1, Ordering::Relaxed);
            }
            Taken::FairShare => self.fallback.give_back(now),
        }
    }

    /// Leased tokens not yet spent.
    pub fn leased(&self) -> i64 {
        self.leased.load(Ordering::Relaxed).max(0)
    }

    /// Takes out every unspent leased token (to give them back to Redis), so none is
    /// spent twice.
    pub fn take_back(&self, keep: i64) -> u64 {
        let mut n = self.leased.load(Ordering::Relaxed);
        loop {
            if n <= keep {
                return 0;
            }
            match self
                .leased
                .compare_exchange_weak(n, keep, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (n - keep) as u64,
                Err(actual) => n = actual,
            }
        }
    }

    /// Whether the lease is past its time at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        nanos_since(self.origin, now) >= self.expires_ns.load(Ordering::Relaxed)
    }

    /// Adds what Redis granted, valid for `LEASE_TTL` from `now`, and what Redis said of
    /// the shared bucket.
    pub fn add(&self, now: Instant, granted: &Granted) {
        self.leased
            .fetch_add(granted.granted as i64, Ordering::Relaxed);
        let until = nanos_since(self.origin, now + LEASE_TTL);
        self.expires_ns.store(until, Ordering::Relaxed);
        self.wait_us.store(granted.wait_us, Ordering::Relaxed);
        self.remaining.store(granted.remaining, Ordering::Relaxed);
    }

    /// Whether the lease holds tokens that may still be spent (not lapsed).
    pub fn spendable(&self, now: Instant) -> bool {
        self.leased() > 0 && !self.expired(now)
    }

    /// Whether Redis had tokens left after its last grant: a pod that ran dry then is
    /// one whose estimate lags, and its refill is worth a request's short wait. (With
    /// none left, the fleet is at its limit: a refusal then is right, and immediate.)
    pub fn more_in_redis(&self) -> bool {
        self.remaining.load(Ordering::Relaxed) > 0
    }

    /// Requests that asked since the last call.
    pub fn asked(&self) -> u64 {
        self.asked.swap(0, Ordering::Relaxed)
    }

    /// Tokens this pod may spend now: its lease, and, in fallback, its fair share.
    pub fn available(&self, now: Instant, shared: bool) -> f64 {
        let leased = if self.expired(now) { 0 } else { self.leased() };
        let own = if shared {
            0.0
        } else {
            self.fallback.available(now)
        };
        leased as f64 + own
    }

    /// Whole tokens left for the `RateLimit` fields: the shared bucket's as Redis last
    /// said, plus the lease (or the fair share in fallback).
    pub fn remaining(&self, now: Instant, shared: bool) -> u32 {
        let base = if shared {
            self.remaining.load(Ordering::Relaxed) as f64
        } else {
            0.0
        };
        (base + self.available(now, shared))
            .min(f64::from(self.gcra.burst()))
            .floor() as u32
    }
}

/// Where a token came from, to give it back to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Leased { left: i64 },
    FairShare,
}

/// A pod's fair share of a bucket: the rate and the burst divided by the live pods
/// (each at least a token), kept in one atomic TAT like the local bucket. The divisor
/// changes as pods come and go; the arithmetic is rebuilt from it on each take, which
/// costs a division and keeps the request path free of locks.
#[derive(Debug)]
pub struct FairShare {
    origin: Instant,
    rate: f64,
    burst: u32,
    pods: AtomicU32,
    tat_ns: AtomicU64,
}

impl FairShare {
    pub fn new(rate: f64, burst: u32, pods: u32, now: Instant) -> FairShare {
        FairShare {
            origin: now,
            rate,
            burst,
            pods: AtomicU32::new(pods.max(1)),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// The share of one pod among `pods`.
    pub fn gcra(&self) -> Gcra {
        let pods = self.pods.load(Ordering::Relaxed).max(1);
        Gcra::new(self.rate / f64::from(pods), (self.burst / pods).max(1))
    }

    pub fn set_pods(&self, pods: u32) {
        self.pods.store(pods.max(1), Ordering::Relaxed);
    }

    pub fn pods(&self) -> u32 {
        self.pods.load(Ordering::Relaxed)
    }

    pub fn take(&self, now: Instant) -> Result<u64, Duration> {
        let gcra = self.gcra();
        let now_ns = nanos_since(self.origin, now);
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = gcra.take(tat, now_ns)?;
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(next),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Undoes one take (never before now: a full bucket stays full).
    pub fn give_back(&self, now: Instant) {
        let interval = self.gcra().interval_ns();
        let now_ns = nanos_since(self.origin, now);
        let _ = self
            .tat_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(if tat <= now_ns {
                    tat
                } else {
                    tat.saturating_sub(interval).max(now_ns)
                })
            });
    }

    pub fn available(&self, now: Instant) -> f64 {
        self.gcra().available(
            self.tat_ns.load(Ordering::Relaxed),
            nanos_since(self.origin, now),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_pod_may_take_an_equal_part_of_what_the_fleet_leaves_unasked() {
        // Alone and quiet: a horizon of the whole rate.
        assert_eq!(dry_lease(20_000.0, 0.0, 1), 2_000);
        // Ten pods asking 12,000 of 20,000: the dry one takes a tenth of the 8,000 left.
        assert_eq!(dry_lease(20_000.0, 12_000.0, 10), 80);
        // A fleet asking the whole rate or more leaves nothing: only its share-based lease.
        assert_eq!(dry_lease(20_000.0, 25_000.0, 10), 0);
        // Share-based leases (which cover `total`) and dry leases together stay within
        // the horizon: 0.1 × 12,000 + 10 × 80 = 2,000 = 0.1 × 20,000.
        let shares: u64 = (0..10)
            .map(|_| lease_size(20_000.0, 1_200.0, 12_000.0))
            .sum();
        assert!(shares + 10 * dry_lease(20_000.0, 12_000.0, 10) <= 2_000 + 10);
    }
    use proptest::prelude::*;

    /// A reference GCRA in the same units, one token at a time.
    fn reference_admits(times: &[f64], interval: f64, tolerance: f64) -> Vec<bool> {
        let mut tat: f64 = 0.0;
        times
            .iter()
            .map(|&now| {
                let next = tat.max(now) + interval;
                if next - now > tolerance + 1e-9 {
                    false
                } else {
                    tat = next;
                    true
                }
            })
            .collect()
    }

    proptest! {
        /// Leasing one token at a time is the reference GCRA exactly.
        #[test]
        fn one_at_a_time_is_gcra(
            gaps in prop::collection::vec(0u32..50_000, 1..300),
            interval in 1u32..20_000,
            burst in 1u32..50,
        ) {
            let (interval, tolerance) = (f64::from(interval), f64::from(interval) * f64::from(burst));
            let mut now = 1e15;
            let times: Vec<f64> = gaps.iter().map(|g| { now += f64::from(*g); now }).collect();
            let expected = reference_admits(&times, interval, tolerance);
            let mut tat = 0.0;
            for (i, &t) in times.iter().enumerate() {
                let g = grant(&mut tat, t, interval, tolerance, 0, 1);
                prop_assert_eq!(g.granted == 1, expected[i], "request {}", i);
            }
        }

        /// Any mix of leases and give-backs, by any number of pods: over every stretch of
        /// time, the tokens kept (granted minus given back) are at most
        /// burst + rate × t, as the reference bucket allows, and a bucket left alone for a
        /// window is full again.
        #[test]
        fn leases_never_exceed_the_bucket(
            ops in prop::collection::vec((0u32..20_000, 0usize..10, 0u64..40, any::<bool>()), 1..200),
            interval in 1u32..5_000,
            burst in 1u32..100,
        ) {
            let (interval, tolerance) = (f64::from(interval), f64::from(interval) * f64::from(burst));
            let mut tat = 0.0;
            let mut held = [0u64; 10];
            let mut now = 1e15;
            let mut kept: Vec<(f64, i64)> = Vec::new();
            for (gap, pod, want, give) in ops {
                now += f64::from(gap);
                // A pod gives back only what it holds unspent.
                let back = if give { held[pod] } else { 0 };
                let g = grant(&mut tat, now, interval, tolerance, back, want);
                prop_assert!(g.granted <= want);
                held[pod] = held[pod] - back + g.granted;
                kept.push((now, g.granted as i64 - back as i64));
            }
            // Tokens kept in every window [a, b] are bounded by what the bucket allows.
            for i in 0..kept.len() {
                let mut sum = 0i64;
                for j in i..kept.len() {
                    sum += kept[j].1;
                    let allowed = f64::from(burst) + (kept[j].0 - kept[i].0) / interval + 1.0;
                    prop_assert!((sum as f64) <= allowed, "{} kept in [{}, {}], allowed {}", sum, i, j, allowed);
                }
            }
            let full_at = tat + 1.0;
            let mut t2 = tat;
            let g = grant(&mut t2, full_at.max(now), interval, tolerance, 0, u64::from(burst));
            prop_assert_eq!(g.granted, u64::from(burst));
        }

        /// The leases of a fleet together hold at most the horizon's worth of the rate,
        /// plus one token per pod, whatever each pod asks.
        #[test]
        fn leases_together_hold_at_most_the_horizon(
            demands in prop::collection::vec(0.0f64..1e6, 1..20),
            rate in 1.0f64..1e6,
        ) {
            let total: f64 = demands.iter().sum();
            let held: u64 = demands.iter().map(|d| lease_size(rate, *d, total)).sum();
            let bound = HORIZON.as_secs_f64() * rate + 2.0 * demands.len() as f64;
            prop_assert!((held as f64) <= bound, "{} > {}", held, bound);
        }
    }

    #[test]
    fn a_lease_is_sized_from_demand() {
        // A quiet pod holds one token; a pod alone at full demand holds 100 ms of rate.
        assert_eq!(lease_size(10_000.0, 0.0, 0.0), 1);
        assert_eq!(lease_size(10_000.0, 10_000.0, 10_000.0), 1000);
        // Two pods asking three times the rate share the horizon in proportion.
        assert_eq!(lease_size(1000.0, 2000.0, 3000.0), 67);
        assert_eq!(lease_size(1000.0, 1000.0, 3000.0), 34);
    }

    #[tokio::test]
    async fn the_lease_is_spent_then_refused_until_refreshed() {
        tokio::time::pause();
        let now = Instant::now();
        let bucket = SharedBucket::new(100.0, 10, 2, now);
        // Nothing leased yet: refused while shared, the fair share in fallback.
        assert!(bucket.take(now, true).is_err());
        let share = (0..20).filter(|_| bucket.take(now, false).is_ok()).count();
        assert_eq!(share, 5, "half the burst for one of two pods");
        let g = Granted {
            granted: 3,
            wait_us: 7_000,
            remaining: 4,
        };
        bucket.add(now, &g);
        for left in [2, 1, 0] {
            assert_eq!(bucket.take(now, true), Ok(Taken::Leased { left }));
        }
        assert_eq!(bucket.take(now, true), Err(Duration::from_millis(7)));
        bucket.give_back(Taken::Leased { left: 0 }, now);
        assert_eq!(bucket.leased(), 1);
        // An old lease is not spent, and is all given back.
        tokio::time::advance(LEASE_TTL).await;
        assert!(bucket.take(Instant::now(), true).is_err());
        assert_eq!(bucket.take_back(0), 1);
        assert_eq!(bucket.asked(), 26);
    }
}
