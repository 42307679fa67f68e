//! The dedup window for engines without one of their own (memory, embedded):
//! ids (and content keys) seen within the window are refused a second time.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::event::Event;

/// The default dedup window: 5 minutes.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// The default bound on the keys a window holds: a million.
pub const DEFAULT_DEDUP_MAX_KEYS: usize = 1_000_000;

/// Keys seen within a sliding time window, with memory proportional to the keys
/// in the window and bounded: past `max_keys` the oldest keys are forgotten
/// early, and counted, so a burst can shorten the window but never exhaust memory.
///
/// Keys live in two generations. New keys go into the current one; when it
/// holds half of `max_keys`, or its first key is a window old, the previous
/// generation is dropped whole and the current one takes its place. A key
/// therefore counts as seen for exactly the window (each key keeps its time,
/// and an expired one is treated as absent), and is gone from memory at most
/// a window later. When a burst fills the window, the most recent
/// `max_keys / 2` keys at least are still remembered.
///
/// The generations replace a queue of every key in insertion order, whose
/// oldest key was looked up again to forget it: that second probe of a table
/// far from the cache was a sixth of a publish on the memory engine.
#[derive(Debug)]
pub struct DedupWindow<K> {
    window_ms: i64,
    /// Keys per generation: half of `max_keys`.
    generation_keys: usize,
    current: Generation<K>,
    previous: Option<Generation<K>>,
    /// The latest time seen by `expire` or `insert`: what "within the window" is relative to.
    now_ms: i64,
    forgotten_early: u64,
}

/// Keys with the time each was inserted at.
#[derive(Debug)]
struct Generation<K> {
    /// Hashed with foldhash, seeded at random per table: the table is probed
    /// on every publish, and SipHash (the standard hasher) took a fifth of
    /// the window's time in the memory engine's profile; the random seed still
    /// keeps publishers from choosing ids that collide.
    keys: HashMap<K, i64, foldhash::fast::RandomState>,
    first_ms: i64,
    last_ms: i64,
}

impl<K> Generation<K> {
    fn new() -> Self {
        Generation {
            keys: HashMap::default(),
            first_ms: i64::MAX,
            last_ms: i64::MIN,
        }
    }
}

impl<K: Hash + Eq + Clone> DedupWindow<K> {
    /// An empty window of `window` length holding at most [`DEFAULT_DEDUP_MAX_KEYS`].
    pub fn new(window: Duration) -> Self {
        Self::with_max_keys(window, DEFAULT_DEDUP_MAX_KEYS)
    }

    /// An empty window of `window` length holding at most `max_keys` keys
    /// (at least 2: one per generation).
    pub fn with_max_keys(window: Duration, max_keys: usize) -> Self {
        DedupWindow {
            window_ms: window.as_millis().try_into().unwrap_or(i64::MAX),
            generation_keys: (max_keys / 2).max(1),
            current: Generation::new(),
            previous: None,
            now_ms: i64::MIN,
            forgotten_early: 0,
        }
    }

    /// Keys forgotten before their time because the window was full.
    pub fn forgotten_early(&self) -> u64 {
        self.forgotten_early
    }

    fn live(&self, at_ms: i64) -> bool {
        self.now_ms.saturating_sub(at_ms) < self.window_ms
    }

    /// Forgets keys older than the window, relative to `now_ms` (Unix ms).
    pub fn expire(&mut self, now_ms: i64) {
        self.now_ms = self.now_ms.max(now_ms);
        if self
            .previous
            .as_ref()
            .is_some_and(|g| !self.live(g.last_ms))
        {
            self.previous = None;
        }
        if !self.current.keys.is_empty() && !self.live(self.current.last_ms) {
            self.current = Generation::new();
        }
    }

    /// Whether `key` was seen within the window.
    pub fn contains(&self, key: &K) -> bool {
        let live = |g: &Generation<K>| g.keys.get(key).is_some_and(|&at| self.live(at));
        live(&self.current) || self.previous.as_ref().is_some_and(live)
    }

    /// Starts a new generation when the current one is full or a window old.
    fn rotate_if_due(&mut self) {
        let current = &self.current;
        let full = current.keys.len() >= self.generation_keys;
        let old = !current.keys.is_empty() && !self.live(current.first_ms);
        if !full && !old {
            return;
        }
        let recycled = match self.previous.take() {
            Some(mut dropped) => {
                let early = self.live_keys(&dropped);
                if early > 0 {
                    if self.forgotten_early == 0 {
                        tracing::warn!(
                            max_keys = self.generation_keys * 2,
                            "the dedup window is full; the oldest ids are forgotten early \
                             (raise dedup_max_keys or shorten dedup_window)"
                        );
                    }
                    self.forgotten_early += early;
                }
                // Kept for its capacity: a window at a steady rate refills a
                // table of the same size, without growing one page by page.
                dropped.keys.clear();
                dropped.first_ms = i64::MAX;
                dropped.last_ms = i64::MIN;
                dropped
            }
            None => Generation::new(),
        };
        self.previous = Some(std::mem::replace(&mut self.current, recycled));
    }

    /// How many keys of `g` are still within the window.
    fn live_keys(&self, g: &Generation<K>) -> u64 {
        if !self.live(g.last_ms) {
            0
        } else if self.live(g.first_ms) {
            g.keys.len() as u64
        } else {
            g.keys.values().filter(|&&at| self.live(at)).count() as u64
        }
    }

    /// Records `key` as seen at `at_ms`; false if it was already in the window.
    pub fn insert(&mut self, key: K, at_ms: i64) -> bool {
        if self.window_ms <= 0 {
            return true;
        }
        self.now_ms = self.now_ms.max(at_ms);
        self.rotate_if_due();
        let (now_ms, window_ms) = (self.now_ms, self.window_ms);
        let live = |at: i64| now_ms.saturating_sub(at) < window_ms;
        if let Some(previous) = &self.previous
            && previous.keys.get(&key).is_some_and(|&at| live(at))
        {
            return false;
        }
        let g = &mut self.current;
        // One probe for the lookup and the insert.
        match g.keys.entry(key) {
            Entry::Occupied(mut e) => {
                if live(*e.get()) {
                    return false;
                }
                e.insert(at_ms);
            }
            Entry::Vacant(v) => {
                v.insert(at_ms);
            }
        }
        g.first_ms = g.first_ms.min(at_ms);
        g.last_ms = g.last_ms.max(at_ms);
        true
    }

    /// Forgets `key` (used when a batch holding it is rolled back).
    pub fn remove(&mut self, key: &K) {
        self.current.keys.remove(key);
        if let Some(previous) = &mut self.previous {
            previous.keys.remove(key);
        }
    }

    /// How many keys the window holds in memory (expired ones included until
    /// their generation goes).
    pub fn len(&self) -> usize {
        self.current.keys.len() + self.previous.as_ref().map_or(0, |g| g.keys.len())
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an event is deduplicated on, within a scope (a tenant): one tenant can
/// never suppress another's events by reusing their ids.
///
/// 24 bytes, so that a million keys fit in a few dozen megabytes: a canonical
/// UUID id (the default, lowercase and hyphenated) is kept as its 128 bits,
/// exactly. Any other id, and a content key, is kept as 128 bits of a hash
/// rather than the string or the whole SHA-256, so a five-minute window at a
/// million events a second fits in memory without an allocation per event;
/// two distinct such keys of one tenant collide with a probability of about
/// n²/2¹²⁹.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DedupKey {
    /// The scope shifted left by two, the kind in the two low bits. Scopes
    /// are tenants' row numbers, far below 2⁶².
    tag: u64,
    bits: [u64; 2],
}

const UUID: u64 = 0;
const ID_HASH: u64 = 1;
const CONTENT: u64 = 2;

impl DedupKey {
    fn new(scope: u64, kind: u64, bits: u128) -> Self {
        DedupKey {
            tag: (scope << 2) | kind,
            bits: [(bits >> 64) as u64, bits as u64],
        }
    }

    /// The key of an event id in `scope`.
    pub(crate) fn id(scope: u64, id: &str) -> Self {
        let canonical = id.len() == 36 && !id.bytes().any(|b| b.is_ascii_uppercase());
        if canonical && let Ok(uuid) = uuid::Uuid::try_parse(id) {
            return DedupKey::new(scope, UUID, uuid.as_u128());
        }
        let half = |salt: u8| {
            let mut h = DefaultHasher::new();
            salt.hash(&mut h);
            id.hash(&mut h);
            h.finish()
        };
        DedupKey::new(
            scope,
            ID_HASH,
            (u128::from(half(0)) << 64) | u128::from(half(1)),
        )
    }

    /// The key of a content hash ([`content_key`]) in `scope`: its first 128 bits.
    pub(crate) fn content(scope: u64, key: [u8; 32]) -> Self {
        let mut first = [0; 16];
        first.copy_from_slice(&key[..16]);
        DedupKey::new(scope, CONTENT, u128::from_be_bytes(first))
    }
}

/// The keys are random-looking already: hashing one word of them is enough for
/// the window's table, and much cheaper than all of it.
impl Hash for DedupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.bits[0] ^ self.bits[1] ^ self.tag);
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
    fn a_burst_past_the_bound_keeps_at_least_the_newest_half() {
        let mut w = DedupWindow::with_max_keys(Duration::from_secs(60), 1000);
        for k in 0..10_000u32 {
            assert!(w.insert(k, 0), "{k} is new");
        }
        assert!(w.len() <= 1000, "{} keys held", w.len());
        for k in 9_500..10_000 {
            assert!(w.contains(&k), "{k} is among the newest half");
            assert!(!w.insert(k, 1));
        }
        assert!(!w.contains(&0));
        assert_eq!(w.forgotten_early() as usize, 10_000 - w.len());
    }

    #[test]
    fn generations_go_once_every_key_in_them_is_a_window_old() {
        let mut w = DedupWindow::new(Duration::from_secs(1));
        for k in 0..100u32 {
            w.insert(k, i64::from(k));
        }
        // A key a window after the first starts the next generation.
        w.insert(1000, 1000);
        assert_eq!(w.len(), 101);
        assert!(!w.contains(&0), "0 was seen a window ago");
        assert!(w.contains(&99));
        w.expire(1099);
        assert!(w.contains(&1000));
        assert_eq!(w.len(), 1, "the first generation is gone");
        w.expire(2000);
        assert!(w.is_empty());
        assert_eq!(w.forgotten_early(), 0);
        assert!(w.insert(0, 2000));
    }

    #[test]
    fn an_expired_key_of_the_previous_generation_is_new_again() {
        let mut w = DedupWindow::new(Duration::from_secs(1));
        assert!(w.insert("a", 0));
        assert!(w.insert("b", 600));
        assert!(w.insert("c", 1000), "c starts a generation");
        assert!(w.insert("a", 1000), "a was seen a window ago");
        assert!(!w.insert("b", 1500));
        w.remove(&"a");
        assert!(!w.contains(&"a"));
        assert!(w.insert("a", 1500));
    }

    #[test]
    fn keys_of_each_kind_and_scope_are_distinct_in_24_bytes() {
        assert_eq!(std::mem::size_of::<DedupKey>(), 24);
        let id = "0190d2a2-6f7e-7c3a-9b1d-2e4f6a8b0c1d";
        assert_eq!(DedupKey::id(1, id), DedupKey::id(1, id));
        assert_ne!(DedupKey::id(1, id), DedupKey::id(2, id));
        assert_ne!(DedupKey::id(1, "evt-1"), DedupKey::id(1, "evt-2"));
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        let content = DedupKey::content(1, {
            let mut k = [0; 32];
            k[..16].copy_from_slice(uuid.as_bytes());
            k
        });
        assert_ne!(content, DedupKey::id(1, id), "a content key is not an id");
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
