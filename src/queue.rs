//! The bounded queue between connection tasks and workers, and its accounting.
//!
//! It owns one promise: at most `workers + queue_size` requests are in the system, being
//! processed or waiting, exactly. A slot is reserved with a compare-and-swap before the
//! request is queued and released only when its worker has written the response, so a
//! full system rejects at once (the caller answers 503) and nothing waits unbounded. (The
//! Go original sized its channel `workers + queue`, which let `2 × workers + queue` in:
//! the workers' own jobs no longer sat in the channel.)
//!
//! It also keeps what the probes need: how many wait, how many are being processed, and
//! when a worker last made progress. It does not know what a request is or how to answer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A multi-producer, multi-consumer queue with admission by slot.
#[derive(Debug)]
pub struct Queue<T> {
    workers: usize,
    queue_size: usize,
    in_system: AtomicUsize,
    waiting: AtomicUsize,
    busy: AtomicUsize,
    origin: Instant,
    /// Milliseconds since `origin` of the last sign of progress: a finished request, or a
    /// request entering an empty queue (so an idle pool is not taken for a wedged one).
    last_progress_ms: AtomicU64,
    tx: async_channel::Sender<T>,
    rx: async_channel::Receiver<T>,
}

impl<T> Queue<T> {
    pub fn new(workers: usize, queue_size: usize, now: Instant) -> Queue<T> {
        // The slots bound the channel, so its own bound is never the one that refuses.
        let (tx, rx) = async_channel::bounded((workers + queue_size).max(1));
        Queue {
            workers,
            queue_size,
            in_system: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            origin: now,
            last_progress_ms: AtomicU64::new(0),
            tx,
            rx,
        }
    }

    /// Queues `item` if a slot is free; gives it back otherwise, without waiting.
    pub fn try_submit(&self, item: T, now: Instant) -> Result<(), T> {
        match self.try_reserve() {
            Some(slot) => slot.submit(item, now),
            None => Err(item),
        }
    }

    /// Reserves a slot without queueing anything yet, for a request admitted before its
    /// body is read (`Expect: 100-continue`). Dropping the reservation releases it.
    pub fn try_reserve(&self) -> Option<Reservation<'_, T>> {
        let capacity = self.workers + self.queue_size;
        self.in_system
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| Reservation { queue: Some(self) })
    }

    /// Waits for the next item; `None` once the queue is closed and empty.
    ///
    /// The caller is then busy with it and must call [`Queue::done`] once it has answered.
    pub async fn recv(&self) -> Option<T> {
        let item = self.rx.recv().await.ok()?;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.busy.fetch_add(1, Ordering::AcqRel);
        Some(item)
    }

    /// Releases the slot of an item taken with [`Queue::recv`].
    pub fn done(&self, now: Instant) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.in_system.fetch_sub(1, Ordering::AcqRel);
        self.mark_progress(now);
    }

    /// Refuses further items; workers finish what is queued, then `recv` ends.
    pub fn close(&self) {
        self.tx.close();
    }

    fn mark_progress(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        self.last_progress_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Requests waiting for a worker.
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Requests being processed.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// How many may wait (`TCPIE_QUEUE_SIZE`).
    pub fn queue_size(&self) -> usize {
        self.queue_size
    }

    /// How full the queue is, from 0 to 1 (momentarily above 1 while freed workers have
    /// not yet picked up their next request). With no queue at all, it is full exactly
    /// when every worker is busy, since the next request would then be refused.
    pub fn fill(&self) -> f64 {
        if self.queue_size == 0 {
            if self.busy() >= self.workers {
                1.0
            } else {
                0.0
            }
        } else {
            self.depth() as f64 / self.queue_size as f64
        }
    }

    /// True when requests wait and no worker has made progress for `stall`: the pool is
    /// wedged. Saturation alone is not a stall: a busy pool keeps finishing requests.
    pub fn stalled(&self, now: Instant, stall: Duration) -> bool {
        if self.depth() == 0 {
            return false;
        }
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Acquire));
        now.saturating_duration_since(self.origin)
            .saturating_sub(last)
            >= stall
    }
}

/// A slot held for an item not yet queued; released when dropped unused.
#[must_use = "a reservation is released when dropped"]
pub struct Reservation<'a, T> {
    queue: Option<&'a Queue<T>>,
}

impl<T> Reservation<'_, T> {
    /// Queues `item` in the reserved slot; gives it back only if the queue was closed.
    pub fn submit(mut self, item: T, now: Instant) -> Result<(), T> {
        let Some(queue) = self.queue.take() else {
            return Err(item);
        };
        if queue.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            queue.mark_progress(now);
        }
        match queue.tx.try_send(item) {
            Ok(()) => Ok(()),
            // Only after `close`: the queue no longer takes work.
            Err(e) => {
                queue.waiting.fetch_sub(1, Ordering::AcqRel);
                queue.in_system.fetch_sub(1, Ordering::AcqRel);
                Err(e.into_inner())
            }
        }
    }
}

impl<T> Drop for Reservation<'_, T> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue {
            queue.in_system.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, pause};

    #[tokio::test]
    async fn admits_workers_plus_queue_exactly() {
        let q = Queue::new(2, 3, Instant::now());
        for i in 0..5 {
            q.try_submit(i, Instant::now()).unwrap();
        }
        assert_eq!(q.try_submit(5, Instant::now()), Err(5));
        assert_eq!(q.depth(), 5);

        // Two workers take one each: still five in the system, so still full.
        assert_eq!(q.recv().await, Some(0));
        assert_eq!(q.recv().await, Some(1));
        assert_eq!((q.depth(), q.busy()), (3, 2));
        assert_eq!(q.try_submit(6, Instant::now()), Err(6));

        // One finishes: exactly one more fits.
        q.done(Instant::now());
        q.try_submit(7, Instant::now()).unwrap();
        assert_eq!(q.try_submit(8, Instant::now()), Err(8));
        assert_eq!((q.depth(), q.busy()), (4, 1));
    }

    #[tokio::test]
    async fn a_zero_queue_admits_only_the_workers() {
        let q = Queue::new(1, 0, Instant::now());
        q.try_submit("a", Instant::now()).unwrap();
        assert_eq!(q.fill(), 0.0);
        assert_eq!(q.recv().await, Some("a"));
        assert_eq!(q.fill(), 1.0);
        assert_eq!(q.try_submit("b", Instant::now()), Err("b"));
    }

    #[tokio::test]
    async fn a_reservation_holds_a_slot_until_submitted_or_dropped() {
        let q = Queue::new(1, 1, Instant::now());
        let a = q.try_reserve().unwrap();
        let b = q.try_reserve().unwrap();
        assert!(q.try_reserve().is_none());
        assert_eq!(q.try_submit(9, Instant::now()), Err(9));
        // Reserved, not yet waiting.
        assert_eq!(q.depth(), 0);
        drop(a);
        b.submit(1, Instant::now()).unwrap();
        assert_eq!(q.depth(), 1);
        q.try_submit(2, Instant::now()).unwrap();
        assert!(q.try_reserve().is_none());
    }

    #[tokio::test]
    async fn closing_drains_then_ends() {
        let q = Queue::new(1, 1, Instant::now());
        q.try_submit(1, Instant::now()).unwrap();
        q.close();
        assert_eq!(q.try_submit(2, Instant::now()), Err(2));
        assert_eq!(q.recv().await, Some(1));
        q.done(Instant::now());
        assert_eq!(q.recv().await, None);
        assert_eq!((q.depth(), q.busy()), (0, 0));
    }

    #[tokio::test]
    async fn two_threads_never_overfill() {
        let q = std::sync::Arc::new(Queue::new(3, 7, Instant::now()));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|i| q.try_submit(*i, Instant::now()).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 10);
    }

    #[tokio::test]
    async fn stall_needs_waiting_requests_and_no_progress() {
        pause();
        let stall = Duration::from_secs(30);
        let q = Queue::new(1, 2, Instant::now());
        // An idle pool is never stalled, however long it idles.
        advance(Duration::from_secs(3600)).await;
        assert!(!q.stalled(Instant::now(), stall));

        // A request entering an empty queue starts the clock afresh.
        q.try_submit(1, Instant::now()).unwrap();
        q.recv().await.unwrap();
        q.try_submit(2, Instant::now()).unwrap();
        advance(Duration::from_secs(29)).await;
        assert!(!q.stalled(Instant::now(), stall));
        advance(Duration::from_secs(1)).await;
        assert!(q.stalled(Instant::now(), stall));

        // A finished request is progress.
        q.done(Instant::now());
        assert!(!q.stalled(Instant::now(), stall));
        // A saturated pool that keeps finishing is not stalled.
        for _ in 0..10 {
            q.recv().await.unwrap();
            q.try_submit(3, Instant::now()).unwrap();
            advance(Duration::from_secs(20)).await;
            q.done(Instant::now());
            assert!(!q.stalled(Instant::now(), stall));
        }
    }
}
