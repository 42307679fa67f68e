//! The log as group members and tails read it: fresh records from the
//! in-memory cache, older ones decoded from SQLite on a blocking thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};

use super::readers::Readers;
use super::recent::{Cached, Recent};
use super::schema::sql_error;
use super::tenants::Tenants;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, TenantId};
use crate::local::{LocalLog, LogRead, LogRecord, Signal};

/// The embedded engine's log.
pub(super) struct EmbeddedLog {
    pub(super) recent: Recent,
    pub(super) readers: Arc<Readers>,
    pub(super) tenants: Arc<Tenants>,
    /// Records below this position are accounted for: committed (or being
    /// committed) by this process's writer, which sets it before `COMMIT`, or
    /// already noticed as another process's. A head beyond it in the file
    /// means another process wrote since.
    pub(super) own_next: AtomicU64,
    signals: Mutex<HashMap<TenantId, Arc<Signal>>>,
}

impl EmbeddedLog {
    pub(super) fn new(
        readers: Arc<Readers>,
        tenants: Arc<Tenants>,
        next_seq: u64,
        cache: usize,
    ) -> Self {
        EmbeddedLog {
            recent: Recent::new(cache, next_seq),
            readers,
            tenants,
            own_next: AtomicU64::new(next_seq),
            signals: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes the readers of `tenant`: records up to `next_seq` are committed.
    pub(super) fn bump(&self, tenant: &TenantId) {
        if let Some(signal) = self.signals.lock().get(tenant) {
            signal.bump();
        }
    }

    /// Wakes every reader (another process wrote; any tenant may have news).
    pub(super) fn bump_all(&self) {
        for signal in self.signals.lock().values() {
            signal.bump();
        }
    }

    /// Checks the file for records another process committed; when there are,
    /// forgets the cache and wakes every reader. Blocking.
    pub(super) fn poll_foreign_writes(&self) -> Result<()> {
        let head = self
            .readers
            .with(|conn| head(conn).map_err(|e| sql_error("reading the log head", e)))?;
        if head > self.own_next.fetch_max(head, Ordering::AcqRel) {
            self.recent.invalidate(head);
            self.bump_all();
        }
        Ok(())
    }
}

#[async_trait]
impl LocalLog for EmbeddedLog {
    async fn read(&self, tenant: &TenantId, from: u64, max: usize) -> Result<LogRead> {
        let mut from = from;
        loop {
            let below = match self.recent.read(tenant, from, max) {
                Cached::Hit(records) => return Ok(LogRead { records, missed: 0 }),
                Cached::From(below) => below,
            };
            let tenants = self.tenants.clone();
            let who = tenant.clone();
            let mut records = self
                .readers
                .run(move |conn| read_range(conn, &tenants, &who, from, below, max))
                .await?;
            if records.is_empty() {
                // Nothing of this tenant below the cached range: go on from there.
                from = below;
                continue;
            }
            if records.len() < max
                && let Cached::Hit(more) = self.recent.read(tenant, below, max - records.len())
            {
                records.extend(more);
            }
            return Ok(LogRead { records, missed: 0 });
        }
    }

    async fn head(&self, _tenant: &TenantId) -> Result<u64> {
        // One sequence for every tenant: the next record of any tenant lands
        // after the file's head.
        self.readers
            .run(|conn| head(conn).map_err(|e| sql_error("reading the log head", e)))
            .await
    }

    async fn first(&self, tenant: &TenantId) -> Result<u64> {
        let tenants = self.tenants.clone();
        let tenant = tenant.clone();
        self.readers
            .run(move |conn| {
                let first = || -> rusqlite::Result<u64> {
                    let Some(id) = tenants.lookup(conn, &tenant)? else {
                        return head(conn);
                    };
                    let first: Option<i64> = conn
                        .prepare_cached("SELECT min(seq) FROM log WHERE tenant = ?1")?
                        .query_row([id], |r| r.get(0))?;
                    match first {
                        Some(s) => Ok(s as u64),
                        None => head(conn),
                    }
                };
                first().map_err(|e| sql_error("finding the oldest record", e))
            })
            .await
    }

    async fn seq_at(&self, tenant: &TenantId, time: DateTime<Utc>) -> Result<u64> {
        let tenants = self.tenants.clone();
        let tenant = tenant.clone();
        let at = time_ns(time);
        self.readers
            .run(move |conn| {
                let seq_at = || -> rusqlite::Result<u64> {
                    let (Some(id), Some(from)) =
                        (tenants.lookup(conn, &tenant)?, first_stored_at(conn, at)?)
                    else {
                        return head(conn);
                    };
                    let seq: Option<i64> = conn
                        .prepare_cached("SELECT min(seq) FROM log WHERE tenant = ?1 AND seq >= ?2")?
                        .query_row([id, seq_param(from)], |r| r.get(0))?;
                    match seq {
                        Some(s) => Ok(s as u64),
                        None => head(conn),
                    }
                };
                seq_at().map_err(|e| sql_error("finding a position by time", e))
            })
            .await
    }

    fn signal(&self, tenant: &TenantId) -> Arc<Signal> {
        self.signals
            .lock()
            .entry(tenant.clone())
            .or_default()
            .clone()
    }
}

/// A position as SQLite stores it; positions past `i64::MAX` (only ever asked
/// for, never stored) read as the end of the log.
pub(super) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Unix nanoseconds of `time`, saturating outside the years 1677 to 2262.
pub(super) fn time_ns(time: DateTime<Utc>) -> i64 {
    time.timestamp_nanos_opt()
        .unwrap_or(if time.timestamp() < 0 {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// The position after the newest record of any tenant, as committed in the file.
pub(super) fn head(conn: &Connection) -> rusqlite::Result<u64> {
    tip(conn).map(|(next, _)| next)
}

/// Where the log ends: the position after the newest record and the newest
/// stored time. Read from the newest row; `log_head` remembers both for when
/// retention deleted every row, so a position is never given out twice.
pub(super) fn tip(conn: &Connection) -> rusqlite::Result<(u64, i64)> {
    conn.prepare_cached(
        "SELECT max(coalesce((SELECT seq + 1 FROM log ORDER BY seq DESC LIMIT 1), 1), next_seq),
                max(coalesce((SELECT stored_at FROM log ORDER BY seq DESC LIMIT 1), 0),
                    last_stored_at)
         FROM log_head WHERE id = 0",
    )?
    .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
}

/// Writes the tip into `log_head`; retention calls it before deleting.
pub(super) fn save_tip(conn: &Connection) -> rusqlite::Result<()> {
    let (next, stored_at) = tip(conn)?;
    conn.prepare_cached("UPDATE log_head SET next_seq = ?1, last_stored_at = ?2 WHERE id = 0")?
        .execute((seq_param(next), stored_at))
        .map(drop)
}

/// A position such that every record before it was stored before `at` and
/// every record from it on was stored at or after `at`; `None` when every
/// record was stored before `at`.
///
/// `stored_at` never decreases along `seq`, so this binary-searches the rowid:
/// a few dozen lookups on the primary key, whatever the size of the log.
pub(super) fn first_stored_at(conn: &Connection, at: i64) -> rusqlite::Result<Option<u64>> {
    let bounds: (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min(seq), max(seq) FROM log")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(min), Some(max)) = bounds else {
        return Ok(None);
    };
    let mut probe =
        conn.prepare_cached("SELECT seq, stored_at FROM log WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let (mut lo, mut hi) = (min, max + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let row: Option<(i64, i64)> = probe
            .query_row([mid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((seq, stored_at)) if stored_at < at => lo = seq + 1,
            _ => hi = mid,
        }
    }
    Ok((lo <= max).then_some(lo as u64))
}

/// Records of `tenant` with `from <= seq < below`, at most `max`, decoded.
fn read_range(
    conn: &Connection,
    tenants: &Tenants,
    tenant: &TenantId,
    from: u64,
    below: u64,
    max: usize,
) -> Result<Vec<LogRecord>> {
    type Row = (i64, Result<Event>, Option<String>);
    let read = || -> rusqlite::Result<Vec<Row>> {
        let Some(id) = tenants.lookup(conn, tenant)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT seq, event, redrive_for FROM log
             WHERE tenant = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq LIMIT ?4",
        )?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = stmt.query_map([id, seq_param(from), seq_param(below), limit], |r| {
            let event = Event::from_json_limited(r.get_ref(1)?.as_bytes()?, usize::MAX);
            Ok((r.get(0)?, event, r.get(2)?))
        })?;
        rows.collect()
    };
    let rows = read().map_err(|e| sql_error("reading the log", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, event, redrive_for) in rows {
        let event = event.map_err(|e| {
            Error::new(
                ErrorKind::Engine,
                format!("the stored event at sequence {seq} of tenant {tenant} cannot be decoded"),
            )
            .with_source(e)
        })?;
        out.push(LogRecord {
            seq: seq as u64,
            event: Arc::new(event),
            redrive_for: redrive_for.map(Arc::from),
        });
    }
    Ok(out)
}
