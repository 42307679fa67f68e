//! Consumer-group lag of the `redis://` engine: `XINFO GROUPS` on the
//! tenant's log, as Redis counts it (every type: members skip the others).

use redis::streams::StreamInfoGroupsReply;

use super::engine::Shared;
use super::error::from_redis;
use super::keys::TenantKeys;
use crate::engine::{GroupLag, unknown_group};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;

/// The lag of `group` of `tenant`.
pub(super) async fn group_lag(shared: &Shared, tenant: &TenantId, group: &str) -> Result<GroupLag> {
    let log = TenantKeys::new(&shared.config.prefix, tenant).log();
    let mut conn = shared.conn();
    let reply: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&log)
        .query_async(&mut conn)
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        // No stream yet: no group either.
        Err(e) if e.to_string().contains("no such key") => {
            return Err(unknown_group(tenant, group));
        }
        Err(e) => return Err(from_redis("reading the consumer groups", e)),
    };
    let Some(info) = reply.groups.into_iter().find(|g| g.name == group) else {
        return Err(unknown_group(tenant, group));
    };
    let Some(lag) = info.lag else {
        // Redis cannot count after entries were deleted from the middle of
        // the stream past the group's position.
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("Redis cannot tell the lag of group {group:?} of tenant {tenant} now"),
        ));
    };
    Ok(GroupLag {
        waiting: lag as u64,
        unacked: info.pending as u64,
    })
}
