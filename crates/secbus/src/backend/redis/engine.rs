//! The `redis://` engine: what it shares between publishers and subscriptions,
//! and the [`Engine`] implementation that ties the parts together.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::append::Appender;
use super::config::RedisConfig;
use super::dead_letter::DeadLetters;
use super::error::from_redis;
use super::group::subscribe_group;
use super::settle::Settler;
use super::tail::Tail;
use crate::delivery::DeadLetter;
use crate::engine::{Appended, Capabilities, Engine, EngineStream, GroupLag, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::subscription::{Mode, SubscribeOptions};

/// How long a command may wait for its reply before it fails (and a publish
/// falls back to the spool).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `close` waits for queued acks to reach the server.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the engine's parts share.
pub(super) struct Shared {
    pub(super) client: redis::Client,
    /// The connection for everything that does not block: appends, acks,
    /// claims, dead letters. Requests from many tasks are pipelined on it.
    pub(super) conn: ConnectionManager,
    pub(super) config: Arc<RedisConfig>,
    pub(super) appender: Appender,
    pub(super) closed: watch::Sender<bool>,
    pub(super) dead_letters: DeadLetters,
    /// The open group members: on close their acks are flushed and their
    /// pending entries released.
    pub(super) members: Mutex<Vec<Weak<Settler>>>,
    /// Releases of dropped members still running; close waits for them.
    pub(super) releases: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(super) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(super) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A connection of its own for a subscription's blocking reads: a blocked
    /// `XREADGROUP` holds its connection until it returns, so it must not share
    /// one with the publishers. It connects on first use and reconnects after
    /// the server comes back.
    pub(super) fn blocking_conn(&self, block: Duration) -> Result<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            manager_config(Some(block + RESPONSE_TIMEOUT)),
        )
        .map_err(|e| from_redis("opening a connection", e))
    }
}

fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    // Few retries with short waits: a caller learns quickly that the server is
    // gone (and a publish spools); the next command starts a new reconnect.
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// The `redis://` engine.
pub(crate) struct RedisEngine {
    shared: Arc<Shared>,
}

impl RedisEngine {
    /// Connects; fails with [`ErrorKind::EngineUnavailable`] when the server does not answer.
    pub(super) async fn connect(config: RedisConfig) -> Result<RedisEngine> {
        let client = redis::Client::open(config.server_url.as_str()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidUrl,
                "not a redis URL (redis://[user:password@]host[:port][/db])",
            )
            .with_source(e)
        })?;
        let conn = ConnectionManager::new_with_config(
            client.clone(),
            manager_config(Some(RESPONSE_TIMEOUT)),
        )
        .await
        .map_err(|e| from_redis("connecting", e))?;
        let dead_letters = DeadLetters {
            prefix: config.prefix.clone(),
        };
        let config = Arc::new(config);
        let appender = Appender::start(conn.clone(), config.clone());
        Ok(RedisEngine {
            shared: Arc::new(Shared {
                client,
                conn,
                config,
                appender,
                closed: watch::Sender::new(false),
                dead_letters,
                members: Mutex::new(Vec::new()),
                releases: Mutex::new(Vec::new()),
            }),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.is_closed() {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // With the server's append-only file on; see the module doc.
            persistent: true,
            publish_waits_for_stalled_groups: false,
            replay: true,
            // XREAD skips trimmed entries without saying how many.
            tail_lag_reported: false,
            durable_groups: true,
            key_order_across_members: false,
        }
    }

    async fn append(&self, records: Vec<Record>, _wait: bool) -> Result<Vec<Appended>> {
        // Redis applies no backpressure to writers: `wait` has nothing to wait for.
        self.check_open()?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.shared.appender.append(&records).await
    }

    async fn subscribe(&self, options: &SubscribeOptions) -> Result<Box<dyn EngineStream>> {
        self.check_open()?;
        match &options.mode {
            Mode::Tail => Ok(Box::new(Tail::open(self.shared.clone(), options).await?)),
            Mode::Group(name) => subscribe_group(&self.shared, options, name).await,
        }
    }

    async fn put_dead_letter(&self, dead_letter: DeadLetter) -> Result<()> {
        self.check_open()?;
        self.shared
            .dead_letters
            .put(&mut self.shared.conn(), &dead_letter)
            .await
    }

    async fn dead_letters(&self, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        self.shared
            .dead_letters
            .list(&mut self.shared.conn(), tenant, limit)
            .await
    }

    async fn dead_letter(&self, tenant: &TenantId, id: &str) -> Result<Option<DeadLetter>> {
        self.check_open()?;
        self.shared
            .dead_letters
            .get(&mut self.shared.conn(), tenant, id)
            .await
    }

    async fn delete_dead_letter(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        self.check_open()?;
        self.shared
            .dead_letters
            .delete(&mut self.shared.conn(), tenant, id)
            .await
    }

    async fn group_lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        super::lag::group_lag(&self.shared, tenant, group).await
    }

    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        let _: String = redis::cmd("PING")
            .query_async(&mut self.shared.conn())
            .await
            .map_err(|e| from_redis("ping", e))?;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.send_replace(true) {
            return Ok(());
        }
        let members: Vec<Arc<Settler>> = self
            .shared
            .members
            .lock()
            .drain(..)
            .filter_map(|m| m.upgrade())
            .collect();
        let releases: Vec<JoinHandle<()>> = self.shared.releases.lock().drain(..).collect();
        let flushed = async {
            for member in members {
                member.release(true).await;
            }
            for release in releases {
                let _ = release.await;
            }
        };
        if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, flushed)
            .await
            .is_err()
        {
            tracing::warn!(
                "redis: acks and releases not confirmed within {CLOSE_FLUSH_TIMEOUT:?} of close; \
                 their events are delivered again after the ack wait"
            );
        }
        Ok(())
    }
}
