//! Requests that make something on the engine (a container, volume or network) land even
//! when a cancel drops the code that sent them.
//!
//! Dropping such a request half-way does not stop the engine: it may finish the create after
//! the driver has gone and after the runner's cleanup has looked, and the object stays (the
//! soak saw `Created` helper and guard containers, and builds volumes, of cancelled
//! prepares). So each runs as a task of its own, and a cancelled stage waits for them
//! ([`settle`], bounded) before it ends: cleanup then finds everything there is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Requests sent and not yet answered.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts a request as in flight for as long as it lives.
struct Counted;

impl Counted {
    fn new() -> Counted {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends `request` as a task that finishes even if the caller is dropped, and returns its
/// answer.
pub(crate) async fn land<T, F>(request: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let counted = Counted::new();
    let task = tokio::spawn(async move {
        let _counted = counted;
        request.await
    });
    match task.await {
        Ok(answer) => answer,
        // The task is never aborted; a panic in it is the caller's.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Waits until every request sent through [`land`] has its answer, or `limit` has passed.
pub(crate) async fn settle(limit: Duration) {
    let deadline = Instant::now() + limit;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One test, as the count is the process's: a request whose caller gave up is waited
    /// for, and one that never answers is waited for no longer than the limit.
    #[test]
    fn a_dropped_callers_request_finishes_and_settle_waits_for_it_within_a_limit() {
        runtime().block_on(async {
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = done.clone();
            let caller = land(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                flag.store(true, Ordering::SeqCst);
            });
            // The caller gives up at once, as a cancelled stage does.
            assert!(
                tokio::time::timeout(Duration::from_millis(1), caller)
                    .await
                    .is_err()
            );
            settle(Duration::from_secs(5)).await;
            assert!(done.load(Ordering::SeqCst), "the request finished");

            let never = land(std::future::pending::<()>());
            assert!(
                tokio::time::timeout(Duration::from_millis(1), never)
                    .await
                    .is_err()
            );
            let start = Instant::now();
            settle(Duration::from_millis(30)).await;
            assert!(start.elapsed() >= Duration::from_millis(30));
            assert!(start.elapsed() < Duration::from_secs(2));
        });
    }
}
