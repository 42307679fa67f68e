//! `publish_with_fallback`: the on-disk spool that takes events while the engine
//! is down and drains them into it, in order, when it is back.
//!
//! On disk, a spool directory holds:
//! - `segment-<n>.jsonl`: append-only files of events, one `Event::to_json()`
//!   per line, written with one `write` per event (so a killed process loses
//!   nothing the spool accepted) and synced to disk every half second and on
//!   [`Spool::sync`] (and so on `Bus::close`);
//! - `cursor`: `<segment> <offset>`, how far the drain got, moved after each batch
//!   the engine took. After a crash the last batch is sent again, which the
//!   engine's dedup by event id absorbs within the dedup window;
//! - `quarantine.jsonl`: lines the drain could not deliver (a write cut short by
//!   a crash, a corrupt line, an event the engine refuses for good), set aside
//!   with the reason so the drain never stops on them;
//! - `lock`: held while a process uses the directory.
//!
//! Order: while anything is spooled, `publish_with_fallback` spools new events
//! behind it rather than publish them directly, so no event overtakes an older
//! one of the same publisher. Once the drain empties the spool, publishing is
//! direct again.

mod cursor;
mod drain;
mod journal;
mod quarantine;
mod segment;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::bus::{Bus, Receipt};
use crate::engine::Appended;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use drain::Drainer;
use journal::Journal;

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

/// Spool directories open in this process. A directory is drained by one task
/// per process (the lock file keeps other processes out); a bus opened later on
/// the same directory takes the drain over, as a restarted service would.
static OPEN: Mutex<Vec<(PathBuf, Weak<Drainer>)>> = Mutex::new(Vec::new());

/// The spool behind `publish_with_fallback`: an on-disk queue of events the
/// engine did not take, drained into it in order by a background task.
///
/// Get it with [`Bus::spool`]. Every method is safe to call from many tasks.
pub struct Spool {
    drainer: Arc<Drainer>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir())
            .field("depth", &self.depth())
            .field("bytes", &self.bytes())
            .field("max_bytes", &self.max_bytes())
            .finish_non_exhaustive()
    }
}

/// Who an event is, for log lines about it.
struct EventTag {
    id: String,
    ty: String,
    tenant: String,
    correlation: String,
}

impl EventTag {
    fn of(event: &Event) -> EventTag {
        EventTag {
            id: event.id.as_str().to_owned(),
            ty: event.ty.as_str().to_owned(),
            tenant: event.tenant.as_str().to_owned(),
            correlation: event.correlationid.clone(),
        }
    }
}

impl Spool {
    /// Opens the spool in `dir` for `bus` and starts draining what earlier runs
    /// left there. Needs a Tokio runtime (the drain runs on it).
    pub(crate) fn open(bus: &Bus, dir: &Path, max_bytes: u64) -> Result<Spool> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "fallback spool {}: cannot create the directory",
                    dir.display()
                ),
            )
            .with_source(e)
        })?;
        let key = std::fs::canonicalize(dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "fallback spool {}: cannot resolve the directory",
                    dir.display()
                ),
            )
            .with_source(e)
        })?;
        let drainer = {
            let mut open = OPEN.lock();
            open.retain(|(_, d)| d.strong_count() > 0);
            match open
                .iter()
                .find(|(p, _)| *p == key)
                .and_then(|(_, d)| d.upgrade())
            {
                Some(drainer) => {
                    tracing::info!(spool = %key.display(),
                        "the spool directory is open in this process already; \
                         it drains into the engine of the bus opened last");
                    drainer.journal.set_max_bytes(max_bytes);
                    drainer
                }
                None => {
                    let drainer = Drainer::new(Arc::new(Journal::open(&key, max_bytes)?));
                    open.push((key, Arc::downgrade(&drainer)));
                    drainer
                }
            }
        };
        drainer.attach(bus.downgrade())?;
        Ok(Spool { drainer })
    }

    /// Publishes `event` directly when nothing is spooled; spools it when the
    /// engine is unavailable or when older events still wait in the spool.
    pub(crate) async fn publish(&self, bus: &Bus, event: Event) -> FallbackOutcome {
        let tag = EventTag::of(&event);
        let record = match bus.prepare(event) {
            Ok(record) => record,
            Err(e) => return self.refuse(e, &tag),
        };
        let journal = &self.drainer.journal;
        let mut cause = None;
        if journal.depth() == 0 {
            match bus.append_records(vec![record.clone()]).await {
                Ok(appended) => {
                    let (sequence, duplicate) = match appended.first() {
                        Some(Appended::Stored(seq)) => (Some(*seq), false),
                        _ => (None, true),
                    };
                    return FallbackOutcome::Published(Receipt {
                        id: record.event.id.clone(),
                        sequence,
                        duplicate,
                    });
                }
                Err(e) if spools(&e) => cause = Some(e),
                Err(e) => return self.refuse(e, &tag),
            }
        }
        match journal.append(&line(&record.event)) {
            Ok(started) => {
                if started && let Some(e) = cause {
                    tracing::warn!(
                        code = e.code(),
                        error = %e,
                        event_id = %tag.id,
                        event_type = %tag.ty,
                        tenant_id = %tag.tenant,
                        correlation_id = %tag.correlation,
                        spool = %journal.dir().display(),
                        "the engine did not take an event; spooling events until it does"
                    );
                }
                FallbackOutcome::Spooled
            }
            Err(e) => self.refuse(e, &tag),
        }
    }

    fn refuse(&self, e: Error, tag: &EventTag) -> FallbackOutcome {
        let journal = &self.drainer.journal;
        let refused_total = journal.count_refused();
        tracing::error!(
            code = e.code(),
            error = %e,
            event_id = %tag.id,
            event_type = %tag.ty,
            tenant_id = %tag.tenant,
            correlation_id = %tag.correlation,
            refused_total,
            spool = %journal.dir().display(),
            "publish_with_fallback refused an event"
        );
        FallbackOutcome::Refused(e)
    }

    /// Puts everything spooled so far, and the drain's position, on disk.
    /// `Bus::close` calls it; it is also run every half second.
    pub fn sync(&self) -> Result<()> {
        self.drainer.journal.sync()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        self.drainer.journal.dir()
    }

    /// Events spooled and not yet taken by the engine.
    pub fn depth(&self) -> u64 {
        self.drainer.journal.depth()
    }

    /// Bytes the spool's segments take on disk (the bound applies to these).
    pub fn bytes(&self) -> u64 {
        self.drainer.journal.bytes()
    }

    /// The bound on [`Spool::bytes`]: past it, events are refused.
    pub fn max_bytes(&self) -> u64 {
        self.drainer.journal.max_bytes()
    }

    /// Events `publish_with_fallback` refused (invalid, spool full, spool not
    /// writable, or refused by the engine for good) since the spool was opened.
    pub fn refused_total(&self) -> u64 {
        self.drainer.journal.refused_total()
    }

    /// Spooled lines the drain set aside in `quarantine.jsonl` instead of
    /// delivering (torn writes, corrupt lines, events the engine refuses).
    pub fn skipped_total(&self) -> u64 {
        self.drainer.journal.skipped_total()
    }

    /// Waits until the spool is empty, every spooled event taken by the engine:
    /// true then; false when `timeout` passes first, or when the bus is closed
    /// with events still spooled (they stay on disk for the next run).
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let journal = &self.drainer.journal;
        loop {
            let settled = journal.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if journal.depth() == 0 {
                return true;
            }
            if !self.drainer.is_draining() {
                return false;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return journal.depth() == 0;
            }
        }
    }
}

/// Whether an error of a direct publish sends the event to the spool: the
/// engine is unreachable or failing for now. A closed bus refuses instead.
fn spools(e: &Error) -> bool {
    e.kind().is_transient()
}

/// The spool line of an event: its JSON and a newline.
fn line(event: &Event) -> Vec<u8> {
    let mut json = event.to_json();
    // `data` is kept as the raw JSON it arrived as, which may span lines. A
    // newline can only be whitespace between JSON tokens (strings escape theirs),
    // so a space means the same.
    for b in json.iter_mut() {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    json.push(b'\n');
    json
}

pub(crate) fn log_refusal(outcome: &FallbackOutcome) {
    if let FallbackOutcome::Refused(e) = outcome {
        tracing::error!(code = e.code(), error = %e, "publish_with_fallback refused an event");
    }
}

/// Whether `dir` has spool segments with bytes in them (maybe left by an
/// earlier run), so the spool should open and drain them without waiting to be used.
pub(crate) fn holds_events(dir: &Path) -> bool {
    segment::list(dir).is_ok_and(|segments| segments.iter().any(|s| s.len > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_line_even_when_data_spans_lines() {
        let text = "{\"specversion\":\"1.0\",\"id\":\"0190c2b4-6a4e-7c3a-9f00-000000000001\",\
            \"source\":\"test\",\"type\":\"auth.login\",\"tenantid\":\"acme\",\
            \"data\":{\n  \"user\": \"bob\\nsmith\"\n}}";
        let event = Event::from_json(text.as_bytes()).unwrap();
        let l = line(&event);
        assert_eq!(l.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(l.last(), Some(&b'\n'));
        let back = Event::from_json(&l[..l.len() - 1]).unwrap();
        assert_eq!(back.data(), event.data());
        assert_eq!(back.id, event.id);
    }
}
