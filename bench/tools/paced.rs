//! An open-loop load generator for `bench/overload.sh`: it starts requests at a constant
//! rate whatever the server does (one connection each, `Connection: close`), so a slow
//! server cannot slow the arrivals down, and measures each request from the moment it was
//! due, not from when it could be sent (no coordinated omission). A request not answered
//! within the client timeout counts as timed out. Loopback only; it stops by itself.
//!
//! Usage: `paced HOST:PORT RATE_PER_S SECONDS TIMEOUT_MS`. Prints one JSON object.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};

#[derive(Default)]
struct Tally {
    /// Latency in microseconds of every answer, by status.
    by_status: BTreeMap<u16, Vec<u64>>,
    errors: u64,
    timeouts: u64,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, rate, seconds, timeout_ms] = args.as_slice() else {
        eprintln!("usage: paced HOST:PORT RATE_PER_S SECONDS TIMEOUT_MS");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| std::process::exit(2));
    let rate: f64 = rate.parse().unwrap_or(100.0);
    let seconds: f64 = seconds.parse().unwrap_or(10.0);
    let client_timeout = Duration::from_millis(timeout_ms.parse().unwrap_or(2000));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now() + Duration::from_millis(50);
    let total = (rate * seconds) as u64;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        sleep_until(due).await;
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = timeout_at(due + client_timeout, exchange(addr)).await;
            let took = due.elapsed().as_micros() as u64;
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(Some(status)) => t.by_status.entry(status).or_default().push(took),
                Ok(None) => t.errors += 1,
                Err(_) => t.timeouts += 1,
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let mut statuses = Vec::new();
    for (status, latencies) in &t.by_status {
        let mut v = latencies.clone();
        v.sort_unstable();
        let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        statuses.push(format!(
            "\"{status}\": {{\"count\": {}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
            v.len(),
            pct(0.5),
            pct(0.99)
        ));
    }
    println!(
        "{{\"offered\": {total}, \"seconds\": {seconds}, \"statuses\": {{{}}}, \"errors\": {}, \"timeouts\": {}}}",
        statuses.join(", "),
        t.errors,
        t.timeouts
    );
}

/// One request on its own connection: the status of the answer, read whole, or `None` if
/// the connection failed.
async fn exchange(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::with_capacity(256);
    stream.read_to_end(&mut answer).await.ok()?;
    let status = answer.get(9..12)?;
    std::str::from_utf8(status).ok()?.parse().ok()
}
