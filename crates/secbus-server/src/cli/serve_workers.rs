//! The workers `secbus serve` runs next to the gateway when its config asks:
//! the audit trail, alerting, the metrics handler and Sigma detection, each a
//! consumer group on the server's bus (with the contracts gate, so what they
//! publish, alerts and findings, is checked like any event).

use secbus::Bus;
use secbus_detect::DetectionWorker;
use secbus_handlers::Workers;
use secbus_handlers::metrics::HandlerMetrics;

use crate::gateway::config::GatewayConfig;
use crate::gateway::metrics::MetricsRegistry;

/// The running workers.
#[derive(Default)]
pub(crate) struct ServeWorkers {
    handlers: Vec<(&'static str, Workers)>,
    detection: Option<DetectionWorker>,
}

impl ServeWorkers {
    /// Starts what `config` enables on `bus`; the metrics handler registers
    /// into `registry` (served on /metrics).
    pub(crate) async fn start(
        bus: &Bus,
        config: &GatewayConfig,
        registry: &MetricsRegistry,
    ) -> Result<ServeWorkers, String> {
        let mut running = ServeWorkers::default();
        let started = async {
            if let Some(audit) = &config.audit {
                let w = secbus_handlers::audit::spawn(bus, audit)
                    .await
                    .map_err(|e| format!("audit: {e}"))?;
                running.handlers.push(("audit", w));
            }
            if let Some(alerting) = &config.alerting {
                let w = secbus_handlers::alerting::spawn(bus, alerting)
                    .await
                    .map_err(|e| format!("alerting: {e}"))?;
                running.handlers.push(("alerting", w));
            }
            if let Some(metrics) = &config.metrics.handlers {
                let families = HandlerMetrics::new();
                registry.with_registry(|r| families.register(r));
                let w = secbus_handlers::metrics::spawn(bus, metrics, &families)
                    .await
                    .map_err(|e| format!("metrics.handlers: {e}"))?;
                running.handlers.push(("metrics", w));
            }
            if let Some(detection) = &config.detection {
                let w = DetectionWorker::spawn(bus, detection)
                    .await
                    .map_err(|e| format!("detection: {e}"))?;
                running.detection = Some(w);
            }
            Ok::<(), String>(())
        }
        .await;
        match started {
            Ok(()) => Ok(running),
            Err(e) => {
                running.stop().await;
                Err(e)
            }
        }
    }

    /// What runs, for the start line: `audit, detection`.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.handlers.iter().map(|(n, _)| *n).collect();
        if self.detection.is_some() {
            names.push("detection");
        }
        names
    }

    /// Stops every worker after the events in hand; says what failed.
    pub(crate) async fn stop(self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(d) = self.detection
            && let Err(e) = d.stop().await
        {
            failures.push(format!("detection: {e}"));
        }
        for (name, w) in self.handlers {
            if let Err(e) = w.shutdown().await {
                failures.push(format!("{name}: {e}"));
            }
        }
        failures
    }
}
