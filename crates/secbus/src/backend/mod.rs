//! The engines, one folder each, and the URL that picks one.

#[cfg(feature = "embedded")]
pub(crate) mod embedded;
#[cfg(feature = "memory")]
pub(crate) mod memory;
#[cfg(feature = "nats")]
pub(crate) mod nats;
#[cfg(feature = "redis")]
pub(crate) mod redis;

use std::sync::Arc;

use crate::bus::BusConfig;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};

/// Opens the engine a bus URL names.
pub(crate) async fn open(url: &str, config: &BusConfig) -> Result<Arc<dyn Engine>> {
    let (scheme, rest) = url.split_once(':').ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidUrl,
            format!("{url:?} is not a bus URL (memory:, embedded:<dir>, nats://..., redis://...)"),
        )
    })?;
    match scheme {
        #[cfg(feature = "memory")]
        "memory" => Ok(Arc::new(memory::MemoryEngine::new(config))),
        #[cfg(feature = "embedded")]
        "embedded" => {
            let dir = rest.strip_prefix("//").unwrap_or(rest);
            let dir = if dir.is_empty() { "secbus-data" } else { dir };
            Ok(Arc::new(embedded::EmbeddedEngine::open(dir, config).await?))
        }
        #[cfg(feature = "nats")]
        "nats" => nats::connect(url, config).await,
        #[cfg(feature = "redis")]
        "redis" => redis::connect(url, config).await,
        other => Err(Error::new(
            ErrorKind::InvalidUrl,
            format!(
                "engine {other:?} is unknown or not compiled in (features: memory, embedded, nats, redis)"
            ),
        )),
    }
}
