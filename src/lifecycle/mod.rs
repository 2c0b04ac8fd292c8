//! The server's lifecycle: one phase, published once, that every part reads.
//!
//! `Running` → `Stopping` (a stop signal: readiness fails, the listener stays open for
//! `TCPIE_SHUTDOWN_DELAY_MS`) → `Draining` (the listener is closed; idle kept-alive
//! connections close; accepted requests are still served) → `HardStop` (the drain
//! deadline passed: whatever is left is answered 503).
//!
//! The request path reads the phase with one atomic load. A connection registers to be
//! woken by a change only when it actually waits (a future that is not ready on its
//! first poll), so a request served without waiting never touches a waiter list; and the
//! waiter lists are sharded by connection, so no lock is shared by all connections.
//!
//! Also here: the signals that start a stop ([`signals`]) and the stop sequence itself
//! ([`stop`]), which moves the phases on. What each phase means to a connection is the
//! server's.

pub mod signals;
pub(crate) mod stop;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use futures_util::future::OptionFuture;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant, Sleep};

/// How a wait under the lifecycle ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<T> {
    /// What was waited for came first.
    Done(T),
    /// The deadline passed first.
    TimedOut,
    /// The phase was reached first.
    Stopped,
}

/// Where the server is in its life; phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running = 0,
    Stopping = 1,
    Draining = 2,
    HardStop = 3,
}

/// Waiter lists, so that connections waiting at once rarely share one.
const SHARDS: usize = 16;

/// The phase, and the means to wait for the next one.
#[derive(Debug, Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    changed: [Notify; SHARDS],
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle::default()
    }

    fn shard(&self, key: u64) -> &Notify {
        &self.changed[key as usize % SHARDS]
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Running,
            1 => Phase::Stopping,
            2 => Phase::Draining,
            _ => Phase::HardStop,
        }
    }

    /// Whether `phase` has been reached.
    pub fn reached(&self, phase: Phase) -> bool {
        self.phase() >= phase
    }

    /// Moves to `phase` (never back) and wakes everyone waiting for a change.
    pub fn advance(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::SeqCst);
        for shard in &self.changed {
            shard.notify_waiters();
        }
    }

    /// Resolves once `phase` is reached.
    pub async fn until(&self, phase: Phase) {
        loop {
            let notified = self.shard(0).notified();
            if self.reached(phase) {
                return;
            }
            notified.await;
        }
    }

    /// Runs `fut` until `deadline` (if any), unless (or until) `phase` is reached.
    ///
    /// `fut` is polled first, before the deadline and without any registration: a future
    /// ready at once (a request whose bytes are already there, a handler that answers
    /// without waiting) never arms a timer nor touches a waiter list. Only a future that
    /// waits registers for phase changes, in the list `key` (a connection id) picks.
    pub fn within<F: Future>(
        &self,
        phase: Phase,
        key: u64,
        deadline: Option<Instant>,
        fut: F,
    ) -> Within<'_, F> {
        Within {
            lifecycle: self,
            phase,
            key,
            deadline,
            started: false,
            armed: false,
            fut,
            timer: None.into(),
            change: None.into(),
            listening: false,
        }
    }
}

/// A standing registration for phase changes, for a connection that waits again and
/// again (a kept-alive one, between its requests): made at its first wait and kept, so
/// that the connection does not join and leave a waiter list for every request.
pub struct Watch<'a> {
    lifecycle: &'a Lifecycle,
    key: u64,
    notified: Option<Pin<Box<Notified<'a>>>>,
}

impl<'a> Watch<'a> {
    /// A watch in the waiter list `key` (a connection id) picks, registered when first
    /// polled.
    pub fn new(lifecycle: &'a Lifecycle, key: u64) -> Watch<'a> {
        Watch {
            lifecycle,
            key,
            notified: None,
        }
    }

    /// Ready once `phase` is reached; until then, `cx` is woken by any change.
    pub fn poll_reached(&mut self, phase: Phase, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // Created before the phase is read, so that an advance in between is not
            // missed (a Notified counts the notifications made after its creation).
            let (lifecycle, key) = (self.lifecycle, self.key);
            let notified = self
                .notified
                .get_or_insert_with(|| Box::pin(lifecycle.shard(key).notified()));
            if lifecycle.reached(phase) {
                return Poll::Ready(());
            }
            match notified.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Some other phase was reached: wait for the next change.
                Poll::Ready(()) => self.notified = None,
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// What [`Lifecycle::within`] returns. A plain future rather than an `async fn`: it
    /// wraps the request path's every wait, and an `async fn` would move the wrapped
    /// future once more on its first poll and keep room for its own locals.
    pub struct Within<'a, F> {
        lifecycle: &'a Lifecycle,
        phase: Phase,
        key: u64,
        deadline: Option<Instant>,
        started: bool,
        armed: bool,
        #[pin]
        fut: F,
        // Made only once `fut` has waited: a timer is registered only when polled.
        #[pin]
        timer: OptionFuture<Sleep>,
        // Likewise the wait for a phase change, registered when first polled.
        #[pin]
        change: OptionFuture<Notified<'a>>,
        listening: bool,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Waited<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.started {
            *this.started = true;
            if this.lifecycle.reached(*this.phase) {
                return Poll::Ready(Waited::Stopped);
            }
        }
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Waited::Done(out));
        }
        if let Some(deadline) = *this.deadline {
            if !*this.armed {
                *this.armed = true;
                this.timer.set(Some(sleep_until(deadline)).into());
            }
            if let Poll::Ready(Some(())) = this.timer.as_mut().poll(cx) {
                return Poll::Ready(Waited::TimedOut);
            }
        }
        let lifecycle = *this.lifecycle;
        loop {
            // Created before the phase is read again, so that an advance in between is
            // not missed (a Notified counts the notifications made after its creation).
            if !*this.listening {
                *this.listening = true;
                this.change
                    .set(Some(lifecycle.shard(*this.key).notified()).into());
            }
            if lifecycle.reached(*this.phase) {
                return Poll::Ready(Waited::Stopped);
            }
            match this.change.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Some other phase was reached: wait for the next change.
                Poll::Ready(_) => *this.listening = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::{pause, sleep};

    #[tokio::test]
    async fn phases_only_move_forward() {
        let l = Lifecycle::new();
        assert_eq!(l.phase(), Phase::Running);
        l.advance(Phase::Draining);
        l.advance(Phase::Stopping);
        assert_eq!(l.phase(), Phase::Draining);
        assert!(l.reached(Phase::Stopping) && !l.reached(Phase::HardStop));
    }

    #[tokio::test]
    async fn a_ready_future_runs_and_a_waiting_one_is_cut_short() {
        pause();
        let l = Arc::new(Lifecycle::new());
        let done = l.within(Phase::HardStop, 1, None, async { 7 }).await;
        assert_eq!(done, Waited::Done(7));
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move {
                l.within(Phase::HardStop, 5, None, sleep(Duration::from_secs(3600)))
                    .await
            })
        };
        sleep(Duration::from_millis(10)).await;
        // An earlier phase does not end it.
        l.advance(Phase::Draining);
        sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        l.advance(Phase::HardStop);
        assert_eq!(waiter.await.unwrap(), Waited::Stopped);
        // Once reached, nothing runs.
        let done = l.within(Phase::HardStop, 1, None, async { 7 }).await;
        assert_eq!(done, Waited::Stopped);
    }

    #[tokio::test]
    async fn within_says_what_came_first() {
        pause();
        let l = Lifecycle::new();
        let soon = Some(Instant::now() + Duration::from_secs(1));
        assert_eq!(
            l.within(Phase::HardStop, 1, soon, async { 7 }).await,
            Waited::Done(7)
        );
        let slow = sleep(Duration::from_secs(5));
        assert_eq!(
            l.within(Phase::HardStop, 1, soon, slow).await,
            Waited::TimedOut
        );
        l.advance(Phase::HardStop);
        assert_eq!(
            l.within(Phase::HardStop, 1, None, async { 7 }).await,
            Waited::Stopped
        );
    }

    #[tokio::test]
    async fn until_returns_once_reached() {
        pause();
        let l = Arc::new(Lifecycle::new());
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.until(Phase::Draining).await })
        };
        l.advance(Phase::Stopping);
        sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        l.advance(Phase::Draining);
        waiter.await.unwrap();
        l.until(Phase::Stopping).await;
    }
}
