//! Dead letters kept in the file: the [`DeadLetter`] as JSON, keyed by tenant
//! and id, listed oldest first.

use rusqlite::{Connection, OptionalExtension};

use super::log::time_ns;
use crate::delivery::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;

/// The JSON stored for a dead letter.
pub(super) fn encode(dead_letter: &DeadLetter) -> Result<String> {
    serde_json::to_string(dead_letter)
        .map_err(|e| Error::new(ErrorKind::Engine, "cannot encode a dead letter").with_source(e))
}

pub(super) fn insert(
    conn: &Connection,
    tenant: &str,
    id: &str,
    dead_at: i64,
    json: &str,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO dead_letters (tenant, id, dead_at, body) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(rusqlite::params![tenant, id, dead_at, json])
}

pub(super) fn delete(conn: &Connection, tenant: &str, id: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM dead_letters WHERE tenant = ?1 AND id = ?2")?
        .execute([tenant, id])
}

/// `dead_at` as stored.
pub(super) fn dead_at(dead_letter: &DeadLetter) -> i64 {
    time_ns(dead_letter.dead_at)
}

pub(super) fn list(conn: &Connection, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(
            "SELECT id, body FROM dead_letters WHERE tenant = ?1 ORDER BY dead_at, id LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(rusqlite::params![tenant.as_str(), limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| super::schema::sql_error("listing dead letters", e))?;
    rows.into_iter()
        .map(|(id, body)| decode(tenant, &id, &body))
        .collect()
}

pub(super) fn get(conn: &Connection, tenant: &TenantId, id: &str) -> Result<Option<DeadLetter>> {
    let body = conn
        .prepare_cached("SELECT body FROM dead_letters WHERE tenant = ?1 AND id = ?2")
        .and_then(|mut s| {
            s.query_row([tenant.as_str(), id], |r| r.get::<_, String>(0))
                .optional()
        })
        .map_err(|e| super::schema::sql_error("reading a dead letter", e))?;
    body.map(|b| decode(tenant, id, &b)).transpose()
}

fn decode(tenant: &TenantId, id: &str, body: &str) -> Result<DeadLetter> {
    serde_json::from_str(body).map_err(|e| {
        Error::new(
            ErrorKind::Engine,
            format!("the stored dead letter {id:?} of tenant {tenant} cannot be decoded"),
        )
        .with_source(e)
    })
}
