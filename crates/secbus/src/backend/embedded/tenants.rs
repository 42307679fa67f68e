//! Tenant names and the small integers the log stores in their place, which
//! keeps the `(tenant, seq)` index narrow.

use std::collections::HashMap;

use parking_lot::RwLock;
use rusqlite::{Connection, OptionalExtension};

use crate::event::TenantId;

/// The tenants known to this process. A number, once given, never changes.
#[derive(Default)]
pub(super) struct Tenants {
    ids: RwLock<HashMap<TenantId, i64>>,
}

impl Tenants {
    /// The tenant's number when this process has seen it.
    pub(super) fn get(&self, tenant: &TenantId) -> Option<i64> {
        self.ids.read().get(tenant).copied()
    }

    /// The tenant's number, from the file when this process has not seen it;
    /// `None` when the tenant never stored an event.
    pub(super) fn lookup(
        &self,
        conn: &Connection,
        tenant: &TenantId,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.get(tenant) {
            return Ok(Some(id));
        }
        let id = conn
            .prepare_cached("SELECT id FROM tenants WHERE name = ?1")?
            .query_row([tenant.as_str()], |r| r.get::<_, i64>(0))
            .optional()?;
        if let Some(id) = id {
            self.ids.write().insert(tenant.clone(), id);
        }
        Ok(id)
    }

    /// The tenant's number, giving it one (committed at once) when it has none.
    /// Another process may register the same name at the same time; the
    /// unique name makes both end up with the same number.
    pub(super) fn register(&self, conn: &Connection, tenant: &TenantId) -> rusqlite::Result<i64> {
        conn.prepare_cached("INSERT OR IGNORE INTO tenants (name) VALUES (?1)")?
            .execute([tenant.as_str()])?;
        let id = conn
            .prepare_cached("SELECT id FROM tenants WHERE name = ?1")?
            .query_row([tenant.as_str()], |r| r.get::<_, i64>(0))?;
        self.ids.write().insert(tenant.clone(), id);
        Ok(id)
    }

    /// Every tenant in the file, as `(number, name)`; names that are not valid
    /// tenant ids (a damaged file) are skipped.
    pub(super) fn all(conn: &Connection) -> rusqlite::Result<Vec<(i64, TenantId)>> {
        let mut stmt = conn.prepare_cached("SELECT id, name FROM tenants ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name) = row?;
            if let Ok(tenant) = TenantId::new(name) {
                out.push((id, tenant));
            }
        }
        Ok(out)
    }
}
