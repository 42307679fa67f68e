//! The contract between the bus and an engine (memory, embedded, NATS, Redis).
//!
//! An engine stores and hands out records; everything that is the same for every
//! engine (validation, dead-letter decisions, in-flight bounds, the fallback
//! spool) lives above it in [`crate::Bus`] and [`crate::Subscription`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::delivery::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, TenantId};
use crate::subscription::SubscribeOptions;

/// What an engine can and cannot do. The conformance suite reads it: a case an
/// engine cannot pass is declared here, never skipped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Events survive a restart of the process (and of the engine's server).
    pub persistent: bool,
    /// A stalled consumer group makes `publish` wait (the log is in memory).
    /// Engines whose log is on disk keep memory bounded without blocking publishers.
    pub publish_waits_for_stalled_groups: bool,
    /// History is kept and can be replayed from the beginning, a sequence or a time.
    pub replay: bool,
    /// Tails may fall behind retained history and are told how many they missed.
    pub tail_lag_reported: bool,
    /// Group positions survive a restart of the process.
    pub durable_groups: bool,
    /// Partition-key order holds across all members of a group. When false it
    /// holds within each member (one subscription): engines whose members are
    /// independent clients of a server (Redis) cannot serialize a key between
    /// them without a coordinator; give ordered work one member per group.
    pub key_order_across_members: bool,
}

/// One event to append, with what the bus layer worked out for it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event, validated, with `time` set.
    pub event: Arc<Event>,
    /// SHA-256 of the canonical (type, tenant, subject, data), when content dedup is on.
    pub content_key: Option<[u8; 32]>,
    /// A redriven dead letter: only this group receives it, tails skip it, and
    /// the dedup window does not apply (the id was seen before, on purpose).
    pub redrive_for: Option<Arc<str>>,
}

/// The outcome of appending one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this log position.
    Stored(u64),
    /// An event with the same id (or content) is in the dedup window; nothing stored.
    Duplicate,
}

/// Settles deliveries of one engine subscription.
#[async_trait]
pub trait Acker: Send + Sync {
    /// The delivery at `sequence` is done.
    async fn ack(&self, sequence: u64) -> Result<()>;
    /// Deliver the event at `sequence` again after `delay`.
    async fn nack(&self, sequence: u64, delay: Duration) -> Result<()>;
}

/// A delivery as an engine hands it out.
pub struct EngineDelivery {
    /// The event.
    pub event: Arc<Event>,
    /// Its log position.
    pub sequence: u64,
    /// 1 for the first delivery to the group; 1 for every tail delivery.
    pub attempt: u32,
    /// `None` for tails, whose deliveries need no settling.
    pub acker: Option<Arc<dyn Acker>>,
    /// Set on a redriven dead letter: the one group meant to receive it.
    pub redrive_for: Option<Arc<str>>,
}

/// The deliveries of one engine subscription, in order.
#[async_trait]
pub trait EngineStream: Send {
    /// The next delivery, or `None` once the engine is closed.
    async fn next(&mut self) -> Option<Result<EngineDelivery>>;
}

/// How far a consumer group is behind, as its engine reports it.
///
/// What "an event of the group" means follows the engine: NATS counts the
/// events of the group's type pattern (the consumer's filter); memory counts
/// them too; embedded and Redis groups read the whole tenant log and skip
/// other types as they go, so events of every type the group has not read yet
/// count as `waiting`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupLag {
    /// Stored and not handed out to any member yet (JetStream `num_pending`,
    /// Redis `lag`).
    pub waiting: u64,
    /// Handed out at least once and not acked yet, including nacked events
    /// waiting for their redelivery (JetStream `num_ack_pending`, Redis `pending`).
    pub unacked: u64,
}

impl GroupLag {
    /// Events of the group not acked yet: `waiting + unacked`.
    pub fn total(&self) -> u64 {
        self.waiting.saturating_add(self.unacked)
    }
}

/// The error of a lag query for a group the engine does not know.
pub(crate) fn unknown_group(tenant: &TenantId, group: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("tenant {tenant} has no consumer group {group:?}"),
    )
    .with_field("group")
}

/// A storage engine behind the bus.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// A short name: `memory`, `embedded`, `nats`, `redis`.
    fn name(&self) -> &'static str;

    /// What this engine can do.
    fn capabilities(&self) -> Capabilities;

    /// Appends records in order. Returns once every stored record is durable
    /// (as the engine defines it). With `wait` false, returns
    /// [`crate::ErrorKind::Full`] instead of waiting for room.
    async fn append(&self, records: Vec<Record>, wait: bool) -> Result<Vec<Appended>>;

    /// Appends one record without waiting, when the engine can (the memory
    /// engine with room in its history); otherwise gives the record back for
    /// [`Engine::append`]. A publish on the memory engine takes about a
    /// microsecond, and the futures and vectors of `append` were a fifth of it.
    fn append_now(&self, record: Record) -> std::result::Result<Result<Appended>, Record> {
        Err(record)
    }

    /// Opens a subscription; the options are validated already.
    async fn subscribe(&self, options: &SubscribeOptions) -> Result<Box<dyn EngineStream>>;

    /// Stores a dead letter.
    async fn put_dead_letter(&self, dead_letter: DeadLetter) -> Result<()>;

    /// Dead letters of `tenant`, oldest first.
    async fn dead_letters(&self, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>>;

    /// One dead letter by id.
    async fn dead_letter(&self, tenant: &TenantId, id: &str) -> Result<Option<DeadLetter>>;

    /// Deletes one dead letter; false when there was none.
    async fn delete_dead_letter(&self, tenant: &TenantId, id: &str) -> Result<bool>;

    /// How far `group` of `tenant` is behind. [`ErrorKind::NotFound`] when the
    /// engine knows no such group; [`ErrorKind::Unsupported`] from engines that
    /// cannot tell.
    async fn group_lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        let _ = (tenant, group);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the {} engine cannot report consumer group lag",
                self.name()
            ),
        ))
    }

    /// Checks the engine answers.
    async fn ping(&self) -> Result<()>;

    /// Flushes what is buffered (group positions, acks) and releases the engine.
    async fn close(&self) -> Result<()>;
}
