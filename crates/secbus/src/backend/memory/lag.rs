//! Consumer-group lag of the `memory:` engine, from the group's live state
//! and the tenant's ring.

use super::MemoryEngine;
use crate::engine::{GroupLag, unknown_group};
use crate::error::Result;
use crate::event::TenantId;
use crate::subscription::TypePattern;

impl MemoryEngine {
    pub(super) async fn lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        let Some(snapshot) = self.groups.snapshot(tenant, group).await? else {
            return Err(unknown_group(tenant, group));
        };
        let pattern = TypePattern::new(snapshot.pattern.clone())?;
        let log = self.log.tenant(tenant);
        let st = log.state.lock();
        let from = st.ring.partition_point(|r| r.seq < snapshot.next_read);
        let unread = st
            .ring
            .range(from..)
            .filter(|r| pattern.matches(&r.event.ty))
            .count();
        drop(st);
        Ok(snapshot.lag(unread as u64))
    }
}
