//! What an engine gives the conformance suite: fresh buses, a restart, and an
//! outage. [`MemoryHarness`] and [`EmbeddedHarness`] are the in-process ones.

use async_trait::async_trait;

use crate::bus::{Bus, BusConfig};
use crate::error::Result;

/// How the suite reaches one engine. One harness serves one case; a harness for
/// a server engine may start its own server and stop it when dropped.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A fresh bus with `config`, over a store no other bus of the suite uses
    /// (a new in-process engine, a new directory, a new stream or key prefix).
    /// The suite always sets `config.spool_dir` to a fresh directory.
    async fn open_with(&self, config: BusConfig) -> Result<Bus>;

    /// Closes `bus` (it may be closed already) and opens its store again, as a
    /// restarted process would. The suite calls it only on engines that declare
    /// themselves `persistent`. By default: close, then connect to the same URL
    /// with the same config.
    async fn reopen(&self, bus: Bus) -> Result<Bus> {
        let url = bus.url().to_owned();
        let config = bus.config().clone();
        bus.close().await?;
        drop(bus);
        Bus::connect_with(&url, config).await
    }

    /// Like [`Harness::open_with`], with a switch that makes the bus's engine
    /// unreachable and brings it back: a wrapper for in-process engines
    /// ([`crate::testkit::outage::OutageEngine`]), a killed and restarted server
    /// for the others.
    async fn open_with_outage(&self, config: BusConfig) -> Result<(Bus, Box<dyn Outage>)>;
}

/// Makes an engine unreachable and brings it back.
#[async_trait]
pub trait Outage: Send + Sync {
    /// From now on the engine does not answer (its calls fail as unreachable).
    async fn down(&self) -> Result<()>;
    /// The engine answers again, with everything it stored before going down.
    async fn up(&self) -> Result<()>;
}

#[cfg(any(feature = "memory", feature = "embedded"))]
mod in_process {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::Outage;
    use crate::bus::{Bus, BusConfig};
    use crate::error::Result;
    use crate::testkit::outage::OutageEngine;

    /// Opens an in-process engine behind a switch.
    pub(super) async fn open_with_outage(
        url: &str,
        config: BusConfig,
    ) -> Result<(Bus, Box<dyn Outage>)> {
        let switch = Arc::new(OutageEngine::open(url, &config).await?);
        let bus = Bus::from_engine(switch.clone(), url, config);
        Ok((bus, Box::new(Switch(switch))))
    }

    struct Switch(Arc<OutageEngine>);

    #[async_trait]
    impl Outage for Switch {
        async fn down(&self) -> Result<()> {
            self.0.set_down(true);
            Ok(())
        }

        async fn up(&self) -> Result<()> {
            self.0.set_down(false);
            Ok(())
        }
    }
}

/// The `memory:` engine: every bus is a new engine.
#[cfg(feature = "memory")]
#[derive(Debug, Default)]
pub struct MemoryHarness {}

#[cfg(feature = "memory")]
impl MemoryHarness {
    /// A harness for `memory:`.
    pub fn new() -> Self {
        MemoryHarness {}
    }
}

#[cfg(feature = "memory")]
#[async_trait]
impl Harness for MemoryHarness {
    async fn open_with(&self, config: BusConfig) -> Result<Bus> {
        Bus::connect_with("memory:", config).await
    }

    async fn open_with_outage(&self, config: BusConfig) -> Result<(Bus, Box<dyn Outage>)> {
        in_process::open_with_outage("memory:", config).await
    }
}

/// The `embedded:` engine: every bus gets a new temporary directory, removed
/// when the harness is dropped.
#[cfg(feature = "embedded")]
#[derive(Debug, Default)]
pub struct EmbeddedHarness {
    dirs: parking_lot::Mutex<Vec<tempfile::TempDir>>,
}

#[cfg(feature = "embedded")]
impl EmbeddedHarness {
    /// A harness for `embedded:<dir>`.
    pub fn new() -> Self {
        EmbeddedHarness::default()
    }

    fn fresh_url(&self) -> Result<String> {
        let dir = tempfile::Builder::new()
            .prefix("secbus-embedded-")
            .tempdir()?;
        let url = format!("embedded:{}", dir.path().display());
        self.dirs.lock().push(dir);
        Ok(url)
    }
}

#[cfg(feature = "embedded")]
#[async_trait]
impl Harness for EmbeddedHarness {
    async fn open_with(&self, config: BusConfig) -> Result<Bus> {
        Bus::connect_with(&self.fresh_url()?, config).await
    }

    async fn open_with_outage(&self, config: BusConfig) -> Result<(Bus, Box<dyn Outage>)> {
        in_process::open_with_outage(&self.fresh_url()?, config).await
    }
}
