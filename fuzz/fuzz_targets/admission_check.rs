// The admission harness: shared by the fuzz target and the regression tests.

use std::time::Duration;

use futures_util::FutureExt;
use tcpie::queue::Queue;
use tcpie::ratelimit::TokenBucket;
use tokio::time::Instant;

pub fn check(data: &[u8]) {
    let [w, q, r, b, ops @ ..] = data else { return };
    let workers = 1 + usize::from(*w % 8);
    let queue_size = usize::from(*q % 16);
    let rate = f64::from(1 + u32::from(*r)) / 8.0; // 0.125 to 32 tokens per second
    let burst = 1 + u32::from(*b % 32);

    let start = Instant::now();
    let mut now = start;
    let bucket = TokenBucket::new(rate, burst, start);
    let queue = Queue::new(workers, queue_size, start);
    let (mut admitted, mut next_id, mut in_system, mut busy) = (0u64, 0u64, 0usize, 0usize);
    let mut received = Vec::new();

    for op in ops {
        match op % 4 {
            // Time passes: up to 255 ms.
            0 => now += Duration::from_millis(u64::from(op / 4) * 4),
            // A request arrives: bucket, then queue.
            1 | 2 => {
                if bucket.try_acquire(now).is_ok() {
                    admitted += 1;
                    if queue.try_submit(next_id, now).is_ok() {
                        in_system += 1;
                    }
                    next_id += 1;
                }
            }
            // A worker takes a request, or finishes one.
            _ => {
                if op & 4 == 0 {
                    if busy < workers {
                        if let Some(Some(id)) = queue.recv().now_or_never() {
                            received.push(id);
                            busy += 1;
                        }
                    }
                } else if busy > 0 {
                    queue.done(now);
                    busy -= 1;
                    in_system -= 1;
                }
            }
        }
        let elapsed = now.duration_since(start).as_secs_f64();
        assert!(admitted as f64 <= f64::from(burst) + rate * elapsed + 1e-6, "bucket over-admitted: {admitted} at {elapsed} s, rate {rate}, burst {burst}");
        let tokens = bucket.available(now);
        assert!((0.0..=f64::from(burst)).contains(&tokens));
        assert!(in_system <= workers + queue_size, "queue over capacity");
        assert_eq!(queue.busy(), busy);
        assert_eq!(queue.depth() + queue.busy(), in_system);
    }
    // Items leave in the order they came, none twice.
    assert!(received.windows(2).all(|w| w[0] < w[1]));
}
