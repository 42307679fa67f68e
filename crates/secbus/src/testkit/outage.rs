//! An engine wrapper that can be switched off, to test what happens while an
//! engine is unreachable.
//!
//! [`OutageEngine`] is fault injection over a real engine, not a stand-in for
//! one: while up it passes every call through; while down, `append`, `subscribe`
//! and `ping` fail with [`ErrorKind::EngineUnavailable`], as they do when a
//! broker's connection is lost, and everything stored before stays stored.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> secbus::Result<()> {
//! use std::sync::Arc;
//! use secbus::testkit::outage::OutageEngine;
//! use secbus::{Bus, BusConfig};
//!
//! let config = BusConfig::default();
//! let engine = Arc::new(OutageEngine::open("memory:", &config).await?);
//! let bus = Bus::from_engine(engine.clone(), "memory:", config);
//! engine.set_down(true);
//! assert_eq!(bus.ping().await.unwrap_err().code(), "engine_unavailable");
//! engine.set_down(false);
//! bus.ping().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use crate::bus::BusConfig;
use crate::delivery::DeadLetter;
use crate::engine::{Appended, Capabilities, Engine, EngineStream, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::subscription::SubscribeOptions;

/// A real engine behind a switch that makes it unreachable.
///
/// Only new calls are affected: subscriptions opened while up keep their stream,
/// and acks pass through, as if those connections outlived the outage. Once the
/// engine is closed, calls reach it and fail as closed, down or not.
pub struct OutageEngine {
    inner: Arc<dyn Engine>,
    down: AtomicBool,
    closed: AtomicBool,
    refused: AtomicU64,
}

impl std::fmt::Debug for OutageEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutageEngine")
            .field("inner", &self.inner.name())
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

impl OutageEngine {
    /// Wraps `inner`; the switch starts up.
    pub fn new(inner: Arc<dyn Engine>) -> Self {
        OutageEngine {
            inner,
            down: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }

    /// Opens the engine `url` names (as [`crate::Bus::connect_with`] would) and wraps it.
    pub async fn open(url: &str, config: &BusConfig) -> Result<Self> {
        Ok(OutageEngine::new(crate::backend::open(url, config).await?))
    }

    /// Takes the engine down (`true`) or brings it back (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Release);
    }

    /// Whether the engine is down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Calls refused because the engine was down, since it was wrapped.
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }

    fn check(&self, call: &str) -> Result<()> {
        if self.is_down() && !self.closed.load(Ordering::Acquire) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::new(
                ErrorKind::EngineUnavailable,
                format!(
                    "{} engine is unreachable ({call} during an outage)",
                    self.inner.name()
                ),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Engine for OutageEngine {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn append(&self, records: Vec<Record>, wait: bool) -> Result<Vec<Appended>> {
        self.check("append")?;
        self.inner.append(records, wait).await
    }

    async fn subscribe(&self, options: &SubscribeOptions) -> Result<Box<dyn EngineStream>> {
        self.check("subscribe")?;
        self.inner.subscribe(options).await
    }

    async fn put_dead_letter(&self, dead_letter: DeadLetter) -> Result<()> {
        self.inner.put_dead_letter(dead_letter).await
    }

    async fn dead_letters(&self, tenant: &TenantId, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(tenant, limit).await
    }

    async fn dead_letter(&self, tenant: &TenantId, id: &str) -> Result<Option<DeadLetter>> {
        self.inner.dead_letter(tenant, id).await
    }

    async fn delete_dead_letter(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        self.inner.delete_dead_letter(tenant, id).await
    }

    async fn ping(&self) -> Result<()> {
        self.check("ping")?;
        self.inner.ping().await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.inner.close().await
    }
}
