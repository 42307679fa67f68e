//! `embedded:<dir>`: durable, one node, no broker: SQLite in WAL mode in `<dir>`.
//!
//! - One log table for every tenant; a record's sequence is its rowid, so
//!   sequences grow per tenant without being dense. The event is stored as
//!   the JSON `Event::to_json` produced.
//! - Publishes are group-committed by one writer thread ([`writer`]); a
//!   publish returns after its transaction committed, which survives the
//!   process being killed (see [`schema`] for what WAL with
//!   `synchronous=NORMAL` promises).
//! - Ids (and content keys) are deduplicated per tenant within the window,
//!   rebuilt from the log before the process's first publish.
//! - Group members and tails are the in-process ones of [`crate::local`],
//!   over this log ([`log`]) and with group state saved in the file
//!   ([`groups`]) about every 100 ms.
//! - Dead letters are kept in the file; retention deletes by age and count.
//!
//! Several processes may open the same directory: another process's tail
//! sees new records within about 200 ms. A process's dedup window holds what
//! was stored before its first publish and what it published since, not what
//! other processes publish meanwhile; and a consumer group should be run by
//! one process at a time (its state is saved by the process running it).

mod checkpoint;
mod committed;
mod dead_letters;
mod dedup;
mod groups;
mod lag;
mod log;
mod readers;
mod recent;
mod retention;
mod schema;
mod tenants;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use self::groups::EmbeddedGroups;
use self::log::EmbeddedLog;
use self::readers::Readers;
use self::retention::Retention;
use self::schema::sql_error;
use self::tenants::Tenants;
use self::writer::{Encoded, Start, Writer};
use crate::bus::BusConfig;
use crate::delivery::DeadLetter;
use crate::engine::{Appended, Capabilities, Engine, EngineStream, GroupLag, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::local::LocalGroups;
use crate::subscription::SubscribeOptions;

/// How often group state is saved: acks of the last interval may be
/// redelivered after a crash.
const GROUP_FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often the file is checked for records another process appended.
const FOREIGN_POLL_EVERY: Duration = Duration::from_millis(200);
/// Records kept decoded in memory, across tenants (the newest ones).
const RECENT_RECORDS: usize = 131_072;

/// The `embedded:` engine.
pub(crate) struct EmbeddedEngine {
    dir: PathBuf,
    log: Arc<EmbeddedLog>,
    readers: Arc<Readers>,
    writer: Arc<Writer>,
    groups: Arc<LocalGroups>,
    /// Held while group state is saved, so `close` saves after any save in progress.
    flushing: Arc<tokio::sync::Mutex<()>>,
    closed: AtomicBool,
    tasks: Vec<JoinHandle<()>>,
}

impl EmbeddedEngine {
    /// Opens (creating when absent) the store in `dir`.
    pub(crate) async fn open(dir: impl AsRef<Path>, config: &BusConfig) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot create the embedded store directory {}",
                    dir.display()
                ),
            )
            .with_source(e)
        })?;
        let path = schema::db_path(&dir);
        let config = config.clone();
        let open_path = path.clone();
        let (start, next_seq) =
            tokio::task::spawn_blocking(move || open_store(&open_path, &config))
                .await
                .map_err(|e| {
                    Error::new(ErrorKind::Engine, "opening the embedded store failed")
                        .with_source(e)
                })??;
        let readers = Arc::new(Readers::new(path));
        // Fails here, with the path, rather than on the first read.
        readers.with(|_| Ok(()))?;
        let log = Arc::new(EmbeddedLog::new(
            readers.clone(),
            Arc::new(Tenants::default()),
            next_seq,
            RECENT_RECORDS,
        ));
        let writer = Arc::new(Writer::spawn(start, log.clone())?);
        let groups = Arc::new(LocalGroups::new(
            log.clone(),
            Arc::new(EmbeddedGroups {
                readers: readers.clone(),
                writer: writer.clone(),
            }),
        ));
        let flushing = Arc::new(tokio::sync::Mutex::new(()));
        let tasks = vec![
            tokio::spawn(flush_groups(Arc::downgrade(&groups), flushing.clone())),
            tokio::spawn(poll_foreign_writes(Arc::downgrade(&log))),
        ];
        Ok(EmbeddedEngine {
            dir,
            log,
            readers,
            writer,
            groups,
            flushing,
            closed: AtomicBool::new(false),
            tasks,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        Ok(())
    }
}

/// Opens the write connection, reads where the log stands and applies
/// retention once, before anything reads.
fn open_store(path: &Path, config: &BusConfig) -> Result<(Start, u64)> {
    let conn = schema::open_writer(path)?;
    let mut retention = Retention::new(config);
    // The cache is empty: nothing to trim in it.
    let recent = recent::Recent::new(0, 0);
    retention
        .run_if_due(&conn, &recent)
        .map_err(|e| sql_error("applying retention", e))?;
    let next_seq = log::head(&conn).map_err(|e| sql_error("reading the log head", e))?;
    let checkpointer = checkpoint::Checkpointer::spawn(path)?;
    Ok((
        Start {
            conn,
            dedup_window: config.dedup_window,
            retention,
            checkpointer,
        },
        next_seq,
    ))
}

async fn flush_groups(groups: Weak<LocalGroups>, flushing: Arc<tokio::sync::Mutex<()>>) {
    let mut every = tokio::time::interval(GROUP_FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(groups) = groups.upgrade() else {
            return;
        };
        let flushed = {
            let _saving = flushing.lock().await;
            groups.flush().await
        };
        if let Err(e) = flushed {
            if e.kind() == ErrorKind::Closed {
                return;
            }
            tracing::warn!(error = %e, "embedded store: saving consumer groups failed; retrying");
        }
    }
}

async fn poll_foreign_writes(log: Weak<EmbeddedLog>) {
    let mut every = tokio::time::interval(FOREIGN_POLL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(log) = log.upgrade() else {
            return;
        };
        let polled = tokio::task::spawn_blocking(move || log.poll_foreign_writes()).await;
        if let Ok(Err(e)) = polled {
            tracing::warn!(error = %e, "embedded store: checking for other writers failed");
        }
    }
}

impl Drop for EmbeddedEngine {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl Engine for EmbeddedEngine {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            persistent: true,
            // The log is on disk; memory stays bounded because members hold a
            // bounded number of deliveries and the writer's queue is bounded.
            publish_waits_for_stalled_groups: false,
            replay: true,
            tail_lag_reported: false,
            durable_groups: true,
            key_order_across_members: true,
        }
    }

    async fn append(&self, records: Vec<Record>, wait: bool) -> Result<Vec<Appended>> {
        self.check_open()?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Encoding here, on the publisher's task, keeps it off the one writer
        // thread. The same serializer as `Event::to_json`, into a buffer sized
        // once: the same bytes without the regrowing.
        let encoded = records
            .into_iter()
            .map(|record| {
                let mut json = Vec::with_capacity(record.event.encoded_len() + 64);
                serde_json::to_writer(&mut json, &*record.event).map_err(|e| {
                    Error::new(ErrorKind::InvalidAttribute, "the event cannot be encoded")
                        .with_source(e)
                })?;
                Ok(Encoded { json, record })
            })
            .collect::<Result<Vec<_>>>()?;
        self.writer.append(encoded, wait).await
    }

    async fn subscribe(&self, options: &SubscribeOptions) -> Result<Box<dyn EngineStream>> {
        self.check_open()?;
        self.groups.subscribe(options).await
    }

    async fn put_dead_letter(&self, dead_letter: DeadLetter) -> Result<()> {
        self.check_open()?;
        let json = dead_letters::encode(&dead_letter)?;
        let dead_at = dead_letters::dead_at(&dead_letter);
        let tenant = dead_letter.event.tenant.as_str().to_owned();
        let id = dead_letter.id;
        self.writer
            .write("storing a dead letter", move |conn| {
                dead_letters::insert(conn, &tenant, &id, dead_at, &json)
            })
            .await
            .map(drop)
    }

    async fn dead_letters(&self, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>> {
        let tenant = tenant.clone();
        self.readers
            .run(move |conn| dead_letters::list(conn, &tenant, limit))
            .await
    }

    async fn dead_letter(&self, tenant: &TenantId, id: &str) -> Result<Option<DeadLetter>> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.readers
            .run(move |conn| dead_letters::get(conn, &tenant, &id))
            .await
    }

    async fn delete_dead_letter(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        self.check_open()?;
        let (tenant, id) = (tenant.as_str().to_owned(), id.to_owned());
        let deleted = self
            .writer
            .write("deleting a dead letter", move |conn| {
                dead_letters::delete(conn, &tenant, &id)
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn group_lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        self.lag(tenant, group).await
    }

    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        self.readers
            .run(|conn| {
                log::head(conn)
                    .map(drop)
                    .map_err(|e| sql_error("reading the log head", e))
            })
            .await
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "the embedded store in {} does not answer",
                        self.dir.display()
                    ),
                )
                .with_source(e)
            })
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Members stop first, then their last acks are saved, then the writer
        // commits what is queued and checkpoints.
        self.groups.close();
        let flushed = {
            let _saving = self.flushing.lock().await;
            self.groups.flush().await
        };
        let closed = self.writer.close().await;
        for task in &self.tasks {
            task.abort();
        }
        self.log.bump_all();
        flushed.and(closed)
    }
}
