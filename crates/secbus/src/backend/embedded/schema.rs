//! The SQLite file: how connections are opened, the tables, and how SQLite
//! errors become secbus errors.
//!
//! Durability: the file is in WAL mode with `synchronous=NORMAL`. A commit
//! appends its pages to the write-ahead log before `COMMIT` returns, so every
//! committed transaction survives the process dying at any point (a panic,
//! `kill -9`, an OOM kill): that is what a successful publish promises. What
//! `NORMAL` gives up is the fsync of the log on every commit, so the last
//! commits before an operating-system crash or a power cut may be lost; the
//! file itself stays consistent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, ErrorKind, Result};

/// The schema version this code writes; a newer file is refused, not guessed at.
const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for another connection's lock (another process
/// writing the same directory) before it reports the engine unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The database file inside the engine's directory.
pub(super) fn db_path(dir: &Path) -> PathBuf {
    dir.join("secbus.db")
}

/// Opens the connection that writes, creating the file and tables when absent.
pub(super) fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| open_error(path, e))?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The checkpointer thread copies the log into the database file, off
        // the writer's thread; see `checkpoint`.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        conn.pragma_update(None, "cache_size", -16 * 1024)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(())
    };
    setup().map_err(|e| open_error(path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Engine,
            format!(
                "{} was written by a newer secbus (schema {version}; this one knows {SCHEMA_VERSION})",
                path.display()
            ),
        ));
    }
    conn.execute_batch(SCHEMA)
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// Opens a connection that only reads.
pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = open_side(path)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// Opens a connection that writes no rows (reads, or checkpoints).
pub(super) fn open_side(path: &Path) -> Result<Connection> {
    // Read-write at the file level: a WAL reader needs to update the shared
    // memory index.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "cache_size", -8 * 1024)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(())
    };
    setup().map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// `seq` is the rowid: one sequence for every tenant, assigned by the writer
/// after the newest row. `log_head` keeps the tip from before each retention
/// run, so a sequence is never reused, even after retention empties the table;
/// commits do not write it, which saves a page per commit. `stored_at` (Unix
/// nanoseconds) never decreases along `seq`, which lets time lookups
/// binary-search the rowid instead of keeping a time index.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    tenant INTEGER NOT NULL,
    stored_at INTEGER NOT NULL,
    event TEXT NOT NULL,
    content_key BLOB,
    redrive_for TEXT
);
CREATE INDEX IF NOT EXISTS log_by_tenant ON log (tenant, seq);
CREATE TABLE IF NOT EXISTS log_head (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    next_seq INTEGER NOT NULL,
    last_stored_at INTEGER NOT NULL
);
INSERT OR IGNORE INTO log_head (id, next_seq, last_stored_at) VALUES (0, 1, 0);
CREATE TABLE IF NOT EXISTS groups (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    saved_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    dead_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (tenant, dead_at, id);
PRAGMA user_version = 1;
";

fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!("cannot open the embedded store {}", path.display()),
    )
    .with_source(e)
}

/// A SQLite failure while doing `what`, with a kind that says whether retrying helps.
pub(super) fn sql_error(what: &str, e: rusqlite::Error) -> Error {
    let kind = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            ErrorKind::EngineUnavailable
        }
        Some(
            rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::CannotOpen,
        ) => ErrorKind::Io,
        _ => ErrorKind::Engine,
    };
    Error::new(kind, format!("embedded store: {what} failed")).with_source(e)
}

/// Unix nanoseconds now.
pub(super) fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}
