//! The newest committed records, kept decoded in memory so group members and
//! tails reading fresh records share the publisher's `Arc<Event>` instead of
//! decoding JSON from SQLite.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use crate::event::TenantId;
use crate::local::LogRecord;

/// What the cache can say about a read.
pub(super) enum Cached {
    /// Every record of the tenant at or after `from` (up to `max` of them).
    Hit(Vec<LogRecord>),
    /// Records below this position may be missing from the cache: read them
    /// from SQLite. Records at or after it are all cached.
    From(u64),
}

/// The last records committed by this process, bounded in total across tenants.
pub(super) struct Recent {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    /// Every record at or after this position (of any tenant) was committed by
    /// this process after the last invalidation, so it is cached unless evicted.
    from: u64,
    slots: HashMap<TenantId, usize>,
    tenants: Vec<TenantRecent>,
    /// The slot of every cached record, in commit order: the front is the
    /// oldest record cached, so evicting it keeps the newest across tenants.
    order: VecDeque<u32>,
}

struct TenantRecent {
    records: VecDeque<LogRecord>,
    /// Records of this tenant below this position were evicted.
    from: u64,
}

impl Recent {
    /// An empty cache of at most `capacity` records whose coverage starts at
    /// `next_seq`, the position the next commit will take.
    pub(super) fn new(capacity: usize, next_seq: u64) -> Self {
        Recent {
            capacity,
            state: Mutex::new(State {
                from: next_seq,
                slots: HashMap::new(),
                tenants: Vec::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Up to `max` records of `tenant` at or after `from`, when the cache covers them.
    pub(super) fn read(&self, tenant: &TenantId, from: u64, max: usize) -> Cached {
        let st = self.state.lock();
        let Some(t) = st.slots.get(tenant).map(|&s| &st.tenants[s]) else {
            return if from >= st.from {
                Cached::Hit(Vec::new())
            } else {
                Cached::From(st.from)
            };
        };
        let covered = st.from.max(t.from);
        if from < covered {
            return Cached::From(covered);
        }
        let start = t.records.partition_point(|r| r.seq < from);
        Cached::Hit(t.records.range(start..).take(max).cloned().collect())
    }

    /// Adds records just committed, in commit order, all of `tenant`.
    pub(super) fn push(&self, tenant: &TenantId, records: impl IntoIterator<Item = LogRecord>) {
        let mut st = self.state.lock();
        let slot = match st.slots.get(tenant) {
            Some(&s) => s,
            None => {
                let s = st.tenants.len();
                let from = st.from;
                st.tenants.push(TenantRecent {
                    records: VecDeque::new(),
                    from,
                });
                st.slots.insert(tenant.clone(), s);
                s
            }
        };
        let mut added = 0;
        for rec in records {
            st.tenants[slot].records.push_back(rec);
            added += 1;
        }
        st.order.extend(std::iter::repeat_n(slot as u32, added));
        while st.order.len() > self.capacity {
            let Some(oldest) = st.order.pop_front() else {
                break;
            };
            let t = &mut st.tenants[oldest as usize];
            if let Some(rec) = t.records.pop_front() {
                t.from = t.from.max(rec.seq + 1);
            }
        }
    }

    /// Forgets everything: another process wrote to the log, so records from
    /// `next_seq` on are the only ones this process can vouch for again.
    pub(super) fn invalidate(&self, next_seq: u64) {
        let mut st = self.state.lock();
        st.from = st.from.max(next_seq);
        st.order.clear();
        for t in &mut st.tenants {
            t.records.clear();
        }
    }

    /// Drops records of `tenant` (every tenant when `None`) below `below`,
    /// which retention deleted.
    pub(super) fn trim(&self, tenant: Option<&TenantId>, below: u64) {
        let mut st = self.state.lock();
        let slots: Vec<usize> = match tenant {
            Some(t) => st.slots.get(t).copied().into_iter().collect(),
            None => (0..st.tenants.len()).collect(),
        };
        let mut dropped = false;
        for s in slots {
            let t = &mut st.tenants[s];
            t.from = t.from.max(below);
            while t.records.front().is_some_and(|r| r.seq < below) {
                t.records.pop_front();
                dropped = true;
            }
        }
        if dropped {
            // Rebuild the eviction order from what is left; retention is rare.
            let mut all: Vec<(u64, u32)> = st
                .tenants
                .iter()
                .enumerate()
                .flat_map(|(s, t)| t.records.iter().map(move |r| (r.seq, s as u32)))
                .collect();
            all.sort_unstable();
            st.order = all.into_iter().map(|(_, s)| s).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Event, EventType};

    fn rec(tenant: &TenantId, seq: u64) -> LogRecord {
        let event = Event::builder(EventType::new("a.b").unwrap(), tenant.clone())
            .build()
            .unwrap();
        LogRecord {
            seq,
            event: Arc::new(event),
            redrive_for: None,
        }
    }

    fn seqs(c: Cached) -> Option<Vec<u64>> {
        match c {
            Cached::Hit(v) => Some(v.iter().map(|r| r.seq).collect()),
            Cached::From(_) => None,
        }
    }

    #[test]
    fn serves_what_it_covers_and_evicts_the_oldest_across_tenants() {
        let a = TenantId::new("a").unwrap();
        let b = TenantId::new("b").unwrap();
        let cache = Recent::new(3, 10);
        assert_eq!(seqs(cache.read(&a, 10, 10)), Some(vec![]));
        assert!(matches!(cache.read(&a, 9, 10), Cached::From(10)));
        cache.push(&a, [rec(&a, 10), rec(&a, 11)]);
        cache.push(&b, [rec(&b, 12)]);
        assert_eq!(seqs(cache.read(&a, 10, 10)), Some(vec![10, 11]));
        assert_eq!(seqs(cache.read(&a, 11, 10)), Some(vec![11]));
        cache.push(&b, [rec(&b, 13)]);
        // 10 was evicted: reading a from 10 must go to SQLite.
        assert!(matches!(cache.read(&a, 10, 10), Cached::From(11)));
        assert_eq!(seqs(cache.read(&b, 0, 10)), None);
        assert_eq!(seqs(cache.read(&b, 10, 10)), Some(vec![12, 13]));
        cache.invalidate(20);
        assert!(matches!(cache.read(&b, 12, 10), Cached::From(20)));
        assert_eq!(seqs(cache.read(&b, 20, 10)), Some(vec![]));
    }

    #[test]
    fn trim_drops_deleted_records() {
        let a = TenantId::new("a").unwrap();
        let cache = Recent::new(10, 1);
        cache.push(&a, [rec(&a, 1), rec(&a, 2), rec(&a, 3)]);
        cache.trim(Some(&a), 3);
        assert!(matches!(cache.read(&a, 1, 10), Cached::From(3)));
        assert_eq!(seqs(cache.read(&a, 3, 10)), Some(vec![3]));
    }
}
