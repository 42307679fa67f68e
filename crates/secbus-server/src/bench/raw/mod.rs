//! The raw baselines: each engine used directly, without secbus, on the same
//! payload and in the same run as the scenario that compares against it.
//!
//! One file per engine. A scenario asks for the baseline of the engine it runs
//! on and reports `raw_per_s: null` where there is none yet.

pub(crate) mod embedded;
pub(crate) mod memory;

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
