//! The seam: [`Publisher`] and [`Subscriber`], their contracts, and [`Bus`], which
//! implements both over any engine chosen by URL.
//!
//! Application code depends on these two traits. What they promise holds on
//! every engine; the conformance suite (`testkit`) checks it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::delivery::{DEFAULT_DEDUP_WINDOW, DeadLetter, content_key};
use crate::engine::{Appended, Capabilities, Engine, GroupLag, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{DEFAULT_MAX_EVENT_BYTES, Event, EventId, TenantId};
use crate::fallback::{DEFAULT_SPOOL_MAX_BYTES, FallbackOutcome, Spool};
use crate::gate::{Gate, Scope};
use crate::subscription::{SubscribeOptions, Subscription};

/// What a successful publish tells the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The event's id.
    pub id: EventId,
    /// Its position in the tenant's log; `None` for a duplicate.
    pub sequence: Option<u64>,
    /// True when an event with the same id (or content, with content dedup on)
    /// was published within the dedup window: nothing new was stored.
    pub duplicate: bool,
}

/// Publishes events.
///
/// Contract, on every engine:
/// - Implementations are safe to share between tasks and threads.
/// - `publish` returns `Ok` only once the event is durable in the engine:
///   committed to disk (embedded), acknowledged by the server (NATS, Redis), or
///   enqueued in the log (memory, which keeps nothing across restarts). An `Err`
///   means the event may or may not be stored; publishing it again is safe,
///   because events are deduplicated by id within the dedup window.
/// - A refused event (invalid, too large) stores nothing and says why with a
///   stable [`ErrorKind`] code.
/// - Events published by one task are stored in the order of the calls.
/// - `publish` waits for room when the engine applies backpressure;
///   `try_publish` fails with [`ErrorKind::Full`] instead.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one event; see the trait's contract.
    async fn publish(&self, event: Event) -> Result<Receipt>;

    /// Like `publish`, but fails with [`ErrorKind::Full`] rather than wait for room.
    async fn try_publish(&self, event: Event) -> Result<Receipt>;

    /// Publishes events in order, all or nothing at validation: if any event is
    /// refused, none is stored. Receipts are in the order of the events.
    async fn publish_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>>;

    /// Never fails: publishes, or when the engine errors or is unreachable,
    /// writes the event to the on-disk spool, which a background task drains into
    /// the engine, in order, once it answers again. The spool survives restarts
    /// and is bounded; when it is full the event is refused loudly (an error log
    /// line and a counter), never dropped silently. An event the bus would refuse
    /// anyway (invalid, too large) is refused, not spooled.
    async fn publish_with_fallback(&self, event: Event) -> FallbackOutcome;
}

/// Subscribes to events.
///
/// Contract, on every engine:
/// - A subscription sees only its tenant's events, only of its type pattern.
/// - Delivery is at-least-once: a group delivery that is not acked (nacked,
///   dropped, or left past the ack wait) is delivered again, to any member, up to
///   `max_deliveries` times; then it goes to the dead letters with the reason,
///   the attempts and the last error. Consumers must tolerate seeing an event twice.
/// - In a group each event goes to one member at a time; groups are independent
///   (every group sees every event). Events with the same `partitionkey` are handed
///   out one at a time, in publish order; different keys run concurrently.
/// - A subscriber holds at most `max_in_flight` unsettled deliveries; nothing
///   buffers without bound.
/// - Tails see every event from their start position and settle nothing.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Opens a subscription.
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription>;
}

/// Settings of a [`Bus`], with their defaults.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Largest encoded event accepted (default 1 MiB).
    pub max_event_bytes: usize,
    /// Events with an id seen within this window are not stored again (default 5 min).
    pub dedup_window: Duration,
    /// The most ids a dedup window holds per tenant (default 1,000,000); past it
    /// the oldest are forgotten early (logged and counted) rather than grow memory.
    /// The memory engine holds at most twice `memory_history`.
    pub dedup_max_keys: usize,
    /// Also refuse events whose (type, tenant, subject, data) was seen in the window.
    pub content_dedup: bool,
    /// Where `publish_with_fallback` spools (default `./secbus-spool`).
    pub spool_dir: PathBuf,
    /// The most the spool holds on disk before refusing (default 1 GiB).
    pub spool_max_bytes: u64,
    /// Events of history kept per tenant by the memory engine (default 65,536),
    /// and a quarter more for events with a `causationid` (what a consumer
    /// publishes before it acks must not wait for its own acks).
    pub memory_history: usize,
    /// Durable engines delete events stored longer ago than this (default: `None`,
    /// keep forever). Retention runs in the background, about once a second, and
    /// deletes regardless of consumer groups, like Kafka: a group that falls
    /// further behind than the retention skips what was deleted.
    pub retention_max_age: Option<Duration>,
    /// Durable engines keep at most this many events per tenant, deleting the
    /// oldest first (default: `None`, keep every event). Like `retention_max_age`,
    /// it does not wait for consumer groups.
    pub retention_max_events: Option<u64>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_max_keys: crate::delivery::DEFAULT_DEDUP_MAX_KEYS,
            content_dedup: false,
            spool_dir: PathBuf::from("secbus-spool"),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            memory_history: 65_536,
            retention_max_age: None,
            retention_max_events: None,
        }
    }
}

/// The event bus over one engine. Cheap to clone; clones share the engine.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

/// A handle that does not keep the bus alive: the spool's drain holds one, so
/// a bus dropped by its users is freed even while its spool waits.
#[derive(Clone)]
pub(crate) struct WeakBus(std::sync::Weak<BusInner>);

impl WeakBus {
    pub(crate) fn upgrade(&self) -> Option<Bus> {
        self.0.upgrade().map(|inner| Bus { inner })
    }
}

impl std::fmt::Debug for WeakBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakBus")
    }
}

struct BusInner {
    engine: Arc<dyn Engine>,
    gate: Option<Arc<dyn Gate>>,
    config: BusConfig,
    url: String,
    spool: tokio::sync::OnceCell<Arc<Spool>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.inner.url)
            .field("engine", &self.inner.engine.name())
            .finish()
    }
}

impl Bus {
    /// Opens the engine named by `url` with default settings:
    /// `memory:`, `embedded:<dir>`, `nats://host:port`, `redis://host:port`.
    pub async fn connect(url: &str) -> Result<Bus> {
        Bus::connect_with(url, BusConfig::default()).await
    }

    /// Opens the engine named by `url` with `config`.
    pub async fn connect_with(url: &str, config: BusConfig) -> Result<Bus> {
        let engine = crate::backend::open(url, &config).await?;
        let bus = Bus::from_engine(engine, url, config);
        // Events an earlier run spooled start draining now, not at the first
        // publish_with_fallback of this run.
        if crate::fallback::holds_events(&bus.inner.config.spool_dir) {
            bus.spool().await?;
        }
        Ok(bus)
    }

    /// A bus over an engine made by hand.
    pub fn from_engine(engine: Arc<dyn Engine>, url: &str, config: BusConfig) -> Bus {
        Bus {
            inner: Arc::new(BusInner {
                engine,
                gate: None,
                config,
                url: url.to_owned(),
                spool: tokio::sync::OnceCell::new(),
            }),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakBus {
        WeakBus(Arc::downgrade(&self.inner))
    }

    /// A bus over the same engine whose every publish passes `gate` first.
    pub fn with_gate(&self, gate: Arc<dyn Gate>) -> Bus {
        Bus {
            inner: Arc::new(BusInner {
                engine: self.inner.engine.clone(),
                gate: Some(gate),
                config: self.inner.config.clone(),
                url: self.inner.url.clone(),
                spool: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// A publisher bound to `scope`: events outside it are refused with
    /// [`ErrorKind::TenantMismatch`] before anything else is checked.
    pub fn publisher(&self, scope: Scope) -> ScopedPublisher {
        ScopedPublisher {
            bus: self.clone(),
            scope,
        }
    }

    /// The URL the bus was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The settings.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The engine's name and capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.engine.capabilities()
    }

    /// The engine's short name (`memory`, `embedded`, `nats`, `redis`).
    pub fn engine_name(&self) -> &'static str {
        self.inner.engine.name()
    }

    /// Checks the engine answers.
    pub async fn ping(&self) -> Result<()> {
        self.inner.engine.ping().await
    }

    /// Validates an event and makes its record: size limit, `time` set when absent,
    /// the content key when content dedup is on.
    pub(crate) fn prepare(&self, mut event: Event) -> Result<Record> {
        event.check_size(self.inner.config.max_event_bytes)?;
        if let Some(gate) = &self.inner.gate {
            gate.check(&mut event)?;
        }
        if event.time.is_none() {
            event.time = Some(Utc::now());
        }
        let content_key = self.inner.config.content_dedup.then(|| content_key(&event));
        Ok(Record {
            event: Arc::new(event),
            content_key,
            redrive_for: None,
        })
    }

    async fn append_one(&self, record: Record, wait: bool) -> Result<Receipt> {
        let id = record.event.id.clone();
        let record = match self.inner.engine.append_now(record) {
            Ok(appended) => return Ok(receipt(id, Some(appended?))),
            Err(record) => record,
        };
        let appended = self.inner.engine.append(vec![record], wait).await?;
        Ok(receipt(id, appended.first().copied()))
    }

    /// Appends prepared records (the spool drains through here).
    pub(crate) async fn append_records(&self, records: Vec<Record>) -> Result<Vec<Appended>> {
        self.inner.engine.append(records, true).await
    }

    /// How far consumer group `group` of `tenant` is behind, as the engine
    /// reports it (see [`GroupLag`] for what each engine counts).
    /// [`ErrorKind::NotFound`] when the engine knows no such group.
    pub async fn group_lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        self.inner.engine.group_lag(tenant, group).await
    }

    /// Dead letters of `tenant`, oldest first, at most `limit`.
    pub async fn dead_letters(&self, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.engine.dead_letters(tenant, limit).await
    }

    /// Publishes a dead letter's event again, to the group that gave up on it
    /// only, and removes the dead letter once the event is stored.
    pub async fn redrive(&self, tenant: &TenantId, id: &str) -> Result<Receipt> {
        let engine = &self.inner.engine;
        let Some(dl) = engine.dead_letter(tenant, id).await? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no dead letter {id:?}"),
            ));
        };
        let record = Record {
            event: Arc::new(dl.event),
            content_key: None,
            redrive_for: Some(Arc::from(dl.group.as_str())),
        };
        let receipt = self.append_one(record, true).await?;
        engine.delete_dead_letter(tenant, id).await?;
        Ok(receipt)
    }

    /// Deletes a dead letter; false when there was none with that id.
    pub async fn delete_dead_letter(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        self.inner.engine.delete_dead_letter(tenant, id).await
    }

    /// The fallback spool, opened on first use.
    pub async fn spool(&self) -> Result<Arc<Spool>> {
        self.inner
            .spool
            .get_or_try_init(|| async {
                Spool::open(
                    self,
                    &self.inner.config.spool_dir,
                    self.inner.config.spool_max_bytes,
                )
                .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Flushes buffered state (acks, group positions, the spool's file) and
    /// closes the engine. Publishes after `close` fail with [`ErrorKind::Closed`].
    pub async fn close(&self) -> Result<()> {
        if let Some(spool) = self.inner.spool.get() {
            spool.sync()?;
        }
        self.inner.engine.close().await
    }
}

fn receipt(id: EventId, appended: Option<Appended>) -> Receipt {
    match appended {
        Some(Appended::Stored(seq)) => Receipt {
            id,
            sequence: Some(seq),
            duplicate: false,
        },
        _ => Receipt {
            id,
            sequence: None,
            duplicate: true,
        },
    }
}

impl Bus {
    /// [`Publisher::publish`], called without boxing its future: `bus.publish(event)`
    /// resolves here. On the memory engine the boxed future and the moves of
    /// the event into it were a tenth of a publish.
    pub async fn publish(&self, event: Event) -> Result<Receipt> {
        let record = self.prepare(event)?;
        self.append_one(record, true).await
    }
}

#[async_trait]
impl Publisher for Bus {
    async fn publish(&self, event: Event) -> Result<Receipt> {
        Bus::publish(self, event).await
    }

    async fn try_publish(&self, event: Event) -> Result<Receipt> {
        let record = self.prepare(event)?;
        self.append_one(record, false).await
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let records = events
            .into_iter()
            .map(|e| self.prepare(e))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<EventId> = records.iter().map(|r| r.event.id.clone()).collect();
        let appended = self.inner.engine.append(records, true).await?;
        Ok(ids
            .into_iter()
            .zip(
                appended
                    .into_iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .map(|(id, a)| receipt(id, a))
            .collect())
    }

    async fn publish_with_fallback(&self, event: Event) -> FallbackOutcome {
        match self.spool().await {
            Ok(spool) => spool.publish(self, event).await,
            Err(e) => {
                let outcome = FallbackOutcome::Refused(e);
                crate::fallback::log_refusal(&outcome);
                outcome
            }
        }
    }
}

#[async_trait]
impl Subscriber for Bus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription> {
        options.validate()?;
        let stream = self.inner.engine.subscribe(&options).await?;
        Ok(Subscription::new(
            stream,
            self.inner.engine.clone(),
            options,
        ))
    }
}

/// A [`Publisher`] bound to a [`Scope`]; see [`Bus::publisher`].
#[derive(Debug, Clone)]
pub struct ScopedPublisher {
    bus: Bus,
    scope: Scope,
}

impl ScopedPublisher {
    /// The scope it publishes in.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }
}

#[async_trait]
impl Publisher for ScopedPublisher {
    async fn publish(&self, event: Event) -> Result<Receipt> {
        self.scope.admit(&event)?;
        self.bus.publish(event).await
    }

    async fn try_publish(&self, event: Event) -> Result<Receipt> {
        self.scope.admit(&event)?;
        self.bus.try_publish(event).await
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        for event in &events {
            self.scope.admit(event)?;
        }
        self.bus.publish_batch(events).await
    }

    async fn publish_with_fallback(&self, event: Event) -> FallbackOutcome {
        if let Err(e) = self.scope.admit(&event) {
            let outcome = FallbackOutcome::Refused(e);
            crate::fallback::log_refusal(&outcome);
            return outcome;
        }
        self.bus.publish_with_fallback(event).await
    }
}
