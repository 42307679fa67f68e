//! Delivery semantics written once for every engine: settling a delivery
//! ([`Delivery`]), the dead letters ([`DeadLetter`]) and the dedup window
//! ([`DedupWindow`]).

mod dead_letter;
mod dedup;

pub use dead_letter::DeadLetter;
pub(crate) use dedup::DedupKey;
pub use dedup::{DEFAULT_DEDUP_MAX_KEYS, DEFAULT_DEDUP_WINDOW, DedupWindow, content_key};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use crate::engine::{Acker, Engine, EngineDelivery};
use crate::error::Result;
use crate::event::Event;
use crate::subscription::SubscribeOptions;

/// What a group delivery needs to settle itself.
pub(crate) struct GroupContext {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) group: String,
    pub(crate) options: Arc<SubscribeOptions>,
}

/// One event handed to one subscriber.
///
/// In a consumer group, settle it exactly once: [`Delivery::ack`] when done,
/// [`Delivery::nack`] to have it delivered again after a delay, or
/// [`Delivery::term`] to send it to the dead letters at once. A delivery dropped
/// unsettled is delivered again after the ack wait. After `max_deliveries`
/// attempts a nack sends it to the dead letters instead. Deliveries of a tail
/// need no settling; the calls are accepted and do nothing.
pub struct Delivery {
    event: Arc<Event>,
    sequence: u64,
    attempt: u32,
    acker: Option<Arc<dyn Acker>>,
    group: Option<Arc<GroupContext>>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("event_id", &self.event.id)
            .field("sequence", &self.sequence)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub(crate) fn new(
        raw: EngineDelivery,
        group: Option<Arc<GroupContext>>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Delivery {
            event: raw.event,
            sequence: raw.sequence,
            attempt: raw.attempt,
            acker: raw.acker,
            group,
            _permit: permit,
        }
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event, shared.
    pub fn event_arc(&self) -> Arc<Event> {
        self.event.clone()
    }

    /// Its position in the tenant's log.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// 1 for the first delivery to this group, 2 for the first redelivery, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is the last attempt before the dead letters.
    pub fn is_last_attempt(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| self.attempt >= g.options.max_deliveries)
    }

    /// Done: the group will not see this event again.
    pub async fn ack(self) -> Result<()> {
        match &self.acker {
            Some(acker) => acker.ack(self.sequence).await,
            None => Ok(()),
        }
    }

    /// Failed for now: deliver again after `delay`, or after the subscription's
    /// backoff for this attempt when `None`. On the last attempt the event goes
    /// to the dead letters with `error` as its last error.
    pub async fn nack(self, delay: Option<Duration>, error: Option<&str>) -> Result<()> {
        let (Some(acker), Some(group)) = (&self.acker, &self.group) else {
            return Ok(());
        };
        if self.attempt >= group.options.max_deliveries {
            let dl = DeadLetter::new(
                &self.event,
                &group.group,
                "max_deliveries",
                self.attempt,
                error.map(str::to_owned),
            );
            return self.dead_letter(dl).await;
        }
        let delay = delay.unwrap_or_else(|| group.options.backoff_for(self.attempt));
        acker.nack(self.sequence, delay).await
    }

    /// Will never succeed: send to the dead letters now with `reason`.
    pub async fn term(self, reason: &str) -> Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let dl = DeadLetter::new(
            &self.event,
            &group.group,
            "terminated",
            self.attempt,
            Some(reason.to_owned()),
        );
        self.dead_letter(dl).await
    }

    async fn dead_letter(&self, dl: DeadLetter) -> Result<()> {
        let (Some(acker), Some(group)) = (&self.acker, &self.group) else {
            return Ok(());
        };
        tracing::warn!(
            event_id = %self.event.id,
            event_type = %self.event.ty,
            tenant_id = %self.event.tenant,
            correlation_id = %self.event.correlationid,
            group = %group.group,
            attempts = dl.attempts,
            reason = %dl.reason,
            "event sent to the dead letters"
        );
        // Stored before the ack: a crash in between redelivers, never loses.
        group.engine.put_dead_letter(dl).await?;
        acker.ack(self.sequence).await
    }
}
