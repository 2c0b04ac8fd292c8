//! Limits shared by every TCPie that uses one Redis (`TCPIE_REDIS_URL`) under one name
//! (`TCPIE_RATE_LIMIT_NAME`): the global bucket and each client's bucket are one bucket
//! for the whole fleet, however many pods the autoscaler runs.
//!
//! The state lives in Redis and is changed only by two Lua scripts (EVALSHA, no module):
//! exact GCRA, on Redis's clock, so that pods need not agree on time.
//! - The global bucket never costs a request a round trip: the pod leases tokens ahead
//!   of need ([`lease`]), spends them with one atomic, and a refresher task tops the lease
//!   up before it runs out, gives back what it no longer needs, and registers the pod
//!   (so the fleet's size is known).
//! - A client's bucket costs at most one call per request (concurrent calls share one
//!   multiplexed connection, so they are pipelined), none for a client refused recently
//!   (the local table remembers until when, as Envoy's over-limit cache does), and none
//!   for most requests of a client the pod serves often: each call leases that client a
//!   few tokens ahead of need (doubling while they go fast, at most an eighth of its
//!   burst; the next asked for in the background at half left, and waited for by the
//!   requests that find the lease spent before it comes), spent in the pod and lapsing
//!   after 100 ms. They were taken from the shared
//!   bucket when leased, so a client is never admitted beyond its fleet-wide limit; what
//!   lapses unspent it loses.
//!
//! When Redis fails or is slower than `TCPIE_REDIS_TIMEOUT_MS`, the pod falls back to
//! its fair share of each limit (divided by the live pods) and the refresher keeps
//! trying; the first lease that succeeds makes the limits shared again.

pub(crate) mod lease;

use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{FleetMetrics, RedisCall, RedisFailure};
use crate::ratelimit::client_key::Identity;
use crate::ratelimit::client_table::ClientId;
use crate::ratelimit::gcra::Gcra;
use lease::{dry_lease, lease_size, Granted, SharedBucket};

/// How often the refresher registers the pod and settles its lease when nothing else
/// wakes it.
const HEARTBEAT: Duration = Duration::from_millis(250);
/// How long a pod's registration lives without a heartbeat: a pod gone (or cut off
/// from Redis) stops counting in the fleet's size after this.
const POD_TTL_MS: u64 = 1500;
/// The demand is measured over windows of at least this long.
const DEMAND_WINDOW: Duration = Duration::from_millis(10);
/// How fast the demand estimate forgets (time constant).
const DEMAND_MEMORY: Duration = Duration::from_secs(1);
/// After a lease granted less than it asked (the shared bucket is empty), the next waits
/// at least this long: a flooded fleet asks Redis a hundred times a second per pod, not
/// once per refused request.
const EMPTY_PACE: Duration = Duration::from_millis(10);
/// Failed calls in a row that make the pod fall back: one slow answer on a busy machine
/// is not an outage.
const FAILURES_TO_FALL_BACK: u32 = 3;

/// The shared limits of one fleet, and the connection to their Redis.
pub(crate) struct Fleet {
    redis: ConnectionManager,
    /// A request's longest wait for Redis (`TCPIE_REDIS_TIMEOUT_MS`).
    timeout: Duration,
    /// The refresher's, which no request waits for: ten times as long, 50 ms to 1 s.
    lease_timeout: Duration,
    /// Failed calls since the last that succeeded.
    failures: AtomicU32,
    /// The URL as logs show it: without its password.
    shown: String,
    pod: String,
    keys: Keys,
    lease_script: Script,
    take_script: Script,
    /// Whether Redis answers: the limits are shared; otherwise the pod keeps to its
    /// fair share.
    shared: AtomicBool,
    /// The global bucket, when there is one (`TCPIE_BURST` > 0).
    global: Option<SharedBucket>,
    /// The clients' bucket arithmetic, and the fleet's size for their fair share.
    client_gcra: Gcra,
    client_rate: f64,
    client_burst: u32,
    /// The lease's refill mark: the refresher is woken when the lease falls to it.
    low: AtomicU64,
    wake: Notify,
    /// Told after every lease call, granted or failed: requests waiting in `refill`.
    refilled: Notify,
    /// Told after every call for a client's lease: the requests of its clients waiting
    /// for it. Several, so that a lease wakes the waiters of a sixteenth of the clients.
    client_leased: [Notify; 16],
    metrics: FleetMetrics,
}

struct Keys {
    global: String,
    pods: String,
    demand: String,
    /// The prefix of a client's key, which ends in its hashed id.
    client: String,
}

/// What the fleet's bucket said of one client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAnswer {
    /// `granted` tokens (at least one, at most what was asked); `remaining` left in the
    /// bucket after them.
    Admitted {
        granted: u32,
        remaining: u32,
        full_in: Duration,
    },
    Refused {
        wait: Duration,
    },
}

/// Redis did not answer in time, or answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unreachable;

impl Fleet {
    /// The fleet of `config` (which has a `TCPIE_REDIS_URL`). Nothing is connected yet: the
    /// connection is made by the first call, so that a Redis down at start delays nothing
    /// (the pod starts in fallback).
    pub fn new(
        config: &Config,
        url: &str,
        metrics: FleetMetrics,
        now: Instant,
    ) -> Result<Fleet, String> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| format!("TCPIE_REDIS_URL: {e}"))?;
        if !config.redis_password_file.is_empty() {
            let path = &config.redis_password_file;
            let password = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read TCPIE_REDIS_PASSWORD_FILE={path}: {e}"))?;
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.trim_end());
            info = info.set_redis_settings(redis);
        }
        if url.starts_with("rediss://") {
            // rustls needs its cryptography chosen once per process; a second call (a
            // second server in one process) finds it chosen, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(info).map_err(|e| format!("TCPIE_REDIS_URL: {e}"))?;
        let timeout = config.redis_timeout();
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            // Each call has its own deadline (below), which it counts as a timeout.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| format!("TCPIE_REDIS_URL: {e}"))?;
        // Braces are Redis Cluster's hash tags: the name must not bring its own.
        let name: String = config
            .rate_limit_name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let tag = format!("{{tcpie:{name}}}");
        let pods = config.redis_expected_pods;
        metrics.set_shared(false);
        metrics.pods.set(i64::from(pods));
        Ok(Fleet {
            redis,
            timeout,
            lease_timeout: (timeout * 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            failures: AtomicU32::new(0),
            shown: crate::config::RedisUrl(Some(url.to_owned())).to_string(),
            pod: pod_id(),
            keys: Keys {
                global: format!("{tag}:global"),
                pods: format!("{tag}:pods"),
                demand: format!("{tag}:demand"),
                client: format!("tcpie:{name}:client:"),
            },
            lease_script: Script::new(include_str!("lease.lua")),
            take_script: Script::new(include_str!("take.lua")),
            shared: AtomicBool::new(false),
            global: config
                .rate_limited()
                .then(|| SharedBucket::new(config.rate_per_second, config.burst, pods, now)),
            client_gcra: Gcra::new(config.client_rate_per_second, config.client_burst),
            client_rate: config.client_rate_per_second,
            client_burst: config.client_burst,
            low: AtomicU64::new(0),
            wake: Notify::new(),
            refilled: Notify::new(),
            client_leased: std::array::from_fn(|_| Notify::new()),
            metrics,
        })
    }

    /// Whether the limits are shared now (Redis answers), or the pod keeps to its share.
    #[inline]
    pub fn shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    fn set_shared(&self, shared: bool) {
        self.set_mode(shared, &"");
    }

    /// Shared or fallback; `why` is the last failure, logged once when the pod falls back.
    fn set_mode(&self, shared: bool, why: &dyn std::fmt::Display) {
        if self.shared.swap(shared, Ordering::Relaxed) != shared {
            self.metrics.set_shared(shared);
            if shared {
                tracing::info!("Redis answers again: the rate limits are shared by the fleet");
            } else {
                tracing::warn!(
                    pods = self.pods(),
                    redis = %self.shown,
                    error = %why,
                    "Redis does not answer: each rate limit falls back to its fair share"
                );
            }
        }
    }

    pub fn global(&self) -> Option<&SharedBucket> {
        self.global.as_ref()
    }

    /// The pods the fleet has, as last known.
    pub fn pods(&self) -> u32 {
        self.global
            .as_ref()
            .map_or(self.metrics.pods.get() as u32, |g| g.fallback().pods())
            .max(1)
    }

    /// A client's share of its bucket while Redis is out of reach.
    pub fn client_fair_share(&self) -> Gcra {
        let pods = self.pods();
        Gcra::new(
            self.client_rate / f64::from(pods),
            (self.client_burst / pods).max(1),
        )
    }

    pub fn client_gcra(&self) -> &Gcra {
        &self.client_gcra
    }

    /// After a token was taken from the lease, leaving `left`: the refresher is woken at
    /// the refill mark, once.
    #[inline]
    pub fn spent(&self, left: i64) {
        if left >= 0 && left as u64 == self.low.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// The lease is spent: the refresher tops it up at once (while Redis answers).
    pub fn ran_out(&self) {
        if self.shared() {
            self.wake.notify_one();
        }
    }

    /// A request's longest wait for Redis (`TCPIE_REDIS_TIMEOUT_MS`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Wakes the refresher and waits for its next lease call, at most `wait`: for a
    /// request that found the lease spent while Redis still had tokens.
    pub async fn refill(&self, bucket: &SharedBucket, wait: Duration) {
        let refilled = self.refilled.notified();
        tokio::pin!(refilled);
        refilled.as_mut().enable();
        // Refilled between the request's look and now. A lapsed lease's tokens do not
        // count: none can be spent, and a request that took them for a refill would look
        // again at once, and again, spinning its worker until its deadline (under a flood,
        // every request: the refresher that would renew the lease then hardly runs).
        if bucket.spendable(Instant::now()) {
            return;
        }
        self.wake.notify_one();
        let _ = tokio::time::timeout(wait, refilled).await;
    }

    /// Where the requests of client `id` wait for its lease.
    pub fn client_leased(&self, id: ClientId) -> &Notify {
        &self.client_leased[(id % 16) as usize]
    }

    /// A client's id: the same in every pod. It is 64 bits of a SHA-1 digest of the
    /// limit's name and the client's identity, so that no one can cheaply choose an
    /// identity that shares another client's bucket.
    pub fn client_id(&self, identity: &Identity<'_>) -> ClientId {
        let mut digest = Digest(sha1_smol::Sha1::new());
        digest.0.update(self.keys.client.as_bytes());
        std::hash::Hash::hash(identity, &mut digest);
        let bytes = digest.0.digest().bytes();
        u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default())
    }

    /// The most tokens of one client's bucket a pod leases at once: an eighth of its
    /// burst, so that the pods a client spreads over do not hold its whole burst between
    /// them.
    pub fn client_lease_most(&self) -> u32 {
        (self.client_burst / 8).max(1)
    }

    /// Up to `want` tokens (at least one, or a refusal) from client `id`'s bucket in
    /// Redis, within `timeout`.
    pub async fn take_client(
        &self,
        id: ClientId,
        want: u32,
        timeout: Duration,
    ) -> Result<ClientAnswer, Unreachable> {
        let key = format!("{}{{{id:016x}}}", self.keys.client);
        let (interval, tolerance) = micros(&self.client_gcra);
        let mut invocation = self.take_script.key(key);
        invocation
            .arg(interval)
            .arg(tolerance)
            .arg("")
            .arg(want.max(1));
        let mut con = self.redis.clone();
        let reply: Vec<i64> = self
            .call(
                RedisCall::Client,
                timeout,
                invocation.invoke_async(&mut con),
            )
            .await?;
        match reply.as_slice() {
            [granted, remaining, full_in_us, ..] if *granted >= 1 => Ok(ClientAnswer::Admitted {
                granted: u32::try_from(*granted).unwrap_or(1).min(want.max(1)),
                remaining: u32::try_from(*remaining).unwrap_or(0),
                full_in: Duration::from_micros(u64::try_from(*full_in_us).unwrap_or(0)),
            }),
            [0, _, wait_us, ..] => Ok(ClientAnswer::Refused {
                wait: Duration::from_micros(u64::try_from(*wait_us).unwrap_or(0).max(1)),
            }),
            _ => {
                self.metrics.failed(RedisFailure::Error);
                Err(Unreachable)
            }
        }
    }

    /// A Redis call within `timeout`, measured; a few failures in a row make the pod
    /// fall back.
    async fn call<T>(
        &self,
        call: RedisCall,
        timeout: Duration,
        future: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        let started = Instant::now();
        self.metrics.called(call);
        let result = tokio::time::timeout(timeout, future).await;
        self.metrics.rtt.observe(started.elapsed().as_secs_f64());
        let (failure, error) = match result {
            Ok(Ok(value)) => {
                self.failures.store(0, Ordering::Relaxed);
                return Ok(value);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis call failed");
                (RedisFailure::Error, Some(e))
            }
            Err(_) => (RedisFailure::Timeout, None),
        };
        self.metrics.failed(failure);
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_FALL_BACK {
            match &error {
                Some(e) => self.set_mode(false, e),
                None => self.set_mode(
                    false,
                    &format_args!("no answer within {} ms", timeout.as_millis()),
                ),
            }
        }
        Err(Unreachable)
    }

    /// One lease call: `back` tokens given back, up to `want` asked, the pod registered
    /// with its `demand` (or deregistered when it `leaves`).
    async fn lease(
        &self,
        back: u64,
        want: u64,
        demand: f64,
        leave: bool,
    ) -> Result<(Granted, u32, f64), Unreachable> {
        let (key, interval, tolerance, back, want) = match &self.global {
            Some(bucket) => {
                let (interval, tolerance) = micros(bucket.gcra());
                (self.keys.global.clone(), interval, tolerance, back, want)
            }
            // No global bucket: the call only registers the pod, with a bucket nobody
            // uses (one script, one code path, for both).
            None => (format!("{}:none", self.keys.global), 1.0, 1.0, 0, 0),
        };
        let mut invocation = self.lease_script.key(key);
        invocation
            .key(&self.keys.pods)
            .key(&self.keys.demand)
            .arg(interval)
            .arg(tolerance)
            .arg(back)
            .arg(want)
            .arg(&self.pod)
            .arg(POD_TTL_MS)
            .arg(demand.round() as u64)
            .arg(if leave { "leave" } else { "" })
            .arg("");
        let mut con = self.redis.clone();
        let reply: Vec<Value> = self
            .call(
                RedisCall::Lease,
                self.lease_timeout,
                invocation.invoke_async(&mut con),
            )
            .await?;
        let n = |i: usize| match reply.get(i) {
            Some(Value::Int(v)) => u64::try_from(*v).unwrap_or(0),
            _ => 0,
        };
        if reply.len() < 5 {
            self.metrics.failed(RedisFailure::Error);
            return Err(Unreachable);
        }
        let granted = Granted {
            granted: n(0),
            wait_us: n(1),
            remaining: n(2),
        };
        Ok((
            granted,
            u32::try_from(n(3)).unwrap_or(u32::MAX).max(1),
            n(4) as f64,
        ))
    }

    /// The refresher: keeps the lease topped up and the pod registered until `stop`,
    /// then gives back what it holds and leaves the register.
    pub async fn refresh(self: Arc<Fleet>, stop: CancellationToken) {
        let mut demand = Demand::new(Instant::now());
        let mut total: f64 = 0.0;
        let mut last_call: Option<Instant> = None;
        let mut pause = Duration::ZERO;
        let mut dry_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let rate = self.global.as_ref().map_or(0.0, |g| g.rate());
            let asked = self.global.as_ref().map_or(0, |g| g.asked());
            let d = demand.update(now, asked);
            let mut size = lease_size(rate, d, total.max(d));
            // Ran dry: the estimate lags a pod that turned busy. Take an equal part of
            // what the fleet leaves unasked, and keep it for a horizon, by when the
            // estimate has caught up (it is measured every 10 ms), rather than give it
            // back at once as more than the estimate says is needed.
            let mut keep = size;
            if let Some(g) = &self.global {
                let dry = dry_lease(rate, total, g.fallback().pods());
                if asked > 0 && g.leased() == 0 {
                    dry_since = Some(now);
                    size = size.max(dry);
                }
                if dry_since.is_some_and(|t| now.duration_since(t) < lease::HORIZON) {
                    keep = size.max(dry);
                }
            }
            self.low.store((size / 4).max(1), Ordering::Relaxed);
            let (back, want) = match &self.global {
                Some(g) if g.expired(now) => (g.take_back(0), size),
                Some(g) if g.leased() as u64 > keep => (g.take_back(keep as i64), 0),
                Some(g) if g.leased() as u64 <= size / 4 => (0, size - g.leased() as u64),
                _ => (0, 0),
            };
            let due = last_call.is_none_or(|t| now.duration_since(t) >= HEARTBEAT);
            // Asking again while Redis is out of reach waits for the heartbeat.
            if due || ((back > 0 || want > 0) && self.shared()) {
                last_call = Some(now);
                match self.lease(back, want, d, false).await {
                    Ok((granted, pods, fleet_demand)) => {
                        pause = if granted.granted < want {
                            Duration::from_micros(granted.wait_us).max(EMPTY_PACE)
                        } else {
                            Duration::ZERO
                        };
                        if let Some(g) = &self.global {
                            g.add(Instant::now(), &granted);
                            g.fallback().set_pods(pods);
                        }
                        self.metrics.leased(back, granted.granted);
                        self.metrics.pods.set(i64::from(pods));
                        total = fleet_demand;
                        self.set_shared(true);
                    }
                    Err(Unreachable) => pause = EMPTY_PACE,
                }
                self.refilled.notify_waiters();
            }
            if let Some(g) = &self.global {
                self.metrics.lease.set(g.leased());
            }
            let sleep = if pause.is_zero() {
                HEARTBEAT
            } else {
                pause.min(HEARTBEAT)
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified(), if pause.is_zero() => {}
                () = tokio::time::sleep(sleep) => {}
            }
            pause = Duration::ZERO;
        }
        let back = self.global.as_ref().map_or(0, |g| g.take_back(0));
        if self.lease(back, 0, 0.0, true).await.is_ok() {
            self.metrics.leased(back, 0);
        }
    }
}

/// A pod's demand on the global bucket, in requests per second: the rate over the
/// last window, or the smoothed rate when higher, so that a burst is followed at once
/// and a lull forgotten in about a second.
struct Demand {
    since: Instant,
    asked: u64,
    smoothed: f64,
    last: f64,
}

impl Demand {
    fn new(now: Instant) -> Demand {
        Demand {
            since: now,
            asked: 0,
            smoothed: 0.0,
            last: 0.0,
        }
    }

    fn update(&mut self, now: Instant, asked: u64) -> f64 {
        self.asked += asked;
        let elapsed = now.duration_since(self.since);
        if elapsed >= DEMAND_WINDOW {
            let rate = self.asked as f64 / elapsed.as_secs_f64();
            let alpha = 1.0 - (-elapsed.as_secs_f64() / DEMAND_MEMORY.as_secs_f64()).exp();
            self.smoothed += alpha * (rate - self.smoothed);
            self.last = rate.max(self.smoothed);
            self.since = now;
            self.asked = 0;
        }
        self.last
    }
}

/// The script's units: microseconds per token, and the tolerance (burst × interval).
fn micros(gcra: &Gcra) -> (f64, f64) {
    let interval = gcra.interval_ns() as f64 / 1000.0;
    (interval, interval * f64::from(gcra.burst()))
}

/// This pod's name in the register: the host name (a pod's name in Kubernetes), the
/// process and a random part, so that a restarted pod is a new member.
fn pod_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tcpie".to_string());
    let random =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    format!("{host}-{}-{:08x}", std::process::id(), random as u32)
}

/// Feeds a client's identity, as its `Hash` writes it, to SHA-1.
struct Digest(sha1_smol::Sha1);

impl Hasher for Digest {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0 // never used: the digest is read whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that finds the lease lapsed with tokens still in it (its refresher late:
    /// Redis slow, the machine busy) waits for the refill, within its bound: it does not
    /// take the lapsed tokens for a refill and spin.
    #[tokio::test]
    async fn a_lapsed_lease_is_waited_for_not_spun_on() {
        tokio::time::pause();
        let config = Config {
            rate_per_second: 100.0,
            burst: 10,
            ..Config::default()
        };
        let registry = prometheus::Registry::new();
        let metrics = crate::metrics::Metrics::register(&registry).unwrap();
        // Nothing listens there, and nothing is connected before a call.
        let fleet = Fleet::new(
            &config,
            "redis://127.0.0.1:1",
            metrics.fleet,
            Instant::now(),
        )
        .unwrap();
        let bucket = fleet.global().unwrap();
        let granted = Granted {
            granted: 5,
            wait_us: 0,
            remaining: 100,
        };
        bucket.add(Instant::now(), &granted);
        let wait = Duration::from_millis(5);
        let started = Instant::now();
        fleet.refill(bucket, wait).await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "tokens to spend: no wait"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(bucket.expired(Instant::now()) && bucket.leased() == 5);
        let started = Instant::now();
        fleet.refill(bucket, wait).await;
        // Waited its whole bound (to the timer's millisecond) for a refill that, with no
        // Redis there, never comes.
        assert!(
            started.elapsed() >= wait,
            "a lapsed lease is refilled, not spent: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn demand_follows_a_burst_and_forgets_a_lull() {
        let start = Instant::now();
        let mut d = Demand::new(start);
        assert_eq!(
            d.update(start + Duration::from_millis(5), 100),
            0.0,
            "window not over"
        );
        let burst = d.update(start + Duration::from_millis(10), 0);
        assert!((burst - 10_000.0).abs() < 1.0, "{burst}");
        let mut t = start + Duration::from_millis(10);
        for _ in 0..40 {
            t += Duration::from_millis(100);
            d.update(t, 0);
        }
        assert!(d.update(t + Duration::from_millis(100), 0) < 200.0);
    }
}
