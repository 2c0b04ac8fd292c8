//! Stop signals: the first SIGTERM or SIGINT starts a graceful shutdown, a second one
//! exits at once.
//!
//! This module only turns signals into a future; what a graceful shutdown does is the
//! stop sequence (`lifecycle::stop`).

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// Exit code when a second signal cuts the drain short (128 + SIGTERM's number).
pub const FORCED_EXIT_CODE: i32 = 143;

/// Installs the handlers; the returned future resolves at the first signal.
///
/// After that, another SIGTERM or SIGINT ends the process immediately with
/// [`FORCED_EXIT_CODE`]: an operator who asks twice means it.
pub fn install() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (first_tx, first_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stop signal received; a second one exits at once"
        );
        let _ = first_tx.send(());
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = name,
            "second stop signal: exiting now without draining"
        );
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(async move {
        let _ = first_rx.await;
    })
}
