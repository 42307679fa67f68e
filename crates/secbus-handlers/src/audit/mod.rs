//! A tamper-evident audit trail: every event of a tenant, in JSON lines,
//! each record chained to the one before by SHA-256.
//!
//! - **Where**: `<dir>/<tenant>/audit-000001.jsonl`, `audit-000002.jsonl`, ...
//!   A file is closed (and synced) once the next record would take it past
//!   `max_file_bytes`; the chain goes on in the next file: its first record's
//!   `prev` is the hash of the previous file's last record, and `seq` goes on.
//! - **A record**: `{"seq":N,"event":{...},"prev":"<hex>","hash":"<hex>"}`,
//!   `hash` = SHA-256 over a domain tag, `prev`, `seq` and the event's JSON
//!   bytes as they stand in the line. The first record's `prev` is
//!   [`GENESIS`] (64 zeros). Changing any byte of an event, removing a record
//!   or moving one breaks the chain at that record, which [`verify_path`]
//!   (and `secbus audit verify`) names.
//! - **What the chain cannot show on its own**: records cut from the end, or a
//!   trail rewritten from some record on with every later hash recomputed.
//!   Keep the last `(seq, hash)` that `verify` prints somewhere else (publish
//!   it, write it to a ticket) to tell later that nothing was cut or rewritten.
//! - **Durability** ([`FsyncPolicy`]): `every_record` syncs each record before
//!   its delivery is acked; `batch` (the default) shares one fsync among the
//!   records written while the previous one ran (group commit), still before
//!   any of them is acked; `interval_ms` syncs in the background and acks at
//!   once (a crash loses up to an interval of acked records); `never` leaves
//!   it to the OS.
//! - **Restart**: the trail resumes after the last record on disk. A last
//!   line cut short by a crash is removed (it was never acked, so it is
//!   delivered again); a whole last record that does not hash right stops the
//!   handler (every delivery is retried, then dead-lettered) rather than
//!   extend a damaged trail.
//! - **Redelivery**: an event redelivered while its id is among the last
//!   4,096 recorded in this process is not appended again. A redelivery after
//!   a restart is appended again, as a new record.

mod files;
mod handler;
mod record;
mod trail;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use secbus::handler::Worker;
use secbus::{Bus, SubscribeOptions, TenantId, TypePattern};
use serde::{Deserialize, Serialize};

pub use handler::AuditHandler;
pub use record::GENESIS;
pub use trail::{AuditTrail, ChainHead};
pub use verify::{Breakage, BrokenRecord, ChainCheck, verify_path};

use crate::error::{Error, Result};
use crate::workers::Workers;

/// When the trail is synced to disk; see [`self`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FsyncPolicy {
    /// An fsync per record, before its delivery is acked.
    EveryRecord,
    /// One fsync for the records written meanwhile, before any is acked.
    #[default]
    Batch,
    /// In the background, this often; deliveries are acked once written.
    /// In TOML: `fsync = { interval_ms = 1000 }`.
    #[serde(rename = "interval_ms", with = "millis")]
    Interval(Duration),
    /// Never explicitly: the OS writes back when it will.
    Never,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The audit handler's settings (`[audit]` in the server's config).
///
/// ```toml
/// [audit]
/// dir = "./secbus-audit"
/// tenants = ["acme"]
/// fsync = "batch"
/// max_file_bytes = 67108864
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The trail root; a tenant's files are in `<dir>/<tenant>/`.
    pub dir: PathBuf,
    /// The tenants whose events are kept: one consumer group each.
    pub tenants: Vec<String>,
    /// The consumer group the handler reads (default `audit`).
    #[serde(default = "default_group")]
    pub group: String,
    /// The event types kept, as a type pattern (default `>`, every type).
    #[serde(default = "default_types")]
    pub types: String,
    /// A file is closed once the next record would take it past this
    /// (default 64 MiB). A record larger than this gets a file of its own.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// When records are synced to disk (default `batch`).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Events handled at once per tenant (default 64): with `batch`, how many
    /// records one fsync can cover.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_group() -> String {
    "audit".to_owned()
}

fn default_types() -> String {
    ">".to_owned()
}

fn default_max_file_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_concurrency() -> usize {
    64
}

impl AuditConfig {
    /// Settings with the defaults for `dir` and `tenants`.
    pub fn new(dir: impl Into<PathBuf>, tenants: Vec<String>) -> Self {
        AuditConfig {
            dir: dir.into(),
            tenants,
            group: default_group(),
            types: default_types(),
            max_file_bytes: default_max_file_bytes(),
            fsync: FsyncPolicy::default(),
            concurrency: default_concurrency(),
        }
    }

    /// Checks the settings once, at load, naming the first wrong one.
    pub fn validate(&self) -> Result<()> {
        self.subscriptions().map(drop)?;
        if self.max_file_bytes < 1024 {
            return Err(Error::config("audit.max_file_bytes must be at least 1024"));
        }
        if self.concurrency == 0 {
            return Err(Error::config("audit.concurrency must be at least 1"));
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && d.is_zero()
        {
            return Err(Error::config("audit.fsync.interval_ms must be at least 1"));
        }
        Ok(())
    }

    fn subscriptions(&self) -> Result<Vec<SubscribeOptions>> {
        if self.tenants.is_empty() {
            return Err(Error::config("audit.tenants names no tenant"));
        }
        let types = TypePattern::new(self.types.clone())
            .map_err(|e| Error::config(format!("audit.types: {}", e.message())))?;
        self.tenants
            .iter()
            .map(|t| {
                let tenant = TenantId::new(t.clone())
                    .map_err(|e| Error::config(format!("audit.tenants: {}", e.message())))?;
                let options = SubscribeOptions::group(tenant, self.group.clone())
                    .types(types.clone())
                    .max_in_flight(self.concurrency.max(1));
                options
                    .validate()
                    .map_err(|e| Error::config(format!("audit: {}", e.message())))?;
                Ok(options)
            })
            .collect()
    }
}

/// Starts the audit handler on `bus`: a [`Worker`] per tenant on the
/// configured group, all writing through one [`AuditHandler`].
pub async fn spawn(bus: &Bus, config: &AuditConfig) -> Result<Workers> {
    config.validate()?;
    let handler = AuditHandler::new(&config.dir, config.max_file_bytes, config.fsync);
    let mut workers = Workers::default();
    for options in config.subscriptions()? {
        let handle = Worker::new(bus.clone(), options)
            .concurrency(config.concurrency)
            .start(handler.clone())
            .await?;
        workers.push(handle);
    }
    Ok(workers)
}
