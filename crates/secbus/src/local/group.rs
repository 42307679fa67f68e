//! Consumer groups over a [`LocalLog`]: each event to one member at a time,
//! redelivery after nack or ack wait, one event per partition key in flight.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::tail::TailStream;
use super::{GroupFloor, GroupStore, LocalLog, LogRecord, Signal};
use crate::engine::{Acker, EngineDelivery, EngineStream};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::subscription::{Mode, StartAt, SubscribeOptions, TypePattern};

/// Records read from the log per refill.
const READ_BATCH: usize = 512;
/// Records held back behind a busy partition key before the group stops reading ahead.
const MAX_BLOCKED: usize = 10_000;

/// A group's state as saved by a durable engine: where reading resumes and the
/// records read but not settled, with how often each was delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupSnapshot {
    pub(crate) tenant: TenantId,
    pub(crate) group: String,
    pub(crate) pattern: String,
    pub(crate) next_read: u64,
    /// `(sequence, deliveries so far)`, in sequence order.
    pub(crate) outstanding: Vec<(u64, u32)>,
}

/// The groups and tails of one engine.
pub(crate) struct LocalGroups {
    log: Arc<dyn LocalLog>,
    store: Arc<dyn GroupStore>,
    /// Async: creating a group loads its saved state.
    groups: tokio::sync::Mutex<HashMap<(TenantId, String), Arc<Group>>>,
    closed: watch::Sender<bool>,
}

impl LocalGroups {
    pub(crate) fn new(log: Arc<dyn LocalLog>, store: Arc<dyn GroupStore>) -> Self {
        LocalGroups {
            log,
            store,
            groups: tokio::sync::Mutex::new(HashMap::new()),
            closed: watch::Sender::new(false),
        }
    }

    /// Opens a group member or a tail.
    pub(crate) async fn subscribe(
        &self,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn EngineStream>> {
        if *self.closed.borrow() {
            return Err(Error::closed());
        }
        match &options.mode {
            Mode::Tail => Ok(Box::new(
                TailStream::open(self.log.clone(), options, self.closed.subscribe()).await?,
            )),
            Mode::Group(name) => {
                let group = self.group(options, name).await?;
                Ok(Box::new(Member {
                    head: self.log.signal(&options.tenant),
                    closed: self.closed.subscribe(),
                    group,
                }))
            }
        }
    }

    async fn group(&self, options: &SubscribeOptions, name: &str) -> Result<Arc<Group>> {
        let mut groups = self.groups.lock().await;
        let key = (options.tenant.clone(), name.to_owned());
        if let Some(group) = groups.get(&key) {
            if group.pattern != options.types {
                return Err(Error::new(
                    ErrorKind::InvalidOptions,
                    format!(
                        "group {name:?} reads {:?}; a member cannot ask for {:?}",
                        group.pattern.as_str(),
                        options.types.as_str()
                    ),
                )
                .with_field("type"));
            }
            return Ok(group.clone());
        }
        let tenant = &options.tenant;
        let mut state = GroupState::default();
        match self.store.load(tenant, name).await? {
            Some(snap) => {
                if snap.pattern != options.types.as_str() {
                    return Err(Error::new(
                        ErrorKind::InvalidOptions,
                        format!(
                            "group {name:?} was created for types {:?}; use another group name for {:?}",
                            snap.pattern,
                            options.types.as_str()
                        ),
                    )
                    .with_field("type"));
                }
                state.next_read = snap.next_read;
                for (seq, attempts) in snap.outstanding {
                    let read = self.log.read(tenant, seq, 1).await?;
                    if let Some(rec) = read.records.into_iter().next().filter(|r| r.seq == seq) {
                        state.buffer.push_back(Entry { rec, attempts });
                    }
                }
            }
            None => {
                state.next_read = match options.start {
                    StartAt::New => self.log.head(tenant).await?,
                    StartAt::Beginning => self.log.first(tenant).await?,
                    StartAt::Sequence(n) => n,
                    StartAt::Time(t) => self.log.seq_at(tenant, t).await?,
                };
            }
        }
        let floor = self.store.floor(tenant, name);
        let group = Arc::new(Group {
            tenant: tenant.clone(),
            name: name.to_owned(),
            pattern: options.types.clone(),
            ack_wait: options.ack_wait,
            log: self.log.clone(),
            wake: Signal::default(),
            dirty: AtomicBool::new(true),
            floor,
            state: Mutex::new(state),
            refill: tokio::sync::Mutex::new(()),
        });
        group.publish_floor(&group.state.lock());
        groups.insert(key, group.clone());
        Ok(group)
    }

    /// Saves every group whose state changed since the last save.
    pub(crate) async fn flush(&self) -> Result<()> {
        let groups: Vec<Arc<Group>> = self.groups.lock().await.values().cloned().collect();
        for group in groups {
            if group.dirty.swap(false, Ordering::AcqRel) {
                let snapshot = group.snapshot();
                if let Err(e) = self.store.save(&snapshot).await {
                    group.dirty.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A group's state: live when it has a member in this process, else as saved.
    pub(crate) async fn snapshot(
        &self,
        tenant: &TenantId,
        group: &str,
    ) -> Result<Option<GroupSnapshot>> {
        let live = self
            .groups
            .lock()
            .await
            .get(&(tenant.clone(), group.to_owned()))
            .cloned();
        match live {
            Some(live) => Ok(Some(live.snapshot())),
            None => self.store.load(tenant, group).await,
        }
    }

    /// Ends every subscription: their `next` returns `None`.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }
}

struct Entry {
    rec: LogRecord,
    /// Deliveries so far.
    attempts: u32,
}

impl Entry {
    fn key(&self) -> Option<&str> {
        self.rec.event.partitionkey.as_deref()
    }
}

struct Pending {
    entry: Entry,
    deadline: Instant,
}

#[derive(Default)]
struct GroupState {
    next_read: u64,
    /// Read from the log, not yet handed out.
    buffer: VecDeque<Entry>,
    /// Handed out before `buffer`: redeliveries and entries whose key came free.
    /// An entry here owns its key (the key is in `busy`).
    ready: VecDeque<Entry>,
    /// Nacked with a delay, by due time.
    delayed: BTreeMap<(Instant, u64), Entry>,
    /// Handed out and not settled.
    pending: BTreeMap<u64, Pending>,
    /// Ack deadlines in hand-out order; entries already settled are skipped lazily.
    deadlines: VecDeque<(Instant, u64)>,
    /// Entries waiting for their key to come free, per key, in log order.
    blocked: HashMap<Arc<str>, VecDeque<Entry>>,
    blocked_len: usize,
    /// Keys with an entry pending, delayed or ready.
    busy: HashSet<Arc<str>>,
}

impl GroupState {
    /// The lowest position the group still needs.
    fn floor(&self) -> u64 {
        let mut floor = self.next_read;
        let mut low = |s: u64| floor = floor.min(s);
        if let Some(s) = self.pending.keys().next() {
            low(*s);
        }
        if let Some(e) = self.buffer.front() {
            low(e.rec.seq);
        }
        self.ready.iter().for_each(|e| low(e.rec.seq));
        self.delayed.values().for_each(|e| low(e.rec.seq));
        self.blocked
            .values()
            .filter_map(|q| q.front())
            .for_each(|e| low(e.rec.seq));
        floor
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((&(due, seq), _)) = self.delayed.first_key_value() {
            if due > now {
                break;
            }
            if let Some(e) = self.delayed.remove(&(due, seq)) {
                self.ready.push_back(e);
            }
        }
        while let Some(&(deadline, seq)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self
                .pending
                .get(&seq)
                .is_some_and(|p| p.deadline == deadline)
                && let Some(p) = self.pending.remove(&seq)
            {
                self.ready.push_back(p.entry);
            }
        }
        if self.deadlines.len() > 64 && self.deadlines.len() > 2 * self.pending.len() {
            let pending = &self.pending;
            self.deadlines
                .retain(|(d, s)| pending.get(s).is_some_and(|p| p.deadline == *d));
        }
    }

    /// The next entry to hand out, honouring partition keys.
    fn next_entry(&mut self) -> Option<Entry> {
        if let Some(e) = self.ready.pop_front() {
            return Some(e);
        }
        while let Some(e) = self.buffer.pop_front() {
            if let Some(key) = e.key() {
                if self.busy.contains(key) {
                    let key: Arc<str> = Arc::from(key);
                    self.blocked.entry(key).or_default().push_back(e);
                    self.blocked_len += 1;
                    continue;
                }
                self.busy.insert(Arc::from(key));
            }
            return Some(e);
        }
        None
    }

    /// A settled entry gives its key to the next blocked entry of that key, or frees it.
    fn release_key(&mut self, entry: &Entry) {
        let Some(key) = entry.key() else { return };
        if let Some(queue) = self.blocked.get_mut(key)
            && let Some(next) = queue.pop_front()
        {
            self.blocked_len -= 1;
            if queue.is_empty() {
                self.blocked.remove(key);
            }
            self.ready.push_back(next);
            return;
        }
        self.busy.remove(key);
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let delayed = self.delayed.keys().next().map(|(d, _)| *d);
        let deadline = self.deadlines.front().map(|(d, _)| *d);
        match (delayed, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

struct Group {
    tenant: TenantId,
    name: String,
    pattern: TypePattern,
    ack_wait: Duration,
    log: Arc<dyn LocalLog>,
    /// Bumped when a redelivery is due or a key came free.
    wake: Signal,
    dirty: AtomicBool,
    floor: Option<Arc<GroupFloor>>,
    /// Held briefly and never across an await: acks and hand-outs are the hot path.
    state: Mutex<GroupState>,
    /// One member at a time reads ahead from the log, without holding `state`.
    refill: tokio::sync::Mutex<()>,
}

/// What a poll found.
enum Polled {
    Delivery(EngineDelivery),
    /// Nothing to hand out; look again at this time (or when woken).
    Idle(Option<Instant>),
}

impl Group {
    fn publish_floor(&self, state: &GroupState) {
        if let Some(floor) = &self.floor {
            let new = state.floor();
            if floor.floor.swap(new, Ordering::AcqRel) != new {
                floor.moved.bump();
            }
        }
    }

    fn snapshot(&self) -> GroupSnapshot {
        let st = self.state.lock();
        let mut outstanding: Vec<(u64, u32)> = st
            .pending
            .values()
            .map(|p| &p.entry)
            .chain(st.buffer.iter())
            .chain(st.ready.iter())
            .chain(st.delayed.values())
            .chain(st.blocked.values().flatten())
            .map(|e| (e.rec.seq, e.attempts))
            .collect();
        outstanding.sort_unstable();
        GroupSnapshot {
            tenant: self.tenant.clone(),
            group: self.name.clone(),
            pattern: self.pattern.as_str().to_owned(),
            next_read: st.next_read,
            outstanding,
        }
    }

    /// Hands out the next entry, if there is one in memory.
    fn take(self: &Arc<Self>) -> std::result::Result<EngineDelivery, (bool, Option<Instant>)> {
        let mut st = self.state.lock();
        let now = Instant::now();
        st.promote_due(now);
        if let Some(mut entry) = st.next_entry() {
            entry.attempts += 1;
            let deadline = now + self.ack_wait;
            let delivery = EngineDelivery {
                event: entry.rec.event.clone(),
                sequence: entry.rec.seq,
                attempt: entry.attempts,
                acker: Some(self.clone() as Arc<dyn Acker>),
                redrive_for: entry.rec.redrive_for.clone(),
            };
            st.deadlines.push_back((deadline, entry.rec.seq));
            st.pending
                .insert(entry.rec.seq, Pending { entry, deadline });
            self.dirty.store(true, Ordering::Release);
            return Ok(delivery);
        }
        let may_read = st.blocked_len < MAX_BLOCKED;
        Err((may_read, st.next_wakeup()))
    }

    /// Hands out the next delivery, reading ahead from the log when needed.
    async fn poll(self: &Arc<Self>) -> Result<Polled> {
        loop {
            let wakeup = match self.take() {
                Ok(delivery) => return Ok(Polled::Delivery(delivery)),
                Err((false, wakeup)) => return Ok(Polled::Idle(wakeup)),
                Err((true, wakeup)) => wakeup,
            };
            let _refilling = self.refill.lock().await;
            // Another member may have read ahead while this one waited.
            let from = {
                let st = self.state.lock();
                if !st.buffer.is_empty() {
                    continue;
                }
                st.next_read
            };
            let read = self.log.read(&self.tenant, from, READ_BATCH).await?;
            let Some(last) = read.records.last() else {
                return Ok(Polled::Idle(wakeup));
            };
            let mut st = self.state.lock();
            st.next_read = last.seq + 1;
            for rec in read.records {
                if self.pattern.matches(&rec.event.ty) {
                    st.buffer.push_back(Entry { rec, attempts: 0 });
                }
            }
            self.dirty.store(true, Ordering::Release);
            if st.buffer.is_empty() {
                self.publish_floor(&st);
            }
        }
    }
}

#[async_trait]
impl Acker for Group {
    async fn ack(&self, sequence: u64) -> Result<()> {
        let mut st = self.state.lock();
        // An ack for a delivery that was already given to someone else after its
        // ack wait still settles it: the work was done.
        if let Some(p) = st.pending.remove(&sequence) {
            st.release_key(&p.entry);
            self.dirty.store(true, Ordering::Release);
            self.publish_floor(&st);
            if p.entry.key().is_some() {
                self.wake.bump();
            }
        }
        Ok(())
    }

    async fn nack(&self, sequence: u64, delay: Duration) -> Result<()> {
        let mut st = self.state.lock();
        if let Some(p) = st.pending.remove(&sequence) {
            if delay.is_zero() {
                st.ready.push_back(p.entry);
            } else {
                st.delayed
                    .insert((Instant::now() + delay, sequence), p.entry);
            }
            self.dirty.store(true, Ordering::Release);
            self.wake.bump();
        }
        Ok(())
    }
}

/// One member of a group.
struct Member {
    group: Arc<Group>,
    head: Arc<Signal>,
    closed: watch::Receiver<bool>,
}

#[async_trait]
impl EngineStream for Member {
    async fn next(&mut self) -> Option<Result<EngineDelivery>> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            // Versions taken before polling: a change after them wakes the wait below.
            let head_seen = self.head.version();
            let wake_seen = self.group.wake.version();
            let wakeup = match self.group.poll().await {
                Ok(Polled::Delivery(delivery)) => return Some(Ok(delivery)),
                Ok(Polled::Idle(wakeup)) => wakeup,
                Err(e) => return Some(Err(e)),
            };
            let sleep = async {
                match wakeup {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let gone = tokio::select! {
                _ = self.group.wake.changed_since(wake_seen) => false,
                _ = self.head.changed_since(head_seen) => false,
                r = self.closed.changed() => r.is_err(),
                _ = sleep => false,
            };
            if gone {
                return None;
            }
        }
    }
}
