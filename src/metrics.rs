//! Prometheus metrics: their names, their labels and their registration.
//!
//! The registry is created by the caller and passed in, never global, so each test and
//! each embedded server has its own. Counters and histograms are updated on the request
//! path (each an atomic operation, no label lookup: the outcome children are resolved
//! once at start). Gauges that mirror live state (queue depth, busy workers, tokens,
//! readiness) are set from that state when `/metrics` is scraped, so the hot path does
//! not pay for them twice. Names follow `tcpie_<name>_<unit>`; counters end in `_total`.

use crate::ratelimit::Limit;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Declares [`Outcome`], its label values and [`Outcome::ALL`] from one list, so that an
/// outcome added later is exported, counted and summarised like the others.
macro_rules! outcomes {
    ($( $(#[doc = $doc:literal])+ $variant:ident => $label:literal, )+) => {
        /// How a request ended. Every value is exported from the start, at 0.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Outcome {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl Outcome {
            /// Every outcome, in the order of the list.
            pub const ALL: [Outcome; [$($label),+].len()] = [$(Outcome::$variant),+];

            /// The `outcome` label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Outcome::$variant => $label, )+
                }
            }
        }
    };
}

outcomes! {
    /// A worker processed it and the response was written.
    Processed => "processed",
    /// 429: no token in the bucket.
    RateLimited => "rate_limited",
    /// 503: the queue was full.
    QueueFull => "queue_full",
    /// 408: the head (once its first byte came) or the body was not read before the read
    /// deadline.
    ReadTimeout => "read_timeout",
    /// 400, 413, 501 or 505: not a request TCPie accepts.
    BadRequest => "bad_request",
    /// 431 (or 414 for the request target): the head was larger than
    /// `TCPIE_MAX_HEADER_BYTES`.
    HeaderTooLarge => "header_too_large",
    /// A processed request whose response could not be written before the write deadline.
    WriteError => "write_error",
    /// 503: the drain deadline passed during shutdown.
    ShuttingDown => "shutting_down",
    /// 503: waited in the queue longer than `TCPIE_QUEUE_TIMEOUT_MS`.
    QueueTimeout => "queue_timeout",
    /// 429: no token in the client's own bucket (`TCPIE_CLIENT_KEY`).
    ClientRateLimited => "client_rate_limited",
    /// 502 (upstream mode): the upstream refused, reset or closed the connection, or
    /// answered something that is not HTTP, before its response head; or its body broke
    /// off part way (the client's connection is then closed).
    UpstreamError => "upstream_error",
    /// 504 (upstream mode): no response head within `TCPIE_UPSTREAM_TIMEOUT_MS`.
    UpstreamTimeout => "upstream_timeout",
}

impl Outcome {
    fn index(self) -> usize {
        self as usize
    }
}

/// Why the admin port closed a connection before answering it (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminShed {
    /// Its request head was not complete by `TCPIE_ADMIN_READ_TIMEOUT_MS`.
    ReadTimeout,
    /// Closed to make room for a newer connection at `TCPIE_ADMIN_MAX_CONNECTIONS`.
    Evicted,
}

impl AdminShed {
    pub const ALL: [AdminShed; 2] = [AdminShed::ReadTimeout, AdminShed::Evicted];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminShed::ReadTimeout => "read_timeout",
            AdminShed::Evicted => "evicted",
        }
    }
}

/// Every TCPie metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub connections_accepted: IntCounter,
    pub connections_closed_before_request: IntCounter,
    pub connections_open: IntGauge,
    requests: [IntCounter; Outcome::ALL.len()],
    pub request_duration: Histogram,
    pub queue_wait: Histogram,
    /// Accept (or, on a kept-alive connection, the request's first byte) to the refusal
    /// written, for requests refused at admission.
    pub rejection_duration: Histogram,
    pub queue_depth: IntGauge,
    pub queue_capacity: IntGauge,
    pub workers: IntGauge,
    pub workers_busy: IntGauge,
    pub rate_limit_tokens: Gauge,
    pub ready: IntGauge,
    pub accept_errors: IntCounter,
    rate_limit_rejections: [IntCounter; 2],
    dry_run_rejections: [IntCounter; 2],
    /// Clients tracked by the per-client limit now (set when scraped).
    pub rate_limit_clients: IntGauge,
    /// `TCPIE_CLIENT_TABLE_SIZE` (0 without a per-client limit).
    pub rate_limit_client_table_size: IntGauge,
    /// Clients dropped from the table because their bucket was full again.
    pub clients_dropped_refilled: IntCounter,
    /// Clients in debt evicted from a full table (each regains a full bucket).
    pub clients_dropped_evicted: IntCounter,
    /// The most connections the TCP port holds (`TCPIE_MAX_CONNECTIONS`, or less when the
    /// open-file limit cannot hold that many).
    pub connections_max: IntGauge,
    /// Connections of the admin port open now.
    pub admin_connections_open: IntGauge,
    admin_shed: [IntCounter; 2],
    /// Upstream mode's metrics (exported from the start, at 0, in either mode).
    pub upstream: UpstreamMetrics,
    /// The fleet's shared limits (`TCPIE_REDIS_URL`), exported in either mode.
    pub fleet: FleetMetrics,
}

/// How an upstream call went, the `class` label: the response's status class, or the
/// failure before a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
    /// Refused, reset, closed or not HTTP, before the response head.
    Error,
    /// No response head in time.
    Timeout,
}

impl UpstreamClass {
    pub const ALL: [UpstreamClass; 7] = [
        UpstreamClass::Informational,
        UpstreamClass::Success,
        UpstreamClass::Redirection,
        UpstreamClass::ClientError,
        UpstreamClass::ServerError,
        UpstreamClass::Error,
        UpstreamClass::Timeout,
    ];

    pub fn of_status(status: u16) -> UpstreamClass {
        match status {
            ..=199 => UpstreamClass::Informational,
            200..=299 => UpstreamClass::Success,
            300..=399 => UpstreamClass::Redirection,
            400..=499 => UpstreamClass::ClientError,
            _ => UpstreamClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamClass::Informational => "1xx",
            UpstreamClass::Success => "2xx",
            UpstreamClass::Redirection => "3xx",
            UpstreamClass::ClientError => "4xx",
            UpstreamClass::ServerError => "5xx",
            UpstreamClass::Error => "error",
            UpstreamClass::Timeout => "timeout",
        }
    }
}

/// What happened to an upstream connection, the `event` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A new connection was made.
    Opened,
    /// A request went on a connection made before (kept alive).
    Reused,
    /// A connection could not be made (refused, timed out, name not resolved).
    Failed,
}

impl ConnectionEvent {
    pub const ALL: [ConnectionEvent; 3] = [
        ConnectionEvent::Opened,
        ConnectionEvent::Reused,
        ConnectionEvent::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionEvent::Opened => "opened",
            ConnectionEvent::Reused => "reused",
            ConnectionEvent::Failed => "failed",
        }
    }
}

/// Upstream mode's metrics.
#[derive(Clone)]
pub struct UpstreamMetrics {
    requests: [IntCounter; 7],
    connections: [IntCounter; 3],
    /// Forwarding to the response head.
    pub head_duration: Histogram,
    /// Forwarding to the end of the response body.
    pub response_duration: Histogram,
    /// Response bodies that broke off part way.
    pub truncated: IntCounter,
}

impl UpstreamMetrics {
    pub fn request(&self, class: UpstreamClass) {
        self.requests[class as usize].inc();
    }

    pub fn connection(&self, event: ConnectionEvent) {
        self.connections[event as usize].inc();
    }
}

/// A call to Redis, the `call` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisCall {
    /// The refresher's: a lease of the global bucket and the pod's registration.
    Lease,
    /// A request's: one token of its client's bucket.
    Client,
}

/// Why a Redis call failed, the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    /// No answer within `TCPIE_REDIS_TIMEOUT_MS`.
    Timeout,
    /// Refused, reset, or an error reply.
    Error,
}

/// The fleet's shared limits.
#[derive(Clone)]
pub struct FleetMetrics {
    mode: [IntGauge; 3],
    calls: [IntCounter; 2],
    failures: [IntCounter; 2],
    /// The time of each Redis call, to its answer or its timeout.
    pub rtt: Histogram,
    /// Tokens of the global bucket this pod holds unspent (set by the refresher).
    pub lease: IntGauge,
    leased: IntCounter,
    returned: IntCounter,
    /// Pods sharing the limits, as Redis last said (or `TCPIE_REDIS_EXPECTED_PODS`).
    pub pods: IntGauge,
}

impl FleetMetrics {
    /// Shared, or fallback; `local` stays at 0 once a Redis is configured.
    pub fn set_shared(&self, shared: bool) {
        self.mode[0].set(0);
        self.mode[1].set(i64::from(shared));
        self.mode[2].set(i64::from(!shared));
    }

    pub fn called(&self, call: RedisCall) {
        self.calls[call as usize].inc();
    }

    pub fn failed(&self, failure: RedisFailure) {
        self.failures[failure as usize].inc();
    }

    /// Tokens given back to the shared bucket and tokens granted by it.
    pub fn leased(&self, returned: u64, granted: u64) {
        self.returned.inc_by(returned);
        self.leased.inc_by(granted);
    }
}

/// Buckets of a Redis call's time, in seconds: a call on loopback or in a zone takes well
/// under a millisecond; the timeout is a few.
const REDIS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1,
];

/// Buckets of the time to refuse, in seconds: a refusal is expected well under 1 ms.
const REJECTION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Latency buckets in seconds, from half a millisecond to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Creates the metrics and registers them, with the process collector, in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> prometheus::Result<Histogram> {
                let h =
                    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };

        let requests_vec = IntCounterVec::new(
            Opts::new("tcpie_requests_total", "Requests by how they ended."),
            &["outcome"],
        )?;
        registry.register(Box::new(requests_vec.clone()))?;
        let requests = Outcome::ALL.map(|o| requests_vec.with_label_values(&[o.as_str()]));

        let by_limit = |name: &str, help: &str| -> prometheus::Result<[IntCounter; 2]> {
            let vec = IntCounterVec::new(Opts::new(name, help), &["limit"])?;
            registry.register(Box::new(vec.clone()))?;
            Ok(Limit::ALL.map(|l| vec.with_label_values(&[l.as_str()])))
        };
        let rate_limit_rejections = by_limit(
            "tcpie_rate_limit_rejections_total",
            "Requests refused 429 by a rate limit, by the limit that refused them.",
        )?;
        let dry_run_rejections = by_limit(
            "tcpie_rate_limit_dry_run_rejections_total",
            "Requests a rate limit would have refused, served because of \
             TCPIE_RATE_LIMIT_DRY_RUN, by limit.",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "tcpie_rate_limit_clients_dropped_total",
                "Clients dropped from the per-client table: refilled (bucket full again, \
                 nothing lost) or evicted (table full of clients in debt; the least recently \
                 seen starts again with a full bucket).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(dropped.clone()))?;
        let admin_shed = IntCounterVec::new(
            Opts::new(
                "tcpie_admin_connections_shed_total",
                "Admin connections closed before an answer: read_timeout (head not complete \
                 by TCPIE_ADMIN_READ_TIMEOUT_MS) or evicted (closed for a newer connection at \
                 TCPIE_ADMIN_MAX_CONNECTIONS).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(admin_shed.clone()))?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "tcpie_upstream_requests_total",
                "Upstream mode: requests forwarded, by the class of the upstream's status, or \
                 error (refused, reset, closed or not HTTP before the response head) or \
                 timeout (no response head within TCPIE_UPSTREAM_TIMEOUT_MS).",
            ),
            &["class"],
        )?;
        registry.register(Box::new(upstream_requests.clone()))?;
        let upstream_connections = IntCounterVec::new(
            Opts::new(
                "tcpie_upstream_connections_total",
                "Upstream mode: connections to the upstream opened, requests that reused one, \
                 and connections that could not be made.",
            ),
            &["event"],
        )?;
        registry.register(Box::new(upstream_connections.clone()))?;

        let labelled = |name: &str, help: &str, label: &str, values: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), &[label]).and_then(|vec| {
                registry.register(Box::new(vec.clone()))?;
                Ok(values
                    .iter()
                    .map(|v| vec.with_label_values(&[v]))
                    .collect::<Vec<_>>())
            })
        };
        let mode_vec = IntGaugeVec::new(
            Opts::new(
                "tcpie_rate_limit_mode",
                "Where the rate limits are kept: local (no TCPIE_REDIS_URL), shared (in \
                 Redis, with the fleet) or fallback (Redis out of reach: this pod's fair \
                 share). The current mode is 1, the others 0.",
            ),
            &["mode"],
        )?;
        registry.register(Box::new(mode_vec.clone()))?;
        let mode = ["local", "shared", "fallback"].map(|m| mode_vec.with_label_values(&[m]));
        mode[0].set(1);
        let calls = labelled(
            "tcpie_redis_calls_total",
            "Calls to Redis: lease (the global bucket's lease and the pod's registration, \
             from the refresher) or client (one token of a client's bucket, on a request's \
             path).",
            "call",
            &["lease", "client"],
        )?;
        let failures = labelled(
            "tcpie_redis_errors_total",
            "Redis calls that failed: timeout (no answer within TCPIE_REDIS_TIMEOUT_MS) or \
             error (refused, reset, an error reply).",
            "kind",
            &["timeout", "error"],
        )?;
        let lease_tokens = IntCounterVec::new(
            Opts::new(
                "tcpie_rate_limit_lease_tokens_total",
                "Tokens of the shared global bucket granted to this pod's lease, and given \
                 back unspent.",
            ),
            &["event"],
        )?;
        registry.register(Box::new(lease_tokens.clone()))?;
        let fleet = FleetMetrics {
            mode,
            calls: [calls[0].clone(), calls[1].clone()],
            failures: [failures[0].clone(), failures[1].clone()],
            rtt: histogram(
                "tcpie_redis_duration_seconds",
                "Time of each Redis call, to its answer or to its timeout.",
                REDIS_BUCKETS,
            )?,
            lease: gauge(
                "tcpie_rate_limit_lease_tokens",
                "Tokens of the shared global bucket this pod holds unspent.",
            )?,
            leased: lease_tokens.with_label_values(&["granted"]),
            returned: lease_tokens.with_label_values(&["returned"]),
            pods: gauge(
                "tcpie_rate_limit_pods",
                "Pods sharing the rate limits, as Redis last said (TCPIE_REDIS_EXPECTED_PODS \
                 until Redis is reached; 1 without TCPIE_REDIS_URL).",
            )?,
        };
        fleet.pods.set(1);

        let rate_limit_tokens = Gauge::new(
            "tcpie_rate_limit_tokens",
            "Tokens available in the rate limiter's bucket when scraped.",
        )?;
        registry.register(Box::new(rate_limit_tokens.clone()))?;

        let build_info = IntGaugeVec::new(
            Opts::new(
                "tcpie_build_info",
                "TCPie's version; the value is always 1.",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics {
            connections_accepted: counter(
                "tcpie_connections_accepted_total",
                "TCP connections accepted.",
            )?,
            connections_closed_before_request: counter(
                "tcpie_connections_closed_before_request_total",
                "Connections the client closed (or reset) before sending a complete request.",
            )?,
            connections_open: gauge("tcpie_connections_open", "TCP connections open now.")?,
            requests,
            request_duration: histogram(
                "tcpie_request_duration_seconds",
                "Time from the start of reading the request head to the response written, \
                 for processed requests.",
                LATENCY_BUCKETS,
            )?,
            queue_wait: histogram(
                "tcpie_queue_wait_seconds",
                "Time admitted requests waited in the queue for a worker.",
                LATENCY_BUCKETS,
            )?,
            rejection_duration: histogram(
                "tcpie_rejection_duration_seconds",
                "Time from accept (on a kept-alive connection, from the request's first \
                 byte) to the answer written, for requests refused at admission (429, or 503 \
                 queue full).",
                REJECTION_BUCKETS,
            )?,
            queue_depth: gauge("tcpie_queue_depth", "Requests waiting for a worker.")?,
            queue_capacity: gauge(
                "tcpie_queue_capacity",
                "Requests that may wait for a worker (TCPIE_QUEUE_SIZE).",
            )?,
            workers: gauge(
                "tcpie_workers",
                "Requests processed at once: permits (TCPIE_WORKERS).",
            )?,
            workers_busy: gauge("tcpie_workers_busy", "Workers processing a request now.")?,
            rate_limit_tokens,
            ready: gauge("tcpie_ready", "1 when /readyz answers 200, else 0.")?,
            accept_errors: counter(
                "tcpie_accept_errors_total",
                "Errors accepting connections on either port (for example too many open \
                 files).",
            )?,
            rate_limit_rejections,
            dry_run_rejections,
            rate_limit_clients: gauge(
                "tcpie_rate_limit_clients",
                "Clients tracked by the per-client rate limit when scraped.",
            )?,
            rate_limit_client_table_size: gauge(
                "tcpie_rate_limit_client_table_size",
                "Most clients the per-client rate limit tracks (TCPIE_CLIENT_TABLE_SIZE; 0 \
                 when TCPIE_CLIENT_KEY is none).",
            )?,
            clients_dropped_refilled: dropped.with_label_values(&["refilled"]),
            clients_dropped_evicted: dropped.with_label_values(&["evicted"]),
            connections_max: gauge(
                "tcpie_connections_max",
                "Most connections the TCP port holds open: TCPIE_MAX_CONNECTIONS, or fewer \
                 when the open-file limit cannot hold that many.",
            )?,
            admin_connections_open: gauge(
                "tcpie_admin_connections_open",
                "Connections of the admin port open now.",
            )?,
            admin_shed: AdminShed::ALL.map(|r| admin_shed.with_label_values(&[r.as_str()])),
            upstream: UpstreamMetrics {
                requests: UpstreamClass::ALL.map(|c| upstream_requests.with_label_values(&[c.as_str()])),
                connections: ConnectionEvent::ALL
                    .map(|e| upstream_connections.with_label_values(&[e.as_str()])),
                head_duration: histogram(
                    "tcpie_upstream_response_head_seconds",
                    "Upstream mode: time from forwarding a request to the upstream's response head.",
                    LATENCY_BUCKETS,
                )?,
                response_duration: histogram(
                    "tcpie_upstream_response_seconds",
                    "Upstream mode: time from forwarding a request to the end of the upstream's \
                     response body.",
                    LATENCY_BUCKETS,
                )?,
                truncated: counter(
                    "tcpie_upstream_responses_truncated_total",
                    "Upstream mode: response bodies that broke off part way (the client's \
                     connection was closed without a forged end).",
                )?,
            },
            fleet,
        })
    }

    /// Counts one finished request.
    pub fn record(&self, outcome: Outcome) {
        self.requests[outcome.index()].inc();
    }

    /// Counts a request a rate limit refused (or, in dry run, would have).
    pub fn rate_limited(&self, limit: Limit, dry_run: bool) {
        let counters = if dry_run {
            &self.dry_run_rejections
        } else {
            &self.rate_limit_rejections
        };
        counters[limit as usize].inc();
    }

    /// Counts an admin connection closed before an answer.
    pub fn admin_shed(&self, reason: AdminShed) {
        self.admin_shed[reason as usize].inc();
    }

    /// The count of one outcome so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn every_outcome_is_exported_from_the_start() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        for o in Outcome::ALL {
            assert!(
                text.contains(&format!(
                    "tcpie_requests_total{{outcome=\"{}\"}} 0",
                    o.as_str()
                )),
                "{text}"
            );
        }
        let info = format!(
            "tcpie_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&info), "{text}");
        metrics.record(Outcome::QueueFull);
        assert_eq!(metrics.requests(Outcome::QueueFull), 1);
        assert_eq!(metrics.requests(Outcome::Processed), 0);
    }

    #[test]
    fn a_registry_takes_one_server_only() {
        let registry = Registry::new();
        Metrics::register(&registry).unwrap();
        assert!(Metrics::register(&registry).is_err());
    }
}
