//! The drain: background tasks that send spooled events into the engine, in
//! order, one batch at a time, retrying with backoff while the engine errors,
//! and that fsync what writers wrote on a timer.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::journal::{Journal, Next, ReadHandle};
use crate::bus::{Bus, WeakBus};
use crate::engine::Record;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;

/// The first retry after the engine refuses a batch; each next one waits twice
/// as long, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// While the engine keeps refusing, one warning per this many attempts.
const WARN_EVERY: u32 = 30;
/// Events sent to the engine in one append.
const BATCH_LINES: usize = 1000;
/// How often written segments are synced to disk.
const FSYNC_EVERY: Duration = Duration::from_millis(500);

/// The bus the drain sends to. A newer bus opened on the same directory in the
/// same process takes over (a restarted service); a closed one stops the drain.
#[derive(Debug, Clone, Default)]
struct Target {
    generation: u64,
    bus: Option<WeakBus>,
}

#[derive(Debug)]
struct Tasks {
    drain: JoinHandle<()>,
    flush: JoinHandle<()>,
}

/// Drains one spool directory.
#[derive(Debug)]
pub(super) struct Drainer {
    pub(super) journal: Arc<Journal>,
    target: watch::Sender<Target>,
    tasks: Mutex<Option<Tasks>>,
}

enum Attempt {
    Stored,
    /// The bus was closed: the events stay spooled for the next run.
    Closed,
    /// Another bus took over; read the batch again for it.
    Retarget,
    /// The engine refuses these events for good.
    Refused(Error),
}

impl Drainer {
    pub(super) fn new(journal: Arc<Journal>) -> Arc<Drainer> {
        Arc::new(Drainer {
            journal,
            target: watch::Sender::new(Target::default()),
            tasks: Mutex::new(None),
        })
    }

    /// Drains into `bus` from now on, starting the tasks on the current Tokio
    /// runtime when they are not running.
    pub(super) fn attach(self: &Arc<Self>, bus: WeakBus) -> Result<()> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::InvalidOptions,
                "publish_with_fallback needs a Tokio runtime to drain its spool",
            )
            .with_source(e)
        })?;
        self.target.send_modify(|t| {
            t.generation += 1;
            t.bus = Some(bus);
        });
        let mut tasks = self.tasks.lock();
        // Tasks end with the runtime that ran them; a later runtime restarts them.
        if tasks.as_ref().is_none_or(|t| t.drain.is_finished()) {
            if let Some(old) = tasks.take() {
                old.flush.abort();
            }
            let drain = runtime.spawn(self.clone().run(self.target.subscribe()));
            let flush = runtime.spawn(flush_loop(Arc::downgrade(&self.journal)));
            *tasks = Some(Tasks { drain, flush });
        }
        Ok(())
    }

    /// False once the bus the spool drains into is closed and none took over.
    pub(super) fn is_draining(&self) -> bool {
        self.target
            .borrow()
            .bus
            .as_ref()
            .is_some_and(|b| b.upgrade().is_some())
    }

    async fn run(self: Arc<Self>, mut target: watch::Receiver<Target>) {
        let journal = &self.journal;
        let mut handle = ReadHandle::default();
        loop {
            let current = target.borrow_and_update().clone();
            // A bus its users dropped stops the drain until another takes over;
            // what is spooled stays on disk for the next run.
            let Some(bus) = current.bus.as_ref().and_then(WeakBus::upgrade) else {
                if target.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let written = journal.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            match journal.next(&mut handle, BATCH_LINES) {
                Err(e) => {
                    tracing::error!(code = "io_error", error = %e, spool = %journal.dir().display(),
                        "cannot read the fallback spool; retrying");
                    handle = ReadHandle::default();
                    tokio::select! {
                        _ = target.changed() => {}
                        _ = tokio::time::sleep(MAX_RETRY) => {}
                    }
                }
                Ok(Next::Empty) => {
                    tokio::select! {
                        _ = &mut written => {}
                        _ = target.changed() => {}
                    }
                }
                Ok(Next::Torn {
                    segment,
                    offset,
                    end,
                    bytes,
                }) => {
                    journal.set_aside(
                        segment,
                        offset,
                        &bytes,
                        ErrorKind::MalformedJson.code(),
                        "a segment ends in a line with no end: a write cut short",
                        true,
                    );
                    journal.skip(segment, end);
                }
                Ok(Next::Lines { segment, lines }) => {
                    let mut records = Vec::with_capacity(lines.len());
                    for (offset, line) in lines.iter() {
                        match decode(&bus, line) {
                            Ok(record) => records.push((offset, record)),
                            Err(e) => journal.set_aside(
                                segment,
                                offset,
                                line,
                                e.code(),
                                &e.to_string(),
                                false,
                            ),
                        }
                    }
                    match self.deliver(&bus, segment, records, &mut target).await {
                        Attempt::Stored | Attempt::Refused(_) => {
                            if journal.commit(segment, lines.end, lines.len() as u64) {
                                tracing::info!(spool = %journal.dir().display(),
                                    "fallback spool drained; publishing directly again");
                                journal.settled.notify_waiters();
                            }
                        }
                        Attempt::Closed => {
                            let depth = journal.depth();
                            self.target.send_if_modified(|t| {
                                let same = t.generation == current.generation;
                                if same {
                                    t.bus = None;
                                }
                                same
                            });
                            tracing::info!(spool = %journal.dir().display(), depth,
                                "the bus is closed; spooled events stay on disk for the next run");
                            journal.settled.notify_waiters();
                        }
                        Attempt::Retarget => {}
                    }
                }
            }
        }
    }

    /// Sends one batch, in order. Events the engine refuses for good are found by
    /// sending the batch one event at a time and set aside; the rest go in order.
    async fn deliver(
        &self,
        bus: &Bus,
        segment: u64,
        records: Vec<(u64, Record)>,
        target: &mut watch::Receiver<Target>,
    ) -> Attempt {
        if records.is_empty() {
            return Attempt::Stored;
        }
        let batch: Vec<Record> = records.iter().map(|(_, r)| r.clone()).collect();
        match self.append(bus, batch, target).await {
            Attempt::Refused(_) => {}
            other => return other,
        }
        for (offset, record) in records {
            match self.append(bus, vec![record.clone()], target).await {
                Attempt::Stored => {}
                Attempt::Refused(e) => self.journal.set_aside(
                    segment,
                    offset,
                    &record.event.to_json(),
                    e.code(),
                    &format!("the engine refuses the event: {e}"),
                    false,
                ),
                other => return other,
            }
        }
        Attempt::Stored
    }

    /// Appends `records`, retrying with backoff while the engine's errors are
    /// transient.
    async fn append(
        &self,
        bus: &Bus,
        records: Vec<Record>,
        target: &mut watch::Receiver<Target>,
    ) -> Attempt {
        let mut delay = FIRST_RETRY;
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                biased;
                _ = target.changed() => return Attempt::Retarget,
                r = bus.append_records(records.clone()) => r,
            };
            let e = match result {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(spool = %self.journal.dir().display(), failures,
                            "the engine takes spooled events again");
                    }
                    return Attempt::Stored;
                }
                Err(e) if e.kind() == ErrorKind::Closed => return Attempt::Closed,
                Err(e) if !e.kind().is_transient() => return Attempt::Refused(e),
                Err(e) => e,
            };
            failures += 1;
            if failures % WARN_EVERY == 1 {
                tracing::warn!(code = e.code(), error = %e, failures,
                    depth = self.journal.depth(), retry_in_ms = delay.as_millis() as u64,
                    spool = %self.journal.dir().display(),
                    "the engine does not take spooled events yet; retrying with backoff");
            }
            tokio::select! {
                biased;
                _ = target.changed() => return Attempt::Retarget,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}

/// A spooled line as the record to append, checked as a publish would check it.
fn decode(bus: &Bus, line: &[u8]) -> Result<Record> {
    // The size limit is the bus's, applied by `prepare` exactly as at publish.
    let event = Event::from_json_limited(line, usize::MAX)?;
    bus.prepare(event)
}

/// Syncs what writers wrote, every [`FSYNC_EVERY`], off the runtime's threads.
async fn flush_loop(journal: Weak<Journal>) {
    let mut tick = tokio::time::interval(FSYNC_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(j) = journal.upgrade() else {
            return;
        };
        let (files, dir_dirty) = j.take_unsynced();
        if files.is_empty() && !dir_dirty {
            continue;
        }
        let dir = j.dir().to_owned();
        drop(j);
        let synced = tokio::task::spawn_blocking(move || -> io::Result<()> {
            for f in files {
                f.sync_data()?;
            }
            if dir_dirty {
                super::cursor::sync_dir(&dir)?;
            }
            Ok(())
        })
        .await;
        let failed = match synced {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = failed {
            tracing::error!(
                code = "io_error",
                error,
                "cannot sync the fallback spool to disk; events are in the OS but not yet on disk"
            );
        }
    }
}
