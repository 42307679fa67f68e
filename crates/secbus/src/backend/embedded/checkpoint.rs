//! The checkpointer: a thread with its own connection that copies the
//! write-ahead log into the database file (and syncs it) when the writer says
//! enough was committed, so the writer never stops to do it.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::schema;
use crate::error::{Error, ErrorKind, Result};

/// Log pages (4 KiB) written between two checkpoints, about: 16 MiB.
pub(super) const EVERY_PAGES: usize = 4096;
/// A checkpoint also runs this often while anything was written, so a quiet
/// store's log does not sit uncopied.
const AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Log pages a transaction of `records` records of `bytes` bytes writes, about:
/// the pages the rows fill, plus the last page of the table and of its index,
/// which every commit rewrites.
pub(super) fn pages(records: usize, bytes: usize) -> usize {
    if records == 0 { 0 } else { 2 + bytes / 4096 }
}

/// Asks the checkpointer thread for a checkpoint; it stops when this is dropped.
pub(super) struct Checkpointer {
    nudge: mpsc::SyncSender<()>,
}

impl Checkpointer {
    pub(super) fn spawn(path: &Path) -> Result<Checkpointer> {
        let conn = schema::open_side(path)?;
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("secbus-checkpoint".to_owned())
            .spawn(move || {
                loop {
                    match nudged.recv_timeout(AT_LEAST_EVERY) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    // PASSIVE: copies what no reader still needs, never blocks
                    // the writer; what is left is copied next time.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "embedded store: checkpoint failed; retried later");
                    }
                }
            })
            .map_err(|e| {
                Error::new(ErrorKind::Io, "cannot start the embedded checkpointer").with_source(e)
            })?;
        Ok(Checkpointer { nudge })
    }

    /// Asks for a checkpoint; a no-op while one is already asked for.
    pub(super) fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }
}
