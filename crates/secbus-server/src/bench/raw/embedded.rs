//! The embedded engine's raw baseline: SQLite (rusqlite, bundled) in WAL mode,
//! `synchronous=NORMAL`, inserting the encoded events 1,000 rows per transaction.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use rusqlite::Connection;
use secbus::Event;

use super::RawRun;

/// Rows per transaction.
const BATCH: usize = 1000;

/// Inserts `events`, encoded with `Event::to_json` before timing, into a fresh
/// database at `path`; timed from the first `BEGIN` to the last `COMMIT`.
pub(crate) async fn batched_insert(path: &Path, events: &[Event]) -> anyhow::Result<RawRun> {
    let rows: Vec<Row> = events
        .iter()
        .map(|e| Row {
            id: e.id.to_string(),
            tenant: e.tenant.to_string(),
            ty: e.ty.to_string(),
            time: e.time.map_or(0, |t| t.timestamp_micros()),
            json: e.to_json(),
        })
        .collect();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || insert(&path, &rows))
        .await
        .context("the raw SQLite task failed")?
}

struct Row {
    id: String,
    tenant: String,
    ty: String,
    time: i64,
    json: Vec<u8>,
}

fn insert(path: &Path, rows: &[Row]) -> anyhow::Result<RawRun> {
    let mut db = Connection::open(path)
        .with_context(|| format!("cannot create the raw database {}", path.display()))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.execute_batch(
        "CREATE TABLE events (id TEXT, tenant TEXT, type TEXT, time INTEGER, event BLOB)",
    )?;
    let start = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (id, tenant, type, time, event) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in chunk {
                insert.execute(rusqlite::params![r.id, r.tenant, r.ty, r.time, r.json])?;
            }
        }
        tx.commit()?;
    }
    let wall = start.elapsed();
    Ok(RawRun {
        baseline: "rusqlite WAL, synchronous=NORMAL, 1000 rows per transaction",
        events: rows.len(),
        wall,
    })
}
