//! The read connections: a small pool used from Tokio's blocking threads so a
//! read of old history never stalls the async runtime.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;

use super::schema;
use crate::error::{Error, ErrorKind, Result};

/// Idle connections kept for reuse; more are opened under load and closed after.
const IDLE: usize = 4;

pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a read connection, on the calling thread.
    pub(super) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.idle.lock().pop() {
            Some(c) => c,
            None => schema::open_reader(&self.path)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock();
        if idle.len() < IDLE {
            idle.push(conn);
        }
        out
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub(super) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Engine, "embedded store: a read task failed").with_source(e)
            })?
    }
}
