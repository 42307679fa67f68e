//! The one thread that writes: it owns the write connection and commits
//! whatever publishers queued while it was busy, up to [`MAX_BATCH`] records,
//! in one transaction (group commit), then hands the answers to the runtime
//! ([`super::committed`]).
//!
//! Publishers encode their events on their own tasks and queue them through a
//! bounded queue (a semaphore of [`QUEUE_RECORDS`] permits in front of a
//! channel): `append` with `wait` false fails with `full` instead of waiting.
//! A publisher is answered only after `COMMIT` returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use tokio::sync::mpsc as mpsc_async;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};

use super::checkpoint::{self, Checkpointer};
use super::committed::{self, Answer, Committed};
use super::dedup;
use super::log::{EmbeddedLog, seq_param, tip};
use super::retention::Retention;
use super::schema::{now_ns, sql_error};
use crate::delivery::DedupKey;
use crate::delivery::DedupWindow;
use crate::engine::{Appended, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::local::LogRecord;

/// Records committed in one transaction, at most (a publisher's batch is never split).
const MAX_BATCH: usize = 4096;
/// Records queued for the writer, at most.
pub(super) const QUEUE_RECORDS: usize = 16_384;

/// A record with its event already encoded, exactly as `Event::to_json` made it.
pub(super) struct Encoded {
    pub(super) record: Record,
    pub(super) json: Vec<u8>,
}

type Apply = Box<dyn FnOnce(&Connection) -> rusqlite::Result<usize> + Send>;

enum Op {
    Append {
        records: Vec<Encoded>,
        reply: oneshot::Sender<Result<Vec<Appended>>>,
        permit: OwnedSemaphorePermit,
    },
    /// Any other change (group state, dead letters), in its own savepoint so
    /// its failure fails only its caller.
    Write {
        what: &'static str,
        apply: Option<Apply>,
        reply: oneshot::Sender<Result<usize>>,
    },
    Close {
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Op {
    fn records(&self) -> usize {
        match self {
            Op::Append { records, .. } => records.len(),
            _ => 1,
        }
    }
}

/// What the writer starts from, read from the file at open.
pub(super) struct Start {
    pub(super) conn: Connection,
    /// The dedup window's length; the window is rebuilt from the log before
    /// the first append, so a process that only reads never pays for it.
    pub(super) dedup_window: Duration,
    pub(super) retention: Retention,
    pub(super) checkpointer: Checkpointer,
}

/// The handle publishers and stores use to reach the writer thread.
pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
    room: Arc<Semaphore>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn spawn(start: Start, log: Arc<EmbeddedLog>) -> Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let committed = committed::spawn(log.clone());
        let state = WriterThread {
            conn: start.conn,
            log,
            dedup: None,
            dedup_window: start.dedup_window,
            retention: start.retention,
            checkpointer: start.checkpointer,
            since_checkpoint: 0,
            committed,
            tenant_ids: HashMap::new(),
            next_seq: 0,
        };
        let thread = std::thread::Builder::new()
            .name("secbus-writer".to_owned())
            .spawn(move || state.run(rx))
            .map_err(|e| {
                Error::new(ErrorKind::Io, "cannot start the embedded writer").with_source(e)
            })?;
        Ok(Writer {
            tx,
            room: Arc::new(Semaphore::new(QUEUE_RECORDS)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends records in order; returns once they are committed.
    pub(super) async fn append(&self, records: Vec<Encoded>, wait: bool) -> Result<Vec<Appended>> {
        // A batch larger than the queue takes the whole queue, not more.
        let n = records.len().min(QUEUE_RECORDS) as u32;
        let permit =
            if wait {
                self.room
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| Error::closed())?
            } else {
                self.room.clone().try_acquire_many_owned(n).map_err(|e| match e {
                TryAcquireError::NoPermits => Error::new(
                    ErrorKind::Full,
                    "the embedded writer's queue is full; publish waits, try_publish does not",
                ),
                TryAcquireError::Closed => Error::closed(),
            })?
            };
        let (reply, answer) = oneshot::channel();
        self.send(Op::Append {
            records,
            reply,
            permit,
        })?;
        answer.await.map_err(|_| Error::closed())?
    }

    /// Runs `apply` on the write connection in the next transaction; returns
    /// the rows it changed once committed.
    pub(super) async fn write(
        &self,
        what: &'static str,
        apply: impl FnOnce(&Connection) -> rusqlite::Result<usize> + Send + 'static,
    ) -> Result<usize> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Write {
            what,
            apply: Some(Box::new(apply)),
            reply,
        })?;
        answer.await.map_err(|_| Error::closed())?
    }

    /// Commits what is queued, checkpoints the log into the database file and
    /// stops the thread. Later calls fail with `closed`.
    pub(super) async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self.send(Op::Close { reply }).is_err() {
            return Ok(());
        }
        let closed = answer.await.unwrap_or(Ok(()));
        self.room.close();
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        closed
    }

    fn send(&self, op: Op) -> Result<()> {
        self.tx.send(op).map_err(|_| Error::closed())
    }
}

struct WriterThread {
    conn: Connection,
    log: Arc<EmbeddedLog>,
    dedup: Option<DedupWindow<DedupKey>>,
    dedup_window: Duration,
    retention: Retention,
    checkpointer: Checkpointer,
    /// Log pages written since the checkpointer was last nudged, about.
    since_checkpoint: usize,
    committed: mpsc_async::UnboundedSender<Committed>,
    tenant_ids: HashMap<TenantId, i64>,
    /// Where the next record goes, as far as this process knows.
    next_seq: u64,
}

/// What one queued operation got.
enum Outcome {
    Append(Vec<Appended>),
    Write(Result<usize>),
    Close,
}

impl WriterThread {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        self.next_seq = self.log.own_next.load(Ordering::Acquire);
        loop {
            let wait = self
                .retention
                .due()
                .map_or(Duration::from_secs(3600), |due| {
                    due.saturating_duration_since(Instant::now())
                });
            let first = match rx.recv_timeout(wait) {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.retain();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.checkpoint();
                    return;
                }
            };
            let mut queued = first.records();
            let mut closing = matches!(first, Op::Close { .. });
            let mut batch = vec![first];
            while queued < MAX_BATCH && !closing {
                match rx.try_recv() {
                    Ok(op) => {
                        queued += op.records();
                        closing = matches!(op, Op::Close { .. });
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.process(batch);
            if closing {
                return;
            }
            self.retain();
        }
    }

    fn retain(&mut self) {
        if let Err(e) = self.retention.run_if_due(&self.conn, &self.log.recent) {
            tracing::error!(error = %e, "embedded store: retention failed; it will be retried");
        }
    }

    fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| sql_error("checkpointing the write-ahead log", e))
    }

    fn process(&mut self, mut batch: Vec<Op>) {
        let mut added = Vec::new();
        let committed = self
            .prepare(&batch)
            .and_then(|()| self.commit(&mut batch, &mut added));
        let (outcomes, next_seq) = match committed {
            Ok(done) => done,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                if let Some(dedup) = self.dedup.as_mut() {
                    for key in &added {
                        dedup.remove(key);
                    }
                }
                self.log.own_next.store(self.next_seq, Ordering::Release);
                let kind = match e.sqlite_error_code() {
                    Some(
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked,
                    ) => ErrorKind::EngineUnavailable,
                    Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure) => {
                        ErrorKind::Io
                    }
                    _ => ErrorKind::Engine,
                };
                let message = format!("embedded store: committing a batch failed: {e}");
                tracing::error!(error = %e, "embedded store: a batch was rolled back");
                self.fail(batch, kind, &message);
                return;
            }
        };
        self.next_seq = next_seq;
        self.publish(batch, outcomes);
    }

    /// Rebuilds the dedup window before the first append, and gives every
    /// tenant in the batch its number, each committed on its own: a later
    /// rollback of the batch must not take a number back.
    fn prepare(&mut self, batch: &[Op]) -> rusqlite::Result<()> {
        let appends = batch.iter().any(|op| matches!(op, Op::Append { .. }));
        if appends && self.dedup.is_none() {
            self.dedup = Some(dedup::rebuild(&self.conn, self.dedup_window)?);
        }
        let mut previous: Option<&TenantId> = None;
        for op in batch {
            if let Op::Append { records, .. } = op {
                for r in records {
                    let tenant = &r.record.event.tenant;
                    if previous == Some(tenant) {
                        continue;
                    }
                    previous = Some(tenant);
                    if !self.tenant_ids.contains_key(tenant) {
                        let id = self.log.tenants.register(&self.conn, tenant)?;
                        self.tenant_ids.insert(tenant.clone(), id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the batch in one transaction. Returns what each operation got
    /// and the position after the last record.
    fn commit(
        &mut self,
        batch: &mut [Op],
        added: &mut Vec<DedupKey>,
    ) -> rusqlite::Result<(Vec<Outcome>, u64)> {
        let conn = &self.conn;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let (head, last_stored_at) = tip(conn)?;
        if head != self.next_seq {
            // Another process appended since this one last did: what is cached
            // no longer holds every record from its start.
            self.log.recent.invalidate(head);
            self.log.bump_all();
        }
        let stored_at = now_ns().max(last_stored_at);
        let now_ms = stored_at / 1_000_000;
        let dedup = self
            .dedup
            .get_or_insert_with(|| DedupWindow::new(self.dedup_window));
        dedup.expire(now_ms);
        let mut seq = head;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut last_tenant: Option<(TenantId, i64)> = None;
        let mut bytes = 0;
        let mut insert = conn.prepare_cached(
            "INSERT INTO log (seq, tenant, stored_at, event, content_key, redrive_for)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for op in batch.iter_mut() {
            match op {
                Op::Append { records, .. } => {
                    let mut results = Vec::with_capacity(records.len());
                    for r in records.iter() {
                        let event = &r.record.event;
                        // Publishers send runs of one tenant: skip the map lookup.
                        if last_tenant.as_ref().is_none_or(|(t, _)| *t != event.tenant) {
                            last_tenant =
                                Some((event.tenant.clone(), self.tenant_ids[&event.tenant]));
                        }
                        let tenant = last_tenant.as_ref().map_or(0, |(_, id)| *id);
                        if r.record.redrive_for.is_none() {
                            let content = r
                                .record
                                .content_key
                                .map(|k| DedupKey::content(tenant as u64, k));
                            if content.is_some_and(|k| dedup.contains(&k)) {
                                results.push(Appended::Duplicate);
                                continue;
                            }
                            // One probe: `insert` says whether the id was in the window.
                            let id = DedupKey::id(tenant as u64, event.id.as_str());
                            if !dedup.insert(id, now_ms) {
                                results.push(Appended::Duplicate);
                                continue;
                            }
                            added.push(id);
                            if let Some(k) = content
                                && dedup.insert(k, now_ms)
                            {
                                added.push(k);
                            }
                        }
                        insert.execute((
                            seq_param(seq),
                            tenant,
                            stored_at,
                            JsonText(&r.json),
                            r.record.content_key.as_ref().map(|k| &k[..]),
                            r.record.redrive_for.as_deref(),
                        ))?;
                        results.push(Appended::Stored(seq));
                        bytes += r.json.len();
                        seq += 1;
                    }
                    outcomes.push(Outcome::Append(results));
                }
                Op::Write { what, apply, .. } => {
                    let apply = apply.take();
                    outcomes.push(Outcome::Write(savepoint(conn, what, apply)));
                }
                Op::Close { .. } => outcomes.push(Outcome::Close),
            }
        }
        drop(insert);
        self.log.own_next.store(seq, Ordering::Release);
        conn.execute_batch("COMMIT")?;
        self.since_checkpoint += checkpoint::pages((seq - head) as usize, bytes);
        if self.since_checkpoint >= checkpoint::EVERY_PAGES {
            self.since_checkpoint = 0;
            self.checkpointer.nudge();
        }
        Ok((outcomes, seq))
    }

    /// After `COMMIT`: hands the stored records' events (the publishers' own
    /// `Arc`s) and every answer over to the runtime.
    fn publish(&self, batch: Vec<Op>, outcomes: Vec<Outcome>) {
        let mut records: Vec<(TenantId, Vec<LogRecord>)> = Vec::new();
        let mut spent = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for (op, outcome) in batch.into_iter().zip(outcomes) {
            match (op, outcome) {
                (
                    Op::Append {
                        records: encoded,
                        reply,
                        permit,
                    },
                    Outcome::Append(results),
                ) => {
                    runs(encoded, &results, &mut records, &mut spent);
                    answers.push(Answer::Append(reply, Ok(results), permit));
                }
                (Op::Write { reply, .. }, Outcome::Write(result)) => {
                    answers.push(Answer::Write(reply, result));
                }
                (Op::Close { reply }, Outcome::Close) => {
                    answers.push(Answer::Close(reply, self.checkpoint()));
                }
                _ => {}
            }
        }
        let _ = self.committed.send(Committed {
            records,
            answers,
            spent,
        });
    }

    fn fail(&self, batch: Vec<Op>, kind: ErrorKind, message: &str) {
        let answers = batch
            .into_iter()
            .map(|op| match op {
                Op::Append { reply, permit, .. } => {
                    Answer::Append(reply, Err(Error::new(kind, message)), permit)
                }
                Op::Write { reply, .. } => Answer::Write(reply, Err(Error::new(kind, message))),
                Op::Close { reply } => Answer::Close(reply, self.checkpoint()),
            })
            .collect();
        let _ = self.committed.send(Committed {
            records: Vec::new(),
            answers,
            spent: Vec::new(),
        });
    }
}

/// Appends the stored records of one call to `out`, in runs of one tenant.
fn runs(
    encoded: Vec<Encoded>,
    results: &[Appended],
    out: &mut Vec<(TenantId, Vec<LogRecord>)>,
    spent: &mut Vec<Vec<u8>>,
) {
    for (r, a) in encoded.into_iter().zip(results) {
        spent.push(r.json);
        let Appended::Stored(seq) = a else { continue };
        let rec = LogRecord {
            seq: *seq,
            event: r.record.event,
            redrive_for: r.record.redrive_for,
        };
        match out.last_mut() {
            Some((tenant, run)) if *tenant == rec.event.tenant => run.push(rec),
            _ => out.push((rec.event.tenant.clone(), vec![rec])),
        }
    }
}

/// Runs one write in its own savepoint, so it fails alone.
fn savepoint(conn: &Connection, what: &'static str, apply: Option<Apply>) -> Result<usize> {
    let Some(apply) = apply else {
        return Ok(0);
    };
    conn.execute_batch("SAVEPOINT one_write")
        .map_err(|e| sql_error(what, e))?;
    match apply(conn) {
        Ok(n) => conn
            .execute_batch("RELEASE one_write")
            .map(|()| n)
            .map_err(|e| sql_error(what, e)),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO one_write; RELEASE one_write");
            Err(sql_error(what, e))
        }
    }
}

/// Event JSON bound as SQLite TEXT without copying or re-checking it: it is
/// the UTF-8 that `Event::to_json` produced.
struct JsonText<'a>(&'a [u8]);

impl ToSql for JsonText<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}
