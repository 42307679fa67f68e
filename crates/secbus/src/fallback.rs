//! `publish_with_fallback`: the on-disk spool that takes events while the engine
//! is down and drains them into it, in order, when it is back.

use std::path::Path;

use crate::bus::{Bus, Receipt};
use crate::error::{Error, Result};
use crate::event::Event;

/// The default bound on the spool's size on disk: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// What became of an event given to `publish_with_fallback`.
#[derive(Debug)]
pub enum FallbackOutcome {
    /// Stored in the engine.
    Published(Receipt),
    /// Written to the spool; it will reach the engine when the engine answers.
    Spooled,
    /// Neither: invalid, or the spool is full or unwritable. Logged and counted.
    Refused(Error),
}

/// The spool behind `publish_with_fallback`.
#[derive(Debug)]
pub struct Spool {}

impl Spool {
    pub(crate) fn open(_bus: Bus, _dir: &Path, _max_bytes: u64) -> Result<Spool> {
        Err(Error::new(
            crate::ErrorKind::Io,
            "the spool is not written yet",
        ))
    }

    pub(crate) async fn publish(&self, _event: Event) -> FallbackOutcome {
        FallbackOutcome::Refused(Error::new(
            crate::ErrorKind::Io,
            "the spool is not written yet",
        ))
    }

    pub(crate) fn sync(&self) -> Result<()> {
        Ok(())
    }
}

pub(crate) fn log_refusal(outcome: &FallbackOutcome) {
    if let FallbackOutcome::Refused(e) = outcome {
        tracing::error!(code = e.code(), error = %e, "publish_with_fallback refused an event");
    }
}
