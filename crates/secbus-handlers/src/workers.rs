//! The workers a handler runs as, stopped together.

use secbus::handler::{WorkerHandle, WorkerStats};

use crate::error::Result;

/// The running workers of one handler (one per tenant group).
#[derive(Debug, Default)]
pub struct Workers {
    handles: Vec<WorkerHandle>,
}

impl Workers {
    pub(crate) fn push(&mut self, handle: WorkerHandle) {
        self.handles.push(handle);
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// What the workers did so far, added up.
    pub fn stats(&self) -> WorkerStats {
        self.handles
            .iter()
            .map(WorkerHandle::stats)
            .fold(WorkerStats::default(), add)
    }

    /// Stops taking deliveries, lets the calls under way finish and settle,
    /// and returns what was done.
    pub async fn shutdown(self) -> Result<WorkerStats> {
        let mut total = WorkerStats::default();
        for handle in self.handles {
            total = add(total, handle.shutdown().await?);
        }
        Ok(total)
    }
}

fn add(mut a: WorkerStats, b: WorkerStats) -> WorkerStats {
    a.handled += b.handled;
    a.failed += b.failed;
    a.retried += b.retried;
    a.dead_lettered += b.dead_lettered;
    a.settle_failures += b.settle_failures;
    a.abandoned += b.abandoned;
    a
}
