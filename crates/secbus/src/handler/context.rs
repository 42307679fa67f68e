//! What a handler knows about the delivery it is handling, and how it publishes
//! the events this one causes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::bus::{Bus, Receipt};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventBuilder, EventId, EventType, TenantId};

/// One delivery as a handler sees it: the tenant, the attempt, the position, the
/// group, and a way to publish follow-up events.
///
/// The tenant is the event's `tenantid`, which the subscription has checked is
/// the group's tenant; nothing else (not the payload, not a header) can set it.
/// Cheap to clone.
#[derive(Clone)]
pub struct HandlerContext {
    bus: Bus,
    event: Arc<Event>,
    group: Arc<str>,
    sequence: u64,
    attempt: u32,
    max_deliveries: u32,
    retries: u32,
    ack_deadline: Instant,
    /// Follow-ups made by this call so far; part of their ids.
    caused: Arc<AtomicU32>,
}

impl std::fmt::Debug for HandlerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerContext")
            .field("tenant", &self.event.tenant)
            .field("event_id", &self.event.id)
            .field("group", &self.group)
            .field("sequence", &self.sequence)
            .field("attempt", &self.attempt)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl HandlerContext {
    pub(crate) fn new(
        bus: Bus,
        event: Arc<Event>,
        group: Arc<str>,
        sequence: u64,
        attempt: u32,
        max_deliveries: u32,
        ack_deadline: Instant,
    ) -> Self {
        HandlerContext {
            bus,
            event,
            group,
            sequence,
            attempt,
            max_deliveries,
            retries: 0,
            ack_deadline,
            caused: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The context of the next in-process try of the same delivery: one more
    /// retry, and follow-up ids counted afresh so a try that publishes what an
    /// earlier try published makes the same ids (and the bus drops the copies).
    pub(crate) fn next_try(&self) -> Self {
        HandlerContext {
            retries: self.retries + 1,
            caused: Arc::new(AtomicU32::new(0)),
            ..self.clone()
        }
    }

    /// The tenant of the event, and the only tenant this handler acts for.
    pub fn tenant(&self) -> &TenantId {
        &self.event.tenant
    }

    /// The event being handled.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event being handled, shared.
    pub fn event_arc(&self) -> Arc<Event> {
        self.event.clone()
    }

    /// The consumer group the worker reads for.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The event's position in the tenant's log.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// 1 for the first delivery of this event to the group, 2 for the first
    /// redelivery, and so on. In-process retries do not count; see [`Self::retries`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Deliveries the group makes before the dead letters (`max_deliveries`).
    pub fn max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    /// Whether a `Retry` now sends the event to the dead letters.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_deliveries
    }

    /// In-process retries of this delivery before this call (0 on the first
    /// call), as made by [`super::RetryLayer`].
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// About when the group gives this delivery to another member if it is not
    /// settled (the delivery time plus the ack wait). Work past it is likely
    /// done twice.
    pub fn ack_deadline(&self) -> Instant {
        self.ack_deadline
    }

    /// The bus, to publish or read anything. Prefer [`Self::caused`] and
    /// [`Self::publish`] for follow-up events: they keep the tenant and the story.
    pub fn publisher(&self) -> &Bus {
        &self.bus
    }

    /// Starts a follow-up event caused by this one: same tenant, `causationid` =
    /// this event's id, same `correlationid`, a child span of its trace.
    ///
    /// Its id is derived from (this event, the group, the follow-up's type, how
    /// many follow-ups this call made before), not random: when a redelivery or
    /// an in-process retry publishes the same follow-ups again, they carry the
    /// same ids and the bus stores them once (within the dedup window). Set
    /// another id with [`EventBuilder::id`] when that is not what you want.
    pub fn caused(&self, ty: EventType) -> EventBuilder {
        let index = self.caused.fetch_add(1, Ordering::Relaxed);
        let id = follow_up_id(&self.event.id, &self.group, &ty, index);
        Event::builder(ty, self.event.tenant.clone())
            .caused_by(&self.event)
            .id(id)
    }

    /// Publishes an event of this context's tenant; an event of any other tenant
    /// is refused with [`ErrorKind::TenantMismatch`] and nothing is stored.
    pub async fn publish(&self, event: Event) -> Result<Receipt> {
        if event.tenant != self.event.tenant {
            return Err(Error::new(
                ErrorKind::TenantMismatch,
                format!(
                    "a handler of tenant {:?} cannot publish an event of tenant {:?}",
                    self.event.tenant.as_str(),
                    event.tenant.as_str()
                ),
            )
            .with_field("tenantid"));
        }
        self.bus.publish(event).await
    }
}

/// A UUID-shaped (version 8) id from a SHA-256 of what identifies a follow-up.
fn follow_up_id(parent: &EventId, group: &str, ty: &EventType, index: u32) -> EventId {
    let mut hash = Sha256::new();
    for part in [parent.as_str(), group, ty.as_str()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(index.to_be_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let uuid = uuid::Builder::from_custom_bytes(bytes).into_uuid();
    EventId::new(uuid.to_string()).unwrap_or_else(|_| EventId::new_v7())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_up_ids_are_stable_and_distinct() {
        let parent = EventId::new_v7();
        let ty = EventType::new("detection.finding").unwrap();
        let a = follow_up_id(&parent, "g", &ty, 0);
        assert_eq!(a, follow_up_id(&parent, "g", &ty, 0));
        assert_ne!(a, follow_up_id(&parent, "g", &ty, 1));
        assert_ne!(a, follow_up_id(&parent, "h", &ty, 0));
        assert_ne!(a, follow_up_id(&EventId::new_v7(), "g", &ty, 0));
        assert_eq!(a.as_str().len(), 36);
    }
}
