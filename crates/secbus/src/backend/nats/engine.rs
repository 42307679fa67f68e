//! The `nats://` engine: the connection, the streams it keeps, and the
//! [`Engine`] implementation that routes to publish, groups, tails and dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::{ConnectOptions, Event as ClientEvent, ServerAddr};
use async_trait::async_trait;
use tokio::sync::watch;

use super::config::{NatsConfig, Storage};
use super::content_dedup::ContentDedup;
use super::{consumer, dead_letter, error, publish, tail};
use crate::delivery::DeadLetter;
use crate::engine::{Appended, Capabilities, Engine, EngineStream, GroupLag, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::subscription::{Mode, SubscribeOptions};

/// The longest wait between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// Attempts to check the streams after a reconnection.
const STREAM_CHECKS: u32 = 10;
/// The duplicate window when dedup is off (JetStream has no "none").
const NO_DEDUP_WINDOW: Duration = Duration::from_secs(1);

/// What the engine's parts share: the connection, the JetStream context, the
/// streams and the close signal.
pub(super) struct Shared {
    pub(super) config: NatsConfig,
    pub(super) client: async_nats::Client,
    pub(super) js: async_nats::jetstream::Context,
    pub(super) events: stream::Stream<()>,
    pub(super) dead_letters: stream::Stream<()>,
    pub(super) closed: watch::Sender<bool>,
    /// Counts the client's reconnections: tails and groups send their requests
    /// again after one, since a restarted server forgot them.
    pub(super) connections: watch::Sender<u64>,
    pub(super) groups: consumer::Groups,
}

/// The `nats://` engine.
pub(crate) struct NatsEngine {
    shared: Arc<Shared>,
    content: Option<ContentDedup>,
    closed: AtomicBool,
}

impl NatsEngine {
    /// Connects, then creates the streams (or updates them to `config`).
    pub(crate) async fn connect(config: NatsConfig) -> Result<NatsEngine> {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>().map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidUrl,
                        format!("{s:?} is not a NATS server address"),
                    )
                    .with_source(e)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let connections = watch::Sender::new(0u64);
        let connected = connections.clone();
        let lost = Arc::new(AtomicBool::new(false));
        let client = ConnectOptions::new()
            .name("secbus")
            .connection_timeout(config.timeout)
            .request_timeout(Some(config.timeout))
            // Quick retries: a restarted server is back within seconds, and every
            // publish waiting in the fallback spool waits for the reconnect.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(25u64 << attempts.min(7)).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                let connected = connected.clone();
                let lost = lost.clone();
                async move {
                    match event {
                        // Only a reconnection counts: the first connection's
                        // event comes after subscriptions may have started.
                        ClientEvent::Connected if lost.swap(false, Ordering::AcqRel) => {
                            tracing::info!("reconnected to NATS");
                            connected.send_modify(|n| *n += 1);
                        }
                        ClientEvent::Connected => tracing::debug!("connected to NATS"),
                        ClientEvent::Disconnected => {
                            lost.store(true, Ordering::Release);
                            tracing::warn!("disconnected from NATS; reconnecting")
                        }
                        other => tracing::debug!(event = %other, "NATS client event"),
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|e| {
                error::unavailable(format!("cannot connect to {}", config.servers.join(",")), e)
            })?;
        let js = ContextBuilder::new()
            .timeout(config.timeout)
            .build(client.clone());

        ensure_streams(&js, &config).await?;
        let content = if config.content_dedup {
            Some(ContentDedup::open(&js, &config).await?)
        } else {
            None
        };
        let events = open_stream(&js, &config.stream).await?;
        let dead_letters = open_stream(&js, &config.dlq_stream).await?;
        let shared = Arc::new(Shared {
            config,
            client,
            js,
            events,
            dead_letters,
            closed: watch::Sender::new(false),
            connections,
            groups: consumer::Groups::default(),
        });
        tokio::spawn(keep_streams(
            shared.js.clone(),
            shared.config.clone(),
            shared.connections.subscribe(),
            shared.closed.subscribe(),
        ));
        Ok(NatsEngine {
            shared,
            content,
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        Ok(())
    }
}

/// Creates the events and dead-letter streams, or updates them to `config`.
async fn ensure_streams(js: &async_nats::jetstream::Context, config: &NatsConfig) -> Result<()> {
    let storage = match config.storage {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    };
    let mut duplicate_window = if config.dedup_window.is_zero() {
        NO_DEDUP_WINDOW
    } else {
        config.dedup_window
    };
    if let Some(age) = config.max_age {
        // JetStream refuses a duplicate window longer than the retention.
        if age < duplicate_window {
            tracing::warn!(
                max_age = ?age,
                dedup_window = ?duplicate_window,
                "the dedup window is longer than the retention; JetStream dedups within max_age only"
            );
            duplicate_window = age;
        }
    }
    let events = stream::Config {
        name: config.stream.clone(),
        description: Some("secbus events: <prefix>.<tenant>.<type>, CloudEvents JSON".into()),
        subjects: vec![format!("{}.>", config.prefix)],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage,
        num_replicas: config.replicas,
        max_age: config.max_age.unwrap_or_default(),
        max_bytes: config.max_bytes.unwrap_or(-1),
        duplicate_window,
        ..Default::default()
    };
    create_or_update(js, events).await?;
    let dead_letters = stream::Config {
        name: config.dlq_stream.clone(),
        description: Some("secbus dead letters: <prefix>-dlq.<tenant>.<id>, JSON".into()),
        subjects: vec![format!("{}.>", config.dlq_prefix())],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage,
        num_replicas: config.replicas,
        ..Default::default()
    };
    create_or_update(js, dead_letters).await
}

/// After each reconnection, makes sure the streams are there: a server that
/// restarted with `storage=memory`, or an operator, may have lost them, and
/// publishing would otherwise answer "no responders" until the next restart
/// of this process.
async fn keep_streams(
    js: async_nats::jetstream::Context,
    config: NatsConfig,
    mut connections: watch::Receiver<u64>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = connections.changed() => if r.is_err() { return },
            _ = closed.wait_for(|c| *c) => return,
        }
        // A server that just came back may not serve JetStream for a moment.
        for attempt in 1..=STREAM_CHECKS {
            let mut ensured = ensure_streams(&js, &config).await;
            if ensured.is_ok() && config.content_dedup {
                ensured = ContentDedup::open(&js, &config).await.map(drop);
            }
            match ensured {
                Ok(()) => break,
                Err(e) if attempt == STREAM_CHECKS => {
                    tracing::warn!(error = %e, "cannot check the streams after a reconnection");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

async fn open_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Result<stream::Stream<()>> {
    js.get_stream_no_info(name)
        .await
        .map_err(|e| error::unavailable(format!("cannot open the stream {name}"), e))
}

async fn create_or_update(
    js: &async_nats::jetstream::Context,
    config: stream::Config,
) -> Result<()> {
    let name = config.name.clone();
    js.create_or_update_stream(config).await.map_err(|e| {
        use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
        match e.kind() {
            Kind::JetStream(_) => error::refused(format!("JetStream refused the stream {name}"), e),
            _ => error::unavailable(format!("cannot create the stream {name}"), e),
        }
    })?;
    Ok(())
}

#[async_trait]
impl Engine for NatsEngine {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn capabilities(&self) -> Capabilities {
        let file = self.shared.config.storage == Storage::File;
        Capabilities {
            persistent: file,
            publish_waits_for_stalled_groups: false,
            replay: true,
            // An ordered consumer starts again at the oldest retained message
            // without saying how many were removed under it.
            tail_lag_reported: false,
            durable_groups: file,
            key_order_across_members: false,
        }
    }

    async fn append(&self, records: Vec<Record>, _wait: bool) -> Result<Vec<Appended>> {
        // JetStream has no room to wait for: the stream discards its oldest
        // events at its limits, so `try_publish` never sees `full` here.
        self.check_open()?;
        publish::append(&self.shared, self.content.as_ref(), &records).await
    }

    async fn subscribe(&self, options: &SubscribeOptions) -> Result<Box<dyn EngineStream>> {
        self.check_open()?;
        match &options.mode {
            Mode::Group(group) => consumer::open(self.shared.clone(), options, group).await,
            Mode::Tail => tail::open(self.shared.clone(), options).await,
        }
    }

    async fn put_dead_letter(&self, dead_letter: DeadLetter) -> Result<()> {
        self.check_open()?;
        dead_letter::put(&self.shared, &dead_letter).await
    }

    async fn dead_letters(&self, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        dead_letter::list(&self.shared, tenant, limit).await
    }

    async fn dead_letter(&self, tenant: &TenantId, id: &str) -> Result<Option<DeadLetter>> {
        self.check_open()?;
        dead_letter::get(&self.shared, tenant, id).await
    }

    async fn delete_dead_letter(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        self.check_open()?;
        dead_letter::delete(&self.shared, tenant, id).await
    }

    async fn group_lag(&self, tenant: &TenantId, group: &str) -> Result<GroupLag> {
        super::lag::group_lag(&self.shared, tenant, group).await
    }

    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        self.shared
            .events
            .get_info()
            .await
            .map_err(|e| error::unavailable("JetStream does not answer", e))?;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.closed.send_replace(true);
        let groups: Vec<_> = self
            .shared
            .groups
            .lock()
            .await
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for group in groups {
            group.release(true).await;
        }
        // Acks are written to the connection without waiting for the server.
        // Flushing puts them on the socket; a request after them on the same
        // connection returns once the server has read everything before it,
        // so every ack made before the close has reached the server on return.
        self.shared
            .client
            .flush()
            .await
            .map_err(|e| error::unavailable("cannot flush the acks to NATS", e))?;
        self.shared
            .events
            .get_info()
            .await
            .map_err(|e| error::unavailable("NATS did not confirm the acks before the close", e))?;
        Ok(())
    }
}
