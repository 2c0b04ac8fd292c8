//! The worker pool as permits: `TCPIE_WORKERS` permits to process a request, and
//! `TCPIE_QUEUE_SIZE` places to wait for one, in FIFO order.
//!
//! It owns one promise: at most `workers + queue_size` requests are in the system, being
//! processed or waiting, exactly. A request that finds a free permit takes it with one
//! compare-and-swap and is processed at once in its own connection task: no channel, no
//! hand-off, no lock. Only a request that must wait parks: it takes a place in the FIFO
//! (under a mutex that only waiting requests and the release that ends a wait touch),
//! and a released permit passes straight to the first in line, so nobody can jump the
//! queue. A full system refuses at once (the caller answers 503). The [`Permit`] is an
//! RAII guard: it is released when dropped, on every path, a panicking handler included.
//!
//! Both counts live in one atomic word (permits held in the low half, places taken in the
//! high half), so that "is a permit free" and "is anyone waiting" are read together and
//! the lock-free fast paths never race with a request joining the queue.
//!
//! It also keeps what the probes need: how many wait, how many are processed, and when a
//! request last finished. It does not know what a request is or how to answer it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Permits held, in the low 32 bits of the state word.
const RUNNING: u64 = 1;
/// Places taken in the queue, in the high 32 bits.
const WAITING: u64 = 1 << 32;

fn running(state: u64) -> u64 {
    state & (WAITING - 1)
}

fn waiting(state: u64) -> u64 {
    state >> 32
}

/// The permits and the queue.
#[derive(Debug)]
pub struct Pool {
    workers: u64,
    queue_size: u64,
    state: AtomicU64,
    /// The waiting requests, oldest first. Its length equals the waiting count whenever
    /// the lock is free: both change only under it.
    waiters: Mutex<VecDeque<Waiter>>,
    next_ticket: AtomicU64,
    closed: AtomicBool,
    origin: Instant,
    /// Milliseconds since `origin` of the last sign of progress: a finished request, or a
    /// request entering an empty queue (so an idle pool is not taken for a wedged one).
    last_progress_ms: AtomicU64,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    grant: oneshot::Sender<()>,
}

/// A request's way in: a permit now, or a place in the queue.
#[derive(Debug)]
pub enum Entry<'a> {
    Now(Permit<'a>),
    Wait(Wait<'a>),
}

impl Pool {
    pub fn new(workers: usize, queue_size: usize, now: Instant) -> Pool {
        Pool {
            workers: workers.clamp(1, u32::MAX as usize) as u64,
            queue_size: queue_size.min(u32::MAX as usize) as u64,
            state: AtomicU64::new(0),
            waiters: Mutex::new(VecDeque::new()),
            next_ticket: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            origin: now,
            last_progress_ms: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        // A panic while holding the lock cannot leave the list inconsistent (every
        // change is one push or one removal), so a poisoned lock is used as it is.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit if one is free, else a place in the queue if one is free, else `None`
    /// (the system is full, or the pool is closed): never waits.
    pub fn try_enter(&self, now: Instant) -> Option<Entry<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        if let Some(permit) = self.try_permit() {
            return Some(Entry::Now(permit));
        }
        if self.queue_size == 0 {
            return None;
        }
        let mut waiters = self.lock();
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if running(state) < self.workers && waiting(state) == 0 {
                // A permit came free meanwhile.
                match self.state.compare_exchange_weak(
                    state,
                    state + RUNNING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some(Entry::Now(Permit { pool: self })),
                    Err(actual) => state = actual,
                }
                continue;
            }
            if waiting(state) >= self.queue_size || self.closed.load(Ordering::Acquire) {
                return None;
            }
            match self.state.compare_exchange_weak(
                state,
                state + WAITING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
        if waiting(state) == 0 {
            self.mark_progress(now);
        }
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (grant, granted) = oneshot::channel();
        waiters.push_back(Waiter { ticket, grant });
        Some(Entry::Wait(Wait {
            pool: self,
            ticket,
            granted,
            settled: false,
        }))
    }

    /// The lock-free path: a free permit while nobody waits.
    fn try_permit(&self) -> Option<Permit<'_>> {
        let mut state = self.state.load(Ordering::Acquire);
        while running(state) < self.workers && waiting(state) == 0 {
            match self.state.compare_exchange_weak(
                state,
                state + RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Permit { pool: self }),
                Err(actual) => state = actual,
            }
        }
        None
    }

    /// Gives a permit back: to the first waiting request if there is one, else to the pool.
    fn release(&self) {
        self.mark_progress(Instant::now());
        let mut state = self.state.load(Ordering::Acquire);
        while waiting(state) == 0 {
            match self.state.compare_exchange_weak(
                state,
                state - RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
        let mut waiters = self.lock();
        while let Some(waiter) = waiters.pop_front() {
            // The permit moves to the waiter: one fewer waiting, as many running.
            self.state.fetch_sub(WAITING, Ordering::AcqRel);
            // The grant is sent under the lock, so that a waiter giving up (which takes
            // the lock) either finds itself still queued or finds the grant.
            if waiter.grant.send(()).is_ok() {
                return;
            }
        }
        self.state.fetch_sub(RUNNING, Ordering::AcqRel);
    }

    /// Refuses new requests and ends every wait (the waiting requests get `None` from
    /// [`Wait::permit`]); permits held are returned as their requests finish.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut waiters = self.lock();
        let n = waiters.len() as u64;
        waiters.clear();
        self.state.fetch_sub(n * WAITING, Ordering::AcqRel);
    }

    fn mark_progress(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        self.last_progress_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Requests waiting for a permit.
    pub fn depth(&self) -> usize {
        waiting(self.state.load(Ordering::Acquire)) as usize
    }

    /// Requests being processed (permits held).
    pub fn busy(&self) -> usize {
        running(self.state.load(Ordering::Acquire)) as usize
    }

    pub fn workers(&self) -> usize {
        self.workers as usize
    }

    /// How many may wait (`TCPIE_QUEUE_SIZE`).
    pub fn queue_size(&self) -> usize {
        self.queue_size as usize
    }

    /// How full the queue is, from 0 to 1. With no queue at all, it is full exactly when
    /// every permit is held, since the next request would then be refused.
    pub fn fill(&self) -> f64 {
        if self.queue_size == 0 {
            if self.busy() >= self.workers() {
                1.0
            } else {
                0.0
            }
        } else {
            self.depth() as f64 / self.queue_size as f64
        }
    }

    /// True when requests wait and none has finished for `stall`: the pool is wedged.
    /// Saturation alone is not a stall: a busy pool keeps finishing requests.
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

/// The right to process one request; given back when dropped.
#[derive(Debug)]
#[must_use = "a permit is released when dropped"]
pub struct Permit<'a> {
    pool: &'a Pool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.pool.release();
    }
}

/// A place in the queue.
#[derive(Debug)]
#[must_use = "a place in the queue is given up when dropped"]
pub struct Wait<'a> {
    pool: &'a Pool,
    ticket: u64,
    granted: oneshot::Receiver<()>,
    /// The wait ended (a permit, or the pool closed): nothing to give up on drop.
    settled: bool,
}

impl<'a> Wait<'a> {
    /// Waits for a permit, in FIFO order; `None` if the pool closed first. Dropping the
    /// future gives the place up (or passes on a permit granted meanwhile).
    pub async fn permit(mut self) -> Option<Permit<'a>> {
        let granted = (&mut self.granted).await.is_ok();
        self.settled = true;
        // Built only when granted: a Permit releases on drop.
        if granted {
            Some(Permit { pool: self.pool })
        } else {
            None
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut waiters = self.pool.lock();
        match self.granted.try_recv() {
            // Granted just now: the permit is ours to pass on.
            Ok(()) => {
                drop(waiters);
                drop(Permit { pool: self.pool });
            }
            Err(oneshot::error::TryRecvError::Empty) => {
                if let Some(at) = waiters.iter().position(|w| w.ticket == self.ticket) {
                    waiters.remove(at);
                    self.pool.state.fetch_sub(WAITING, Ordering::AcqRel);
                }
            }
            // The pool closed and took us off the queue.
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::time::{advance, pause};

    fn now() -> Instant {
        Instant::now()
    }

    fn permit(pool: &Pool) -> Permit<'_> {
        match pool.try_enter(now()) {
            Some(Entry::Now(p)) => p,
            other => panic!("expected a permit, got {other:?}"),
        }
    }

    fn wait(pool: &Pool) -> Wait<'_> {
        match pool.try_enter(now()) {
            Some(Entry::Wait(w)) => w,
            other => panic!("expected a place in the queue, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn admits_workers_plus_queue_exactly() {
        let pool = Pool::new(2, 3, now());
        let running = [permit(&pool), permit(&pool)];
        let waiting = [wait(&pool), wait(&pool), wait(&pool)];
        assert!(pool.try_enter(now()).is_none());
        assert_eq!((pool.busy(), pool.depth()), (2, 3));
        drop(running);
        // Each released permit went to a waiter: still full.
        assert_eq!((pool.busy(), pool.depth()), (2, 1));
        assert!(pool.try_enter(now()).is_some());
        drop(waiting);
    }

    #[tokio::test]
    async fn waiters_get_permits_in_fifo_order() {
        let pool = Pool::new(1, 3, now());
        let first = permit(&pool);
        let mut a = Box::pin(wait(&pool).permit());
        let mut b = Box::pin(wait(&pool).permit());
        let mut c = Box::pin(wait(&pool).permit());
        for w in [&mut a, &mut b, &mut c] {
            assert!(w.as_mut().now_or_never().is_none());
        }
        drop(first);
        assert!(b.as_mut().now_or_never().is_none());
        let pa = a
            .now_or_never()
            .flatten()
            .expect("the first waiter goes first");
        assert!(c.as_mut().now_or_never().is_none());
        drop(pa);
        let pb = b.now_or_never().flatten().expect("then the second");
        drop(pb);
        let pc = c.now_or_never().flatten().expect("then the third");
        assert_eq!((pool.busy(), pool.depth()), (1, 0));
        drop(pc);
        assert_eq!((pool.busy(), pool.depth()), (0, 0));
    }

    #[tokio::test]
    async fn nobody_jumps_the_queue() {
        let pool = Pool::new(1, 2, now());
        let held = permit(&pool);
        let waiting = wait(&pool);
        drop(held);
        // The permit went to the waiter, not to a newcomer.
        assert!(matches!(pool.try_enter(now()), Some(Entry::Wait(_))));
        assert_eq!(pool.busy(), 1);
        let p = waiting.permit().now_or_never().flatten().unwrap();
        drop(p);
        assert_eq!((pool.busy(), pool.depth()), (0, 0));
    }

    #[tokio::test]
    async fn giving_up_a_place_frees_it_and_passes_on_a_late_grant() {
        let pool = Pool::new(1, 2, now());
        let held = permit(&pool);
        let a = wait(&pool);
        let b = wait(&pool);
        drop(a);
        assert_eq!(pool.depth(), 1);
        // A granted permit that is never taken up goes back.
        drop(held);
        assert_eq!((pool.busy(), pool.depth()), (1, 0));
        drop(b);
        assert_eq!((pool.busy(), pool.depth()), (0, 0));
        // A waiting future dropped mid-wait.
        let held = permit(&pool);
        let mut w = Box::pin(wait(&pool).permit());
        assert!(w.as_mut().now_or_never().is_none());
        drop(w);
        assert_eq!(pool.depth(), 0);
        drop(held);
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test]
    async fn a_zero_queue_admits_only_the_workers() {
        let pool = Pool::new(1, 0, now());
        assert_eq!(pool.fill(), 0.0);
        let p = permit(&pool);
        assert_eq!(pool.fill(), 1.0);
        assert!(pool.try_enter(now()).is_none());
        drop(p);
        assert!(pool.try_enter(now()).is_some());
    }

    #[tokio::test]
    async fn closing_ends_every_wait_and_refuses_newcomers() {
        let pool = Pool::new(1, 2, now());
        let held = permit(&pool);
        let w = wait(&pool).permit();
        pool.close();
        assert!(w.await.is_none());
        assert!(pool.try_enter(now()).is_none());
        assert_eq!(pool.depth(), 0);
        drop(held);
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn a_panic_while_processing_still_releases_the_permit() {
        let pool = Pool::new(1, 0, Instant::now());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _permit = pool.try_enter(Instant::now());
            panic!("handler bug");
        }));
        assert!(result.is_err());
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn two_threads_never_overfill_and_every_permit_comes_back() {
        let pool = std::sync::Arc::new(Pool::new(3, 7, Instant::now()));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut max = 0;
                    for _ in 0..20_000 {
                        let entry = pool.try_enter(Instant::now());
                        let (busy, depth) = (pool.busy(), pool.depth());
                        assert!(busy <= 3 && depth <= 7);
                        max = max.max(busy + depth);
                        drop(entry);
                    }
                    max
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap() <= 10);
        }
        assert_eq!((pool.busy(), pool.depth()), (0, 0));
    }

    #[tokio::test]
    async fn stall_needs_waiting_requests_and_no_progress() {
        pause();
        let stall = Duration::from_secs(30);
        let pool = Pool::new(1, 2, Instant::now());
        // An idle pool is never stalled, however long it idles.
        advance(Duration::from_secs(3600)).await;
        assert!(!pool.stalled(Instant::now(), stall));

        // A request entering an empty queue starts the clock afresh.
        let held = permit(&pool);
        let waiting = wait(&pool);
        advance(Duration::from_secs(29)).await;
        assert!(!pool.stalled(Instant::now(), stall));
        advance(Duration::from_secs(1)).await;
        assert!(pool.stalled(Instant::now(), stall));

        // A finished request is progress.
        drop(held);
        assert!(!pool.stalled(Instant::now(), stall));
        drop(waiting);
    }
}
