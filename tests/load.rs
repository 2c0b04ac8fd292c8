//! Load and fault tests, over real sockets on 127.0.0.1: slowloris, slow readers, the
//! connection cap, a stop under load, a small open-file limit, probes under saturation. Every scenario ends by checking that each accepted connection is
//! accounted for exactly once.
//!
//! They load the machine and bound latencies, so they run apart, one at a time, where a
//! busy 2-core CI machine cannot make them flaky: `cargo test --test load -- --ignored
//! --test-threads=1` (scripts/test.sh runs them so, after the other tests). A plain
//! `cargo test` skips them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::process::{log_field, spawn};
use common::{
    concurrent, config, metric_value, parse_reply, request, rss_of, start, start_with, MaxWatch,
};
use tcpie::{Handler, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test load -- --ignored --test-threads=1"]
async fn slowloris_holds_no_worker_and_normal_clients_stay_fast() {
    let mut tcpie = spawn(
        &[],
        &[
            ("TCPIE_BURST", "0"),
            ("TCPIE_WORKERS", "2"),
            ("TCPIE_READ_TIMEOUT_MS", "3000"),
        ],
    );
    let addr = tcpie.tcp;
    const SLOW: usize = 2000;
    // Each slow client sends one header byte every 500 ms and never finishes its head.
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut reader, mut writer) = stream.into_split();
                let trickle = tokio::spawn(async move {
                    for b in b"GET / HTTP/1.1\r\nHost: slowloris\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa"
                    {
                        if writer.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        sleep(Duration::from_millis(500)).await;
                    }
                });
                let mut answer = Vec::new();
                let read = timeout(Duration::from_secs(15), reader.read_to_end(&mut answer)).await;
                trickle.abort();
                assert!(read.is_ok(), "a slow connection was never ended");
                let status = parse_reply(answer).ok().map(|r| r.status);
                (started.elapsed(), status)
            })
        })
        .collect();

    // Meanwhile: a normal client, and a watch on the busy workers.
    sleep(Duration::from_millis(300)).await;
    let busy = MaxWatch::start(tcpie.admin, "tcpie_workers_busy", Duration::from_millis(20));
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(request(addr, GET).await.unwrap().status, 200);
        latencies.push(started.elapsed());
        sleep(Duration::from_millis(15)).await;
    }
    let max_busy = busy.finish().await;
    let p99 = percentile(latencies, 0.99);
    assert!(
        p99 < Duration::from_millis(50),
        "normal p99 {p99:?} under slowloris"
    );
    // The normal client runs one request at a time: a slow connection holding a worker
    // would have shown as a second busy worker.
    assert!(max_busy <= 1.0, "busy workers reached {max_busy}");

    for s in slow {
        let (took, status) = s.await.unwrap();
        assert!(matches!(status, Some(408) | None), "{status:?}");
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
            "{took:?}"
        );
    }
    let (_, text) = tcpie.admin("/metrics").await;
    assert_eq!(
        metric_value(&text, "tcpie_requests_total{outcome=\"read_timeout\"}"),
        Some(SLOW as f64)
    );
    assert_eq!(
        metric_value(&text, "tcpie_requests_total{outcome=\"processed\"}"),
        Some(100.0)
    );
    tcpie.signal("TERM");
    assert_eq!(
        tcpie.wait_exit(Duration::from_secs(15)).await.code(),
        Some(0)
    );
    assert_balanced(&tcpie.log.lock().unwrap());
}

/// Checks the final counters the server logs at exit: every accepted connection ended
/// as exactly one request outcome or as closed before a request.
fn assert_balanced(log: &str) -> (u64, u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("shutdown: complete"))
        .unwrap_or_else(|| panic!("{log}"));
    let field = |name: &str| -> u64 { log_field(line, name).parse().unwrap() };
    let (accepted, requests, before) = (
        field("accepted"),
        field("requests"),
        field("closed_before_request"),
    );
    assert_eq!(accepted, requests + before, "{line}");
    (accepted, requests, field("write_error"))
}

/// Answers /big with a body far larger than any socket buffer.
struct Big(Bytes);

impl Handler for Big {
    async fn handle(&self, request: &Request) -> Response {
        if request.path() == "/big" {
            Response::text(200, self.0.clone())
        } else {
            Response::text(200, "small\n")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test load -- --ignored --test-threads=1"]
async fn slow_readers_free_their_workers_at_the_write_deadline() {
    let server = start_with(
        tcpie::Config {
            workers: 4,
            write_timeout_ms: 500,
            ..config()
        },
        Big(Bytes::from(vec![b'x'; 32 << 20])),
    )
    .await;
    let started = Instant::now();
    // Two clients ask for the big answer and never read it.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        readers.push(stream);
    }
    server.wait_admitted(2).await;
    // Normal clients are unaffected meanwhile.
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(server.get("/").await.status, 200);
        latencies.push(t.elapsed());
    }
    assert!(percentile(latencies, 0.99) < Duration::from_millis(100));
    // Both workers are freed at the write deadline, and the outcome says why.
    loop {
        let errors = server
            .metric("tcpie_requests_total{outcome=\"write_error\"}")
            .await;
        if errors == 2.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "write errors: {errors}"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.metric("tcpie_workers_busy").await, 0.0);
    drop(readers);
    sleep(Duration::from_millis(200)).await;
    server.assert_conservation().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test load -- --ignored --test-threads=1"]
async fn the_connection_cap_holds_against_five_times_as_many_clients() {
    let server = start_with(
        tcpie::Config {
            max_connections: 100,
            workers: 4,
            queue_size: 1000,
            simulated_work_ms: 5,
            ..config()
        },
        tcpie::Hello,
    )
    .await;
    let (admin, addr) = (server.admin, server.addr);
    let open = MaxWatch::start(admin, "tcpie_connections_open", Duration::from_millis(10));
    let clients: Vec<_> = concurrent(addr, GET, 500);
    let mut answered = 0;
    for c in clients {
        match c.await.unwrap() {
            Ok(reply) => {
                assert!(
                    reply.status == 200 || reply.status == 503,
                    "{}",
                    reply.status
                );
                answered += 1;
            }
            // A clean close (no bytes) is allowed; a reset or a truncated answer is not.
            Err(e) => panic!("a client got {e}"),
        }
    }
    assert_eq!(answered, 500);
    let max_open = open.finish().await;
    assert!(max_open <= 100.0, "{max_open} connections open at once");
    assert!(
        max_open >= 50.0,
        "the cap was never approached ({max_open}): the test proves nothing"
    );
    server.assert_conservation().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test load -- --ignored --test-threads=1"]
async fn stopping_under_load_answers_everything_read_and_balances_the_counters() {
    let mut tcpie = spawn(
        &[],
        &[
            ("TCPIE_BURST", "0"),
            ("TCPIE_WORKERS", "2"),
            ("TCPIE_QUEUE_SIZE", "16"),
            ("TCPIE_SIMULATED_WORK_MS", "10"),
            ("TCPIE_SHUTDOWN_TIMEOUT_MS", "5000"),
        ],
    );
    let addr = tcpie.tcp;
    let complete = Arc::new(AtomicU64::new(0));
    let never_answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (complete, never_answered) = (complete.clone(), never_answered.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut refused_since: Option<Instant> = None;
                // Bounded: until the server has refused connections for 300 ms, or 20 s.
                while started.elapsed() < Duration::from_secs(20) {
                    let Ok(mut stream) = TcpStream::connect(addr).await else {
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(300) {
                            return;
                        }
                        sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    refused_since = None;
                    if stream.write_all(GET).await.is_err() {
                        never_answered.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut raw = Vec::new();
                    match stream.read_to_end(&mut raw).await {
                        Ok(_) if raw.is_empty() => {
                            never_answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            let reply = parse_reply(raw).expect("a complete, well-formed answer");
                            assert!(
                                reply.status == 200 || reply.status == 503,
                                "{}",
                                reply.status
                            );
                            complete.fetch_add(1, Ordering::Relaxed);
                        }
                        // A reset with nothing received: a connection still in the kernel's
                        // backlog when the listener closed, which the server never read.
                        Err(_) if raw.is_empty() => {
                            never_answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("truncated answer: {e} after {} bytes", raw.len()),
                    }
                }
            })
        })
        .collect();
    sleep(Duration::from_millis(1500)).await;
    let stopped = Instant::now();
    tcpie.signal("TERM");
    let status = tcpie.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    assert!(stopped.elapsed() < Duration::from_secs(7));
    for c in clients {
        c.await.unwrap();
    }
    let (accepted, requests, write_errors) = assert_balanced(&tcpie.log.lock().unwrap());
    assert_eq!(write_errors, 0);
    // Every request the server read was answered completely, and seen by its client.
    assert_eq!(complete.load(Ordering::Relaxed), requests);
    assert!(
        requests > 50,
        "too little load to prove anything: {requests}"
    );
    assert!(accepted >= requests);
}

#[tokio::test]
#[ignore = "load test: cargo test --test load -- --ignored --test-threads=1"]
async fn probes_answer_promptly_while_the_tcp_port_is_saturated() {
    let server = start(tcpie::Config {
        workers: 1,
        queue_size: 1,
        simulated_work_ms: 1000,
        max_connections: 50,
        ..config()
    })
    .await;
    let addr = server.addr;
    // Fill the pool, the queue and the connection cap.
    let load: Vec<_> = concurrent(addr, GET, 80);
    server.wait_admitted(2).await;
    for path in ["/livez", "/readyz", "/metrics"] {
        let started = Instant::now();
        server.admin(path).await;
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    for l in load {
        let status = l.await.unwrap().unwrap().status;
        assert!(status == 200 || status == 503, "{status}");
    }
    server.assert_conservation().await;
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
#[ignore = "load test: cargo test --test load -- --ignored --test-threads=1"]
async fn under_a_small_open_file_limit_the_tcp_port_keeps_to_its_share() {
    let mut tcpie = spawn(
        &["prlimit", "--nofile=256:256", "--"],
        &[("TCPIE_BURST", "0"), ("TCPIE_READ_TIMEOUT_MS", "20000")],
    );
    // Hold more idle connections than the process has descriptors: the TCP port takes
    // what the budget leaves it (256 - 32 for the admin port - 64 reserved), the rest
    // wait in the kernel's backlog, and no accept() ever fails.
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(TcpStream::connect(tcpie.tcp).await.unwrap());
    }
    sleep(Duration::from_millis(500)).await;
    assert!(tcpie.child.try_wait().unwrap().is_none(), "tcpie died");
    let (status, text) = tcpie.admin("/metrics").await;
    assert_eq!(status, 200, "the admin port kept its descriptors");
    assert_eq!(metric_value(&text, "tcpie_connections_max"), Some(160.0));
    assert_eq!(metric_value(&text, "tcpie_connections_open"), Some(160.0));
    assert_eq!(metric_value(&text, "tcpie_accept_errors_total"), Some(0.0));
    // Nothing spins while the port is full: well under a tenth of a core.
    let pid = tcpie.child.id();
    let before = cpu_ticks(pid);
    sleep(Duration::from_secs(2)).await;
    let ticks = cpu_ticks(pid) - before;
    assert!(ticks < 20, "{ticks} ticks of CPU in 2 s at the cap");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match request(tcpie.tcp, GET).await {
            Ok(reply) => break reply,
            Err(_) if Instant::now() < deadline => sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(reply.status, 200);
    let log = tcpie.log.lock().unwrap().clone();
    assert!(!log.contains("accept failed"), "{log}");
    tcpie.signal("TERM");
    assert_eq!(
        tcpie.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: cargo test --test load -- --ignored --test-threads=1"]
async fn a_million_client_keys_stay_within_the_table_and_calm_clients_are_served() {
    const KEYS: u64 = 1_000_000;
    const SIZE: u64 = 100_000;
    let mut tcpie = spawn(
        &[],
        &[
            ("TCPIE_BURST", "0"),
            ("TCPIE_WORKERS", "64"),
            ("TCPIE_QUEUE_SIZE", "1000"),
            ("TCPIE_KEEP_ALIVE", "true"),
            ("TCPIE_MAX_REQUESTS_PER_CONNECTION", "1000000"),
            ("TCPIE_CLIENT_KEY", "header:X-Key"),
            // A token every 100 s: every key's one request leaves its bucket in debt for
            // longer than the test runs, so the table is full of clients in debt and has
            // to evict (at 1/s, how many refill first depends on the machine's speed).
            ("TCPIE_CLIENT_RATE_PER_SECOND", "0.01"),
            ("TCPIE_CLIENT_BURST", "10"),
            ("TCPIE_CLIENT_TABLE_SIZE", &SIZE.to_string()),
        ],
    );
    let addr = tcpie.tcp;
    let pid = tcpie.child.id();
    let rss_before = rss_of(pid);
    let tracked = MaxWatch::start(
        tcpie.admin,
        "tcpie_rate_limit_clients",
        Duration::from_millis(200),
    );

    // Four connections, each pipelining its share of a million distinct keys in batches.
    let flood: Vec<_> = (0..4u64)
        .map(|c| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let (mut served, mut refused) = (0u64, 0u64);
                let mut key = c;
                while key < KEYS {
                    let mut batch = Vec::with_capacity(64 * 64);
                    let mut n = 0;
                    while n < 64 && key < KEYS {
                        batch.extend_from_slice(
                            format!("GET / HTTP/1.1\r\nHost: t\r\nX-Key: k{key}\r\n\r\n")
                                .as_bytes(),
                        );
                        key += 4;
                        n += 1;
                    }
                    stream.write_all(&batch).await.unwrap();
                    // Read the n answers: each ends with its 14- or 39-byte body, and
                    // starts with its status line.
                    let mut pending = Vec::new();
                    let mut answers = 0;
                    while answers < n {
                        let got = stream.read(&mut buf).await.unwrap();
                        assert!(got > 0, "the server closed the connection");
                        pending.extend_from_slice(&buf[..got]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .unwrap()
                                .parse()
                                .unwrap();
                            if pending.len() < end + 4 + len {
                                break;
                            }
                            if head.starts_with("HTTP/1.1 200") {
                                served += 1;
                            } else {
                                assert!(head.starts_with("HTTP/1.1 429"), "{head}");
                                refused += 1;
                            }
                            pending.drain(..end + 4 + len);
                            answers += 1;
                        }
                    }
                }
                (served, refused)
            })
        })
        .collect();

    // Meanwhile a well-behaved client with its own key, within its burst.
    let calm = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let reply = request(
                addr,
                b"GET / HTTP/1.1\r\nHost: t\r\nX-Key: calm\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            statuses.push(reply.status);
            sleep(Duration::from_millis(1100)).await;
        }
        statuses
    });

    let started = Instant::now();
    let mut served = 0;
    for f in flood {
        let (s, r) = f.await.unwrap();
        served += s;
        assert_eq!(r, 0, "every key is new: none can be over its limit");
    }
    let took = started.elapsed();
    let statuses = calm.await.unwrap();
    let max_tracked = tracked.finish().await;
    let rss_after = rss_of(pid);
    let (_, text) = common::admin_get(tcpie.admin, "/metrics").await;
    let evicted = metric_value(
        &text,
        "tcpie_rate_limit_clients_dropped_total{reason=\"evicted\"}",
    )
    .unwrap();
    let refilled = metric_value(
        &text,
        "tcpie_rate_limit_clients_dropped_total{reason=\"refilled\"}",
    )
    .unwrap();
    let now_tracked = metric_value(&text, "tcpie_rate_limit_clients").unwrap();
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "{KEYS} keys in {took:?}: max tracked {max_tracked}, evicted {evicted}, refilled {refilled}, RSS {} -> {} KiB (+{} KiB)",
        rss_before / 1024,
        rss_after / 1024,
        growth / 1024
    );
    assert_eq!(served, KEYS);
    assert!(max_tracked <= SIZE as f64 && now_tracked <= SIZE as f64);
    assert!(now_tracked >= SIZE as f64 * 0.95, "{now_tracked}");
    // Every key but those still tracked was evicted, the least recently seen first.
    assert!(
        evicted >= (KEYS - SIZE) as f64 * 0.99,
        "{evicted} evicted, {refilled} refilled"
    );
    assert_eq!(statuses, vec![200; 8], "the calm client was refused");
    // The table's bound (at most 56 bytes a client) plus 8 MiB for everything else the
    // run allocates (connections, buffers, the allocator's arenas).
    assert!(growth <= SIZE * 56 + (8 << 20), "RSS grew {growth} bytes");
    tcpie.child.kill().unwrap();
}
