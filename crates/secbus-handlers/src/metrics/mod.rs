//! Metrics of the bus as handlers see it, in a prometheus-client `Registry`:
//!
//! | metric (with the registry's prefix, `secbus_` on the server) | labels | what |
//! |---|---|---|
//! | `handler_events_total` | `tenant`, `type` | events the metrics group saw |
//! | `handler_seconds` | `handler`, `outcome` (`ok`, `retry`, `permanent`) | time per handler call, of handlers wrapped in [`MeasuredLayer`] |
//! | `group_lag` | `tenant`, `group` | events of the group not acked yet, as the engine reports it ([`secbus::GroupLag::total`]) |
//! | `group_unacked` | `tenant`, `group` | of those, handed out and not acked yet |
//! | `dead_letter_depth` | `tenant` | dead letters stored (counted up to 100,000) |
//!
//! [`spawn`] runs a counting [`MetricsHandler`] on its own group per tenant
//! and refreshes the lag and dead-letter gauges every `refresh_ms`. An engine
//! that cannot report lag leaves its gauges out and says so once in the log.

mod layer;
mod probe;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use secbus::handler::{Handler, HandlerContext, HandlerError, Layer, Worker};
use secbus::{Bus, Event, SubscribeOptions, TenantId};
use serde::{Deserialize, Serialize};

pub use layer::{Measured, MeasuredLayer};

use crate::error::{Error, Result};
use crate::workers::Workers;

/// Label pairs of a metric family.
type Labels = Vec<(String, String)>;

fn histogram() -> Histogram {
    // 10 us to ~5 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

/// The metric families; cheap to clone (clones share the values).
#[derive(Debug, Clone)]
pub struct HandlerMetrics {
    events: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
    lag: Family<Labels, Gauge>,
    unacked: Family<Labels, Gauge>,
    dead_letters: Family<Labels, Gauge>,
}

impl Default for HandlerMetrics {
    fn default() -> Self {
        HandlerMetrics::new()
    }
}

impl HandlerMetrics {
    /// Empty families, not registered anywhere yet.
    pub fn new() -> Self {
        HandlerMetrics {
            events: Family::default(),
            seconds: Family::new_with_constructor(histogram as fn() -> Histogram),
            lag: Family::default(),
            unacked: Family::default(),
            dead_letters: Family::default(),
        }
    }

    /// Adds the families to `registry` (their names get its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "handler_events",
            "Events the metrics consumer group saw, per tenant and type",
            self.events.clone(),
        );
        registry.register(
            "handler_seconds",
            "Time per handler call, per handler and outcome",
            self.seconds.clone(),
        );
        registry.register(
            "group_lag",
            "Events of a consumer group not acknowledged yet, as the engine reports it",
            self.lag.clone(),
        );
        registry.register(
            "group_unacked",
            "Events of a consumer group handed out and not acknowledged yet",
            self.unacked.clone(),
        );
        registry.register(
            "dead_letter_depth",
            "Dead letters stored per tenant",
            self.dead_letters.clone(),
        );
    }

    /// Counts one event of its tenant and type.
    pub fn count(&self, event: &Event) {
        self.events
            .get_or_create(&vec![
                ("tenant".to_owned(), event.tenant.as_str().to_owned()),
                ("type".to_owned(), event.ty.as_str().to_owned()),
            ])
            .inc();
    }

    /// Events counted for `tenant` and `ty` so far.
    pub fn events_seen(&self, tenant: &str, ty: &str) -> u64 {
        self.events
            .get(&vec![
                ("tenant".to_owned(), tenant.to_owned()),
                ("type".to_owned(), ty.to_owned()),
            ])
            .map_or(0, |c| c.get())
    }

    /// Records one handler call.
    pub fn observe(&self, handler: &str, outcome: &str, took: Duration) {
        self.seconds
            .get_or_create(&vec![
                ("handler".to_owned(), handler.to_owned()),
                ("outcome".to_owned(), outcome.to_owned()),
            ])
            .observe(took.as_secs_f64());
    }

    /// A layer timing the calls of a handler under `name`.
    pub fn layer(&self, name: &str) -> MeasuredLayer {
        MeasuredLayer::new(self.clone(), name)
    }

    fn group_labels(tenant: &TenantId, group: &str) -> Labels {
        vec![
            ("tenant".to_owned(), tenant.as_str().to_owned()),
            ("group".to_owned(), group.to_owned()),
        ]
    }

    /// The `group_lag` gauge of `group` of `tenant`, as last refreshed;
    /// `None` before the group's lag was read.
    pub fn group_lag(&self, tenant: &TenantId, group: &str) -> Option<i64> {
        self.lag
            .get(&Self::group_labels(tenant, group))
            .map(|g| g.get())
    }

    /// The `dead_letter_depth` gauge of `tenant`, as last refreshed.
    pub fn dead_letter_depth(&self, tenant: &TenantId) -> Option<i64> {
        self.dead_letters
            .get(&vec![("tenant".to_owned(), tenant.as_str().to_owned())])
            .map(|g| g.get())
    }

    /// Reads the lag of `groups` of each tenant and each tenant's dead
    /// letters from the engine into the gauges.
    pub async fn refresh(&self, bus: &Bus, tenants: &[TenantId], groups: &[String]) {
        probe::refresh(self, bus, tenants, groups).await;
    }
}

/// Counts every event of its group by tenant and type.
#[derive(Debug, Clone)]
pub struct MetricsHandler {
    metrics: HandlerMetrics,
}

impl MetricsHandler {
    /// A handler counting into `metrics`.
    pub fn new(metrics: HandlerMetrics) -> Self {
        MetricsHandler { metrics }
    }
}

#[async_trait]
impl Handler for MetricsHandler {
    async fn handle(&self, _ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        self.metrics.count(event);
        Ok(())
    }
}

/// The metrics handler's settings (`[metrics]` in the server's config).
///
/// ```toml
/// [metrics]
/// tenants = ["acme"]
/// groups = ["audit", "alerting", "detection"]
/// refresh_ms = 5000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The tenants counted: one consumer group each.
    pub tenants: Vec<String>,
    /// The consumer group that counts (default `metrics`).
    #[serde(default = "default_group")]
    pub group: String,
    /// The groups whose lag is reported (default `audit`, `alerting`, `metrics`).
    #[serde(default = "default_groups")]
    pub groups: Vec<String>,
    /// How often lag and dead-letter depth are read (default 5000 ms).
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
}

fn default_group() -> String {
    "metrics".to_owned()
}

fn default_groups() -> Vec<String> {
    ["audit", "alerting", "metrics"].map(str::to_owned).to_vec()
}

fn default_refresh_ms() -> u64 {
    5_000
}

impl MetricsConfig {
    /// Settings with the defaults for `tenants`.
    pub fn new(tenants: Vec<String>) -> Self {
        MetricsConfig {
            tenants,
            group: default_group(),
            groups: default_groups(),
            refresh_ms: default_refresh_ms(),
        }
    }

    fn tenant_ids(&self) -> Result<Vec<TenantId>> {
        if self.tenants.is_empty() {
            return Err(Error::config("metrics.tenants names no tenant"));
        }
        if self.refresh_ms == 0 {
            return Err(Error::config("metrics.refresh_ms must be at least 1"));
        }
        self.tenants
            .iter()
            .map(|t| {
                TenantId::new(t.clone())
                    .map_err(|e| Error::config(format!("metrics.tenants: {}", e.message())))
            })
            .collect()
    }
}

/// Starts counting on `bus` (a [`Worker`] per tenant) and refreshing the lag
/// and dead-letter gauges of `metrics` in the background.
pub async fn spawn(bus: &Bus, config: &MetricsConfig, metrics: &HandlerMetrics) -> Result<Workers> {
    let tenants = config.tenant_ids()?;
    let mut workers = Workers::default();
    for tenant in &tenants {
        let options = SubscribeOptions::group(tenant.clone(), config.group.clone());
        let handle = Worker::new(bus.clone(), options)
            .concurrency(16)
            .start(
                metrics
                    .layer("metrics")
                    .layer(MetricsHandler::new(metrics.clone())),
            )
            .await?;
        workers.push(handle);
    }
    let every = Duration::from_millis(config.refresh_ms);
    let groups = Arc::new(config.groups.clone());
    let (bus, metrics) = (bus.clone(), metrics.clone());
    workers.push_task(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            metrics.refresh(&bus, &tenants, &groups).await;
        }
    }));
    Ok(workers)
}
