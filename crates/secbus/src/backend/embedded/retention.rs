//! Retention by age and by count per tenant, run by the writer between batches.
//!
//! Like Kafka's, retention deletes by age and count whatever consumer groups
//! still have to read: a group that falls further behind than the retention
//! skips the deleted records (and a redelivery of a deleted record is dropped).

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::log::{first_stored_at, head, save_tip, seq_param};
use super::recent::Recent;
use super::schema::now_ns;
use super::tenants::Tenants;
use crate::bus::BusConfig;
use crate::event::TenantId;

/// The least time between two runs.
const EVERY: Duration = Duration::from_secs(1);
/// A run may take at most this share of the writer's time (1/50 = 2%).
const DUTY: u32 = 50;
/// Records deleted by age in one transaction, so publishers never wait long.
const AGE_CHUNK: i64 = 50_000;

pub(super) struct Retention {
    max_age: Option<Duration>,
    max_events: Option<u64>,
    next_run: Instant,
}

impl Retention {
    pub(super) fn new(config: &BusConfig) -> Self {
        Retention {
            max_age: config.retention_max_age,
            max_events: config.retention_max_events,
            next_run: Instant::now(),
        }
    }

    /// When the next run is due; `None` when nothing is ever deleted.
    pub(super) fn due(&self) -> Option<Instant> {
        (self.max_age.is_some() || self.max_events.is_some()).then_some(self.next_run)
    }

    /// Deletes what is past retention, when a run is due. The deletions of one
    /// run are one transaction; the cache forgets them once it commits.
    pub(super) fn run_if_due(
        &mut self,
        conn: &Connection,
        recent: &Recent,
    ) -> rusqlite::Result<()> {
        let started = Instant::now();
        if self.due().is_none_or(|due| due > started) {
            return Ok(());
        }
        self.next_run = started + EVERY;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut trims = Vec::new();
        let outcome = save_tip(conn)
            .and_then(|()| self.by_age(conn, &mut trims))
            .and_then(|more| Ok(more | self.by_count(conn, &mut trims)?))
            .and_then(|more| conn.execute_batch("COMMIT").map(|()| more));
        let more = match outcome {
            Ok(more) => more,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        for (tenant, below) in trims {
            recent.trim(tenant.as_ref(), below);
        }
        let spent = started.elapsed();
        self.next_run = if more {
            Instant::now()
        } else {
            started + EVERY.max(spent * DUTY)
        };
        Ok(())
    }

    /// Deletes the records stored before the age limit, a chunk at a time;
    /// true when more remain.
    fn by_age(
        &self,
        conn: &Connection,
        trims: &mut Vec<(Option<TenantId>, u64)>,
    ) -> rusqlite::Result<bool> {
        let Some(max_age) = self.max_age else {
            return Ok(false);
        };
        let cutoff = now_ns().saturating_sub(i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX));
        let keep_from = match first_stored_at(conn, cutoff)? {
            Some(seq) => seq_param(seq),
            None => seq_param(head(conn)?),
        };
        let oldest: Option<i64> = conn
            .prepare_cached("SELECT min(seq) FROM log")?
            .query_row([], |r| r.get(0))?;
        let Some(oldest) = oldest.filter(|&o| o < keep_from) else {
            return Ok(false);
        };
        let below = keep_from.min(oldest.saturating_add(AGE_CHUNK));
        conn.prepare_cached("DELETE FROM log WHERE seq < ?1")?
            .execute([below])?;
        trims.push((None, below as u64));
        Ok(below < keep_from)
    }

    /// Keeps the newest `max_events` records of each tenant.
    fn by_count(
        &self,
        conn: &Connection,
        trims: &mut Vec<(Option<TenantId>, u64)>,
    ) -> rusqlite::Result<bool> {
        let Some(max_events) = self.max_events else {
            return Ok(false);
        };
        let keep = i64::try_from(max_events).unwrap_or(i64::MAX);
        for (id, tenant) in Tenants::all(conn)? {
            let newest_gone: Option<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM log WHERE tenant = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                )?
                .query_row([id, keep], |r| r.get(0))
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            if let Some(last) = newest_gone {
                conn.prepare_cached("DELETE FROM log WHERE tenant = ?1 AND seq <= ?2")?
                    .execute([id, last])?;
                trims.push((Some(tenant), last as u64 + 1));
            }
        }
        Ok(false)
    }
}
