//! The dedup window for engines without one of their own (memory, embedded):
//! ids (and content keys) seen within the window are refused a second time.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::event::Event;

/// The default dedup window: 5 minutes.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// The default bound on the keys a window holds: a million (about 100 MB).
pub const DEFAULT_DEDUP_MAX_KEYS: usize = 1_000_000;

/// Keys seen within a sliding time window, with memory proportional to the keys
/// in the window (expired keys are dropped as new ones arrive) and bounded:
/// past `max_keys` the oldest keys are forgotten early, and counted, so a burst
/// can shorten the window but never exhaust memory.
#[derive(Debug)]
pub struct DedupWindow<K> {
    window_ms: i64,
    max_keys: usize,
    /// Each key with the number of its insertion, so that an expiring entry of
    /// `order` forgets its key only if the key was not removed and inserted again.
    ///
    /// Hashed with foldhash, seeded at random per window: the table is probed
    /// on every publish, and SipHash (the standard hasher) took a fifth of
    /// the window's time in the memory engine's profile; the random seed still
    /// keeps publishers from choosing ids that collide.
    seen: HashMap<K, u64, foldhash::fast::RandomState>,
    /// (inserted at, insertion number, key), oldest first.
    order: VecDeque<(i64, u64, K)>,
    insertions: u64,
    forgotten_early: u64,
}

impl<K: Hash + Eq + Clone> DedupWindow<K> {
    /// An empty window of `window` length holding at most [`DEFAULT_DEDUP_MAX_KEYS`].
    pub fn new(window: Duration) -> Self {
        Self::with_max_keys(window, DEFAULT_DEDUP_MAX_KEYS)
    }

    /// An empty window of `window` length holding at most `max_keys` keys.
    pub fn with_max_keys(window: Duration, max_keys: usize) -> Self {
        DedupWindow {
            window_ms: window.as_millis() as i64,
            max_keys: max_keys.max(1),
            seen: HashMap::default(),
            order: VecDeque::new(),
            insertions: 0,
            forgotten_early: 0,
        }
    }

    /// Keys forgotten before their time because the window was full.
    pub fn forgotten_early(&self) -> u64 {
        self.forgotten_early
    }

    /// Forgets keys older than the window, relative to `now_ms` (Unix ms).
    pub fn expire(&mut self, now_ms: i64) {
        while let Some((t, _, _)) = self.order.front() {
            if now_ms - *t < self.window_ms {
                break;
            }
            if let Some((_, n, k)) = self.order.pop_front() {
                self.forget(k, n);
            }
        }
    }

    /// Whether `key` was seen within the window.
    pub fn contains(&self, key: &K) -> bool {
        self.seen.contains_key(key)
    }

    fn forget(&mut self, key: K, insertion: u64) {
        // One probe: the oldest keys are far from the cache, each lookup a miss.
        if let Entry::Occupied(e) = self.seen.entry(key)
            && *e.get() == insertion
        {
            e.remove();
        }
    }

    /// Records `key` as seen at `at_ms`; false if it was already in the window.
    pub fn insert(&mut self, key: K, at_ms: i64) -> bool {
        if self.window_ms <= 0 {
            return true;
        }
        // One probe for the lookup and the insert.
        match self.seen.entry(key.clone()) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(v) => {
                v.insert(self.insertions + 1);
            }
        }
        self.insertions += 1;
        self.order.push_back((at_ms, self.insertions, key));
        while self.order.len() > self.max_keys {
            if let Some((_, n, old)) = self.order.pop_front() {
                self.forget(old, n);
                if self.forgotten_early == 0 {
                    tracing::warn!(
                        max_keys = self.max_keys,
                        "the dedup window is full; the oldest ids are forgotten early \
                         (raise dedup_max_keys or shorten dedup_window)"
                    );
                }
                self.forgotten_early += 1;
            }
        }
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

/// What an event is deduplicated on, within a scope (a tenant): one tenant can
/// never suppress another's events by reusing their ids.
///
/// A canonical UUID id (the default, lowercase and hyphenated) is kept as its
/// 128 bits, exactly. Any other id is kept as a 128-bit hash rather than the
/// string, so a five-minute window at a million events a second fits in memory
/// without an allocation per event; two distinct such ids of one tenant collide
/// with a probability of about n²/2¹²⁹.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DedupKey {
    Uuid(u64, u128),
    IdHash(u64, u128),
    Content(u64, [u8; 32]),
}

impl DedupKey {
    /// The key of an event id in `scope`.
    pub(crate) fn id(scope: u64, id: &str) -> Self {
        let canonical = id.len() == 36 && !id.bytes().any(|b| b.is_ascii_uppercase());
        if canonical && let Ok(uuid) = uuid::Uuid::try_parse(id) {
            return DedupKey::Uuid(scope, uuid.as_u128());
        }
        let half = |salt: u8| {
            let mut h = DefaultHasher::new();
            salt.hash(&mut h);
            id.hash(&mut h);
            h.finish()
        };
        DedupKey::IdHash(scope, (u128::from(half(0)) << 64) | u128::from(half(1)))
    }

    /// The key of a content hash ([`content_key`]) in `scope`.
    pub(crate) fn content(scope: u64, key: [u8; 32]) -> Self {
        DedupKey::Content(scope, key)
    }
}

/// The keys are random-looking already: hashing one word of them is enough for
/// the window's table, and much cheaper than all of it.
impl Hash for DedupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let word = match self {
            DedupKey::Uuid(t, k) | DedupKey::IdHash(t, k) => (*k as u64) ^ ((*k >> 64) as u64) ^ *t,
            DedupKey::Content(t, k) => {
                u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]) ^ *t
            }
        };
        state.write_u64(word);
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
    fn a_full_window_forgets_its_oldest_keys_and_counts_them() {
        let mut w = DedupWindow::with_max_keys(Duration::from_secs(60), 2);
        assert!(w.insert(1, 0));
        assert!(w.insert(2, 1));
        assert!(w.insert(3, 2));
        assert_eq!(w.len(), 2);
        assert!(!w.contains(&1));
        assert!(w.contains(&3));
        assert_eq!(w.forgotten_early(), 1);
    }

    #[test]
    fn a_key_removed_and_inserted_again_lives_its_full_window() {
        let mut w = DedupWindow::new(Duration::from_secs(1));
        assert!(w.insert("a", 0));
        w.remove(&"a");
        assert!(w.insert("a", 900));
        w.expire(1000);
        assert!(w.contains(&"a"));
        w.expire(1900);
        assert!(!w.contains(&"a"));
    }

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
