//! A wake-up signal that costs the notifier two atomic operations when nobody
//! waits: the log head is bumped on every publish of the memory engine, and a
//! `tokio::sync::watch` (eight mutexes per send) showed up in its profile.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A version counter with waiters.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    version: AtomicU64,
    waiting: AtomicUsize,
    notify: Notify,
}

impl Signal {
    /// Something changed: wakes whoever waits.
    pub(crate) fn bump(&self) {
        // SeqCst on both sides: either the waiter sees the new version after
        // registering, or this load sees the waiter and notifies it.
        self.version.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// The current version, to pass to [`Signal::changed_since`] later.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Returns once the version differs from `seen`.
    pub(crate) async fn changed_since(&self, seen: u64) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.version.load(Ordering::SeqCst) != seen {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_wakes_on_every_bump_and_never_misses_one() {
        let signal = Arc::new(Signal::default());
        for _ in 0..2000 {
            let seen = signal.version();
            let waiter = tokio::spawn({
                let signal = signal.clone();
                async move { signal.changed_since(seen).await }
            });
            signal.bump();
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("a bump was missed")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_changed_version_returns_at_once() {
        let signal = Signal::default();
        let seen = signal.version();
        signal.bump();
        tokio::time::timeout(Duration::from_millis(100), signal.changed_since(seen))
            .await
            .unwrap();
    }
}
