//! `memory:`: the log in process memory, nothing kept across restarts.
//!
//! History is a bounded ring per tenant. Tails read the ring and are told when
//! they fell behind it; consumer groups hold their place in it, so a publisher
//! waits (or `try_publish` fails with `full`) rather than evict what a group has
//! not settled. Events caused by another (a `causationid`: what consumers
//! publish in reaction to deliveries) may use a reserve of a quarter of the
//! history past that bound, so a consumer that publishes before it acks never
//! waits for room only its own acks would make. Ids are deduplicated per
//! tenant within the dedup window, remembering at most twice as many ids as
//! the history holds events.

mod lag;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::bus::BusConfig;
use crate::delivery::{DeadLetter, DedupKey, DedupWindow};
use crate::engine::{Appended, Capabilities, Engine, EngineStream, GroupLag, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::local::{
    GroupFloor, GroupSnapshot, GroupStore, LocalGroups, LocalLog, LogRead, LogRecord, Signal,
};
use crate::subscription::SubscribeOptions;

struct TenantLog {
    state: Mutex<TenantState>,
    head: Arc<Signal>,
    floors: Mutex<Vec<Arc<GroupFloor>>>,
    room: Arc<Signal>,
}

struct TenantState {
    ring: VecDeque<LogRecord>,
    /// When each record of `ring` was stored, never decreasing: replay by time
    /// goes by storage time, not by the `time` a producer wrote.
    /// Unix nanoseconds, not `DateTime`: making one from the clock on every
    /// publish showed in its profile (chrono's calendar arithmetic).
    stored_at: VecDeque<i64>,
    next_seq: u64,
    dedup: DedupWindow<DedupKey>,
    /// No group needs a record below this. A group's floor only moves up, so
    /// a full ring evicts below it without reading every group's floor, a
    /// line the consumers write on each ack (4% of a publish when read each
    /// time). Set back to 0 when a group joins.
    floor_seen: u64,
}

impl TenantLog {
    fn min_floor(&self) -> u64 {
        self.floors
            .lock()
            .iter()
            .map(|f| f.floor.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}

struct MemoryLog {
    /// Looked up on every publish: foldhash rather than SipHash.
    tenants: Mutex<HashMap<TenantId, Arc<TenantLog>, foldhash::fast::RandomState>>,
    capacity: usize,
    /// Room past `capacity` for events caused by another.
    reserve: usize,
    dedup_window: std::time::Duration,
    dedup_max_keys: usize,
}

impl MemoryLog {
    fn tenant(&self, tenant: &TenantId) -> Arc<TenantLog> {
        let mut tenants = self.tenants.lock();
        // Looked up before `entry`, which would clone the id on every publish.
        if let Some(log) = tenants.get(tenant) {
            return log.clone();
        }
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| {
                Arc::new(TenantLog {
                    state: Mutex::new(TenantState {
                        ring: VecDeque::new(),
                        stored_at: VecDeque::new(),
                        next_seq: 1,
                        floor_seen: 0,
                        dedup: DedupWindow::with_max_keys(self.dedup_window, self.dedup_max_keys),
                    }),
                    head: Arc::default(),
                    floors: Mutex::new(Vec::new()),
                    room: Arc::default(),
                })
            })
            .clone()
    }

    /// Appends one tenant's records from `records[out.len()..]`; `None` when
    /// the ring is full of records some group still needs and the caller
    /// should wait for room.
    fn try_append(
        &self,
        log: &TenantLog,
        records: &[Record],
        out: &mut impl Outcomes,
    ) -> Option<()> {
        let mut stored = false;
        let mut full = false;
        let mut evicted = Evicted::default();
        let mut min_floor = None;
        let mut st = log.state.lock();
        let now = unix_nanos();
        let now = st.stored_at.back().map_or(now, |&last| last.max(now));
        let now_ms = now.div_euclid(1_000_000);
        st.dedup.expire(now_ms);
        for record in &records[out.len()..] {
            let redrive = record.redrive_for.is_some();
            let id_key = DedupKey::id(0, record.event.id.as_str());
            if !redrive && st.dedup.contains(&id_key) {
                out.push(Appended::Duplicate);
                continue;
            }
            if let (false, Some(k)) = (redrive, record.content_key)
                && st.dedup.contains(&DedupKey::content(0, k))
            {
                out.push(Appended::Duplicate);
                continue;
            }
            while st.ring.len() >= self.capacity {
                let oldest = st.ring.front().map_or(0, |r| r.seq);
                if oldest >= st.floor_seen {
                    let floor = *min_floor.get_or_insert_with(|| log.min_floor());
                    st.floor_seen = floor;
                    if oldest >= floor {
                        break;
                    }
                }
                evicted.push(st.ring.pop_front());
                st.stored_at.pop_front();
            }
            // An event caused by another is what a consumer publishes in
            // reaction to a delivery, often before it acks it (a finding, an
            // enrichment). Made to wait for room, it would wait on its own
            // consumer's acks behind it: it may use the reserve instead.
            let bound = if record.event.causationid.is_some() {
                self.capacity + self.reserve
            } else {
                self.capacity
            };
            if st.ring.len() >= bound {
                full = true;
                break;
            }
            if !redrive {
                st.dedup.insert(id_key, now_ms);
                if let Some(k) = record.content_key {
                    st.dedup.insert(DedupKey::content(0, k), now_ms);
                }
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.stored_at.push_back(now);
            st.ring.push_back(LogRecord {
                seq,
                event: record.event.clone(),
                redrive_for: record.redrive_for.clone(),
            });
            out.push(Appended::Stored(seq));
            stored = true;
        }
        drop(st);
        drop(evicted);
        if stored {
            log.head.bump();
        }
        (!full).then_some(())
    }
}

/// The wall clock in Unix nanoseconds (0 before 1970, which no clock here shows).
fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Where `try_append` puts what each record got.
trait Outcomes {
    fn len(&self) -> usize;
    fn push(&mut self, appended: Appended);
}

impl Outcomes for Vec<Appended> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn push(&mut self, appended: Appended) {
        Vec::push(self, appended);
    }
}

/// The outcome of a single publish, without a vector for it.
impl Outcomes for Option<Appended> {
    fn len(&self) -> usize {
        usize::from(self.is_some())
    }
    fn push(&mut self, appended: Appended) {
        *self = Some(appended);
    }
}

/// Records evicted under the tenant's lock, freed after it is released (an
/// event is a dozen allocations). A publish evicts one record: kept inline so
/// that it costs no allocation of its own.
#[derive(Default)]
struct Evicted {
    first: Option<LogRecord>,
    more: Vec<LogRecord>,
}

impl Evicted {
    fn push(&mut self, record: Option<LogRecord>) {
        match (&self.first, record) {
            (_, None) => {}
            (None, record) => self.first = record,
            (Some(_), Some(record)) => self.more.push(record),
        }
    }
}

#[async_trait]
impl LocalLog for MemoryLog {
    async fn read(&self, tenant: &TenantId, from: u64, max: usize) -> Result<LogRead> {
        let log = self.tenant(tenant);
        let st = log.state.lock();
        let first = st.ring.front().map_or(st.next_seq, |r| r.seq);
        let missed = first.saturating_sub(from);
        let start = from.max(first);
        let skip = (start - first) as usize;
        let records = st.ring.iter().skip(skip).take(max).cloned().collect();
        Ok(LogRead { records, missed })
    }

    async fn head(&self, tenant: &TenantId) -> Result<u64> {
        Ok(self.tenant(tenant).state.lock().next_seq)
    }

    async fn first(&self, tenant: &TenantId) -> Result<u64> {
        let log = self.tenant(tenant);
        let st = log.state.lock();
        Ok(st.ring.front().map_or(st.next_seq, |r| r.seq))
    }

    async fn seq_at(&self, tenant: &TenantId, time: DateTime<Utc>) -> Result<u64> {
        let log = self.tenant(tenant);
        let st = log.state.lock();
        let time = time
            .timestamp_nanos_opt()
            .unwrap_or(if time.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            });
        let first_at_or_after = st.stored_at.partition_point(|&t| t < time);
        Ok(st
            .ring
            .get(first_at_or_after)
            .map_or(st.next_seq, |r| r.seq))
    }

    fn signal(&self, tenant: &TenantId) -> Arc<Signal> {
        self.tenant(tenant).head.clone()
    }
}

/// Groups live as long as the engine; their floors hold history in the ring.
struct MemoryGroups {
    log: Arc<MemoryLog>,
}

#[async_trait]
impl GroupStore for MemoryGroups {
    async fn load(&self, _tenant: &TenantId, _group: &str) -> Result<Option<GroupSnapshot>> {
        Ok(None)
    }

    async fn save(&self, _snapshot: &GroupSnapshot) -> Result<()> {
        Ok(())
    }

    fn floor(&self, tenant: &TenantId, _group: &str) -> Option<Arc<GroupFloor>> {
        let log = self.log.tenant(tenant);
        let floor = Arc::new(GroupFloor {
            floor: AtomicU64::new(0),
            moved: log.room.clone(),
        });
        // Under the state lock, which appends hold while they read floors:
        // none can evict by a bound that predates this group.
        let mut st = log.state.lock();
        log.floors.lock().push(floor.clone());
        st.floor_seen = 0;
        drop(st);
        Some(floor)
    }
}

/// The `memory:` engine.
pub(crate) struct MemoryEngine {
    log: Arc<MemoryLog>,
    groups: LocalGroups,
    dead_letters: Mutex<HashMap<TenantId, Vec<DeadLetter>>>,
    closed: AtomicBool,
}

impl MemoryEngine {
    pub(crate) fn new(config: &BusConfig) -> Self {
        let log = Arc::new(MemoryLog {
            tenants: Mutex::new(HashMap::default()),
            capacity: config.memory_history.max(1),
            reserve: (config.memory_history / 4).max(1),
            dedup_window: config.dedup_window,
            // An engine that keeps `memory_history` events per tenant remembers
            // the ids of at most twice as many: a table sized for a 5-minute
            // window at full speed (1M keys) spends more time on cache misses
            // than the rest of a publish (measured: ~0.9M/s against ~1.03M/s
            // with the smaller table).
            dedup_max_keys: config
                .dedup_max_keys
                .min(config.memory_history.saturating_mul(2).max(1)),
        });
        let groups = LocalGroups::new(log.clone(), Arc::new(MemoryGroups { log: log.clone() }));
        MemoryEngine {
            log,
            groups,
            dead_letters: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }
}

impl MemoryEngine {
    /// The slow path of `append`: the ring is full of records a group still
    /// needs. Waits for a group to settle some (or fails with `full`).
    async fn wait_for_room(
        &self,
        log: &TenantLog,
        records: &[Record],
        done: &mut Vec<Appended>,
        wait: bool,
    ) -> Result<()> {
        loop {
            // Taken before trying again, so a floor moving in between wakes us.
            let seen = log.room.version();
            if self.log.try_append(log, records, done).is_some() {
                return Ok(());
            }
            if !wait {
                let tenant = &records[0].event.tenant;
                return Err(Error::new(
                    ErrorKind::Full,
                    format!(
                        "tenant {tenant}'s history is full of events a consumer group has not settled"
                    ),
                ));
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::closed());
            }
            log.room.changed_since(seen).await;
        }
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            persistent: false,
            publish_waits_for_stalled_groups: true,
            replay: true,
            tail_lag_reported: true,
            durable_groups: false,
            key_order_across_members: true,
        }
    }

    fn append_now(&self, record: Record) -> std::result::Result<Result<Appended>, Record> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(Err(Error::closed()));
        }
        let log = self.log.tenant(&record.event.tenant);
        let mut out = None;
        match self
            .log
            .try_append(&log, std::slice::from_ref(&record), &mut out)
        {
            Some(()) => out.map(Ok).ok_or(record),
            None => Err(record),
        }
    }

    async fn append(&self, records: Vec<Record>, wait: bool) -> Result<Vec<Appended>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        let mut out = Vec::with_capacity(records.len());
        let mut start = 0;
        while start < records.len() {
            // Consecutive records of one tenant are appended under one lock.
            let tenant = &records[start].event.tenant;
            let end = records[start..]
                .iter()
                .position(|r| &r.event.tenant != tenant)
                .map_or(records.len(), |p| start + p);
            let log = self.log.tenant(tenant);
            let mut done = Vec::with_capacity(end - start);
            if self
                .log
                .try_append(&log, &records[start..end], &mut done)
                .is_none()
            {
                self.wait_for_room(&log, &records[start..end], &mut done, wait)
                    .await?;
            }
            out.extend(done);
            start = end;
        }
        Ok(out)
    }

    async fn subscribe(&self, options: &SubscribeOptions) -> Result<Box<dyn EngineStream>> {
        self.groups.subscribe(options).await
    }

    async fn put_dead_letter(&self, dead_letter: DeadLetter) -> Result<()> {
        self.dead_letters
            .lock()
            .entry(dead_letter.event.tenant.clone())
            .or_default()
            .push(dead_letter);
        Ok(())
    }

    async fn dead_letters(&self, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .dead_letters
            .lock()
            .get(tenant)
            .map(|v| v.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn dead_letter(&self, tenant: &TenantId, id: &str) -> Result<Option<DeadLetter>> {
        Ok(self
            .dead_letters
            .lock()
            .get(tenant)
            .and_then(|v| v.iter().find(|d| d.id == id).cloned()))
    }

    async fn delete_dead_letter(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        let mut all = self.dead_letters.lock();
        let Some(v) = all.get_mut(tenant) else {
            return Ok(false);
        };
        let before = v.len();
        v.retain(|d| d.id != id);
        Ok(v.len() != before)
    }

    async fn group_lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        self.lag(tenant, group).await
    }

    async fn ping(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.groups.close();
        for log in self.log.tenants.lock().values() {
            log.room.bump();
        }
        Ok(())
    }
}
