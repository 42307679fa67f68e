//! Consumer groups: a Redis consumer group per secbus group, a Redis consumer
//! per member.
//!
//! A member reads new entries with `XREADGROUP ... >` on a connection of its
//! own, skips (acks) entries of other types and redriven dead letters of other
//! groups, and hands out the rest. Every tick (a quarter of the ack wait, at
//! most a second) it runs the claim script (see `claim.rs`): its own nacks that
//! are due, nacks of members that went away, and deliveries unsettled past the
//! ack wait come back to it with their delivery count, which is the attempt the
//! subscription sees; past `max_deliveries` the subscription dead-letters them.
//!
//! Partition keys: Redis hands entries to members without regard to keys, so
//! secbus keeps the order a member can keep: within one member, an entry whose
//! key is held by an unsettled (or nacked) delivery waits until that one is
//! settled, and entries of one key are handed out in log order. Two members of
//! a group may still work on the same key at the same time. While an entry
//! waits, the member resets its idle time so others do not take it over.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::claim::{ClaimRequest, Claimed, claim, recover, sweep, touch};
use super::engine::Shared;
use super::entry::{LogEntry, RawEntry, read_reply};
use super::error::{from_redis, is_busy_group, is_no_group, is_unavailable};
use super::keys::TenantKeys;
use super::sequence::StreamId;
use super::settle::{AckQueue, GroupMember, NO_READER_ID, Settler, now_ms};
use crate::engine::{Acker, EngineDelivery, EngineStream};
use crate::error::{Error, ErrorKind, Result};
use crate::subscription::{StartAt, SubscribeOptions, TypePattern};

/// How long one `XREADGROUP` blocks waiting for new entries.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Claim ticks are a quarter of the ack wait, within these bounds.
const MIN_TICK: Duration = Duration::from_millis(20);
const MAX_TICK: Duration = Duration::from_secs(1);
/// Consumers idle this long with nothing pending are deleted when a member joins.
const SWEEP_IDLE: Duration = Duration::from_secs(3600);

/// Joins (creating when new) the group `name` and opens a member.
pub(super) async fn subscribe_group(
    shared: &Arc<Shared>,
    options: &SubscribeOptions,
    name: &str,
) -> Result<Box<dyn EngineStream>> {
    let keys = TenantKeys::new(&shared.config.prefix, &options.tenant);
    let log = keys.log();
    let mut conn = shared.conn();
    check_pattern(&mut conn, &keys, name, &options.types).await?;
    let start = match options.start {
        StartAt::New => "$".to_owned(),
        StartAt::Beginning => "0".to_owned(),
        StartAt::Sequence(n) => StreamId::before_sequence(n).to_string(),
        StartAt::Time(t) => StreamId::before_time(t.timestamp_millis().max(0) as u64).to_string(),
    };
    create_group(&mut conn, &log, name, &start)
        .await
        .map_err(|e| from_redis("creating the consumer group", e))?;
    if let Err(e) = sweep(&mut conn, &log, name, SWEEP_IDLE.as_millis() as u64).await {
        tracing::debug!(group = name, error = %e, "redis: consumer sweep failed");
    }
    let member = Arc::new(GroupMember {
        shared: shared.clone(),
        log,
        delayed: keys.delayed(name),
        group: name.to_owned(),
        consumer: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        reader_id: AtomicU64::new(0),
    });
    let acks = AckQueue::start(member.clone());
    let settler = Arc::new(Settler::new(member.clone(), acks));
    {
        let mut members = shared.members.lock();
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&settler));
    }
    let tick = (options.ack_wait / 4).clamp(MIN_TICK, MAX_TICK);
    Ok(Box::new(Member {
        reader: shared.blocking_conn(READ_BLOCK)?,
        settler,
        member,
        pattern: options.types.clone(),
        ack_wait: options.ack_wait,
        tick,
        grace: options.ack_wait.max(tick * 4),
        max_in_flight: options.max_in_flight,
        ready: VecDeque::new(),
        keyed: HashMap::new(),
        runnable: VecDeque::new(),
        held_ids: HashSet::new(),
        read: None,
        chores: None,
        next_claim: Instant::now(),
        outage: None,
        lost_replies: false,
        closed: shared.closed.subscribe(),
    }))
}

/// A group keeps the type pattern it was created with; a member asking for
/// another one is refused, as on every engine.
async fn check_pattern(
    conn: &mut ConnectionManager,
    keys: &TenantKeys,
    name: &str,
    pattern: &TypePattern,
) -> Result<()> {
    let (stored,): (String,) = redis::pipe()
        .cmd("HSETNX")
        .arg(keys.groups())
        .arg(name)
        .arg(pattern.as_str())
        .ignore()
        .cmd("HGET")
        .arg(keys.groups())
        .arg(name)
        .query_async(conn)
        .await
        .map_err(|e| from_redis("reading the consumer group", e))?;
    if stored != pattern.as_str() {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!(
                "group {name:?} was created for types {stored:?}; use another group name for {:?}",
                pattern.as_str()
            ),
        )
        .with_field("type"));
    }
    Ok(())
}

async fn create_group(
    conn: &mut ConnectionManager,
    log: &str,
    name: &str,
    start: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(log)
        .arg(name)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if is_busy_group(&e) => Ok(()),
        other => other,
    }
}

/// An entry read or claimed and not handed out yet.
struct Held {
    entry: LogEntry,
    attempt: u32,
    /// When it was read, claimed or last touched.
    since: Instant,
}

impl Held {
    fn key(&self) -> Option<&Arc<str>> {
        self.entry.key.as_ref()
    }
}

struct Member {
    member: Arc<GroupMember>,
    settler: Arc<Settler>,
    reader: ConnectionManager,
    pattern: TypePattern,
    ack_wait: Duration,
    tick: Duration,
    grace: Duration,
    max_in_flight: usize,
    /// Entries without a partition key, in log order.
    ready: VecDeque<Held>,
    /// Entries with a key, per key in log order.
    keyed: HashMap<Arc<str>, VecDeque<Held>>,
    /// Keys that may have an entry to hand out (checked when taken).
    runnable: VecDeque<Arc<str>>,
    held_ids: HashSet<u64>,
    /// The `XREADGROUP` in flight. Reads and chores run as tasks so that a
    /// `next` dropped halfway (a timeout, a `select!`) loses nothing: what they
    /// bring is taken in by the next call.
    read: Option<JoinHandle<redis::RedisResult<Value>>>,
    /// The touch and claim in flight.
    chores: Option<JoinHandle<redis::RedisResult<Chores>>>,
    next_claim: Instant,
    /// Since when the server has been unreachable, and the next retry delay.
    outage: Option<(Instant, Duration)>,
    /// A read or claim failed with the connection: the next chores look for
    /// entries the server gave this member in a reply that was lost.
    lost_replies: bool,
    closed: watch::Receiver<bool>,
}

impl Drop for Member {
    fn drop(&mut self) {
        // The release below first unblocks the server's side of a read in
        // flight (and the reader's connection closes with its last handle):
        // a member gone takes no new entries.
        if let Some(read) = self.read.take() {
            read.abort();
        }
        if let Some(chores) = self.chores.take() {
            chores.abort();
        }
        // What this member read and never handed out goes to the others now;
        // deliveries still in the subscriber's hands wait for their ack wait.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let settler = self.settler.clone();
            let mut releases = self.member.shared.releases.lock();
            releases.retain(|r| !r.is_finished());
            releases.push(runtime.spawn(async move { settler.release(false).await }));
        }
    }
}

/// What one round of chores found.
struct Chores {
    /// The waiting entries whose idle time was to be reset...
    touched: Vec<String>,
    /// ...and those of them still this member's.
    mine: HashSet<String>,
    /// Entries this member owned without knowing (after lost replies).
    recovered: crate::error::Result<Vec<Claimed>>,
    claimed: crate::error::Result<Vec<Claimed>>,
    /// The claim took as many as it could: there may be more to take now.
    full: bool,
}

/// What to do about an error.
enum Recovery {
    /// Try again after a pause: the server may be back soon.
    Retry,
    /// The group is gone: create it again, then go on.
    Recreate,
    /// Tell the subscriber.
    Report(Error),
}

/// What finished while the member waited.
enum Woken {
    Read(std::result::Result<redis::RedisResult<Value>, tokio::task::JoinError>),
    Chores(Box<std::result::Result<redis::RedisResult<Chores>, tokio::task::JoinError>>),
    Nothing,
}

#[async_trait]
impl EngineStream for Member {
    async fn next(&mut self) -> Option<Result<EngineDelivery>> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            for key in self.settler.take_freed() {
                if self.keyed.contains_key(&key) {
                    self.runnable.push_back(key);
                }
            }
            // Read ahead once half the room is free, so the next entries are
            // on their way while these are handed out.
            let room = self.max_in_flight.saturating_sub(self.held_ids.len());
            if self.read.is_none() && room > 0 && room * 2 >= self.max_in_flight {
                self.start_read(room);
            }
            if let Some(delivery) = self.hand_out() {
                return Some(Ok(delivery));
            }
            let now = Instant::now();
            if self.chores.is_none() && (now >= self.next_claim || self.settler.is_due(now)) {
                self.next_claim = now + self.tick;
                self.start_chores(now);
            }
            let room = self.max_in_flight.saturating_sub(self.held_ids.len());
            if self.read.is_none() && room > 0 {
                self.start_read(room);
            }
            let wake_at = match self.settler.next_due() {
                Some(due) => due.min(self.next_claim),
                None => self.next_claim,
            };
            let woken = tokio::select! {
                changed = self.closed.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    Woken::Nothing
                }
                result = async { self.read.as_mut().expect("guarded").await }, if self.read.is_some() => {
                    self.read = None;
                    Woken::Read(result)
                }
                result = async { self.chores.as_mut().expect("guarded").await }, if self.chores.is_some() => {
                    self.chores = None;
                    Woken::Chores(Box::new(result))
                }
                _ = self.settler.wake.notified() => Woken::Nothing,
                _ = tokio::time::sleep_until(wake_at) => Woken::Nothing,
            };
            let task_failed = |join: tokio::task::JoinError| {
                Recovery::Report(Error::new(
                    ErrorKind::Engine,
                    format!("redis: a member's task failed: {join}"),
                ))
            };
            let outcome = match woken {
                Woken::Nothing => continue,
                Woken::Read(result) => match result {
                    Ok(Ok(reply)) => match read_reply(reply) {
                        Ok(entries) => {
                            self.back_online();
                            self.accept(entries);
                            continue;
                        }
                        Err(e) => Recovery::Report(e),
                    },
                    Ok(Err(e)) => self.classify(e),
                    Err(join) => task_failed(join),
                },
                Woken::Chores(result) => match *result {
                    Ok(Ok(chores)) => match self.apply_chores(chores) {
                        Ok(()) => {
                            self.back_online();
                            continue;
                        }
                        Err(e) => Recovery::Report(e),
                    },
                    Ok(Err(e)) => self.classify(e),
                    Err(join) => task_failed(join),
                },
            };
            if let Some(e) = self.recover(outcome).await {
                return Some(Err(e));
            }
        }
    }
}

impl Member {
    fn start_read(&mut self, room: usize) {
        let mut conn = self.reader.clone();
        let member = self.member.clone();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.member.group)
            .arg(&self.member.consumer)
            .arg("COUNT")
            .arg(room)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.member.log)
            .arg(">");
        self.read = Some(tokio::spawn(async move {
            // The id of the connection the read blocks on, so that a release
            // can unblock it; asked once per connection.
            if member.reader_id.load(Ordering::Acquire) == 0 {
                let id: redis::RedisResult<u64> =
                    redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await;
                match id {
                    Ok(id) => member.reader_id.store(id, Ordering::Release),
                    Err(e) if is_unavailable(&e) => return Err(e),
                    // Not allowed (ACL): do without; a release then relies on
                    // the connection closing.
                    Err(_) => member.reader_id.store(NO_READER_ID, Ordering::Release),
                }
            }
            let read = cmd.query_async(&mut conn).await;
            if read.is_err() && member.reader_id.load(Ordering::Acquire) != NO_READER_ID {
                // Perhaps a new connection next time.
                member.reader_id.store(0, Ordering::Release);
            }
            read
        }));
    }

    /// Starts a round of chores: entries waiting here for half the ack wait
    /// get their idle time reset (so no other member takes them over; those
    /// another member took already are dropped here), then this member claims
    /// its due nacks, nacks of members gone, and deliveries past the ack wait.
    /// Touching first keeps the claim from counting a delivery for entries
    /// that never left this member.
    fn start_chores(&mut self, now: Instant) {
        let touched: Vec<String> = self
            .ready
            .iter()
            .chain(self.keyed.values().flatten())
            .filter(|h| now.duration_since(h.since) >= self.ack_wait / 2)
            .map(|h| h.entry.id.to_string())
            .collect();
        let own_due: Vec<String> = self
            .settler
            .take_due(now)
            .into_iter()
            .map(|s| StreamId::from_sequence(s).to_string())
            .collect();
        let count = self
            .max_in_flight
            .saturating_sub(self.held_ids.len())
            .max(own_due.len());
        let known: Option<Vec<String>> = std::mem::take(&mut self.lost_replies).then(|| {
            self.settler
                .out()
                .into_iter()
                .chain(self.held_ids.iter().copied())
                .map(|s| StreamId::from_sequence(s).to_string())
                .collect()
        });
        let member = self.member.clone();
        let ack_wait_ms = self.ack_wait.as_millis() as u64;
        let grace_ms = self.grace.as_millis() as u64;
        self.chores = Some(tokio::spawn(async move {
            let mut conn = member.shared.conn();
            let recovered = match known {
                Some(known) => recover(&mut conn, &member, count, &known).await?,
                None => Ok(Vec::new()),
            };
            let mine = if touched.is_empty() {
                HashSet::new()
            } else {
                touch(&mut conn, &member, &touched)
                    .await?
                    .into_iter()
                    .collect()
            };
            let request = ClaimRequest {
                now_ms: now_ms(),
                ack_wait_ms,
                grace_ms,
                count,
                own_due: &own_due,
            };
            let claimed = claim(&mut conn, &member, request).await?;
            let full = count > 0 && claimed.as_ref().is_ok_and(|c| c.len() >= count);
            Ok(Chores {
                full,
                touched,
                mine,
                recovered,
                claimed,
            })
        }));
    }

    fn apply_chores(&mut self, chores: Chores) -> Result<()> {
        let now = Instant::now();
        if chores.full {
            self.next_claim = now;
        }
        if !chores.touched.is_empty() {
            let lost: HashSet<&String> = chores
                .touched
                .iter()
                .filter(|id| !chores.mine.contains(*id))
                .collect();
            let mut dropped = Vec::new();
            let mut keep = |h: &mut Held| {
                let id = h.entry.id.to_string();
                if lost.contains(&id) {
                    dropped.push(h.entry.sequence);
                    false
                } else {
                    if chores.mine.contains(&id) {
                        h.since = now;
                    }
                    true
                }
            };
            self.ready.retain_mut(&mut keep);
            for queue in self.keyed.values_mut() {
                queue.retain_mut(&mut keep);
            }
            self.keyed.retain(|_, q| !q.is_empty());
            for seq in dropped {
                self.held_ids.remove(&seq);
            }
        }
        let claimed = chores.recovered?.into_iter().chain(chores.claimed?);
        for Claimed { entry, deliveries } in claimed {
            match self.wanted(&entry) {
                Some(decoded) => self.hold(Held {
                    entry: decoded,
                    attempt: deliveries,
                    since: now,
                }),
                None => self.settler.acks().push(entry.id),
            }
        }
        Ok(())
    }

    /// Takes in newly read entries: skips (acks) what this group does not
    /// want and keeps the rest to hand out.
    fn accept(&mut self, entries: Vec<RawEntry>) {
        let now = Instant::now();
        for raw in entries {
            match self.wanted(&raw) {
                Some(entry) => self.hold(Held {
                    entry,
                    attempt: 1,
                    since: now,
                }),
                None => self.settler.acks().push(raw.id),
            }
        }
    }

    /// The entry decoded, or `None` when this group skips it.
    fn wanted(&self, raw: &RawEntry) -> Option<LogEntry> {
        // Trimmed while pending: nothing left to deliver.
        raw.fields.as_ref()?;
        if raw
            .redrive_for()
            .is_some_and(|g| g != self.member.group.as_bytes())
        {
            return None;
        }
        if !raw.matches(&self.pattern) {
            return None;
        }
        match raw.decode() {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::error!(
                    group = %self.member.group,
                    stream_id = %raw.id,
                    error = %e,
                    "redis: an entry of the log does not decode; skipped"
                );
                None
            }
        }
    }

    fn hold(&mut self, held: Held) {
        let seq = held.entry.sequence;
        if !self.held_ids.insert(seq) {
            // Already waiting here (claimed again): keep one, with the new count.
            if let Some(h) = self.find_held(seq, held.key().cloned()) {
                h.attempt = h.attempt.max(held.attempt);
                h.since = held.since;
            }
            return;
        }
        match held.key().cloned() {
            None => {
                let at = self
                    .ready
                    .iter()
                    .rposition(|h| h.entry.sequence < seq)
                    .map_or(0, |i| i + 1);
                self.ready.insert(at, held);
            }
            Some(key) => {
                let queue = self.keyed.entry(key.clone()).or_default();
                let at = queue
                    .iter()
                    .rposition(|h| h.entry.sequence < seq)
                    .map_or(0, |i| i + 1);
                queue.insert(at, held);
                if !self.settler.is_held(&key) {
                    self.runnable.push_back(key);
                }
            }
        }
    }

    fn find_held(&mut self, seq: u64, key: Option<Arc<str>>) -> Option<&mut Held> {
        match key {
            None => self.ready.iter_mut().find(|h| h.entry.sequence == seq),
            Some(k) => self
                .keyed
                .get_mut(&k)?
                .iter_mut()
                .find(|h| h.entry.sequence == seq),
        }
    }

    /// The next entry that may go out: the older of the first unkeyed entry and
    /// the first entry of a key this member does not hold.
    fn hand_out(&mut self) -> Option<EngineDelivery> {
        let keyed = loop {
            let Some(key) = self.runnable.front().cloned() else {
                break None;
            };
            if !self.settler.is_held(&key) && self.keyed.contains_key(&key) {
                break Some(key);
            }
            self.runnable.pop_front();
        };
        let keyed_seq = keyed
            .as_ref()
            .and_then(|k| self.keyed.get(k))
            .and_then(|q| q.front())
            .map(|h| h.entry.sequence);
        let ready_seq = self.ready.front().map(|h| h.entry.sequence);
        let held = match (ready_seq, keyed_seq, keyed) {
            (Some(r), Some(k), _) if r < k => self.ready.pop_front(),
            (_, Some(_), Some(key)) => {
                self.runnable.pop_front();
                let queue = self.keyed.get_mut(&key)?;
                let held = queue.pop_front();
                if queue.is_empty() {
                    self.keyed.remove(&key);
                }
                held
            }
            _ => self.ready.pop_front(),
        }?;
        self.held_ids.remove(&held.entry.sequence);
        let key = held.key().cloned();
        self.settler.handed_out(held.entry.sequence, key);
        Some(EngineDelivery {
            event: held.entry.event,
            sequence: held.entry.sequence,
            attempt: held.attempt,
            acker: Some(self.settler.clone() as Arc<dyn Acker>),
            redrive_for: held.entry.redrive_for,
        })
    }

    fn classify(&self, e: redis::RedisError) -> Recovery {
        if is_no_group(&e) {
            // The server lost the group (restarted without its data, or the
            // group was destroyed): recreate it from the oldest entry kept, so
            // nothing published since is skipped.
            return Recovery::Recreate;
        }
        if is_unavailable(&e) {
            return Recovery::Retry;
        }
        if e.is_unrecoverable_error() {
            // The connection is being replaced: its replies are lost.
            return Recovery::Retry;
        }
        Recovery::Report(from_redis("reading the consumer group", e))
    }

    /// Recreates a lost group, or waits before a retry while the server is
    /// unreachable; `Some` when the subscriber should hear of the error.
    async fn recover(&mut self, recovery: Recovery) -> Option<Error> {
        if !matches!(recovery, Recovery::Report(_)) {
            self.lost_replies = true;
        }
        let recovery = match recovery {
            Recovery::Recreate => {
                let mut conn = self.member.shared.conn();
                match create_group(&mut conn, &self.member.log, &self.member.group, "0").await {
                    Ok(()) => {
                        tracing::warn!(
                            group = %self.member.group,
                            stream = %self.member.log,
                            "redis: the consumer group was gone; created again from the oldest entry"
                        );
                        return None;
                    }
                    Err(e) => match self.classify(e) {
                        Recovery::Report(e) => return Some(e),
                        _ => Recovery::Retry,
                    },
                }
            }
            other => other,
        };
        if let Recovery::Report(e) = recovery {
            return Some(e);
        }
        let delay = match self.outage {
            None => {
                tracing::warn!(
                    group = %self.member.group,
                    stream = %self.member.log,
                    "redis: server unavailable; the group member waits for it"
                );
                Duration::from_millis(50)
            }
            Some((_, delay)) => (delay * 2).min(Duration::from_secs(1)),
        };
        self.outage = Some((self.outage.map_or_else(Instant::now, |o| o.0), delay));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.closed.changed() => {}
        }
        None
    }

    fn back_online(&mut self) {
        if let Some((since, _)) = self.outage.take() {
            tracing::info!(
                group = %self.member.group,
                stream = %self.member.log,
                down_for = ?since.elapsed(),
                "redis: server back; the group member goes on"
            );
        }
    }
}
