//! What follows a commit, done on the async runtime rather than on the writer
//! thread: the new records go to the cache, their readers are woken, and every
//! caller gets its answer.
//!
//! The writer hands over one [`Committed`] per transaction through a channel,
//! so waking a hundred publishers costs the writer one wake-up, and the
//! publishers are woken from inside the runtime, where that is cheap.
//! Transactions are handed over in commit order and handled in that order.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::log::EmbeddedLog;
use crate::engine::Appended;
use crate::error::Result;
use crate::event::TenantId;
use crate::local::LogRecord;

/// One finished transaction (or one that failed: then `records` is empty).
pub(super) struct Committed {
    /// New records, in runs of one tenant, in commit order.
    pub(super) records: Vec<(TenantId, Vec<LogRecord>)>,
    pub(super) answers: Vec<Answer>,
    /// The encoded events, freed here rather than on the writer thread.
    pub(super) spent: Vec<Vec<u8>>,
}

/// A caller's answer, with the queue room it held until now.
pub(super) enum Answer {
    Append(
        oneshot::Sender<Result<Vec<Appended>>>,
        Result<Vec<Appended>>,
        OwnedSemaphorePermit,
    ),
    Write(oneshot::Sender<Result<usize>>, Result<usize>),
    Close(oneshot::Sender<Result<()>>, Result<()>),
}

/// Starts the task that handles committed transactions; it ends when the
/// writer drops the sender.
pub(super) fn spawn(log: Arc<EmbeddedLog>) -> mpsc::UnboundedSender<Committed> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Committed>();
    tokio::spawn(async move {
        let mut touched: Vec<TenantId> = Vec::new();
        while let Some(done) = rx.recv().await {
            drop(done.spent);
            for (tenant, run) in done.records {
                log.recent.push(&tenant, run);
                if !touched.contains(&tenant) {
                    touched.push(tenant);
                }
            }
            for tenant in touched.drain(..) {
                log.bump(&tenant);
            }
            for answer in done.answers {
                match answer {
                    Answer::Append(reply, result, permit) => {
                        let _ = reply.send(result);
                        drop(permit);
                    }
                    Answer::Write(reply, result) => {
                        let _ = reply.send(result);
                    }
                    Answer::Close(reply, result) => {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    });
    tx
}
