//! Microbenchmarks of the admission path (scenario E of bench/run.sh): the token bucket,
//! the pool's permits, the head parser, and the metric updates of one request, uncontended and
//! with two threads. `cargo bench --bench admission`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tcpie::http::parse_head;
use tcpie::pool::Pool;
use tcpie::ratelimit::TokenBucket;
use tcpie::{Metrics, Outcome};
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

criterion_group!(benches, bucket, queue, parse, metrics);
criterion_main!(benches);
