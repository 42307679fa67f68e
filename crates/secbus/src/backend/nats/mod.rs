//! `nats://host:port`: NATS JetStream.

use std::sync::Arc;

use crate::bus::BusConfig;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};

/// Opens the `nats://` engine.
pub(crate) async fn connect(_url: &str, _config: &BusConfig) -> Result<Arc<dyn Engine>> {
    Err(Error::new(ErrorKind::InvalidUrl, "the nats engine is not written yet"))
}
