//! The in-process delivery machinery shared by the engines that run inside the
//! application (memory and embedded): consumer groups dispatched from a log the
//! engine provides ([`LocalGroups`]), and tails over it.
//!
//! An engine provides a [`LocalLog`] (read records of a tenant from a position,
//! watch its head) and a [`GroupStore`] (keep group positions, or not); the group
//! logic (pending deliveries, ack wait, nack delays, order per partition key)
//! is written here once.

mod group;
mod lag;
mod signal;
mod tail;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub(crate) use group::{GroupSnapshot, LocalGroups};
pub(crate) use signal::Signal;

use crate::error::Result;
use crate::event::{Event, TenantId};

/// One stored record of a tenant's log.
#[derive(Debug, Clone)]
pub(crate) struct LogRecord {
    pub(crate) seq: u64,
    pub(crate) event: Arc<Event>,
    pub(crate) redrive_for: Option<Arc<str>>,
}

/// What a read returns.
#[derive(Debug, Default)]
pub(crate) struct LogRead {
    /// Records with `seq >= from`, in order.
    pub(crate) records: Vec<LogRecord>,
    /// Records at or after `from` that are no longer retained and so were skipped.
    pub(crate) missed: u64,
}

/// A tenant-partitioned, append-only log an in-process engine keeps.
#[async_trait]
pub(crate) trait LocalLog: Send + Sync + 'static {
    /// Up to `max` records of `tenant` with `seq >= from`, in order.
    async fn read(&self, tenant: &TenantId, from: u64, max: usize) -> Result<LogRead>;
    /// The position after the newest record of `tenant` (where "new" starts).
    async fn head(&self, tenant: &TenantId) -> Result<u64>;
    /// The oldest retained position of `tenant`.
    async fn first(&self, tenant: &TenantId) -> Result<u64>;
    /// The first position of `tenant` stored at or after `time`.
    async fn seq_at(&self, tenant: &TenantId, time: DateTime<Utc>) -> Result<u64>;
    /// Bumped (at least) whenever a record of `tenant` is appended.
    fn signal(&self, tenant: &TenantId) -> Arc<Signal>;
}

/// How far a group still needs the log: records below `floor` are settled.
/// The memory engine evicts only below every group's floor.
#[derive(Debug)]
pub(crate) struct GroupFloor {
    pub(crate) floor: AtomicU64,
    /// Shared by the groups of a tenant: publishers waiting for room wait on it.
    pub(crate) moved: Arc<Signal>,
}

/// Where an in-process engine keeps its groups' positions.
#[async_trait]
pub(crate) trait GroupStore: Send + Sync + 'static {
    /// The group's saved state, if it was saved before.
    async fn load(&self, tenant: &TenantId, group: &str) -> Result<Option<GroupSnapshot>>;
    /// Saves the group's state (called periodically and on close).
    async fn save(&self, snapshot: &GroupSnapshot) -> Result<()>;
    /// A floor for the group to keep current, when the engine needs one.
    fn floor(&self, _tenant: &TenantId, _group: &str) -> Option<Arc<GroupFloor>> {
        None
    }
}
