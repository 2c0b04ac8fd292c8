//! Property tests: arbitrary bytes sent as a request never break the server, and
//! arbitrary values in every `TCPIE_*` (and `OTEL_*`) variable either configure it or
//! give the clear configuration error, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{config, parse_reply, start};
use proptest::prelude::*;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use tcpie::config::TraceSettings;
use tcpie::config::{otel_variable_names, variable_names};
use tcpie::{Config, ConfigError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Statuses TCPie may answer a request with.
const DEFINED: &[u16] = &[200, 400, 408, 413, 414, 429, 431, 501, 503, 505];

/// Requests from a valid one with random damage, and plain random bytes.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let valid =
        b"POST /p?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc".to_vec();
    let damaged = (
        proptest::collection::vec((0..valid.len(), any::<u8>()), 0..6),
        0..=valid.len(),
    )
        .prop_map(move |(edits, cut)| {
            let mut v = valid.clone();
            for (at, byte) in edits {
                v[at] = byte;
            }
            v.truncate(cut.max(1));
            v
        });
    prop_oneof![damaged, proptest::collection::vec(any::<u8>(), 0..2048)]
}

#[test]
fn arbitrary_bytes_get_a_defined_answer_or_a_clean_close() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(start(tcpie::Config {
        read_timeout_ms: 300,
        max_header_bytes: 1024,
        workers: 4,
        ..config()
    }));
    let addr = server.addr;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    runner
        .run(&request_bytes(), |bytes| {
            let answer: Vec<u8> = rt
                .block_on(async {
                    let mut stream = TcpStream::connect(addr).await.unwrap();
                    // The server may answer (and close) before reading everything: ignore
                    // write errors, the answer is what counts.
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.shutdown().await;
                    let mut answer = Vec::new();
                    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
                        .await
                        .expect("the server neither answered nor closed")
                        .map(|_| answer)
                        .map_err(|e| format!("{e}"))
                })
                .map_err(|e| TestCaseError::fail(format!("reset instead of an answer: {e}")))?;
            if !answer.is_empty() {
                let reply = parse_reply(answer).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert!(DEFINED.contains(&reply.status), "status {}", reply.status);
                let connection = reply.header("connection");
                prop_assert_eq!(connection.as_deref(), Some("close"));
            }
            Ok(())
        })
        .unwrap();
    // Still serving, and every connection accounted for.
    rt.block_on(async {
        assert_eq!(server.get("/").await.status, 200);
        server.assert_conservation().await;
    });
}

fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "-?[0-9]{0,25}(\\.[0-9]{0,5})?",
        Just(String::new()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("18446744073709551616".to_string()),
        "(text|json|TEXT|true|false|grpc|http/protobuf|::|0\\.0\\.0\\.0)",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_tcpie_values_configure_or_explain(
        values in proptest::collection::vec((0..variable_names().count(), any_value()), 0..8),
        unknown in proptest::option::of("TCPIE_[A-Z_]{1,12}"),
    ) {
        let names: Vec<String> = variable_names().map(String::from).collect();
        let mut vars: Vec<(String, String)> =
            values.into_iter().map(|(i, v)| (names[i].clone(), v)).collect();
        if let Some(u) = unknown {
            vars.push((u, "1".to_string()));
        }
        match Config::from_vars(vars.clone()) {
            Ok(config) => prop_assert!(config.validate().is_ok()),
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    match e {
                        ConfigError::Unknown { name, hint } => {
                            prop_assert!(vars.iter().any(|(k, _)| k == name));
                            prop_assert!(hint.contains("TCPIE_"));
                        }
                        ConfigError::Invalid { name, expected, .. } => {
                            prop_assert!(vars.iter().any(|(k, _)| k == name), "{} not given", name);
                            prop_assert!(!expected.is_empty());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_otel_values_configure_or_explain(
        values in proptest::collection::vec(
            (0..otel_variable_names().count(), any_value()), 0..6),
    ) {
        let names: Vec<&str> = otel_variable_names().collect();
        let vars: Vec<(String, String)> =
            values.into_iter().map(|(i, v)| (names[i].to_string(), v)).collect();
        if let Err(errors) = TraceSettings::from_vars(vars.clone()) {
            for e in &errors.0 {
                let ConfigError::Invalid { name, .. } = e else { panic!("{e}") };
                prop_assert!(vars.iter().any(|(k, _)| k == name));
            }
        }
    }

    /// Arbitrary bytes, UTF-8 or not, in names and values: never a panic; every error
    /// names one of our variables; unrelated variables never change the outcome.
    #[test]
    fn arbitrary_environments_configure_or_explain(
        vars in proptest::collection::vec((os_name(), os_value()), 0..10),
    ) {
        let ours = |name: &OsString| {
            let bytes = name.as_bytes();
            bytes.starts_with(b"TCPIE_") || bytes.starts_with(b"OTEL_")
        };
        let full = tcpie::config::from_os_vars(vars.clone());
        let only_ours: Vec<_> = vars.iter().filter(|(k, _)| ours(k)).cloned().collect();
        prop_assert_eq!(&full, &tcpie::config::from_os_vars(only_ours));
        if let Err(errors) = full {
            prop_assert!(!errors.0.is_empty());
            for e in &errors.0 {
                let (ConfigError::Unknown { name, .. } | ConfigError::Invalid { name, .. }) = e;
                prop_assert!(name.starts_with("TCPIE_") || name.starts_with("OTEL_"), "{}", name);
                prop_assert!(
                    vars.iter().any(|(k, _)| k.to_string_lossy() == name.as_str()),
                    "{} was not given", name
                );
            }
        }
    }
}

/// Variable names: ours, ours with bytes appended (UTF-8 or not), and anything at all.
fn os_name() -> impl Strategy<Value = OsString> {
    let names: Vec<&'static str> = variable_names().chain(otel_variable_names()).collect();
    let known = proptest::sample::select(names.clone()).prop_map(OsString::from);
    let damaged = (
        proptest::sample::select(names),
        proptest::collection::vec(any::<u8>(), 1..4),
    )
        .prop_map(|(n, tail)| {
            let mut bytes = n.as_bytes().to_vec();
            bytes.extend(tail);
            OsString::from_vec(bytes)
        });
    let random = proptest::collection::vec(
        any::<u8>().prop_filter("no NUL or =", |b| *b != 0 && *b != b'='),
        1..12,
    )
    .prop_map(OsString::from_vec);
    prop_oneof![known, damaged, random]
}

/// Values: the usual suspects, and arbitrary bytes.
fn os_value() -> impl Strategy<Value = OsString> {
    prop_oneof![
        any_value().prop_map(OsString::from),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(OsString::from_vec),
    ]
}

#[test]
fn the_binary_starts_or_explains_for_arbitrary_values() {
    use proptest::strategy::ValueTree;
    let names: Vec<String> = variable_names().map(String::from).collect();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..24 {
        let (index, value) = (0..names.len(), any_value())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let name = &names[index];
        if ["TCPIE_HOST", "TCPIE_PORT", "TCPIE_ADMIN_PORT"].contains(&name.as_str())
            || value.contains('\0')
        {
            continue;
        }
        // `--version` would not read the configuration; the healthcheck does, then fails
        // to connect (exit 1) or refuses the configuration (exit 1 with the message).
        let out = common::process::command(&[(name.as_str(), value.as_str())])
            .env("TCPIE_ADMIN_PORT", "1")
            .arg("healthcheck")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}={value:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}={value:?}: {stderr}");
        assert!(
            stderr.contains("unhealthy") || stderr.contains(&format!("{name}=")),
            "{name}={value:?}: {stderr}"
        );
    }
}

/// One step of a client sequence: which client (of a few), and how long after the last.
fn client_steps() -> impl Strategy<Value = Vec<(u8, u32)>> {
    proptest::collection::vec((0u8..12, prop_oneof![Just(0u32), 0u32..5_000_000]), 1..400)
}

/// Admissions of one client, by time (ns since the start).
type Admitted = std::collections::HashMap<u8, Vec<u64>>;

/// Checks that no window of a client's admissions holds more than
/// `burst + rate × window`.
fn within_bound(times: &[u64], rate: f64, burst: u32) -> Result<(), TestCaseError> {
    for (i, &start) in times.iter().enumerate() {
        for (n, &end) in times[i..].iter().enumerate() {
            let allowed = f64::from(burst) + rate * (end - start) as f64 / 1e9;
            prop_assert!(
                (n + 1) as f64 <= allowed + 1e-6,
                "{} admitted in {} ns, at most {allowed}",
                n + 1,
                end - start
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With room for every client, each one's bucket is exactly a GCRA of its own: the
    /// table agrees with a reference model request by request, and no client is ever
    /// admitted beyond `burst + rate × elapsed`.
    #[test]
    fn each_client_is_held_to_its_own_exact_bucket(
        steps in client_steps(),
        rate in 0.5f64..2000.0,
        burst in 1u32..8,
    ) {
        use tcpie::internal::Identity;
        use tcpie::internal::ClientTable;
        use tcpie::internal::Gcra;
        let counter = |n| prometheus::IntCounter::new(n, "t").unwrap();
        let origin = tokio::time::Instant::now();
        let table = ClientTable::new(rate, burst, 64, origin, counter("r"), counter("e"));
        let gcra = Gcra::new(rate, burst);
        let mut model: std::collections::HashMap<u8, u64> = Default::default();
        let mut admitted = Admitted::new();
        let mut now_ns = 0u64;
        for (client, gap) in steps {
            now_ns += u64::from(gap);
            let now = origin + Duration::from_nanos(now_ns);
            let id = table.id(&Identity::Bytes(&[client]));
            let got = table.take(id, now, || true).is_ok();
            let tat = model.entry(client).or_insert(0);
            let want = match gcra.take(*tat, now_ns) {
                Ok(next) => { *tat = next; true }
                Err(_) => false,
            };
            prop_assert_eq!(got, want, "client {} at {} ns", client, now_ns);
            if got {
                admitted.entry(client).or_default().push(now_ns);
            }
        }
        for times in admitted.values() {
            within_bound(times, rate, burst)?;
        }
    }

    /// With a table far smaller than the clients, it never tracks more than its size,
    /// and a client is held to its bound over every stretch in which no client in debt
    /// was evicted (an evicted client starts again with a full bucket, by design).
    #[test]
    fn a_small_table_stays_bounded_and_exact_while_states_are_kept(
        steps in client_steps(),
        rate in 0.5f64..2000.0,
        burst in 1u32..4,
        size in 1usize..6,
    ) {
        use tcpie::internal::Identity;
        use tcpie::internal::ClientTable;
        let evicted = prometheus::IntCounter::new("e", "t").unwrap();
        let origin = tokio::time::Instant::now();
        let table = ClientTable::new(
            rate, burst, size, origin, prometheus::IntCounter::new("r", "t").unwrap(), evicted.clone(),
        );
        let mut admitted = Admitted::new();
        let mut now_ns = 0u64;
        for (client, gap) in steps {
            now_ns += u64::from(gap);
            let now = origin + Duration::from_nanos(now_ns);
            let before = evicted.get();
            let id = table.id(&Identity::Bytes(&[client]));
            let got = table.take(id, now, || true).is_ok();
            prop_assert!(table.len() <= size);
            if evicted.get() != before {
                // A state was lost: bounds start again from here for everyone.
                for times in admitted.values() {
                    within_bound(times, rate, burst)?;
                }
                admitted.clear();
            }
            if got {
                admitted.entry(client).or_default().push(now_ns);
            }
        }
        for times in admitted.values() {
            within_bound(times, rate, burst)?;
        }
    }
}

proptest! {
    /// Any head, any hop count, either header: an identity or a fallback, never a panic;
    /// and what is found for a hop is found whatever precedes the header lines.
    #[test]
    fn forwarded_headers_never_panic(
        fields in proptest::collection::vec(
            (prop_oneof![Just("X-Forwarded-For"), Just("Forwarded"), Just("x-forwarded-for"), Just("Other")],
             proptest::collection::vec(any::<u8>(), 0..64)),
            0..6,
        ),
        hops in 0u32..70,
    ) {
        use tcpie::config::Forwarded;
        use tcpie::internal::forwarded;
        let mut head = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for (name, value) in &fields {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend(value.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        for header in [Forwarded::XForwardedFor, Forwarded::Rfc7239] {
            let found = forwarded(header, hops, &head);
            let mut padded = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: 1\r\n".to_vec();
            padded.extend_from_slice(&head[b"GET / HTTP/1.1\r\nHost: t\r\n".len()..]);
            prop_assert_eq!(found, forwarded(header, hops, &padded));
        }
    }
}
