//! The writer's dedup window: keys per tenant, rebuilt from the log at open.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use rusqlite::Connection;

use super::log::first_stored_at;
use super::schema::now_ns;
use crate::delivery::DedupWindow;

/// What a record is deduplicated on, always with its tenant's number: one
/// tenant can never suppress another's events by reusing their ids.
///
/// A canonical UUID id (the default, lowercase and hyphenated) is kept as its
/// 128 bits, exactly. Any other id is kept as a 128-bit hash rather than the
/// string, so a five-minute window at a hundred thousand events a second fits
/// in memory; two distinct such ids of one tenant collide with a probability
/// of about n²/2¹²⁹.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DedupKey {
    Uuid(i64, u128),
    IdHash(i64, u128),
    Content(i64, [u8; 32]),
}

impl DedupKey {
    pub(super) fn id(tenant: i64, id: &str) -> Self {
        let canonical = id.len() == 36 && !id.bytes().any(|b| b.is_ascii_uppercase());
        if canonical && let Ok(uuid) = uuid::Uuid::try_parse(id) {
            return DedupKey::Uuid(tenant, uuid.as_u128());
        }
        let half = |salt: u8| {
            let mut h = DefaultHasher::new();
            salt.hash(&mut h);
            id.hash(&mut h);
            h.finish()
        };
        DedupKey::IdHash(tenant, (u128::from(half(0)) << 64) | u128::from(half(1)))
    }
}

/// The keys are random-looking already: hashing one word of them is enough
/// for the window's table, and cheaper on the writer thread than all of it.
impl Hash for DedupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let word = match self {
            DedupKey::Uuid(t, k) | DedupKey::IdHash(t, k) => {
                (*k as u64) ^ ((*k >> 64) as u64) ^ *t as u64
            }
            DedupKey::Content(t, k) => {
                u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]) ^ *t as u64
            }
        };
        state.write_u64(word);
    }
}

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
            dedup.insert(DedupKey::id(tenant, &id), at_ms);
        }
        if let Ok(key) = <[u8; 32]>::try_from(row.get_ref(2)?.as_blob_or_null()?.unwrap_or(&[])) {
            dedup.insert(DedupKey::Content(tenant, key), at_ms);
        }
    }
    Ok(dedup)
}
