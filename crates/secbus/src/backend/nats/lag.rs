//! Consumer-group lag of the `nats://` engine: the durable consumer's info,
//! as JetStream counts it (filtered by the group's type pattern).

use async_nats::jetstream::context::ConsumerInfoErrorKind;

use super::consumer::consumer_name;
use super::engine::Shared;
use super::error;
use crate::engine::{GroupLag, unknown_group};
use crate::error::Result;
use crate::event::TenantId;

/// The lag of `group` of `tenant`.
pub(super) async fn group_lag(shared: &Shared, tenant: &TenantId, group: &str) -> Result<GroupLag> {
    let name = consumer_name(tenant.as_str(), group);
    match shared.events.consumer_info(&name).await {
        Ok(info) => Ok(GroupLag {
            waiting: info.num_pending,
            unacked: info.num_ack_pending as u64,
        }),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Err(unknown_group(tenant, group)),
        Err(e) => Err(error::unavailable(
            format!("cannot read the info of the consumer {name}"),
            e,
        )),
    }
}
