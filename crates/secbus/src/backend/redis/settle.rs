//! Settling group deliveries: acks (queued and sent in batches with one
//! `XACK`), nacks (into the group's delayed set), and the partition keys a
//! member holds while their deliveries are unsettled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::claim::release;
use super::engine::Shared;
use super::error::{from_redis, is_unavailable};
use super::sequence::StreamId;
use crate::engine::Acker;
use crate::error::Result;

/// Ids per `XACK`.
const ACK_BATCH: usize = 1024;
/// How long the first ack of a batch waits for others.
const ACK_GATHER: Duration = Duration::from_millis(2);
/// Tries of one `XACK` batch while the server is unreachable (about 20 s).
const ACK_TRIES: u32 = 24;

/// `reader_id` when the server does not let secbus ask (`CLIENT ID` refused).
pub(super) const NO_READER_ID: u64 = u64::MAX;

/// One member of a group, as its settling parts see it.
pub(super) struct GroupMember {
    pub(super) shared: Arc<Shared>,
    pub(super) log: String,
    pub(super) delayed: String,
    pub(super) group: String,
    pub(super) consumer: String,
    /// The server's id of the connection the member's reads block on (0:
    /// not known), to unblock a read when the member goes.
    pub(super) reader_id: AtomicU64,
}

enum AckCommand {
    Ack(StreamId),
    Flush(oneshot::Sender<()>),
}

/// Acks on their way to the server. A delivery's ack returns once queued; a
/// task sends what is queued within 2 ms in one `XACK`, then the next batch,
/// so a consumer that acks one by one is not held to a round trip per event. An ack lost to
/// a crash before it reached the server means the event is delivered again
/// (at least once); `close` flushes the queue.
pub(super) struct AckQueue {
    tx: mpsc::UnboundedSender<AckCommand>,
}

impl AckQueue {
    pub(super) fn start(member: Arc<GroupMember>) -> Arc<AckQueue> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_acks(member, rx));
        Arc::new(AckQueue { tx })
    }

    pub(super) fn push(&self, id: StreamId) {
        let _ = self.tx.send(AckCommand::Ack(id));
    }

    /// Waits until every ack queued before the call was sent (or given up on).
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(AckCommand::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn send_acks(member: Arc<GroupMember>, mut rx: mpsc::UnboundedReceiver<AckCommand>) {
    let mut ids: Vec<String> = Vec::new();
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        if matches!(first, AckCommand::Ack(_)) {
            // A moment for the acks of the deliveries around this one to
            // arrive: one XACK (and one wake-up of this task) for many.
            tokio::time::sleep(ACK_GATHER).await;
        }
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                AckCommand::Ack(id) => ids.push(id.to_string()),
                AckCommand::Flush(done) => waiters.push(done),
            }
            if ids.len() < ACK_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !ids.is_empty() {
            xack(&member, &ids).await;
            ids.clear();
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn xack(member: &GroupMember, ids: &[String]) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=ACK_TRIES {
        let result: redis::RedisResult<i64> = redis::cmd("XACK")
            .arg(&member.log)
            .arg(&member.group)
            .arg(ids)
            .query_async(&mut member.shared.conn())
            .await;
        match result {
            Ok(_) => return,
            Err(e) if is_unavailable(&e) && attempt < ACK_TRIES => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::warn!(
                    group = %member.group,
                    acks = ids.len(),
                    error = %from_redis("acking", e),
                    "acks not delivered; their events are delivered again after the ack wait"
                );
                return;
            }
        }
    }
}

/// The partition keys one member holds: a key is held from the moment an
/// entry with it is handed out until that entry is acked, or, when nacked,
/// until it is delivered again. Entries with a held key wait in the member.
#[derive(Default)]
pub(super) struct HeldKeys {
    /// Handed out and not settled, with their key.
    out: HashMap<u64, Option<Arc<str>>>,
    /// Nacked by this member, by due time, with their key.
    delayed: BTreeMap<(Instant, u64), Option<Arc<str>>>,
    /// How many entries (out or delayed) hold each key.
    holders: HashMap<Arc<str>, usize>,
    /// Keys let go since the member last looked.
    freed: Vec<Arc<str>>,
}

impl HeldKeys {
    fn hold(&mut self, key: &Arc<str>) {
        *self.holders.entry(key.clone()).or_default() += 1;
    }

    fn release(&mut self, key: &Arc<str>) {
        if let Some(n) = self.holders.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.holders.remove(key);
                self.freed.push(key.clone());
            }
        }
    }
}

/// Settles the deliveries of one member; handed to each delivery as its [`Acker`].
pub(super) struct Settler {
    member: Arc<GroupMember>,
    acks: Arc<AckQueue>,
    /// Set once the member's entries were given up (on drop or close).
    released: AtomicBool,
    keys: Mutex<HeldKeys>,
    /// Wakes the member: a key came free or a nack is waiting.
    pub(super) wake: Notify,
}

impl Settler {
    pub(super) fn new(member: Arc<GroupMember>, acks: Arc<AckQueue>) -> Settler {
        Settler {
            member,
            acks,
            released: AtomicBool::new(false),
            keys: Mutex::new(HeldKeys::default()),
            wake: Notify::new(),
        }
    }

    pub(super) fn acks(&self) -> &AckQueue {
        &self.acks
    }

    /// Gives up the member's pending entries so other members (or the next
    /// process) take them without waiting for the ack wait: those it read and
    /// never handed out, and with `all` (on close) the unsettled deliveries
    /// too. Queued acks are sent first, so nothing acked comes back. Once only.
    pub(super) async fn release(&self, all: bool) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let member = &self.member;
        // A read still blocked on the server would take entries published
        // from now on, for a member that will never hand them out.
        let reader = member.reader_id.load(Ordering::Acquire);
        if reader != 0 && reader != NO_READER_ID {
            let unblocked: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(reader)
                .query_async(&mut member.shared.conn())
                .await;
            if let Err(e) = unblocked {
                tracing::debug!(group = %member.group, error = %e, "redis: CLIENT UNBLOCK failed");
            }
        }
        self.acks.flush().await;
        let out: Vec<String> = self
            .keys
            .lock()
            .out
            .keys()
            .map(|s| StreamId::from_sequence(*s).to_string())
            .collect();
        match release(&mut member.shared.conn(), member, &out, all).await {
            Ok(n) => {
                tracing::debug!(group = %member.group, consumer = %member.consumer, released = n, "redis: member released its entries")
            }
            Err(e) => tracing::warn!(
                group = %member.group,
                error = %from_redis("releasing a member's entries", e),
                "the member's unsettled entries are delivered again after the ack wait"
            ),
        }
    }

    /// Records a hand-out of `seq`, holding its key.
    pub(super) fn handed_out(&self, seq: u64, key: Option<Arc<str>>) {
        let mut held = self.keys.lock();
        if let Some(k) = &key {
            held.hold(k);
        }
        if let Some(Some(old)) = held.out.insert(seq, key) {
            // Handed out again (its ack wait ran out): one holder, not two.
            held.release(&old);
            held.freed.retain(|k| *k != old);
        }
    }

    pub(super) fn is_held(&self, key: &str) -> bool {
        self.keys.lock().holders.contains_key(key)
    }

    /// Keys let go since the last call.
    pub(super) fn take_freed(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.keys.lock().freed)
    }

    /// This member's nacks that are due, with their keys let go: the member
    /// claims them back and hands them out first.
    pub(super) fn take_due(&self, now: Instant) -> Vec<u64> {
        let mut held = self.keys.lock();
        let mut due = Vec::new();
        while let Some((&(at, seq), _)) = held.delayed.first_key_value() {
            if at > now {
                break;
            }
            if let Some(key) = held.delayed.remove(&(at, seq)) {
                if let Some(k) = key {
                    held.release(&k);
                }
                due.push(seq);
            }
        }
        due
    }

    /// The sequences handed out and not settled.
    pub(super) fn out(&self) -> Vec<u64> {
        self.keys.lock().out.keys().copied().collect()
    }

    /// Whether one of this member's nacks is due.
    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.next_due().is_some_and(|at| at <= now)
    }

    /// When this member's next nack is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.keys.lock().delayed.keys().next().map(|(at, _)| *at)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

pub(super) fn now_ms() -> u64 {
    unix_ms()
}

#[async_trait]
impl Acker for Settler {
    async fn ack(&self, sequence: u64) -> Result<()> {
        let freed = {
            let mut held = self.keys.lock();
            match held.out.remove(&sequence) {
                Some(Some(key)) => {
                    held.release(&key);
                    !held.freed.is_empty()
                }
                _ => false,
            }
        };
        self.acks.push(StreamId::from_sequence(sequence));
        // Only a freed key gives the member something new to hand out.
        if freed {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn nack(&self, sequence: u64, delay: Duration) -> Result<()> {
        let id = StreamId::from_sequence(sequence).to_string();
        let due_ms = now_ms().saturating_add(delay.as_millis() as u64);
        // The entry stays pending under this member; the delayed set keeps
        // other members from reclaiming it before it is due.
        let added: redis::RedisResult<i64> = redis::cmd("ZADD")
            .arg(&self.member.delayed)
            .arg(due_ms)
            .arg(&id)
            .query_async(&mut self.member.shared.conn())
            .await;
        let mut held = self.keys.lock();
        let key = held.out.remove(&sequence).flatten();
        if let Err(e) = added {
            // Left pending: delivered again after the ack wait, by any member.
            if let Some(k) = &key {
                held.release(k);
            }
            drop(held);
            self.wake.notify_one();
            return Err(from_redis("nacking", e));
        }
        held.delayed.insert((Instant::now() + delay, sequence), key);
        drop(held);
        self.wake.notify_one();
        Ok(())
    }
}
