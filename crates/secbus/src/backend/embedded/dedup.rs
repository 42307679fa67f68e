//! The writer's dedup window: keys per tenant, rebuilt from the log at open.

use std::time::Duration;

use rusqlite::Connection;

use super::log::first_stored_at;
use super::schema::now_ns;
use crate::delivery::{DedupKey, DedupWindow};

/// The window with the keys of every record stored within it, from the file.
pub(super) fn rebuild(
    conn: &Connection,
    window: Duration,
) -> rusqlite::Result<DedupWindow<DedupKey>> {
    let mut dedup = DedupWindow::new(window);
    let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
    if window_ns == 0 {
        return Ok(dedup);
    }
    let Some(from) = first_stored_at(conn, now_ns().saturating_sub(window_ns))? else {
        return Ok(dedup);
    };
    let mut stmt = conn.prepare(
        "SELECT tenant, CASE WHEN json_valid(event) THEN json_extract(event, '$.id') END,
                content_key, stored_at FROM log
         WHERE seq >= ?1 AND redrive_for IS NULL ORDER BY seq",
    )?;
    let mut rows = stmt.query([super::log::seq_param(from)])?;
    while let Some(row) = rows.next()? {
        let tenant: i64 = row.get(0)?;
        let at_ms = row.get::<_, i64>(3)? / 1_000_000;
        // A row whose JSON has no string id (a damaged file) cannot be a duplicate.
        if let Ok(Some(id)) = row.get::<_, Option<String>>(1) {
            dedup.insert(DedupKey::id(tenant as u64, &id), at_ms);
        }
        if let Ok(key) = <[u8; 32]>::try_from(row.get_ref(2)?.as_blob_or_null()?.unwrap_or(&[])) {
            dedup.insert(DedupKey::content(tenant as u64, key), at_ms);
        }
    }
    Ok(dedup)
}
