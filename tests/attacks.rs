//! Attacks on both ports, over real sockets on 127.0.0.1, against the built binary: a
//! slowloris on the admin port, a flood of the TCP port and both at once, with the probes
//! timed throughout; the admin port flooded under a small open-file limit; and Debian's
//! slowhttptest against both ports. Each is bounded in time and stops by itself.
//!
//! Latencies are bounded here only, so these run apart with the load tests, one at a time:
//! `cargo test --test attacks -- --ignored --test-threads=1` (scripts/test.sh does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::metric_value;
use common::process::{spawn, Tcpie};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
/// The kubelet's default probe timeout: a probe slower than this is a failed probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `request` every 50 ms until `stop`; the latency of each answer with one of the
/// `expected` statuses, and the failures.
fn sample(
    addr: SocketAddr,
    request: Vec<u8>,
    expected: &'static [u16],
    stop: Arc<AtomicBool>,
) -> JoinHandle<(Vec<Duration>, Vec<String>)> {
    tokio::spawn(async move {
        let (mut took, mut failed) = (Vec::new(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match timeout(PROBE_TIMEOUT, common::request(addr, &request)).await {
                Ok(Ok(reply)) if expected.contains(&reply.status) => took.push(started.elapsed()),
                Ok(Ok(reply)) => failed.push(format!("status {}", reply.status)),
                Ok(Err(e)) => failed.push(e.to_string()),
                Err(_) => failed.push(format!("no answer within {PROBE_TIMEOUT:?}")),
            }
            sleep(Duration::from_millis(50)).await;
        }
        (took, failed)
    })
}

fn probe(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `n` slowloris connections to `addr`: each sends part of a head, then a byte every
/// 500 ms, and opens again when closed; until `stop`. Returns how many were opened.
fn slowloris(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let opened = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (stop, opened) = (stop.clone(), opened.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(Ok(mut s)) =
                            timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
                        else {
                            sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        opened.fetch_add(1, Ordering::Relaxed);
                        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                            .await
                            .is_err()
                        {
                            continue;
                        }
                        while !stop.load(Ordering::Relaxed) {
                            sleep(Duration::from_millis(500)).await;
                            if s.write_all(b"X").await.is_err() {
                                break;
                            }
                            let mut byte = [0u8; 1];
                            if let Ok(Ok(0) | Err(_)) =
                                timeout(Duration::from_millis(1), s.read(&mut byte)).await
                            {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        opened.load(Ordering::Relaxed)
    })
}

/// `n` clients sending requests back to back to the TCP port until `stop`.
fn flood(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = timeout(Duration::from_secs(2), common::request(addr, GET)).await;
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        let mut sent = 0;
        for t in tasks {
            sent += t.await.unwrap_or(0);
        }
        sent
    })
}

/// What the probes and a normal client saw during one attack.
struct Seen {
    probes: Vec<Duration>,
    clients: Vec<Duration>,
}

/// Runs `attack` for `secs`, probing `/livez` (which must be 200) and `/readyz` (200, or
/// 503 while the queue is full) on the admin port and, if `client`, sending a normal
/// request to the TCP port every 50 ms; fails on any probe slower than the kubelet's
/// timeout.
async fn under(
    tcpie: &Tcpie,
    name: &str,
    secs: u64,
    client: bool,
    attack: impl FnOnce(Arc<AtomicBool>) -> Vec<JoinHandle<u64>>,
) -> Seen {
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = attack(stop.clone());
    // Let the attack take hold first.
    sleep(Duration::from_millis(500)).await;
    let live = sample(tcpie.admin, probe("/livez"), &[200], stop.clone());
    let ready = sample(tcpie.admin, probe("/readyz"), &[200, 503], stop.clone());
    let clients = client.then(|| sample(tcpie.tcp, GET.to_vec(), &[200], stop.clone()));
    sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut probes, failed) = live.await.unwrap();
    assert!(failed.is_empty(), "{name}: /livez failed: {failed:?}");
    let (ready, failed) = ready.await.unwrap();
    assert!(failed.is_empty(), "{name}: /readyz failed: {failed:?}");
    probes.extend(ready);
    let clients = match clients {
        Some(c) => {
            let (took, failed) = c.await.unwrap();
            assert!(
                failed.is_empty(),
                "{name}: the normal client failed: {failed:?}"
            );
            took
        }
        None => Vec::new(),
    };
    let mut opened = 0;
    for a in attackers {
        opened += a.await.unwrap();
    }
    assert!(probes.len() > 40, "{name}: only {} probes", probes.len());
    println!(
        "{name}: {} probes, p50 {:?} p99 {:?} max {:?}; {} normal requests{}; attack: {opened}",
        probes.len(),
        percentile(probes.clone(), 0.5),
        percentile(probes.clone(), 0.99),
        probes.iter().max().unwrap(),
        clients.len(),
        if clients.is_empty() {
            String::new()
        } else {
            format!(", p99 {:?}", percentile(clients.clone(), 0.99))
        },
    );
    Seen { probes, clients }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test attacks -- --ignored --test-threads=1"]
async fn probes_stay_answered_under_an_admin_slowloris_a_tcp_flood_and_both() {
    let tcpie = spawn(
        &[],
        &[
            ("TCPIE_BURST", "0"),
            ("TCPIE_WORKERS", "2"),
            ("TCPIE_QUEUE_SIZE", "5"),
            ("TCPIE_SIMULATED_WORK_MS", "20"),
        ],
    );
    let (tcp, admin) = (tcpie.tcp, tcpie.admin);
    under(&tcpie, "TCP flood (64 clients)", 4, false, |stop| {
        vec![flood(tcp, 64, stop)]
    })
    .await;
    let seen = under(
        &tcpie,
        "admin slowloris (2,000 connections)",
        4,
        true,
        |stop| vec![slowloris(admin, 2000, stop)],
    )
    .await;
    assert!(percentile(seen.clients, 0.99) < Duration::from_millis(100));
    under(&tcpie, "both at once", 4, false, |stop| {
        vec![flood(tcp, 64, stop.clone()), slowloris(admin, 2000, stop)]
    })
    .await;
    let (_, text) = tcpie.admin("/metrics").await;
    let open = metric_value(&text, "tcpie_admin_connections_open").unwrap();
    assert!(open <= 32.0, "{open} admin connections open, cap 32");
    assert!(
        metric_value(
            &text,
            "tcpie_admin_connections_shed_total{reason=\"evicted\"}"
        )
        .unwrap()
            > 100.0,
        "{text}"
    );
    assert_eq!(metric_value(&text, "tcpie_accept_errors_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test attacks -- --ignored --test-threads=1"]
async fn under_a_small_open_file_limit_an_admin_flood_starves_neither_port() {
    let mut tcpie = spawn(
        &["prlimit", "--nofile=256:256", "--"],
        &[("TCPIE_BURST", "0")],
    );
    {
        let log = tcpie.log.lock().unwrap();
        let warning = log
            .lines()
            .find(|l| l.contains("WARN") && l.contains("open files"))
            .unwrap_or_else(|| panic!("no warning about the open-file limit:\n{log}"));
        for part in [
            "TCPIE_MAX_CONNECTIONS=10000",
            "TCPIE_ADMIN_MAX_CONNECTIONS=32",
            "the limit is 256",
            "at most 160 connections",
        ] {
            assert!(warning.contains(part), "{part}: {warning}");
        }
    }
    let (_, text) = tcpie.admin("/metrics").await;
    assert_eq!(metric_value(&text, "tcpie_connections_max"), Some(160.0));
    // 300 unfinished requests held on the admin port (each opened again when closed):
    // the scenario that once starved the whole process.
    let admin = tcpie.admin;
    let seen = under(&tcpie, "admin flood under ulimit -n 256", 5, true, |stop| {
        vec![slowloris(admin, 300, stop)]
    })
    .await;
    assert!(!seen.clients.is_empty());
    let (_, text) = tcpie.admin("/metrics").await;
    assert_eq!(
        metric_value(&text, "tcpie_accept_errors_total"),
        Some(0.0),
        "{text}"
    );
    assert!(!tcpie.log.lock().unwrap().contains("accept failed"));
    tcpie.signal("TERM");
    assert_eq!(
        tcpie.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
}

/// Runs Debian's slowhttptest against `url` for `secs` seconds with `mode` arguments, while
/// the probes and a normal client are timed.
async fn slowhttptest(tcpie: &Tcpie, name: &str, mode: &[&str], url: String, secs: u64) -> Seen {
    let args: Vec<String> = mode
        .iter()
        .map(|s| s.to_string())
        .chain(["-u".into(), url, "-l".into(), secs.to_string()])
        .collect();
    under(tcpie, name, secs, true, move |stop| {
        vec![tokio::spawn(async move {
            let out = tokio::task::spawn_blocking(move || {
                Command::new("slowhttptest").args(&args).output().unwrap()
            })
            .await
            .unwrap();
            stop.store(true, Ordering::Relaxed);
            let raw = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "slowhttptest failed:\n{raw}");
            let text = strip_ansi(&raw);
            // Its own verdict, each second, on the port it attacked.
            assert!(!text.contains("service available:   NO"), "{text}");
            // The most connections it held open at once.
            text.lines()
                .filter_map(|l| l.strip_prefix("connected:"))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .max()
                .unwrap_or(0)
        })]
    })
    .await
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test attacks -- --ignored --test-threads=1"]
async fn slowhttptest_against_both_ports_leaves_normal_requests_fast() {
    assert!(
        Command::new("slowhttptest").arg("-h").output().is_ok(),
        "slowhttptest is not installed (scripts/setup.sh installs it)"
    );
    let tcpie = spawn(
        &[],
        &[
            ("TCPIE_BURST", "0"),
            ("TCPIE_WORKERS", "4"),
            ("TCPIE_QUEUE_SIZE", "16"),
        ],
    );
    let (tcp, admin) = (tcpie.tcp, tcpie.admin);
    // Slow headers (slowloris), 1,000 connections at 200 a second, a line every 10 s.
    let slow_headers = [
        "-H", "-c", "1000", "-r", "200", "-i", "10", "-x", "24", "-p", "3",
    ];
    // Slow bodies (R-U-Dead-Yet): a POST announcing 4 KiB, sent a few bytes every 10 s.
    let slow_bodies = [
        "-B", "-c", "1000", "-r", "200", "-i", "10", "-x", "24", "-p", "3", "-s", "4096",
    ];
    // Slow reads: a window of 1 to 16 bytes, read every 3 s.
    let slow_reads = [
        "-X", "-c", "500", "-r", "200", "-w", "1", "-y", "16", "-n", "3", "-z", "32", "-k", "2",
        "-p", "3",
    ];
    let mut worst = Duration::ZERO;
    for (name, mode, url) in [
        (
            "slowhttptest -H (slow headers) on the TCP port",
            &slow_headers[..],
            format!("http://{tcp}/"),
        ),
        (
            "slowhttptest -B (slow bodies) on the TCP port",
            &slow_bodies[..],
            format!("http://{tcp}/"),
        ),
        (
            "slowhttptest -X (slow reads) on the TCP port",
            &slow_reads[..],
            format!("http://{tcp}/"),
        ),
        (
            "slowhttptest -H (slow headers) on the admin port",
            &slow_headers[..],
            format!("http://{admin}/metrics"),
        ),
        (
            "slowhttptest -X (slow reads) on the admin port",
            &slow_reads[..],
            format!("http://{admin}/metrics"),
        ),
    ] {
        let seen = slowhttptest(&tcpie, name, mode, url, 8).await;
        let p99 = percentile(seen.clients, 0.99);
        assert!(
            p99 < Duration::from_millis(100),
            "{name}: a normal request's p99 {p99:?}"
        );
        worst = worst.max(percentile(seen.probes, 0.99));
    }
    assert!(
        worst < Duration::from_millis(250),
        "probe p99 up to {worst:?}"
    );
}
