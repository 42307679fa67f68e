//! An event a consumer group gave up on, with why and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// An event a group could not process, kept per tenant until redriven or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The dead letter's own id (a UUIDv7, so ids sort by time).
    pub id: String,
    /// The event as it was delivered.
    pub event: Event,
    /// The consumer group that gave up.
    pub group: String,
    /// `max_deliveries` (attempts ran out) or `terminated` (a consumer called term).
    pub reason: String,
    /// How many times the group received it.
    pub attempts: u32,
    /// The last error a consumer reported, if any.
    pub last_error: Option<String>,
    /// When the event was published (its `time`).
    pub published_at: Option<DateTime<Utc>>,
    /// When it became a dead letter.
    pub dead_at: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter for `event` in `group`, made now.
    pub fn new(
        event: &Event,
        group: &str,
        reason: &str,
        attempts: u32,
        last_error: Option<String>,
    ) -> Self {
        DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            event: event.clone(),
            group: group.to_owned(),
            reason: reason.to_owned(),
            attempts,
            last_error,
            published_at: event.time,
            dead_at: Utc::now(),
        }
    }
}
