//! The raw baselines: each engine used directly, without secbus, on the same
//! payload and in the same run as the scenario that compares against it.
//!
//! One file per engine. A scenario asks for the baseline of the engine it runs
//! on and reports `raw_per_s: null` where there is none yet.

pub(crate) mod embedded;
pub(crate) mod memory;
pub(crate) mod nats;
pub(crate) mod redis;

use std::time::Duration;

/// What a baseline measured.
#[derive(Debug)]
pub(crate) struct RawRun {
    /// What was measured, in words, for the report.
    pub(crate) baseline: &'static str,
    /// Messages moved.
    pub(crate) events: usize,
    /// Wall time from the first message to the last one received or committed.
    pub(crate) wall: Duration,
}

impl RawRun {
    pub(crate) fn per_s(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }
}

/// The window the `publish` and `consume` baselines of an engine use, and
/// secbus with them: PubAcks in flight and messages per pull on nats (secbus's
/// default `publish_window` and `max_in_flight`), pipeline depth and entries
/// per `XREADGROUP` on redis (the depth secbus's appender runs with).
pub(crate) fn window(engine: &str) -> usize {
    match engine {
        "redis" => 500,
        _ => 256,
    }
}
