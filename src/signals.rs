//! Cancellation. GitLab Runner sends SIGTERM to the driver's process group when a job is
//! cancelled or times out (then SIGKILL after `graceful_kill_timeout`). Both SIGTERM and SIGINT
//! cancel one token that every stage selects on.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Starts listening for SIGTERM and SIGINT; the token is cancelled on the first of them.
/// Must be called inside the Tokio runtime.
pub(crate) fn cancel_on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        t.cancel();
    });
    Ok(token)
}
