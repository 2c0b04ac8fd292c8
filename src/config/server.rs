//! The server's settings: one row per `TCPIE_*` variable.
//!
//! A typo must not be silently ignored, so an unknown `TCPIE_*` variable is an error that
//! names the closest valid one. A bad value is an error naming the variable, the value and
//! what is expected.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{
    read, unknown_hint, ClientKey, ConfigError, ConfigErrors, RedisUrl, Shown, UpstreamSetting,
    PREFIX,
};

/// How log lines are written; the filter itself comes from `RUST_LOG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Shown for LogFormat {
    fn shown(&self) -> String {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
        .to_string()
    }
}

const MAX_MS: u64 = 3_600_000;

variables! {
    /// The validated configuration of one TCPie process.
    ///
    /// Field names are the variable names without the prefix, lower-cased; units are in
    /// the names. Build it with [`Config::from_env`] or [`Config::from_vars`]; tests may
    /// also start from [`Config::default`] and change fields (call [`Config::validate`]
    /// afterwards).
    pub struct Config;
    table VARS;

    /// Bind address of both servers.
    TCPIE_HOST => host: IpAddr = IpAddr::from([0, 0, 0, 0]);
        expect "an IP address, such as 0.0.0.0, 127.0.0.1 or ::";
        valid |_c| true;
    /// TCP port of the admission-controlled server; 0 picks a free port (the bound
    /// address is logged).
    TCPIE_PORT => port: u16 = 8080;
        expect "a port number from 0 to 65535, not the same as TCPIE_ADMIN_PORT";
        valid |c| c.port == 0 || c.port != c.admin_port;
    /// Port of the admin server: metrics and probes.
    TCPIE_ADMIN_PORT => admin_port: u16 = 9090;
        expect "a port number from 0 to 65535, not the same as TCPIE_PORT";
        valid |c| c.admin_port == 0 || c.port != c.admin_port;
    /// Requests processed at once (the worker pool).
    TCPIE_WORKERS => workers: usize = 2;
        expect "a whole number from 1 to 65536";
        valid |c| (1..=65_536).contains(&c.workers);
    /// Requests that may wait for a worker.
    TCPIE_QUEUE_SIZE => queue_size: usize = 5;
        expect "a whole number from 0 to 1000000";
        valid |c| c.queue_size <= 1_000_000;
    /// Token refill rate of the rate limiter, tokens per second; ignored when
    /// `TCPIE_BURST` is 0.
    TCPIE_RATE_PER_SECOND => rate_per_second: f64 = 2.0;
        expect "tokens per second from 0.001 to 1000000000, fractions allowed";
        valid |c| c.burst == 0
            || (c.rate_per_second.is_finite() && (0.001..=1e9).contains(&c.rate_per_second));
    /// Capacity of the token bucket; 0 turns rate limiting off.
    TCPIE_BURST => burst: u32 = 5;
        expect "a whole number from 0 (rate limiting off) to 1000000000";
        valid |c| c.burst <= 1_000_000_000;
    /// What makes requests one client, each with its own bucket (see Per-client rate
    /// limits): `none` (one global bucket only), `peer` (the peer's IP address, IPv6 by
    /// /64), `header:NAME` (that header's value; the peer's address without it),
    /// `forwarded` (the address in `X-Forwarded-For` `TCPIE_TRUSTED_HOPS` entries from the
    /// right) or `forwarded:rfc7239` (the same from the `Forwarded` header's `for=`).
    TCPIE_CLIENT_KEY => client_key: ClientKey = ClientKey::None;
        expect ClientKey::EXPECTED;
        valid |_c| true;
    /// With `forwarded`: the proxies in front of TCPie that append to the header; the
    /// client is the entry that many from the right (the peer's address when there are
    /// fewer entries).
    TCPIE_TRUSTED_HOPS => trusted_hops: u32 = 1;
        expect "a whole number from 1 to 64";
        valid |c| (1..=64).contains(&c.trusted_hops);
    /// Token refill rate of each client's bucket, tokens per second.
    TCPIE_CLIENT_RATE_PER_SECOND => client_rate_per_second: f64 = 1.0;
        expect "tokens per second from 0.001 to 1000000000, fractions allowed";
        valid |c| c.client_rate_per_second.is_finite()
            && (0.001..=1e9).contains(&c.client_rate_per_second);
    /// Capacity of each client's bucket.
    TCPIE_CLIENT_BURST => client_burst: u32 = 5;
        expect "a whole number from 1 to 1000000000";
        valid |c| (1..=1_000_000_000).contains(&c.client_burst);
    /// Most clients tracked at once (about 54 bytes each, allocated at start when
    /// `TCPIE_CLIENT_KEY` is not `none`).
    TCPIE_CLIENT_TABLE_SIZE => client_table_size: usize = 100_000;
        expect "a whole number from 1 to 10000000";
        valid |c| (1..=10_000_000).contains(&c.client_table_size);
    /// Compute and count every rate-limit decision, but serve the requests they would
    /// refuse (`tcpie_rate_limit_dry_run_rejections_total`): for rolling out limits.
    TCPIE_RATE_LIMIT_DRY_RUN => rate_limit_dry_run: bool = false;
        expect "true or false";
        valid |_c| true;
    /// Send `RateLimit-Policy` and `RateLimit` (IETF draft) on every answer, not only on
    /// 429.
    TCPIE_RATE_LIMIT_HEADERS => rate_limit_headers: bool = false;
        expect "true or false";
        valid |_c| true;
    /// The Redis that makes the global and per-client buckets one for the whole fleet
    /// (see Limits across the fleet); empty keeps each pod's limits its own.
    TCPIE_REDIS_URL => redis_url: RedisUrl = RedisUrl(None);
        expect RedisUrl::EXPECTED;
        valid |_c| true;
    /// A file holding the Redis password (a mounted Secret), read at start; it replaces
    /// any password in `TCPIE_REDIS_URL`.
    TCPIE_REDIS_PASSWORD_FILE => redis_password_file: String = String::new();
        expect "empty, or the path of a readable file";
        valid |_c| true;
    /// The name the fleet's limits are kept under in Redis: pods with the same name share
    /// them. Empty: `OTEL_SERVICE_NAME`.
    TCPIE_RATE_LIMIT_NAME => rate_limit_name: String = String::new();
        expect "empty, or up to 100 letters, digits, '.', '_' and '-'";
        valid |c| c.rate_limit_name.len() <= 100
            && c.rate_limit_name.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
    /// Longest wait for Redis on a request's path; after three calls in a row fail or
    /// take longer, the pod falls back to its fair share of each limit. (The background
    /// lease refresh, which no request waits for, allows ten times as long: 50 ms to 1 s.)
    TCPIE_REDIS_TIMEOUT_MS => redis_timeout_ms: u64 = 5;
        expect "milliseconds from 1 to 1000";
        valid |c| (1..=1000).contains(&c.redis_timeout_ms);
    /// How many pods share the limits until Redis has been reached once (the fair share
    /// is each limit divided by it); the chart sets it to its replica count.
    TCPIE_REDIS_EXPECTED_PODS => redis_expected_pods: u32 = 1;
        expect "a whole number from 1 to 10000";
        valid |c| (1..=10_000).contains(&c.redis_expected_pods);
    /// Absolute deadline for reading a request: its head and its body.
    TCPIE_READ_TIMEOUT_MS => read_timeout_ms: u64 = 3000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.read_timeout_ms);
    /// Total deadline for writing a response.
    TCPIE_WRITE_TIMEOUT_MS => write_timeout_ms: u64 = 2000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.write_timeout_ms);
    /// Open connections before accepting pauses (the rest wait in the kernel's backlog).
    TCPIE_MAX_CONNECTIONS => max_connections: usize = 10_000;
        expect "a whole number from 1 to 1000000";
        valid |c| (1..=1_000_000).contains(&c.max_connections);
    /// Largest request head, request line and headers included.
    TCPIE_MAX_HEADER_BYTES => max_header_bytes: usize = 8192;
        expect "bytes from 64 to 1048576";
        valid |c| (64..=1_048_576).contains(&c.max_header_bytes);
    /// Longest a request may wait in the queue for a permit; past it, it is answered 503
    /// with `Retry-After` (outcome `queue_timeout`) instead of being served too late to
    /// matter. 0: no limit.
    TCPIE_QUEUE_TIMEOUT_MS => queue_timeout_ms: u64 = 0;
        expect "milliseconds from 0 (no limit) to 3600000";
        valid |c| c.queue_timeout_ms <= MAX_MS;
    /// Processing time added to every request, for demonstrations and benchmarks.
    TCPIE_SIMULATED_WORK_MS => simulated_work_ms: u64 = 0;
        expect "milliseconds from 0 to 3600000";
        valid |c| c.simulated_work_ms <= MAX_MS;
    /// Queue fill at which `/readyz` fails; 0 turns the check off.
    TCPIE_READY_QUEUE_THRESHOLD => ready_queue_threshold: f64 = 1.0;
        expect "a fraction from 0 (check off) to 1, such as 0.8";
        valid |c| (0.0..=1.0).contains(&c.ready_queue_threshold);
    /// Time without a finished request, while requests wait, after which `/livez` fails.
    TCPIE_LIVENESS_STALL_MS => liveness_stall_ms: u64 = 30_000;
        expect "milliseconds from 1 to 86400000";
        valid |c| (1..=86_400_000).contains(&c.liveness_stall_ms);
    /// After a stop signal, time spent not ready before the listener closes.
    TCPIE_SHUTDOWN_DELAY_MS => shutdown_delay_ms: u64 = 0;
        expect "milliseconds from 0 to 3600000";
        valid |c| c.shutdown_delay_ms <= MAX_MS;
    /// Deadline for draining accepted requests once the listener is closed.
    TCPIE_SHUTDOWN_TIMEOUT_MS => shutdown_timeout_ms: u64 = 10_000;
        expect "milliseconds from 0 to 3600000";
        valid |c| c.shutdown_timeout_ms <= MAX_MS;
    /// Log lines as text or JSON; the filter comes from `RUST_LOG` (default `info`).
    TCPIE_LOG_FORMAT => log_format: LogFormat = LogFormat::Text;
        expect "text or json";
        valid |_c| true;
    /// Keep HTTP/1.1 connections open for further requests (see Keep-alive).
    TCPIE_KEEP_ALIVE => keep_alive: bool = false;
        expect "true or false";
        valid |_c| true;
    /// With keep-alive, how long a connection may wait for its next request.
    TCPIE_KEEP_ALIVE_IDLE_MS => keep_alive_idle_ms: u64 = 5000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.keep_alive_idle_ms);
    /// With keep-alive, the most requests one connection may carry.
    TCPIE_MAX_REQUESTS_PER_CONNECTION => max_requests_per_connection: u64 = 1000;
        expect "a whole number from 1 to 1000000";
        valid |c| (1..=1_000_000).contains(&c.max_requests_per_connection);
    /// Open connections of the admin port, apart from `TCPIE_MAX_CONNECTIONS`; over it, a
    /// new connection closes the oldest one that is not being answered.
    TCPIE_ADMIN_MAX_CONNECTIONS => admin_max_connections: usize = 32;
        expect "a whole number from 1 to 10000";
        valid |c| (1..=10_000).contains(&c.admin_max_connections);
    /// Deadline for an admin request's head, from the accept (or, on a kept-alive
    /// connection, from its first byte).
    TCPIE_ADMIN_READ_TIMEOUT_MS => admin_read_timeout_ms: u64 = 3000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.admin_read_timeout_ms);
    /// How long a kept-alive admin connection may wait for its next request.
    TCPIE_ADMIN_IDLE_TIMEOUT_MS => admin_idle_timeout_ms: u64 = 30_000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.admin_idle_timeout_ms);
    /// The HTTP service admitted requests are forwarded to (see In front of your service);
    /// empty keeps the built-in handler.
    TCPIE_UPSTREAM => upstream: UpstreamSetting = UpstreamSetting(None);
        expect UpstreamSetting::EXPECTED;
        valid |_c| true;
    /// Longest wait for a new connection to the upstream.
    TCPIE_UPSTREAM_CONNECT_TIMEOUT_MS => upstream_connect_timeout_ms: u64 = 1000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.upstream_connect_timeout_ms);
    /// Longest wait from forwarding a request to the upstream's response head (504 past
    /// it), and between two pieces of its response body.
    TCPIE_UPSTREAM_TIMEOUT_MS => upstream_timeout_ms: u64 = 30_000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.upstream_timeout_ms);
    /// How long an idle upstream connection is kept for reuse; keep it below the
    /// upstream's own keep-alive timeout (Node.js: 5 s, nginx: 75 s).
    TCPIE_UPSTREAM_IDLE_TIMEOUT_MS => upstream_idle_timeout_ms: u64 = 4000;
        expect "milliseconds from 1 to 3600000";
        valid |c| (1..=MAX_MS).contains(&c.upstream_idle_timeout_ms);
    /// Largest request body in upstream mode (a larger `Content-Length` is 413 before
    /// anything is forwarded; a chunked body that grows past it is cut off). The built-in
    /// handler's limit stays 64 KiB.
    TCPIE_MAX_BODY_BYTES => max_body_bytes: u64 = 10 * 1024 * 1024;
        expect "bytes from 1 to 4294967296";
        valid |c| (1..=4_294_967_296).contains(&c.max_body_bytes);
}

impl Config {
    /// Reads the process environment (the `TCPIE_*` variables only).
    pub fn from_env() -> Result<Config, ConfigErrors> {
        super::group_from_env(PREFIX, Config::from_vars)
    }

    /// Reads the given variables; anything without the `TCPIE_` prefix is ignored. Every
    /// unknown name and every bad value is reported.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let ours: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(PREFIX))
            .collect();
        let mut errors: Vec<ConfigError> = Vec::new();
        for (name, _) in &ours {
            let known = VARS.iter().any(|v| v.name == name);
            let reported = errors
                .iter()
                .any(|e| matches!(e, ConfigError::Unknown { name: n, .. } if n == name));
            if !known && !reported {
                errors.push(ConfigError::Unknown {
                    name: name.clone(),
                    hint: unknown_hint(name),
                });
            }
        }
        let (config, mut invalid) = read(VARS, &ours);
        errors.append(&mut invalid);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors::new(errors))
        }
    }

    /// Checks ranges and the relations between settings (for a `Config` built in code).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let errors: Vec<ConfigError> = VARS
            .iter()
            .filter(|v| !(v.valid)(self))
            .map(|v| v.invalid(&v.show(self)))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors::new(errors))
        }
    }

    /// The effective configuration on one line, for the start-up log.
    pub fn summary(&self) -> String {
        VARS.iter()
            .map(|v| {
                let name = v.name[PREFIX.len()..].to_lowercase();
                format!("{name}={}", v.show(self))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn keep_alive_idle(&self) -> Duration {
        Duration::from_millis(self.keep_alive_idle_ms)
    }

    /// Requests being processed plus requests waiting: the most admitted at once.
    pub fn capacity(&self) -> usize {
        self.workers + self.queue_size
    }

    /// Whether the token bucket is in use.
    pub fn rate_limited(&self) -> bool {
        self.burst > 0
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The Redis of the fleet's shared limits, when there is one.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.0.as_deref()
    }

    /// The name the shared limits are kept under: `TCPIE_RATE_LIMIT_NAME`, else the
    /// service name the binary filled in, else `tcpie`.
    pub fn rate_limit_name(&self) -> &str {
        if self.rate_limit_name.is_empty() {
            "tcpie"
        } else {
            &self.rate_limit_name
        }
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// Where requests are forwarded, in upstream mode.
    pub fn upstream(&self) -> Option<&super::Upstream> {
        self.upstream.0.as_ref()
    }

    /// The queue timeout, if there is one.
    pub fn queue_timeout(&self) -> Option<Duration> {
        (self.queue_timeout_ms > 0).then(|| Duration::from_millis(self.queue_timeout_ms))
    }

    pub fn simulated_work(&self) -> Duration {
        Duration::from_millis(self.simulated_work_ms)
    }

    pub fn liveness_stall(&self) -> Duration {
        Duration::from_millis(self.liveness_stall_ms)
    }

    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::variable_names;

    fn errors(vars: &[(&str, &str)]) -> Vec<ConfigError> {
        match Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn defaults_are_the_go_originals() {
        let c = Config::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(
            (c.workers, c.queue_size, c.rate_per_second, c.burst),
            (2, 5, 2.0, 5)
        );
        assert_eq!(c.capacity(), 7);
    }

    #[test]
    fn reads_every_variable() {
        let c = Config::from_vars([
            ("TCPIE_HOST", "127.0.0.1"),
            ("TCPIE_PORT", "1234"),
            ("TCPIE_ADMIN_PORT", "1235"),
            ("TCPIE_WORKERS", "8"),
            ("TCPIE_QUEUE_SIZE", "0"),
            ("TCPIE_RATE_PER_SECOND", "0.5"),
            ("TCPIE_BURST", "0"),
            ("TCPIE_READ_TIMEOUT_MS", "10"),
            ("TCPIE_WRITE_TIMEOUT_MS", "20"),
            ("TCPIE_MAX_CONNECTIONS", "30"),
            ("TCPIE_MAX_HEADER_BYTES", "1024"),
            ("TCPIE_QUEUE_TIMEOUT_MS", "250"),
            ("TCPIE_SIMULATED_WORK_MS", "40"),
            ("TCPIE_READY_QUEUE_THRESHOLD", "0.75"),
            ("TCPIE_LIVENESS_STALL_MS", "50"),
            ("TCPIE_SHUTDOWN_DELAY_MS", "60"),
            ("TCPIE_SHUTDOWN_TIMEOUT_MS", "70"),
            ("TCPIE_LOG_FORMAT", "json"),
            ("TCPIE_KEEP_ALIVE", "true"),
            ("TCPIE_KEEP_ALIVE_IDLE_MS", "80"),
            ("TCPIE_MAX_REQUESTS_PER_CONNECTION", "90"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(
            (c.port, c.admin_port, c.workers, c.queue_size),
            (1234, 1235, 8, 0)
        );
        assert_eq!((c.rate_per_second, c.burst), (0.5, 0));
        assert_eq!(
            (c.read_timeout_ms, c.write_timeout_ms, c.max_connections),
            (10, 20, 30)
        );
        assert_eq!((c.max_header_bytes, c.simulated_work_ms), (1024, 40));
        assert_eq!(c.queue_timeout(), Some(Duration::from_millis(250)));
        assert_eq!(Config::default().queue_timeout(), None);
        assert_eq!(c.ready_queue_threshold, 0.75);
        assert_eq!(
            (
                c.liveness_stall_ms,
                c.shutdown_delay_ms,
                c.shutdown_timeout_ms
            ),
            (50, 60, 70)
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.keep_alive);
        assert_eq!(
            (c.keep_alive_idle_ms, c.max_requests_per_connection),
            (80, 90)
        );
        assert!(!c.rate_limited());
    }

    #[test]
    fn every_variable_is_listed_once() {
        let names: Vec<&str> = variable_names().collect();
        assert_eq!(names.len(), 41);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(names.iter().all(|n| n.starts_with(PREFIX)));
    }

    #[test]
    fn a_bad_value_names_variable_value_and_expectation() {
        let e = errors(&[("TCPIE_PORT", "eighty")]);
        assert_eq!(e.len(), 1);
        let text = e[0].to_string();
        assert!(text.contains("TCPIE_PORT"), "{text}");
        assert!(text.contains("\"eighty\""), "{text}");
        assert!(text.contains("0 to 65535"), "{text}");

        let text = errors(&[("TCPIE_LOG_FORMAT", "xml")])[0].to_string();
        assert!(text.contains("TCPIE_LOG_FORMAT=\"xml\"") && text.contains("text or json"));

        let text = errors(&[("TCPIE_RATE_PER_SECOND", "fast")])[0].to_string();
        assert!(text.contains("TCPIE_RATE_PER_SECOND"), "{text}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for (name, value) in [
            ("TCPIE_WORKERS", "0"),
            ("TCPIE_READ_TIMEOUT_MS", "0"),
            ("TCPIE_MAX_CONNECTIONS", "0"),
            ("TCPIE_MAX_HEADER_BYTES", "10"),
            ("TCPIE_READY_QUEUE_THRESHOLD", "1.5"),
            ("TCPIE_READY_QUEUE_THRESHOLD", "NaN"),
            ("TCPIE_RATE_PER_SECOND", "0"),
            ("TCPIE_RATE_PER_SECOND", "inf"),
            ("TCPIE_RATE_PER_SECOND", "-1"),
            ("TCPIE_WORKERS", "-1"),
            ("TCPIE_HOST", "not-an-ip"),
            ("TCPIE_KEEP_ALIVE", "yes"),
        ] {
            let e = errors(&[(name, value)]);
            assert!(
                e.iter()
                    .any(|e| matches!(e, ConfigError::Invalid { name: n, .. } if n == name)),
                "{name}={value}: {e:?}"
            );
        }
    }

    #[test]
    fn rate_is_free_when_rate_limiting_is_off() {
        let c = Config::from_vars([("TCPIE_BURST", "0"), ("TCPIE_RATE_PER_SECOND", "0")]).unwrap();
        assert!(!c.rate_limited());
    }

    #[test]
    fn both_ports_cannot_be_the_same() {
        let e = errors(&[("TCPIE_PORT", "7000"), ("TCPIE_ADMIN_PORT", "7000")]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[1].to_string().contains("TCPIE_ADMIN_PORT"));
        // Only the variable that was given is named.
        let e = errors(&[("TCPIE_PORT", "9090")]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].to_string().starts_with("TCPIE_PORT=\"9090\""), "{e:?}");
        // Port 0 asks the kernel for any free port, twice: no clash.
        Config::from_vars([("TCPIE_PORT", "0"), ("TCPIE_ADMIN_PORT", "0")]).unwrap();
    }

    #[test]
    fn an_unknown_variable_names_the_closest_valid_one() {
        let e = errors(&[("TCPIE_WORKER", "4")]);
        assert_eq!(
            e,
            vec![ConfigError::Unknown {
                name: "TCPIE_WORKER".into(),
                hint: "did you mean TCPIE_WORKERS? (unset TCPIE_WORKER or rename it)".into()
            }]
        );
        let text = errors(&[("TCPIE_QUEUESIZE", "4")])[0].to_string();
        assert!(text.contains("TCPIE_QUEUE_SIZE"), "{text}");
        let text = errors(&[("TCPIE_COMPLETELY_DIFFERENT", "1")])[0].to_string();
        assert!(
            text.contains("TCPIE_WORKERS") && text.contains("TCPIE_LOG_FORMAT"),
            "{text}"
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        // One unknown name, one value out of range, one that does not parse: three.
        let e = errors(&[
            ("TCPIE_WORKRS", "1"),
            ("TCPIE_WORKERS", "0"),
            ("TCPIE_BURST", "-3"),
        ]);
        assert_eq!(e.len(), 3, "{e:?}");
        let e = errors(&[("TCPIE_WORKERS", "0"), ("TCPIE_BURST", "-3")]);
        assert_eq!(e.len(), 2, "{e:?}");
        let e = errors(&[
            ("TCPIE_WORKRS", "1"),
            ("TCPIE_WORKERS", "0"),
            ("TCPIE_QUEUE_SIZE", "2"),
        ]);
        assert_eq!(e.len(), 2, "{e:?}");
        let e = errors(&[
            ("TCPIE_HOST", "nowhere"),
            ("TCPIE_LOG_FORMAT", "xml"),
            ("TCPIE_KEEP_ALIVE", "maybe"),
            ("TCPIE_MAX_HEADER_BYTES", "1"),
        ]);
        assert_eq!(e.len(), 4, "{e:?}");
    }

    #[test]
    fn a_repeated_name_takes_its_last_value() {
        let c = Config::from_vars([("TCPIE_WORKERS", "abc"), ("TCPIE_WORKERS", "3")]).unwrap();
        assert_eq!(c.workers, 3);
    }

    #[test]
    fn the_summary_lists_every_variable() {
        let summary = Config::default().summary();
        assert!(summary.starts_with("host=0.0.0.0 port=8080 admin_port=9090 workers=2"));
        assert_eq!(summary.split(' ').count(), VARS.len());
        assert!(
            summary.contains("log_format=text keep_alive=false"),
            "{summary}"
        );
    }

    #[test]
    fn validate_names_what_code_set_wrong() {
        let bad = Config {
            workers: 0,
            ready_queue_threshold: 2.0,
            ..Config::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.to_string().contains("TCPIE_WORKERS=\"0\""));
    }
}
