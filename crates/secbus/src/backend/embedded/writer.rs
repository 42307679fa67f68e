//! The one thread that writes: it owns the write connection and commits
//! whatever publishers queued, up to [`MAX_BATCH`] records, in one transaction
//! (group commit), then answers each publisher.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};

use super::dedup::DedupKey;
use super::log::{EmbeddedLog, seq_param};
use super::retention::Retention;
use super::schema::{now_ns, sql_error};
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
        _permit: OwnedSemaphorePermit,
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
    pub(super) dedup: DedupWindow<DedupKey>,
    pub(super) retention: Retention,
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
        let state = WriterThread {
            conn: start.conn,
            log,
            dedup: start.dedup,
            retention: start.retention,
            tenant_ids: HashMap::new(),
            next_seq: 0,
        };
        let thread = std::thread::Builder::new()
            .name("secbus-embedded-writer".to_owned())
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
            _permit: permit,
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
    dedup: DedupWindow<DedupKey>,
    retention: Retention,
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
            .register_tenants(&batch)
            .and_then(|()| self.commit(&mut batch, &mut added));
        let (outcomes, next_seq) = match committed {
            Ok(done) => done,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                for key in &added {
                    self.dedup.remove(key);
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
        self.publish(batch, outcomes, next_seq);
    }

    /// Gives every tenant in the batch its number, each committed on its own:
    /// a later rollback of the batch must not take a number back.
    fn register_tenants(&mut self, batch: &[Op]) -> rusqlite::Result<()> {
        for op in batch {
            if let Op::Append { records, .. } = op {
                for r in records {
                    let tenant = &r.record.event.tenant;
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
        let (head, last_stored_at): (i64, i64) = conn
            .prepare_cached("SELECT next_seq, last_stored_at FROM log_head WHERE id = 0")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let head = head as u64;
        if head != self.next_seq {
            // Another process appended since this one last did: what is cached
            // no longer holds every record from its start.
            self.log.recent.invalidate(head);
            self.log.bump_all();
        }
        let stored_at = now_ns().max(last_stored_at);
        let now_ms = stored_at / 1_000_000;
        self.dedup.expire(now_ms);
        let mut seq = head;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut insert = conn.prepare_cached(
            "INSERT INTO log (seq, tenant, stored_at, event, content_key, redrive_for)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for op in batch.iter_mut() {
            match op {
                Op::Append { records, .. } => {
                    let mut results = Vec::with_capacity(records.len());
                    for r in records.iter() {
                        let tenant = self.tenant_ids[&r.record.event.tenant];
                        let redrive = r.record.redrive_for.is_some();
                        if !redrive {
                            let id = DedupKey::id(tenant, r.record.event.id.as_str());
                            let content =
                                r.record.content_key.map(|k| DedupKey::Content(tenant, k));
                            if self.dedup.contains(&id)
                                || content.is_some_and(|k| self.dedup.contains(&k))
                            {
                                results.push(Appended::Duplicate);
                                continue;
                            }
                            if self.dedup.insert(id, now_ms) {
                                added.push(id);
                            }
                            if let Some(k) = content {
                                if self.dedup.insert(k, now_ms) {
                                    added.push(k);
                                }
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
        conn.prepare_cached("UPDATE log_head SET next_seq = ?1, last_stored_at = ?2 WHERE id = 0")?
            .execute((seq_param(seq), stored_at))?;
        conn.execute_batch("COMMIT")?;
        Ok((outcomes, seq))
    }

    /// After `COMMIT`: caches the new records, wakes their readers, answers
    /// every caller.
    fn publish(&self, batch: Vec<Op>, outcomes: Vec<Outcome>, next_seq: u64) {
        let mut touched: Vec<TenantId> = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        for (op, outcome) in batch.into_iter().zip(outcomes) {
            match (op, outcome) {
                (
                    Op::Append {
                        records,
                        reply,
                        _permit,
                    },
                    Outcome::Append(results),
                ) => {
                    self.cache(records, &results, &mut touched);
                    replies.push(Reply::Append(reply, results));
                }
                (Op::Write { reply, .. }, Outcome::Write(result)) => {
                    let _ = reply.send(result);
                }
                (Op::Close { reply }, Outcome::Close) => replies.push(Reply::Close(reply)),
                _ => {}
            }
        }
        for tenant in &touched {
            self.log.bump(tenant, next_seq);
        }
        for reply in replies {
            match reply {
                Reply::Append(reply, results) => {
                    let _ = reply.send(Ok(results));
                }
                Reply::Close(reply) => {
                    let _ = reply.send(self.checkpoint());
                }
            }
        }
    }

    /// Hands the stored records' events (the publishers' own `Arc`s) to the cache.
    fn cache(&self, records: Vec<Encoded>, results: &[Appended], touched: &mut Vec<TenantId>) {
        let mut stored = records
            .into_iter()
            .zip(results)
            .filter_map(|(r, a)| match a {
                Appended::Stored(seq) => Some(LogRecord {
                    seq: *seq,
                    event: r.record.event,
                    redrive_for: r.record.redrive_for,
                }),
                Appended::Duplicate => None,
            })
            .peekable();
        while let Some(first) = stored.next() {
            let tenant = first.event.tenant.clone();
            let mut run = vec![first];
            while let Some(next) = stored.next_if(|r| r.event.tenant == tenant) {
                run.push(next);
            }
            self.log.recent.push(&tenant, run);
            if !touched.contains(&tenant) {
                touched.push(tenant);
            }
        }
    }

    fn fail(&self, batch: Vec<Op>, kind: ErrorKind, message: &str) {
        for op in batch {
            match op {
                Op::Append { reply, .. } => {
                    let _ = reply.send(Err(Error::new(kind, message)));
                }
                Op::Write { reply, .. } => {
                    let _ = reply.send(Err(Error::new(kind, message)));
                }
                Op::Close { reply } => {
                    let _ = reply.send(self.checkpoint());
                }
            }
        }
    }
}

enum Reply {
    Append(oneshot::Sender<Result<Vec<Appended>>>, Vec<Appended>),
    Close(oneshot::Sender<Result<()>>),
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
