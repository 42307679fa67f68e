//! What every handler shares.

use std::sync::Arc;

use secbus::{Bus, Gate};
use tokio::sync::watch;

use super::api_key::KeyRing;
use super::config::GatewayConfig;
use super::metrics::MetricsRegistry;
use super::rate_limit::RateLimiter;

/// The state behind the router. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The bus, with the contracts gate on it.
    pub(crate) bus: Bus,
    /// The contracts gate (also on `bus`), to check each item of a batch.
    pub(crate) gate: Arc<dyn Gate>,
    /// The same bus without the gate, only for a batch whose every item has
    /// just been through `gate`: the gate parses `data`, scans it for
    /// credentials and validates it, and once per event is enough.
    pub(crate) gated_already: Bus,
    /// The validated configuration.
    pub(crate) config: Arc<GatewayConfig>,
    /// The configured API keys.
    pub(crate) keys: Arc<KeyRing>,
    /// Per-tenant publish rate.
    pub(crate) limiter: Arc<RateLimiter>,
    /// Metrics, served on `/metrics`.
    pub(crate) metrics: Arc<MetricsRegistry>,
    /// Turns true when the server stops: open streams end so the server can.
    pub(crate) stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state for `bus` (the gate is put on it here) and a validated `config`, and the
    /// sender that stops open streams.
    pub(crate) fn new(
        bus: Bus,
        gate: Arc<dyn Gate>,
        config: GatewayConfig,
    ) -> Result<(AppState, watch::Sender<bool>), String> {
        let keys = KeyRing::new(&config.keys)?;
        let (stop, stopping) = watch::channel(false);
        Ok((
            AppState {
                bus: bus.with_gate(gate.clone()),
                gated_already: bus,
                gate,
                limiter: Arc::new(RateLimiter::new(&config.rate_limit)),
                config: Arc::new(config),
                keys: Arc::new(keys),
                metrics: Arc::new(MetricsRegistry::new()),
                stopping,
            },
            stop,
        ))
    }
}
