//! The stop sequence, once a stop signal came: readiness fails at once; after
//! `TCPIE_SHUTDOWN_DELAY_MS` the listener closes; every request already accepted is read,
//! processed and answered within `TCPIE_SHUTDOWN_TIMEOUT_MS`; past it, what is left is
//! answered 503 (`shutting_down`) within the write deadline. Then the admin server stops,
//! and the final counters are logged, so that every accepted connection can be accounted
//! for even after the last scrape.

use std::fmt;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Lifecycle, Phase};
use crate::config::Config;
use crate::metrics::{Metrics, Outcome};

/// What runs while the server serves, for the sequence to stop.
pub(crate) struct Running {
    /// The accept loop; it returns once the listener is closed.
    pub accept: JoinHandle<()>,
    /// Every connection's task.
    pub connections: TaskTracker,
    /// The admin server, and what stops it.
    pub admin: JoinHandle<std::io::Result<()>>,
    pub admin_stop: CancellationToken,
}

/// What the sequence moves and reads: the phase, the deadlines, the final counters, and
/// how to close the worker pool at the hard stop (so that nothing waits for a permit).
pub(crate) struct Server<'a, F: FnOnce()> {
    pub lifecycle: &'a Lifecycle,
    pub config: &'a Config,
    pub metrics: &'a Metrics,
    pub close_pool: F,
}

/// Stops what `running` serves, in the order above.
pub(crate) async fn stop<F: FnOnce()>(server: Server<'_, F>, running: Running) {
    let Server {
        lifecycle,
        config,
        metrics,
        close_pool,
    } = server;
    lifecycle.advance(Phase::Stopping);
    let delay = config.shutdown_delay();
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "shutdown: stop signal received, readiness now fails"
    );
    if !delay.is_zero() {
        sleep(delay).await;
    }

    lifecycle.advance(Phase::Draining);
    let _ = running.accept.await;
    let connections = running.connections;
    connections.close();
    let drain = config.shutdown_timeout();
    tracing::info!(
        open = connections.len(),
        drain_timeout_ms = drain.as_millis() as u64,
        "shutdown: listener closed, draining accepted requests"
    );
    // Answers still being written after the hard stop get their write deadline, no more.
    let grace = config.write_timeout() + Duration::from_millis(100);
    if timeout(drain, connections.wait()).await.is_err() {
        tracing::warn!(
            left = connections.len(),
            "shutdown: drain deadline passed, answering what is left with 503"
        );
        lifecycle.advance(Phase::HardStop);
        close_pool();
        if timeout(grace, connections.wait()).await.is_err() {
            tracing::warn!(
                left = connections.len(),
                "shutdown: abandoning unanswered connections"
            );
        }
    }
    lifecycle.advance(Phase::HardStop);
    tracing::info!("shutdown: requests drained, workers stopped");
    running.admin_stop.cancel();
    match running.admin.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "admin server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "admin server task failed"),
    }
    let m = metrics;
    tracing::info!(
        accepted = m.connections_accepted.get(),
        requests = Outcome::ALL.iter().map(|o| m.requests(*o)).sum::<u64>(),
        closed_before_request = m.connections_closed_before_request.get(),
        "shutdown: complete {}",
        Outcomes(m)
    );
}

/// Every outcome's count, `name=count`, from the one list of outcomes: a new outcome
/// cannot be left out of the final counters.
struct Outcomes<'a>(&'a Metrics);

impl fmt::Display for Outcomes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", outcome.as_str(), self.0.requests(*outcome))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_counters_name_every_outcome() {
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        metrics.record(Outcome::ClientRateLimited);
        let text = Outcomes(&metrics).to_string();
        for outcome in Outcome::ALL {
            let expected = u64::from(outcome == Outcome::ClientRateLimited);
            assert!(
                text.split(' ')
                    .any(|f| f == format!("{}={expected}", outcome.as_str())),
                "{outcome:?} in {text}"
            );
        }
        assert_eq!(text.split(' ').count(), Outcome::ALL.len());
    }
}
