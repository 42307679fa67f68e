//! Throttling: after an alert of a rule and key, more within the window are
//! suppressed and counted; the next one sent carries the count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Keys remembered at most; past it, expired windows are dropped first.
const MAX_KEYS: usize = 100_000;

/// What to do with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Send it; this many of its rule and key were suppressed since the last one sent.
    Send(u64),
    /// Within the window of the last one sent: counted, not sent.
    Suppressed,
}

#[derive(Debug)]
struct Window {
    until: Instant,
    suppressed: u64,
}

/// The windows of every rule and key.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    windows: Mutex<HashMap<String, Window>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// Decides for an alert of `key` (rule, tenant and throttle value together).
    pub(crate) fn admit(&self, key: String, window: Duration) -> Admit {
        if window.is_zero() {
            return Admit::Send(0);
        }
        let now = Instant::now();
        let mut windows = self.windows.lock();
        if let Some(w) = windows.get_mut(&key)
            && now < w.until
        {
            w.suppressed += 1;
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return Admit::Suppressed;
        }
        if windows.len() >= MAX_KEYS && !windows.contains_key(&key) {
            windows.retain(|_, w| w.until > now);
            if windows.len() >= MAX_KEYS {
                tracing::warn!(
                    keys = windows.len(),
                    "alert throttling holds too many keys; forgetting them all"
                );
                windows.clear();
            }
        }
        let carried = windows.get(&key).map_or(0, |w| w.suppressed);
        windows.insert(
            key,
            Window {
                until: now + window,
                suppressed: 0,
            },
        );
        Admit::Send(carried)
    }

    /// Alerts suppressed so far, over every rule.
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn suppressed_alerts_are_counted_into_the_next_one_sent() {
        let t = Throttle::default();
        let w = Duration::from_secs(60);
        assert_eq!(t.admit("r/acme/bob".into(), w), Admit::Send(0));
        assert_eq!(t.admit("r/acme/bob".into(), w), Admit::Suppressed);
        assert_eq!(t.admit("r/acme/bob".into(), w), Admit::Suppressed);
        assert_eq!(t.admit("r/acme/eve".into(), w), Admit::Send(0));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.admit("r/acme/bob".into(), w), Admit::Send(2));
        assert_eq!(t.admit("r/acme/bob".into(), w), Admit::Suppressed);
        assert_eq!(t.suppressed(), 3);
        assert_eq!(t.admit("x".into(), Duration::ZERO), Admit::Send(0));
    }
}
