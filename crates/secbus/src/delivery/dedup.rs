//! The dedup window for engines without one of their own (memory, embedded):
//! ids (and content keys) seen within the window are refused a second time.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::event::Event;

/// The default dedup window: 5 minutes.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// Keys seen within a sliding time window, with memory proportional to the keys
/// in the window (expired keys are dropped as new ones arrive).
#[derive(Debug)]
pub struct DedupWindow<K> {
    window_ms: i64,
    seen: HashSet<K>,
    order: VecDeque<(i64, K)>,
}

impl<K: Hash + Eq + Clone> DedupWindow<K> {
    /// An empty window of `window` length.
    pub fn new(window: Duration) -> Self {
        DedupWindow {
            window_ms: window.as_millis() as i64,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Forgets keys older than the window, relative to `now_ms` (Unix ms).
    pub fn expire(&mut self, now_ms: i64) {
        while let Some((t, _)) = self.order.front() {
            if now_ms - *t < self.window_ms {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }

    /// Whether `key` was seen within the window.
    pub fn contains(&self, key: &K) -> bool {
        self.seen.contains(key)
    }

    /// Records `key` as seen at `at_ms`; false if it was already in the window.
    pub fn insert(&mut self, key: K, at_ms: i64) -> bool {
        if self.window_ms <= 0 || !self.seen.insert(key.clone()) {
            return self.window_ms <= 0;
        }
        self.order.push_back((at_ms, key));
        true
    }

    /// Forgets `key` (used when a batch holding it is rolled back).
    pub fn remove(&mut self, key: &K) {
        self.seen.remove(key);
    }

    /// How many keys the window holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// SHA-256 over the canonical (type, tenant, subject, data) of an event: two
/// events with equal keys say the same thing, whatever their ids and times.
pub fn content_key(event: &Event) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(event.ty.as_str());
    h.update([0]);
    h.update(event.tenant.as_str());
    h.update([0]);
    h.update(event.subject.as_deref().unwrap_or(""));
    h.update([0]);
    // Parsing and re-encoding sorts object keys and drops insignificant
    // whitespace, so equal data hashes equal however it was written.
    if let Some(data) = event.data() {
        h.update(serde_json::to_vec(&data).unwrap_or_default());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_after_the_window() {
        let mut w = DedupWindow::new(Duration::from_secs(1));
        assert!(w.insert("a", 0));
        assert!(!w.insert("a", 500));
        w.expire(999);
        assert!(w.contains(&"a"));
        w.expire(1000);
        assert!(!w.contains(&"a"));
        assert!(w.insert("a", 1000));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn content_key_ignores_key_order_and_whitespace() {
        let t = crate::TenantId::new("t").unwrap();
        let ty = crate::EventType::new("a.b").unwrap();
        let a = Event::from_json(
            br#"{"specversion":"1.0","id":"1","source":"s","type":"a.b","tenantid":"t","data":{"x":1, "y":2}}"#,
        )
        .unwrap();
        let b = Event::builder(ty.clone(), t.clone())
            .data(serde_json::json!({"y":2,"x":1}))
            .build()
            .unwrap();
        let c = Event::builder(ty, t)
            .data(serde_json::json!({"y":3,"x":1}))
            .build()
            .unwrap();
        assert_eq!(content_key(&a), content_key(&b));
        assert_ne!(content_key(&a), content_key(&c));
    }
}
