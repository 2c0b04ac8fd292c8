//! Configuration: every setting comes from a `TCPIE_*` environment variable.
//!
//! This module owns the names, the defaults, the parsing (envy + serde into one typed
//! [`Config`]) and the validation. It reads variables from any iterator of pairs, so tests
//! never touch the process environment. It does not own the OpenTelemetry variables
//! (`OTEL_*`) nor `RUST_LOG`, which their own libraries read.
//!
//! A typo must not be silently ignored, so an unknown `TCPIE_*` variable is an error that
//! names the closest valid one. A bad value is an error naming the variable, the value and
//! what is expected.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

/// The prefix shared by every TCPie variable.
pub const PREFIX: &str = "TCPIE_";

/// How log lines are written; the filter itself comes from `RUST_LOG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of one TCPie process.
///
/// Field names are the variable names without the prefix, lower-cased; units are in the
/// names. Build it with [`Config::from_env`] or [`Config::from_vars`]; tests may also start
/// from [`Config::default`] and change fields (call [`Config::validate`] afterwards).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Bind address of both servers.
    pub host: IpAddr,
    /// Port of the admission-controlled TCP server.
    pub port: u16,
    /// Port of the admin server (metrics and probes).
    pub admin_port: u16,
    /// Worker tasks processing requests.
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue_size: usize,
    /// Token refill rate of the rate limiter, tokens per second; may be fractional.
    pub rate_per_second: f64,
    /// Bucket capacity; 0 disables rate limiting.
    pub burst: u32,
    /// Absolute deadline for reading a request head (and its small body).
    pub read_timeout_ms: u64,
    /// Total deadline for writing a response.
    pub write_timeout_ms: u64,
    /// Open connections before accepting pauses.
    pub max_connections: usize,
    /// Largest request head, request line and headers included.
    pub max_header_bytes: usize,
    /// Processing time added to every request inside the worker.
    pub simulated_work_ms: u64,
    /// Queue fill (0..=1) at which readiness fails; 0 turns the check off.
    pub ready_queue_threshold: f64,
    /// Time without a finished request, while requests wait, after which liveness fails.
    pub liveness_stall_ms: u64,
    /// After a stop signal, time spent not ready before the listener closes.
    pub shutdown_delay_ms: u64,
    /// Deadline for draining accepted requests after the listener closes.
    pub shutdown_timeout_ms: u64,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Keep HTTP/1.1 connections open for further requests (off: one request each).
    pub keep_alive: bool,
    /// With keep-alive, how long a connection may wait for its next request.
    pub keep_alive_idle_ms: u64,
    /// With keep-alive, the most requests one connection may carry.
    pub max_requests_per_connection: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            admin_port: 9090,
            workers: 2,
            queue_size: 5,
            rate_per_second: 2.0,
            burst: 5,
            read_timeout_ms: 3000,
            write_timeout_ms: 2000,
            max_connections: 10_000,
            max_header_bytes: 8192,
            simulated_work_ms: 0,
            ready_queue_threshold: 1.0,
            liveness_stall_ms: 30_000,
            shutdown_delay_ms: 0,
            shutdown_timeout_ms: 10_000,
            log_format: LogFormat::Text,
            keep_alive: false,
            keep_alive_idle_ms: 5000,
            max_requests_per_connection: 1000,
        }
    }
}

/// One variable: its field name, and what a valid value looks like (used in errors).
struct Var {
    field: &'static str,
    expected: &'static str,
}

const MAX_MS: u64 = 3_600_000;

/// Every variable TCPie reads, in the README's order.
const VARS: &[Var] = &[
    Var {
        field: "host",
        expected: "an IP address to bind, such as 0.0.0.0, 127.0.0.1 or ::",
    },
    Var {
        field: "port",
        expected: "a port number from 0 to 65535",
    },
    Var {
        field: "admin_port",
        expected: "a port number from 0 to 65535, not the same as TCPIE_PORT",
    },
    Var {
        field: "workers",
        expected: "a whole number from 1 to 65536",
    },
    Var {
        field: "queue_size",
        expected: "a whole number from 0 to 1000000",
    },
    Var {
        field: "rate_per_second",
        expected: "a number of tokens per second from 0.001 to 1000000000 (fractions allowed)",
    },
    Var {
        field: "burst",
        expected: "a whole number from 0 (rate limiting off) to 1000000000",
    },
    Var {
        field: "read_timeout_ms",
        expected: "milliseconds from 1 to 3600000",
    },
    Var {
        field: "write_timeout_ms",
        expected: "milliseconds from 1 to 3600000",
    },
    Var {
        field: "max_connections",
        expected: "a whole number from 1 to 1000000",
    },
    Var {
        field: "max_header_bytes",
        expected: "bytes from 64 to 1048576",
    },
    Var {
        field: "simulated_work_ms",
        expected: "milliseconds from 0 to 3600000",
    },
    Var {
        field: "ready_queue_threshold",
        expected: "a fraction from 0 (check off) to 1, such as 0.8",
    },
    Var {
        field: "liveness_stall_ms",
        expected: "milliseconds from 1 to 86400000",
    },
    Var {
        field: "shutdown_delay_ms",
        expected: "milliseconds from 0 to 3600000",
    },
    Var {
        field: "shutdown_timeout_ms",
        expected: "milliseconds from 0 to 3600000",
    },
    Var {
        field: "log_format",
        expected: "text or json",
    },
    Var {
        field: "keep_alive",
        expected: "true or false",
    },
    Var {
        field: "keep_alive_idle_ms",
        expected: "milliseconds from 1 to 3600000",
    },
    Var {
        field: "max_requests_per_connection",
        expected: "a whole number from 1 to 1000000",
    },
];

/// The full environment variable names TCPie accepts.
pub fn variable_names() -> impl Iterator<Item = String> {
    VARS.iter().map(|v| env_name(v.field))
}

fn env_name(field: &str) -> String {
    format!("{PREFIX}{}", field.to_ascii_uppercase())
}

/// Why the configuration was refused. Each names the variable and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A `TCPIE_*` variable that TCPie does not know.
    #[error("unknown variable {name}: {hint}")]
    Unknown { name: String, hint: String },
    /// A value that does not parse or is out of range.
    #[error("{name}={value:?} is invalid: expected {expected}")]
    Invalid {
        name: String,
        value: String,
        expected: String,
    },
}

/// Every problem found in one pass, so a user fixes them all at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigErrors> {
        // Non-UTF-8 variables cannot be ours (ours are ASCII); a non-UTF-8 value of a
        // TCPIE_ variable is reported rather than skipped.
        let mut errors = Vec::new();
        let mut vars = Vec::new();
        for (k, v) in std::env::vars_os() {
            match (k.into_string(), v.into_string()) {
                (Ok(k), Ok(v)) => vars.push((k, v)),
                (Ok(k), Err(v)) if k.starts_with(PREFIX) => errors.push(ConfigError::Invalid {
                    expected: expected_for(&k).to_string(),
                    name: k,
                    value: v.to_string_lossy().into_owned(),
                }),
                _ => {}
            }
        }
        match Config::from_vars(vars) {
            Ok(c) if errors.is_empty() => Ok(c),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(mut e) => {
                errors.append(&mut e.0);
                Err(ConfigErrors(errors))
            }
        }
    }

    /// Reads the given variables; anything without the `TCPIE_` prefix is ignored.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        // Like an environment, one value per name: the last one given wins.
        let mut ours: Vec<(String, String)> = Vec::new();
        for (k, v) in vars.into_iter().map(|(k, v)| (k.into(), v.into())) {
            if k.starts_with(PREFIX) {
                ours.retain(|(seen, _)| *seen != k);
                ours.push((k, v));
            }
        }

        let mut errors: Vec<ConfigError> = ours
            .iter()
            .filter(|(k, _)| !VARS.iter().any(|v| env_name(v.field) == *k))
            .map(|(k, _)| ConfigError::Unknown {
                name: k.clone(),
                hint: unknown_hint(k),
            })
            .collect();
        let known: Vec<(String, String)> = ours
            .iter()
            .filter(|(k, _)| VARS.iter().any(|v| env_name(v.field) == *k))
            .cloned()
            .collect();

        match envy::prefixed(PREFIX).from_iter::<_, Config>(known.iter().cloned()) {
            Ok(config) => {
                if let Err(mut e) = config.validate() {
                    errors.append(&mut e.0);
                }
                if errors.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigErrors(errors))
                }
            }
            Err(e) => {
                errors.extend(parse_errors(&e, &known));
                Err(ConfigErrors(errors))
            }
        }
    }

    /// Checks ranges and the relations between settings.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, field: &str, value: String| {
            if !ok {
                errors.push(ConfigError::Invalid {
                    name: env_name(field),
                    value,
                    expected: expected_for(&env_name(field)).to_string(),
                });
            }
        };
        check(
            self.port == 0 || self.port != self.admin_port,
            "admin_port",
            self.admin_port.to_string(),
        );
        check(
            (1..=65_536).contains(&self.workers),
            "workers",
            self.workers.to_string(),
        );
        check(
            self.queue_size <= 1_000_000,
            "queue_size",
            self.queue_size.to_string(),
        );
        // The rate only matters when rate limiting is on.
        check(
            self.burst == 0
                || (self.rate_per_second.is_finite()
                    && (0.001..=1e9).contains(&self.rate_per_second)),
            "rate_per_second",
            self.rate_per_second.to_string(),
        );
        check(self.burst <= 1_000_000_000, "burst", self.burst.to_string());
        check(
            (1..=MAX_MS).contains(&self.read_timeout_ms),
            "read_timeout_ms",
            self.read_timeout_ms.to_string(),
        );
        check(
            (1..=MAX_MS).contains(&self.write_timeout_ms),
            "write_timeout_ms",
            self.write_timeout_ms.to_string(),
        );
        check(
            (1..=1_000_000).contains(&self.max_connections),
            "max_connections",
            self.max_connections.to_string(),
        );
        check(
            (64..=1_048_576).contains(&self.max_header_bytes),
            "max_header_bytes",
            self.max_header_bytes.to_string(),
        );
        check(
            self.simulated_work_ms <= MAX_MS,
            "simulated_work_ms",
            self.simulated_work_ms.to_string(),
        );
        check(
            (0.0..=1.0).contains(&self.ready_queue_threshold),
            "ready_queue_threshold",
            self.ready_queue_threshold.to_string(),
        );
        check(
            (1..=86_400_000).contains(&self.liveness_stall_ms),
            "liveness_stall_ms",
            self.liveness_stall_ms.to_string(),
        );
        check(
            self.shutdown_delay_ms <= MAX_MS,
            "shutdown_delay_ms",
            self.shutdown_delay_ms.to_string(),
        );
        check(
            self.shutdown_timeout_ms <= MAX_MS,
            "shutdown_timeout_ms",
            self.shutdown_timeout_ms.to_string(),
        );
        check(
            (1..=MAX_MS).contains(&self.keep_alive_idle_ms),
            "keep_alive_idle_ms",
            self.keep_alive_idle_ms.to_string(),
        );
        check(
            (1..=1_000_000).contains(&self.max_requests_per_connection),
            "max_requests_per_connection",
            self.max_requests_per_connection.to_string(),
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
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

    /// The effective configuration on one line, for the start-up log.
    pub fn summary(&self) -> String {
        format!(
            "host={} port={} admin_port={} workers={} queue_size={} rate_per_second={} burst={} \
             read_timeout_ms={} write_timeout_ms={} max_connections={} max_header_bytes={} \
             simulated_work_ms={} ready_queue_threshold={} liveness_stall_ms={} \
             shutdown_delay_ms={} shutdown_timeout_ms={} log_format={} keep_alive={} \
             keep_alive_idle_ms={} max_requests_per_connection={}",
            self.host,
            self.port,
            self.admin_port,
            self.workers,
            self.queue_size,
            self.rate_per_second,
            self.burst,
            self.read_timeout_ms,
            self.write_timeout_ms,
            self.max_connections,
            self.max_header_bytes,
            self.simulated_work_ms,
            self.ready_queue_threshold,
            self.liveness_stall_ms,
            self.shutdown_delay_ms,
            self.shutdown_timeout_ms,
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            self.keep_alive,
            self.keep_alive_idle_ms,
            self.max_requests_per_connection,
        )
    }
}

fn expected_for(name: &str) -> &'static str {
    VARS.iter()
        .find(|v| env_name(v.field) == name)
        .map(|v| v.expected)
        .unwrap_or("a valid value")
}

/// Names every variable whose value does not parse. envy stops at the first failure and
/// does not always say which variable it was (an enum or an IP address error carries only
/// the value), so each variable is parsed again on its own.
fn parse_errors(error: &envy::Error, vars: &[(String, String)]) -> Vec<ConfigError> {
    let bad: Vec<ConfigError> = vars
        .iter()
        .filter(|pair| {
            envy::prefixed(PREFIX)
                .from_iter::<_, Config>([(*pair).clone()])
                .is_err()
        })
        .map(|(name, value)| ConfigError::Invalid {
            name: name.clone(),
            value: value.clone(),
            expected: expected_for(name).to_string(),
        })
        .collect();
    if bad.is_empty() {
        vec![ConfigError::Invalid {
            name: format!("{PREFIX}*"),
            value: String::new(),
            expected: error.to_string(),
        }]
    } else {
        bad
    }
}

fn unknown_hint(name: &str) -> String {
    let closest = variable_names()
        .map(|candidate| (edit_distance(name, &candidate), candidate))
        .min_by_key(|(d, _)| *d);
    match closest {
        Some((d, candidate)) if d <= 4 => {
            format!("did you mean {candidate}? (unset {name} or rename it)")
        }
        _ => format!(
            "TCPie knows {}; unset {name} or rename it",
            variable_names().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Levenshtein distance, enough to suggest the variable a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let names: Vec<String> = variable_names().collect();
        assert_eq!(names.len(), 20);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
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
        assert!(e[0].to_string().contains("TCPIE_ADMIN_PORT"));
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
        let e = errors(&[
            ("TCPIE_WORKRS", "1"),
            ("TCPIE_WORKERS", "0"),
            ("TCPIE_BURST", "-3"),
        ]);
        assert_eq!(e.len(), 2, "{e:?}");
        let e = errors(&[
            ("TCPIE_WORKRS", "1"),
            ("TCPIE_WORKERS", "0"),
            ("TCPIE_QUEUE_SIZE", "2"),
        ]);
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn a_repeated_name_takes_its_last_value() {
        let c = Config::from_vars([("TCPIE_WORKERS", "abc"), ("TCPIE_WORKERS", "3")]).unwrap();
        assert_eq!(c.workers, 3);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
