// The admission harness: shared by the fuzz target and the regression tests.

use std::time::Duration;

use futures_util::FutureExt;
use tcpie::internal::Identity;
use tcpie::internal::ClientTable;
use tcpie::internal::{Entry, Permit, Pool, Wait};
use tcpie::internal::TokenBucket;
use tokio::time::Instant;

/// A request waiting for a permit.
type Waiting<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Permit<'a>>> + 'a>>;

pub fn check(data: &[u8]) {
    let [w, q, r, b, ops @ ..] = data else { return };
    let workers = 1 + usize::from(*w % 8);
    let queue_size = usize::from(*q % 16);
    let rate = f64::from(1 + u32::from(*r)) / 8.0; // 0.125 to 32 tokens per second
    let burst = 1 + u32::from(*b % 32);

    // Each client's own bucket, from the same bytes (the input layout predates it).
    let client_rate = f64::from(1 + u32::from(r.rotate_left(4))) / 16.0;
    let client_burst = 1 + u32::from(*b >> 5);
    let table_size = 1 + usize::from(*w >> 4);

    let start = Instant::now();
    let mut now = start;
    let bucket = TokenBucket::new(rate, burst, start);
    let counter = |n| prometheus::IntCounter::new(n, "fuzz").unwrap();
    let evicted = counter("e");
    let table = ClientTable::new(client_rate, client_burst, table_size, start, counter("r"), evicted.clone());
    // Per client (of 16): admitted since the bound's window started, and when it started
    // (at the start, or when a client in debt was evicted: it then regains a burst).
    let mut clients = [(0u64, start); 16];
    let pool = Pool::new(workers, queue_size, start);
    let mut admitted = 0u64;
    let mut next_id = 0u64;
    // Requests being processed, and waiting (with their arrival order).
    let mut running: Vec<(u64, Permit<'_>)> = Vec::new();
    let mut waiting: Vec<(u64, Waiting<'_>)> = Vec::new();
    let mut started: Vec<u64> = Vec::new();

    for op in ops {
        match op % 5 {
            // Time passes: up to 255 ms.
            0 => now += Duration::from_millis(u64::from(op / 5) * 4),
            // A request arrives from one of 16 clients: its bucket, the global one, then
            // the pool.
            1 | 2 => {
                let client = usize::from(op / 5) % 16;
                let id = table.id(&Identity::Bytes(&[client as u8]));
                let evictions = evicted.get();
                let mut asked = false;
                let taken = table.take(id, now, || {
                    asked = true;
                    bucket.try_acquire(now).is_ok()
                });
                if evicted.get() != evictions {
                    for c in clients.iter_mut() {
                        *c = (0, now);
                    }
                }
                match taken {
                    Err(refused) => {
                        // Refused by its own bucket: the global one was not asked.
                        assert!(!asked, "a client refused by its bucket spent a global token");
                        assert!(!refused.wait.is_zero());
                    }
                    Ok(None) => assert!(asked),
                    Ok(Some(_)) => {
                        let (n, since) = &mut clients[client];
                        *n += 1;
                        let elapsed = now.duration_since(*since).as_secs_f64();
                        assert!(
                            *n as f64 <= f64::from(client_burst) + client_rate * elapsed + 1e-6,
                            "client {client} over-admitted: {n} in {elapsed} s"
                        );
                    }
                }
                assert!(table.len() <= table_size, "the table outgrew its size");
                if matches!(taken, Ok(Some(_))) {
                    admitted += 1;
                    match pool.try_enter(now) {
                        Some(Entry::Now(p)) => {
                            started.push(next_id);
                            running.push((next_id, p));
                        }
                        Some(Entry::Wait(w)) => waiting.push((next_id, Box::pin(Wait::permit(w)))),
                        None => {}
                    }
                    next_id += 1;
                }
            }
            // A request finishes; waiters that got its permit start.
            3 => {
                if !running.is_empty() {
                    let at = usize::from(op / 5) % running.len();
                    drop(running.swap_remove(at));
                }
            }
            // A waiting request gives up (a client leaves, a queue timeout).
            _ => {
                if !waiting.is_empty() {
                    let at = usize::from(op / 5) % waiting.len();
                    drop(waiting.remove(at));
                }
            }
        }
        // Waiters granted a permit start, in the order they arrived.
        let mut still = Vec::new();
        for (id, mut w) in waiting.drain(..) {
            match w.as_mut().now_or_never() {
                Some(Some(p)) => {
                    // FIFO: nobody older is still waiting.
                    assert!(still.is_empty(), "request {id} jumped the queue");
                    started.push(id);
                    running.push((id, p));
                }
                Some(None) => panic!("the pool never closes here"),
                None => still.push((id, w)),
            }
        }
        waiting = still;

        let elapsed = now.duration_since(start).as_secs_f64();
        assert!(admitted as f64 <= f64::from(burst) + rate * elapsed + 1e-6, "bucket over-admitted: {admitted} at {elapsed} s, rate {rate}, burst {burst}");
        let tokens = bucket.available(now);
        assert!((0.0..=f64::from(burst)).contains(&tokens));
        assert!(running.len() <= workers, "more running than permits");
        assert!(waiting.len() <= queue_size, "queue over capacity");
        assert_eq!(pool.busy(), running.len());
        assert_eq!(pool.depth(), waiting.len());
        // A permit never idles while someone waits.
        assert!(waiting.is_empty() || running.len() == workers, "a waiter was left behind");
    }
    drop(waiting);
    drop(running);
    assert_eq!((pool.busy(), pool.depth()), (0, 0), "a permit or a place leaked");
}
