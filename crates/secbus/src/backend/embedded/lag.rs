//! Consumer-group lag of the `embedded:` engine: the group's state (live, or
//! as saved in the file) and a count of the tenant's records past its read position.

use super::EmbeddedEngine;
use super::log::seq_param;
use super::schema::sql_error;
use crate::engine::{GroupLag, unknown_group};
use crate::error::Result;
use crate::event::TenantId;

impl EmbeddedEngine {
    pub(super) async fn lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        let Some(snapshot) = self.groups.snapshot(tenant, group).await? else {
            return Err(unknown_group(tenant, group));
        };
        let tenants = self.log.tenants.clone();
        let tenant = tenant.clone();
        let from = seq_param(snapshot.next_read);
        let unread = self
            .readers
            .run(move |conn| {
                let count = || -> rusqlite::Result<u64> {
                    let Some(id) = tenants.lookup(conn, &tenant)? else {
                        return Ok(0);
                    };
                    conn.prepare_cached("SELECT count(*) FROM log WHERE tenant = ?1 AND seq >= ?2")?
                        .query_row([id, from], |r| r.get::<_, i64>(0))
                        .map(|n| n.max(0) as u64)
                };
                count().map_err(|e| sql_error("counting a group's unread records", e))
            })
            .await?;
        Ok(snapshot.lag(unread))
    }
}
