//! Consumer-group members: every member of group `G` of tenant `T` reads the
//! durable pull consumer `T__G`, filtered on `<prefix>.T.<type pattern>`.
//!
//! JetStream does the work sharing between processes, the ack wait and the
//! delivery count. Within one process the members of a group share one puller
//! ([`GroupConsumer`], requests in `pull.rs`): messages arrive in stream order
//! in one place, so partition-key order holds across those members
//! ([`KeyOrder`]), and a member pulls only when it has room for a delivery.
//!
//! What this file adds to JetStream:
//! - a group that survives the server going away: a request that fails, goes
//!   silent or spans a reconnect is sent again (with backoff after failures),
//!   and the durable consumer is created again when it is missing, instead of
//!   the group stopping quietly;
//! - messages pulled and never handed out are released (`-NAK`) when the last
//!   member goes and when the bus closes, and deliveries still in hand at the
//!   close too: the process is going away, another can take them sooner than
//!   after their ack wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::ack_reply::AckReply;
use super::config::AckMode;
use super::engine::Shared;
use super::error;
use super::key_order::{Held, KeyOrder};
use super::publish::REDRIVE_FOR;
use super::pull::{HEARTBEAT, Pulled, Puller};
use crate::engine::{Acker, EngineDelivery, EngineStream};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::subscription::{StartAt, SubscribeOptions};

/// Unacknowledged deliveries the server lets one group have at once, across processes.
const MAX_ACK_PENDING: i64 = 20_000;
/// The delay of the `-NAK`s that give back what a group held when it goes
/// away. Longer than the server takes to drop the group's pull request once
/// its inbox is gone (within one heartbeat): a redelivery meeting that request
/// first would trip the 2.9 server (see `pull.rs`).
const RELEASE_DELAY: Duration = HEARTBEAT
    .saturating_mul(2)
    .saturating_add(Duration::from_millis(500));
/// The longest wait between two attempts to get the pull stream back.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// The groups of one engine that have members in this process.
pub(super) type Groups = tokio::sync::Mutex<HashMap<String, Weak<GroupConsumer>>>;

/// The durable consumer name of `group` of `tenant`. Tenants have no `_`, so
/// the double underscore cannot be ambiguous.
pub(super) fn consumer_name(tenant: &str, group: &str) -> String {
    format!("{tenant}__{group}")
}

/// Opens a member of the group named in `options`.
pub(super) async fn open(
    shared: Arc<Shared>,
    options: &SubscribeOptions,
    group: &str,
) -> Result<Box<dyn EngineStream>> {
    let tenant = options.tenant.as_str();
    let name = consumer_name(tenant, group);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name.clone()),
        description: Some(format!(
            "secbus consumer group {group} of tenant {tenant}; secbus dead-letters \
             an event after {} deliveries",
            options.max_deliveries
        )),
        deliver_policy: deliver_policy(options.start),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        // No server limit: the subscription dead-letters every delivery past
        // `max_deliveries` (the one after the last attempt ran out its ack wait)
        // and acks it. A server limit of max + 1 would make that delivery the
        // last one ever: if storing its dead letter failed, JetStream would drop
        // the event from the group with an advisory, where the subscription
        // counts on it coming back after the ack wait to try again.
        max_deliver: -1,
        filter_subject: shared.config.subject(tenant, options.types.as_str()),
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    };
    let mut groups = shared.groups.lock().await;
    let existing = groups.get(&name).and_then(Weak::upgrade);
    let group = match existing {
        Some(g) if g.config.filter_subject != config.filter_subject => {
            return Err(wrong_types(
                group,
                &g.config.filter_subject,
                &config.filter_subject,
            ));
        }
        Some(g) => g,
        None => {
            ensure_consumer(&shared, config.clone(), group).await?;
            let batch = options.max_in_flight.clamp(1, 1024);
            let g = Arc::new(GroupConsumer {
                closed: shared.closed.subscribe(),
                shared: shared.clone(),
                config,
                ack_wait: options.ack_wait,
                keys: Mutex::new(KeyOrder::default()),
                in_hand: Mutex::new(HashMap::new()),
                tokens: AtomicU64::new(0),
                freed: Notify::new(),
                puller: tokio::sync::Mutex::new(Puller::new(
                    shared.client.clone(),
                    &shared.config.stream,
                    &name,
                    batch,
                )),
                batch,
            });
            tokio::spawn(keep_held_alive(
                Arc::downgrade(&g),
                (options.ack_wait / 3).max(Duration::from_millis(5)),
            ));
            groups.retain(|_, g| g.strong_count() > 0);
            groups.insert(name, Arc::downgrade(&g));
            g
        }
    };
    drop(groups);
    Ok(Box::new(Member {
        closed: shared.closed.subscribe(),
        connections: shared.connections.subscribe(),
        group,
    }))
}

fn wrong_types(group: &str, has: &str, asked: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOptions,
        format!("group {group:?} reads {has:?}; a member cannot ask for {asked:?} (use another group name)"),
    )
    .with_field("type")
}

fn deliver_policy(start: StartAt) -> DeliverPolicy {
    match start {
        StartAt::New => DeliverPolicy::New,
        StartAt::Beginning => DeliverPolicy::All,
        StartAt::Sequence(n) => DeliverPolicy::ByStartSequence {
            start_sequence: n.max(1),
        },
        StartAt::Time(t) => DeliverPolicy::ByStartTime {
            start_time: nats_time(t),
        },
    }
}

/// `t` as the NATS client's time type (whichever time crate it was built with).
pub(super) fn nats_time(t: chrono::DateTime<chrono::Utc>) -> async_nats::datetime::DateTime {
    let nanos = t.timestamp_nanos_opt().map_or(0, i128::from);
    async_nats::datetime::from_nanos(nanos)
        .or_else(|_| async_nats::datetime::from_nanos(0))
        .unwrap_or_else(|_| async_nats::datetime::now())
}

/// Gets the group's durable consumer, creating it on first use.
///
/// An existing consumer keeps its position (its deliver policy), and a member
/// asking for other types is refused, as on every engine; a member with another
/// ack wait or delivery limit updates the consumer: the last process to open
/// the group sets them for the whole group.
async fn ensure_consumer(shared: &Shared, mut config: pull::Config, group: &str) -> Result<()> {
    let stream = &shared.events;
    let name = config.durable_name.clone().unwrap_or_default();
    match stream.consumer_info(&name).await {
        Ok(info) => {
            if info.config.filter_subject != config.filter_subject {
                return Err(wrong_types(
                    group,
                    &info.config.filter_subject,
                    &config.filter_subject,
                ));
            }
            config.deliver_policy = info.config.deliver_policy;
            if info.config.ack_wait == config.ack_wait
                && info.config.max_deliver == config.max_deliver
                && info.config.max_ack_pending == config.max_ack_pending
            {
                return Ok(());
            }
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {}
        Err(e) => {
            return Err(error::unavailable(
                format!("cannot look up the consumer {name}"),
                e,
            ));
        }
    }
    stream
        .create_consumer(config)
        .await
        .map_err(|e| error::unavailable(format!("cannot create the consumer {name}"), e))?;
    Ok(())
}

/// A group's members in this process: one pull stream, one key order.
pub(super) struct GroupConsumer {
    shared: Arc<Shared>,
    config: pull::Config,
    ack_wait: Duration,
    keys: Mutex<KeyOrder>,
    /// Deliveries handed out and not settled, by a token of their own (the same
    /// sequence may be in hand twice, after an ack wait ran out).
    in_hand: Mutex<HashMap<u64, AckReply>>,
    tokens: AtomicU64,
    /// A key came free.
    freed: Notify,
    puller: tokio::sync::Mutex<Puller>,
    /// Messages asked for per pull request.
    batch: usize,
    closed: watch::Receiver<bool>,
}

impl GroupConsumer {
    fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    /// How long an unsettled owner keeps its key: its ack wait, and as long
    /// again for the redelivery to come back here.
    fn lease(&self) -> Duration {
        self.ack_wait.saturating_mul(2)
    }

    /// Held-back deliveries at most before the group stops pulling.
    fn max_held(&self) -> usize {
        self.batch.saturating_mul(4).max(64)
    }

    fn hand_out(self: &Arc<Self>, held: Held) -> EngineDelivery {
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        self.in_hand.lock().insert(token, held.reply.clone());
        let acker = GroupAcker {
            reply: held.reply,
            key: held.key,
            sequence: held.sequence,
            token,
            group: self.clone(),
            mode: self.shared.config.ack,
            settled: AtomicBool::new(false),
        };
        EngineDelivery {
            event: held.event,
            sequence: held.sequence,
            attempt: held.attempt,
            acker: Some(Arc::new(acker)),
            redrive_for: held.redrive_for,
        }
    }

    /// Turns a delivered message into a [`Held`]; a message that is not a
    /// secbus event is terminated (it would fail on every delivery).
    async fn decode(&self, message: async_nats::Message) -> Option<Held> {
        let Some((reply, sequence, delivered)) = message.reply.as_ref().and_then(AckReply::parse)
        else {
            tracing::warn!(subject = %message.subject, "a pull consumer delivered a message without a JetStream ack subject");
            return None;
        };
        let redrive_for = message
            .headers
            .as_ref()
            .and_then(|h| h.get(REDRIVE_FOR))
            .map(|v| Arc::<str>::from(v.as_str()));
        match Event::from_json_limited(&message.payload, usize::MAX) {
            Ok(event) => Some(Held {
                key: event.partitionkey.as_deref().map(Arc::from),
                event: Arc::new(event),
                sequence,
                attempt: u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
                redrive_for,
                reply,
            }),
            Err(e) => {
                tracing::error!(
                    subject = %message.subject,
                    sequence,
                    consumer = %self.name(),
                    error = %e,
                    "a message in the events stream is not a secbus event; terminated"
                );
                let _ = reply.send(&self.shared.client, AckKind::Term).await;
                None
            }
        }
    }

    /// Sends a pull request when none is out, creating the consumer again
    /// first when it went missing.
    async fn request(&self, puller: &mut Puller) -> Result<()> {
        if !puller.consumer_ready {
            ensure_consumer(&self.shared, self.config.clone(), self.name()).await?;
            puller.consumer_ready = true;
        }
        puller.request().await
    }

    /// Waits before the next attempt after a failure; false when the bus closed meanwhile.
    async fn back_off(&self, puller: &mut Puller) -> bool {
        puller.failures = puller.failures.saturating_add(1);
        let delay = Duration::from_millis(50u64 << puller.failures.min(6)).min(MAX_RETRY_DELAY);
        let mut closed = self.closed.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            r = closed.wait_for(|c| *c) => r.is_err(),
        }
    }

    /// Gives back to JetStream what this process holds of the group: pulled
    /// and not handed out, and (when `in_hand`) handed out and not settled.
    pub(super) async fn release(&self, in_hand: bool) {
        let mut replies: Vec<AckReply> = self
            .keys
            .lock()
            .drain()
            .into_iter()
            .map(|h| h.reply)
            .collect();
        if in_hand {
            replies.extend(self.in_hand.lock().drain().map(|(_, r)| r));
        }
        // Members give the puller up as soon as they see the close.
        if let Ok(mut puller) =
            tokio::time::timeout(Duration::from_secs(1), self.puller.lock()).await
        {
            replies.extend(pulled_replies(puller.drain()));
        }
        for reply in replies {
            let _ = reply
                .send(&self.shared.client, AckKind::Nak(Some(RELEASE_DELAY)))
                .await;
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // The last member went: what was pulled for it goes back, sooner than
        // after its ack wait.
        let mut replies: Vec<AckReply> = self
            .keys
            .get_mut()
            .drain()
            .into_iter()
            .map(|h| h.reply)
            .collect();
        replies.extend(pulled_replies(self.puller.get_mut().drain()));
        if replies.is_empty() {
            return;
        }
        let client = self.shared.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for reply in replies {
                    let _ = reply.send(&client, AckKind::Nak(Some(RELEASE_DELAY))).await;
                }
            });
        }
    }
}

/// The ack subjects of messages pulled and never decoded.
fn pulled_replies(messages: Vec<async_nats::Message>) -> impl Iterator<Item = AckReply> {
    messages.into_iter().filter_map(|m| {
        m.reply
            .as_ref()
            .and_then(AckReply::parse)
            .map(|(r, _, _)| r)
    })
}

/// Keeps the ack wait of held-back deliveries from running out while their key
/// is busy, so they are not redelivered elsewhere out of order.
async fn keep_held_alive(group: Weak<GroupConsumer>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(group) = group.upgrade() else { return };
        let replies = group.keys.lock().replies();
        let client = group.shared.client.clone();
        drop(group);
        for reply in replies {
            let _ = reply.send(&client, AckKind::Progress).await;
        }
    }
}

struct Member {
    group: Arc<GroupConsumer>,
    closed: watch::Receiver<bool>,
    connections: watch::Receiver<u64>,
}

#[async_trait]
impl EngineStream for Member {
    async fn next(&mut self) -> Option<Result<EngineDelivery>> {
        let group = self.group.clone();
        let lease = group.lease();
        let scan_every =
            (group.ack_wait / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            if *self.closed.borrow() {
                return None;
            }
            let (ready, full, next_scan) = {
                let mut keys = group.keys.lock();
                keys.expire(scan_every, lease);
                let ready = keys.pop_ready();
                (ready, keys.held() >= group.max_held(), keys.next_scan())
            };
            if let Some(held) = ready {
                return Some(Ok(group.hand_out(held)));
            }
            // The common case under load: a message is in the inbox already.
            if !full
                && let Ok(mut puller) = group.puller.try_lock()
                && group.request(&mut puller).await.is_ok()
                && let Some(pulled) = puller.try_next()
            {
                match group.take(pulled, puller, lease).await {
                    Step::Deliver(d) => return Some(Ok(d)),
                    Step::Again => continue,
                    Step::Closed => return None,
                }
            }

            let freed = group.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let scan = async {
                match next_scan {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(scan);
            if full {
                // Held-back deliveries fill the group: wait for a key to come free.
                tokio::select! {
                    _ = &mut freed => {}
                    _ = &mut scan => {}
                    r = self.closed.changed() => if r.is_err() { return None },
                }
                continue;
            }
            let mut puller = tokio::select! {
                p = group.puller.lock() => p,
                _ = &mut freed => continue,
                _ = &mut scan => continue,
                r = self.closed.changed() => {
                    if r.is_err() { return None }
                    continue;
                }
            };
            if let Err(e) = group.request(&mut puller).await {
                if e.kind() == ErrorKind::InvalidOptions {
                    return Some(Err(e));
                }
                tracing::warn!(consumer = %group.name(), error = %e, "consumer group cannot pull; retrying");
                puller.consumer_ready = false;
                if !group.back_off(&mut puller).await {
                    return None;
                }
                continue;
            }
            self.connections.borrow_and_update();
            let lost_at = puller.lost_at();
            let lost = async {
                match lost_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let pulled = tokio::select! {
                pulled = puller.next() => pulled,
                _ = &mut freed => continue,
                _ = &mut scan => continue,
                _ = lost => {
                    // No message and no heartbeat: the server lost the requests.
                    puller.forget_requests();
                    continue;
                }
                r = self.connections.changed() => {
                    // Reconnected: a restarted server forgot the requests.
                    if r.is_ok() {
                        puller.forget_requests();
                    }
                    continue;
                }
                r = self.closed.changed() => {
                    if r.is_err() { return None }
                    continue;
                }
            };
            match group.take(pulled, puller, lease).await {
                Step::Deliver(d) => return Some(Ok(d)),
                Step::Again => {}
                Step::Closed => return None,
            }
        }
    }
}

/// What a member does after something came in on the inbox.
enum Step {
    Deliver(EngineDelivery),
    Again,
    Closed,
}

impl GroupConsumer {
    /// Deals with what came in: a message goes through the key order (and is
    /// handed out when its key lets it), the rest adjusts the puller.
    async fn take(
        self: &Arc<Self>,
        pulled: Pulled,
        mut puller: tokio::sync::MutexGuard<'_, Puller>,
        lease: Duration,
    ) -> Step {
        match pulled {
            Pulled::Message(message) => {
                puller.failures = 0;
                drop(puller);
                let Some(held) = self.decode(*message).await else {
                    return Step::Again;
                };
                let arrived = self.keys.lock().arrive(held, lease);
                match arrived {
                    Some(held) => Step::Deliver(self.hand_out(held)),
                    None => Step::Again,
                }
            }
            Pulled::Again => Step::Again,
            Pulled::ConsumerGone => {
                tracing::warn!(consumer = %self.name(), "the group's consumer is gone; creating it again");
                puller.consumer_ready = false;
                Step::Again
            }
            Pulled::Failed(why) => {
                tracing::warn!(consumer = %self.name(), error = %why, "consumer group pull failed; pulling again");
                if self.back_off(&mut puller).await {
                    Step::Again
                } else {
                    Step::Closed
                }
            }
        }
    }
}

/// Settles one delivery.
struct GroupAcker {
    reply: AckReply,
    key: Option<Arc<str>>,
    sequence: u64,
    token: u64,
    group: Arc<GroupConsumer>,
    mode: AckMode,
    settled: AtomicBool,
}

impl GroupAcker {
    /// Records the settlement once: the delivery leaves the hand, and its key
    /// goes to the next waiting delivery (ack) or waits for the redelivery (nack).
    fn settle(&self, acked: bool, delay: Duration) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.group.in_hand.lock().remove(&self.token);
        // Only a key coming free lets a member hand out something new.
        if let Some(key) = &self.key {
            let mut keys = self.group.keys.lock();
            if acked {
                keys.release(key, self.sequence, self.group.lease());
            } else {
                keys.extend(key, self.sequence, delay + self.group.lease());
            }
            drop(keys);
            self.group.freed.notify_waiters();
        }
    }
}

impl Drop for GroupAcker {
    fn drop(&mut self) {
        // Dropped unsettled: the server redelivers it after the ack wait, as
        // the contract says; the key waits for that redelivery.
        self.settle(false, Duration::ZERO);
    }
}

#[async_trait]
impl Acker for GroupAcker {
    async fn ack(&self, _sequence: u64) -> Result<()> {
        let client = &self.group.shared.client;
        match self.mode {
            AckMode::Plain => self.reply.send(client, AckKind::Ack).await?,
            AckMode::Double => {
                let timeout = self.group.shared.config.timeout;
                self.reply
                    .send_confirmed(client, AckKind::Ack, timeout)
                    .await?
            }
        }
        self.settle(true, Duration::ZERO);
        Ok(())
    }

    async fn nack(&self, _sequence: u64, delay: Duration) -> Result<()> {
        let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
        self.reply.send(&self.group.shared.client, kind).await?;
        self.settle(false, delay);
        Ok(())
    }
}
