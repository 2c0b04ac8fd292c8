//! Microbenchmarks of the admission path (scenario E of bench/run.sh): the token bucket,
//! the per-client table (target: at most 100 ns a decision),
//! the pool's permits, the head parser, and the metric updates of one request, uncontended and
//! with two threads. `cargo bench --bench admission`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tcpie::internal::parse_head;
use tcpie::internal::Pool;
use tcpie::internal::TokenBucket;
use tcpie::internal::{Metrics, Outcome};
use tokio::time::Instant;

fn bucket(c: &mut Criterion) {
    let now = Instant::now();
    // A bucket that always has a token: the admit path.
    let open = TokenBucket::new(1e9, 1_000_000_000, now);
    c.bench_function("token bucket: admit, 1 thread", |b| {
        b.iter(|| black_box(open.try_acquire(black_box(now))))
    });
    // An empty bucket: the reject path (computes the wait).
    let empty = TokenBucket::new(0.001, 1, now);
    let _ = empty.try_acquire(now);
    c.bench_function("token bucket: reject, 1 thread", |b| {
        b.iter(|| black_box(empty.try_acquire(black_box(now))))
    });

    // Two threads on one bucket: the compare-and-swap under contention.
    let shared = Arc::new(TokenBucket::new(1e9, 1_000_000_000, now));
    c.bench_function("token bucket: admit, 2 threads", |b| {
        b.iter_custom(|iters| {
            let other = {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let t = std::time::Instant::now();
                    for _ in 0..iters {
                        black_box(shared.try_acquire(Instant::now()).is_ok());
                    }
                    t.elapsed()
                })
            };
            let t = std::time::Instant::now();
            for _ in 0..iters {
                black_box(shared.try_acquire(Instant::now()).is_ok());
            }
            let mine = t.elapsed();
            mine.max(other.join().unwrap_or(Duration::ZERO))
        })
    });
}

/// The per-client decision on a table of 100,000 clients: hashing the client's address,
/// then its bucket in its shard. Clients are visited in a pseudo-random order, so most
/// lookups miss the cache as they would in a big fleet of clients.
fn clients(c: &mut Criterion) {
    use tcpie::internal::ClientTable;
    use tcpie::internal::Identity;
    const CLIENTS: u32 = 100_000;
    let now = Instant::now();
    let counter = |n| prometheus::IntCounter::new(n, "bench").unwrap();
    let table = Arc::new(ClientTable::new(
        1e9,
        1_000_000_000,
        CLIENTS as usize,
        now,
        counter("r"),
        counter("e"),
    ));
    // Fill the table; then address i is client i.
    fn address(i: u32) -> Identity<'static> {
        Identity::V4((i.wrapping_mul(2_654_435_761) % CLIENTS).to_be_bytes())
    }
    for i in 0..CLIENTS {
        let id = table.id(&address(i));
        table.take(id, now, || true).unwrap();
    }
    let mut k = 0u32;
    c.bench_function("client id: SipHash of an IPv4 address", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            black_box(table.id(&Identity::V4(black_box(k).to_be_bytes())))
        })
    });
    let mut i = 0u32;
    c.bench_function("client table: admit, 1 thread, 100,000 clients", |b| {
        b.iter(|| {
            i = (i + 1) % CLIENTS;
            let id = table.id(&address(i));
            black_box(table.take(id, now, || true).is_ok())
        })
    });
    c.bench_function("client table: admit, 2 threads, 100,000 clients", |b| {
        b.iter_custom(|iters| {
            let run = move |table: Arc<ClientTable>, offset: u32| {
                let t = std::time::Instant::now();
                for n in 0..iters {
                    let id = table.id(&address((n as u32).wrapping_add(offset) % CLIENTS));
                    black_box(table.take(id, now, || true).is_ok());
                }
                t.elapsed()
            };
            let other = {
                let table = table.clone();
                std::thread::spawn(move || run(table, CLIENTS / 2))
            };
            let mine = run(table.clone(), 0);
            mine.max(other.join().unwrap_or(Duration::ZERO))
        })
    });
}

fn queue(c: &mut Criterion) {
    let pool = Pool::new(2, 1024, Instant::now());
    c.bench_function("pool: permit taken and given back, 1 thread", |b| {
        b.iter(|| black_box(pool.try_enter(Instant::now())))
    });
    let full = Pool::new(1, 0, Instant::now());
    let _held = full.try_enter(Instant::now());
    c.bench_function("pool: reject when full, 1 thread", |b| {
        b.iter(|| black_box(full.try_enter(Instant::now()).is_none()))
    });
    let queued = Pool::new(1, 1024, Instant::now());
    let _held = queued.try_enter(Instant::now());
    c.bench_function(
        "pool: place in the queue taken and given up, 1 thread",
        |b| b.iter(|| black_box(queued.try_enter(Instant::now()))),
    );
}

fn parse(c: &mut Criterion) {
    let wrk = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n";
    let curl = b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
    c.bench_function("parse head: wrk request", |b| {
        b.iter(|| black_box(parse_head(black_box(wrk), 8192)))
    });
    c.bench_function("parse head: curl request", |b| {
        b.iter(|| black_box(parse_head(black_box(curl), 8192)))
    });
}

fn metrics(c: &mut Criterion) {
    let registry = prometheus::Registry::new();
    let m = Metrics::register(&registry).unwrap();
    // What the request path records for one processed request.
    c.bench_function("metrics: one processed request", |b| {
        b.iter(|| {
            m.connections_accepted.inc();
            m.connections_open.inc();
            m.queue_wait.observe(black_box(0.000_05));
            m.request_duration.observe(black_box(0.000_2));
            m.record(Outcome::Processed);
            m.connections_open.dec();
        })
    });
}

criterion_group!(benches, bucket, clients, queue, parse, metrics);
criterion_main!(benches);
