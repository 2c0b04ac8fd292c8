//! Configuration: every setting comes from an environment variable, `TCPIE_*` for the
//! server ([`Config`]) and the standard `OTEL_*` ones for trace export ([`TraceSettings`]).
//!
//! This module owns the names, the defaults, the parsing and the validation, and the text
//! that describes them. Each variable is declared once, in one row of a table (the
//! `variables!` rows in `server.rs` and `otel.rs`): its name, its field and type, its
//! default, what a valid value looks like, and the sentence that explains it. The
//! defaults, the validation, the error messages, the start-up summary and the README's
//! tables are all derived from those rows (a test checks the README against them).
//!
//! Values are parsed by envy + serde, one variable at a time, so that every bad value and
//! every unknown `TCPIE_*` name is reported in one run. The environment is read from any
//! iterator of pairs, so tests never touch the process environment; bytes that are not
//! UTF-8 are an error when they are in a variable of ours and ignored elsewhere.
//!
//! It does not read `RUST_LOG` (tracing-subscriber does) nor the `OTEL_*` variables the
//! exporter reads itself (headers, compression, certificates).

use std::ffi::OsString;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Declares a settings struct and its table of variables, one row per variable:
///
/// ```text
/// /// The sentence that explains it (README, error hints).
/// NAME_OF_VARIABLE => field: Type = default_value;
///     expect "what a valid value looks like";
///     valid |config| condition on the whole settings struct;
/// ```
macro_rules! variables {
    (
        $(#[$meta:meta])*
        pub struct $settings:ident;
        table $table:ident;
        $(
            $(#[doc = $doc:literal])+
            $name:ident => $field:ident : $ty:ty = $default:expr;
                expect $expected:expr;
                valid |$c:ident| $valid:expr;
        )+
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl Default for $settings {
            fn default() -> Self {
                $settings { $( $field: $default, )+ }
            }
        }

        /// Every variable of these settings, in the README's order.
        pub(crate) const $table: &[$crate::config::Var<$settings>] = &[
            $(
                $crate::config::Var {
                    name: stringify!($name),
                    doc: concat!($($doc),+),
                    expected: $expected,
                    parse: |settings: &mut $settings, value: &str| {
                        settings.$field = $crate::config::parse_one::<$ty>(value)?;
                        Ok(())
                    },
                    valid: |$c: &$settings| $valid,
                    show: |settings: &$settings| $crate::config::Shown::shown(&settings.$field),
                },
            )+
        ];
    };
}

mod client_key;
mod otel;
mod redis;
mod server;
mod upstream;

pub use client_key::{ClientKey, Forwarded};
pub use otel::{BatchSettings, Protocol, SamplerSetting, TraceSettings};
pub use redis::RedisUrl;
pub use server::{Config, LogFormat};
pub use upstream::{Upstream, UpstreamSetting};

/// The prefix shared by every TCPie variable.
pub const PREFIX: &str = "TCPIE_";
/// The prefix of the OpenTelemetry variables.
pub const OTEL_PREFIX: &str = "OTEL_";

/// One environment variable, declared once (see `variables!`).
pub struct Var<S> {
    /// The full variable name, such as `TCPIE_WORKERS`.
    pub name: &'static str,
    /// The sentence that explains it.
    pub doc: &'static str,
    /// What a valid value looks like, for errors and the README.
    pub expected: &'static str,
    /// Parses a value (through envy) into its field.
    parse: fn(&mut S, &str) -> Result<(), ()>,
    /// Whether the field's value is acceptable, given the whole settings.
    valid: fn(&S) -> bool,
    /// The field's value as text (README default, start-up summary).
    show: fn(&S) -> String,
}

impl<S> Var<S> {
    /// The field's value in `settings`, as text.
    pub fn show(&self, settings: &S) -> String {
        (self.show)(settings)
    }
}

/// One value on its own, deserialized by envy as the field's type.
#[derive(Deserialize)]
struct One<T> {
    value: T,
}

/// Parses one variable's value as a `T`, the way envy parses an environment.
fn parse_one<T: DeserializeOwned>(value: &str) -> Result<T, ()> {
    envy::from_iter::<_, One<T>>([("VALUE".to_string(), value.to_string())])
        .map(|one| one.value)
        .map_err(|_| ())
}

/// Reads `vars` (name, value) into the settings a table describes. Every bad value is
/// reported; a repeated name takes its last value, as in an environment.
fn read<S: Default>(table: &[Var<S>], vars: &[(String, String)]) -> (S, Vec<ConfigError>) {
    let mut settings = S::default();
    let mut errors = Vec::new();
    let mut given: Vec<(&Var<S>, &str)> = Vec::new();
    for var in table {
        let Some((_, value)) = vars.iter().rev().find(|(k, _)| k == var.name) else {
            continue;
        };
        if (var.parse)(&mut settings, value).is_ok() {
            given.push((var, value));
        } else {
            errors.push(var.invalid(value));
        }
    }
    // Ranges and relations are checked on the whole settings, once every value is in.
    let failing: Vec<&Var<S>> = table.iter().filter(|v| !(v.valid)(&settings)).collect();
    for var in &failing {
        if let Some((_, value)) = given.iter().find(|(g, _)| g.name == var.name) {
            errors.push(var.invalid(value));
        }
    }
    // A relation broken by a variable that was not given (its default clashes with one
    // that was) is still reported, under the name that holds the default.
    if errors.is_empty() {
        for var in failing {
            errors.push(var.invalid(&var.show(&settings)));
        }
    }
    (settings, errors)
}

impl<S> Var<S> {
    fn invalid(&self, value: &str) -> ConfigError {
        ConfigError::Invalid {
            name: self.name.to_string(),
            value: value.to_string(),
            expected: self.expected.to_string(),
        }
    }
}

/// Values as the README and the start-up summary show them.
pub trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_by_display {
    ($($ty:ty),*) => { $( impl Shown for $ty { fn shown(&self) -> String { self.to_string() } } )* };
}
shown_by_display!(u16, u32, u64, usize, bool, String, std::net::IpAddr);

impl Shown for f64 {
    fn shown(&self) -> String {
        // 2 rather than 2.0, but 0.5 as it is.
        format!("{self}")
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref()
            .map_or_else(|| "unset".to_string(), Shown::shown)
    }
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

impl ConfigError {
    /// The variable it is about.
    pub fn name(&self) -> &str {
        match self {
            ConfigError::Unknown { name, .. } | ConfigError::Invalid { name, .. } => name,
        }
    }
}

/// Every problem found in one pass, so a user fixes them all at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems in an order that does not depend on the environment's (which
    /// `cargo run`, a shell or a container runtime may change): bad values in the order of
    /// the README's tables, then unknown names, sorted. The README, a log diff and a test
    /// can rely on it.
    pub fn new(mut errors: Vec<ConfigError>) -> ConfigErrors {
        let position = |name: &str| {
            server::VARS
                .iter()
                .map(|v| v.name)
                .chain(otel::VARS.iter().map(|v| v.name))
                .position(|n| n == name)
                .unwrap_or(usize::MAX)
        };
        errors.sort_by_cached_key(|e| match e {
            ConfigError::Invalid { name, .. } => (0, position(name), String::new()),
            ConfigError::Unknown { name, .. } => (1, 0, name.clone()),
        });
        ConfigErrors(errors)
    }
}

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

/// Everything the binary reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: Config,
    pub traces: TraceSettings,
}

/// Reads the process environment: every problem, of both groups, in one error.
pub fn from_env() -> Result<Settings, ConfigErrors> {
    from_os_vars(std::env::vars_os())
}

/// Reads an environment given as raw pairs, as the process receives it.
pub fn from_os_vars<I>(vars: I) -> Result<Settings, ConfigErrors>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let (vars, mut errors) = utf8_vars(vars);
    let server = Config::from_vars(vars.clone());
    let traces = TraceSettings::from_vars(vars);
    match (server, traces) {
        (Ok(server), Ok(traces)) if errors.is_empty() => Ok(Settings { server, traces }),
        (server, traces) => {
            errors.extend(server.err().into_iter().flat_map(|e| e.0));
            errors.extend(traces.err().into_iter().flat_map(|e| e.0));
            Err(ConfigErrors::new(errors))
        }
    }
}

/// Reads one group of variables (those starting with `prefix`) from the process
/// environment, with the errors of its bytes that are not UTF-8.
fn group_from_env<T>(
    prefix: &str,
    from_vars: impl FnOnce(Vec<(String, String)>) -> Result<T, ConfigErrors>,
) -> Result<T, ConfigErrors> {
    let (vars, errors) = utf8_vars(std::env::vars_os());
    let mut errors: Vec<ConfigError> = errors
        .into_iter()
        .filter(|e| e.name().starts_with(prefix))
        .collect();
    match from_vars(vars) {
        Ok(settings) if errors.is_empty() => Ok(settings),
        result => {
            errors.extend(result.err().into_iter().flat_map(|e| e.0));
            Err(ConfigErrors::new(errors))
        }
    }
}

/// The variables that are text. A name or value that is not UTF-8 is an error when the
/// variable is one of ours (a `TCPIE_*` or `OTEL_*` name), and ignored otherwise: an
/// unrelated variable must not stop the server.
pub(crate) fn utf8_vars<I>(vars: I) -> (Vec<(String, String)>, Vec<ConfigError>)
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut text = Vec::new();
    let mut errors = Vec::new();
    for (name, value) in vars {
        let ours = |n: &str| n.starts_with(PREFIX) || n.starts_with(OTEL_PREFIX);
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => text.push((name, value)),
            (Ok(name), Err(value)) if ours(&name) => errors.push(ConfigError::Invalid {
                value: value.to_string_lossy().into_owned(),
                expected: format!(
                    "text (UTF-8); the value holds bytes that are not: {}",
                    expected_for(&name)
                ),
                name,
            }),
            (Err(name), _) if name.to_string_lossy().starts_with(PREFIX) => {
                let name = name.to_string_lossy().into_owned();
                errors.push(ConfigError::Unknown {
                    hint: format!(
                        "its name holds bytes that are not UTF-8; unset it or rename it ({})",
                        unknown_hint(&name)
                    ),
                    name,
                });
            }
            _ => {}
        }
    }
    (text, errors)
}

/// What a valid value of `name` looks like, from whichever table declares it.
fn expected_for(name: &str) -> &'static str {
    server::VARS
        .iter()
        .map(|v| (v.name, v.expected))
        .chain(otel::VARS.iter().map(|v| (v.name, v.expected)))
        .find(|(n, _)| *n == name)
        .map_or("a valid value", |(_, e)| e)
}

/// The full environment variable names TCPie accepts.
pub fn variable_names() -> impl Iterator<Item = &'static str> {
    server::VARS.iter().map(|v| v.name)
}

/// The OpenTelemetry variable names TCPie reads itself.
pub fn otel_variable_names() -> impl Iterator<Item = &'static str> {
    otel::VARS.iter().map(|v| v.name)
}

/// The hint for an unknown `TCPIE_*` name: the closest valid one, or all of them.
fn unknown_hint(name: &str) -> String {
    let closest = variable_names()
        .map(|candidate| (edit_distance(name, candidate), candidate))
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

/// The README's table of one group of variables, generated from its rows.
fn markdown_table<S: Default>(table: &[Var<S>]) -> String {
    let defaults = S::default();
    let mut out =
        String::from("| variable | default | accepted values | meaning |\n|---|---|---|---|\n");
    for var in table {
        let default = var.show(&defaults);
        let default = if default == "unset" {
            default
        } else {
            format!("`{default}`")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            var.name,
            default,
            var.expected,
            var.doc.trim()
        ));
    }
    out
}

/// The README's configuration table (`TCPIE_*`).
pub fn server_table() -> String {
    markdown_table(server::VARS)
}

/// The README's tracing table (`OTEL_*`).
pub fn otel_table() -> String {
    markdown_table(otel::VARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn os(pairs: &[(&[u8], &[u8])]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    OsString::from_vec(k.to_vec()),
                    OsString::from_vec(v.to_vec()),
                )
            })
            .collect()
    }

    #[test]
    fn non_utf8_in_an_unrelated_variable_is_ignored() {
        let s = from_os_vars(os(&[
            (b"X", b"\xff"),
            (b"\xfe", b"1"),
            (b"TCPIE_WORKERS", b"3"),
        ]))
        .unwrap();
        assert_eq!(s.server.workers, 3);
    }

    #[test]
    fn non_utf8_in_our_variables_names_them() {
        let e = from_os_vars(os(&[
            (b"TCPIE_WORKERS", b"\xff"),
            (b"OTEL_SERVICE_NAME", b"a\xffb"),
            (b"TCPIE_\xff", b"1"),
            (b"TCPIE_BURST", b"-3"),
        ]))
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.0.len(), 4, "{text}");
        assert!(
            text.contains("TCPIE_WORKERS=\"\u{fffd}\" is invalid"),
            "{text}"
        );
        assert!(text.contains("OTEL_SERVICE_NAME="), "{text}");
        assert!(text.contains("unknown variable TCPIE_\u{fffd}"), "{text}");
        assert!(text.contains("TCPIE_BURST=\"-3\""), "{text}");
    }

    #[test]
    fn both_groups_report_together() {
        let e = from_os_vars(os(&[
            (b"TCPIE_WORKERS", b"0"),
            (b"OTEL_TRACES_SAMPLER", b"sometimes"),
        ]))
        .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
    }

    #[test]
    fn problems_come_in_the_tables_order_whatever_the_environments() {
        let vars = [
            ("TCPIE_WORKRS", "4"),
            ("TCPIE_QUEUESIZE", "9"),
            ("TCPIE_PORT", "http"),
            ("TCPIE_WORKERS", "0"),
            ("TCPIE_BURST", "-3"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
        ];
        let names = |vars: &[(&str, &str)]| -> Vec<String> {
            let pairs = vars
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)));
            let e = from_os_vars(pairs).unwrap_err();
            e.0.iter().map(|e| e.name().to_string()).collect()
        };
        let expected = [
            "TCPIE_PORT",
            "TCPIE_WORKERS",
            "TCPIE_BURST",
            "OTEL_TRACES_SAMPLER",
            "TCPIE_QUEUESIZE",
            "TCPIE_WORKRS",
        ];
        assert_eq!(names(&vars), expected);
        let mut reversed = vars;
        reversed.reverse();
        assert_eq!(names(&reversed), expected);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn every_default_is_valid_and_shown() {
        let (config, errors) = read(server::VARS, &[]);
        assert!(errors.is_empty());
        assert_eq!(config, Config::default());
        for var in server::VARS {
            // The shown default parses back to the default.
            let mut parsed = Config::default();
            (var.parse)(&mut parsed, &var.show(&config)).unwrap();
            assert_eq!(parsed, config, "{}", var.name);
        }
        let (traces, errors) = read(otel::VARS, &[]);
        assert!(errors.is_empty());
        for var in otel::VARS {
            let shown = var.show(&traces);
            if shown != "unset" {
                let mut parsed = otel::OtelVars::default();
                (var.parse)(&mut parsed, &shown).unwrap();
                assert_eq!(parsed, traces, "{}", var.name);
            }
        }
    }
}
