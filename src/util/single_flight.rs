//! One fetch from Logto shared by every request that needs it while it runs.
//!
//! The fetch runs as a task of its own: no lock is held while it waits on the network, so
//! requests that do not need it never queue behind it, and a request that gives up (its
//! client went away) does not cancel it for the others.

use std::future::Future;

use tokio::sync::watch;

/// A running or finished fetch. Clones watch the same fetch.
pub(crate) struct Flight<T>(watch::Receiver<Option<T>>);

impl<T> Clone for Flight<T> {
    fn clone(&self) -> Self {
        Flight(self.0.clone())
    }
}

impl<T: Clone + Send + Sync + 'static> Flight<T> {
    /// Starts `fetch` as a task of the current runtime.
    pub fn start(fetch: impl Future<Output = T> + Send + 'static) -> Flight<T> {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let _ = tx.send(Some(fetch.await));
        });
        Flight(rx)
    }

    /// Whether it has not finished yet. A task that ended without a result (it panicked,
    /// or the runtime is shutting down) has finished too: nobody must wait for it.
    pub fn is_running(&self) -> bool {
        self.0.borrow().is_none() && self.0.has_changed().is_ok()
    }

    /// Its result, once it is there; `None` if the task ended without one.
    pub async fn wait(&self) -> Option<T> {
        let mut rx = self.0.clone();
        let result = rx.wait_for(Option::is_some).await.ok()?.clone();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_share_one_run_and_a_cancelled_waiter_cancels_nothing() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let flight = {
            let runs = runs.clone();
            Flight::start(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                released.await.ok();
                42
            })
        };
        assert!(flight.is_running());
        // A waiter that gives up does not stop the fetch for the others.
        let impatient = flight.clone();
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(1), impatient.wait()).await;
        assert!(gave_up.is_err());
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let f = flight.clone();
                tokio::spawn(async move { f.wait().await })
            })
            .collect();
        release.send(()).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap(), Some(42));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!flight.is_running());
        assert_eq!(
            flight.wait().await,
            Some(42),
            "a late caller gets the result"
        );
    }

    #[tokio::test]
    async fn a_task_that_ends_without_a_result_is_not_waited_for() {
        let flight: Flight<u8> = Flight::start(async { panic!("fetch failed hard") });
        assert_eq!(flight.wait().await, None);
        assert!(!flight.is_running());
    }
}
