//! `GET /metrics`: Prometheus text, and the registry other parts of the
//! server register their metrics into.

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use secbus::ErrorKind;

use super::state::AppState;

/// Label pairs of a metric family.
type Labels = Vec<(String, String)>;

/// The server's metrics registry. Components (handlers, alerting, audit)
/// register their own metrics with [`MetricsRegistry::register`]; everything
/// is served together on `/metrics`.
#[derive(Debug)]
pub(crate) struct MetricsRegistry {
    registry: Mutex<Registry>,
    /// `secbus_gateway_events_accepted_total{tenant,type}`.
    pub(crate) accepted: Family<Labels, Counter>,
    /// `secbus_gateway_events_refused_total{code}`.
    pub(crate) refused: Family<Labels, Counter>,
    /// `secbus_gateway_publish_seconds`: from request to durable receipt.
    pub(crate) publish_latency: Histogram,
    /// `secbus_consumer_lag{tenant,group}`: events a group has not acked yet.
    pub(crate) consumer_lag: Family<Labels, Gauge>,
    /// `secbus_spool_depth`: events waiting in the fallback spool.
    pub(crate) spool_depth: Gauge,
    /// `secbus_dead_letters{tenant}`: dead letters stored, per tenant of a key.
    pub(crate) dead_letters: Family<Labels, Gauge>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        MetricsRegistry::new()
    }
}

impl MetricsRegistry {
    /// The registry with the gateway's metrics in it.
    pub(crate) fn new() -> MetricsRegistry {
        let metrics = MetricsRegistry {
            registry: Mutex::new(Registry::with_prefix("secbus")),
            accepted: Family::default(),
            refused: Family::default(),
            // 100 us to ~6.5 s.
            publish_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            consumer_lag: Family::default(),
            spool_depth: Gauge::default(),
            dead_letters: Family::default(),
        };
        metrics.register(
            "gateway_events_accepted",
            "Events the gateway stored durably",
            metrics.accepted.clone(),
        );
        metrics.register(
            "gateway_events_refused",
            "Events the gateway refused, by error code",
            metrics.refused.clone(),
        );
        metrics.register(
            "gateway_publish_seconds",
            "Time from a publish request to its durable receipt",
            metrics.publish_latency.clone(),
        );
        metrics.register(
            "consumer_lag",
            "Events a consumer group has not acknowledged yet",
            metrics.consumer_lag.clone(),
        );
        metrics.register(
            "spool_depth",
            "Events waiting in the fallback spool",
            metrics.spool_depth.clone(),
        );
        metrics.register(
            "dead_letters",
            "Dead letters stored, per tenant with a configured key",
            metrics.dead_letters.clone(),
        );
        metrics
    }

    /// Adds a metric (its name gets the `secbus_` prefix).
    pub(crate) fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric);
    }

    /// Lets `f` register metrics of other parts of the server.
    pub(crate) fn with_registry(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Counts an accepted event.
    pub(crate) fn accept(&self, tenant: &str, ty: &str, latency: Duration) {
        self.accept_many(tenant, ty, 1, latency);
    }

    /// Counts `n` accepted events of one type that took `latency` each (a
    /// batch): one lookup of the counter rather than one per event.
    pub(crate) fn accept_many(&self, tenant: &str, ty: &str, n: u64, latency: Duration) {
        self.accepted
            .get_or_create(&vec![
                ("tenant".to_owned(), tenant.to_owned()),
                ("type".to_owned(), ty.to_owned()),
            ])
            .inc_by(n);
        for _ in 0..n {
            self.publish_latency.observe(latency.as_secs_f64());
        }
    }

    /// Counts `n` refused events.
    pub(crate) fn refuse(&self, code: &str, n: u64) {
        self.refused
            .get_or_create(&vec![("code".to_owned(), code.to_owned())])
            .inc_by(n);
    }

    /// The text exposition of every registered metric.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Dead letters counted per tenant at most, per scrape.
const DEAD_LETTER_SCAN: usize = 100_000;

/// `GET /metrics`.
pub(crate) async fn get(State(state): State<AppState>) -> impl IntoResponse {
    refresh(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Reads the gauges that live in the engine, at scrape time.
async fn refresh(state: &AppState) {
    for tenant in state.keys.tenants() {
        if let Ok(dl) = state.bus.dead_letters(&tenant, DEAD_LETTER_SCAN).await {
            state
                .metrics
                .dead_letters
                .get_or_create(&vec![("tenant".to_owned(), tenant.as_str().to_owned())])
                .set(dl.len() as i64);
        }
    }
    // The gateway never spools (a 2xx means stored in the engine), but a spool
    // an earlier producer left in the same folder still drains through this bus.
    if state.bus.config().spool_dir.exists()
        && let Ok(spool) = state.bus.spool().await
    {
        state.metrics.spool_depth.set(spool.depth() as i64);
    }
    refresh_consumer_lag(state).await;
}

/// Consumer lag per configured group, for every tenant with a key. A group the
/// engine does not know yet (nothing subscribed) has no series; an engine that
/// cannot tell reports none.
async fn refresh_consumer_lag(state: &AppState) {
    for tenant in state.keys.tenants() {
        for group in &state.config.metrics.consumer_groups {
            match state.bus.group_lag(&tenant, group).await {
                Ok(lag) => {
                    state
                        .metrics
                        .consumer_lag
                        .get_or_create(&vec![
                            ("tenant".to_owned(), tenant.as_str().to_owned()),
                            ("group".to_owned(), group.clone()),
                        ])
                        .set(i64::try_from(lag.total()).unwrap_or(i64::MAX));
                }
                Err(e) if e.kind() == ErrorKind::Unsupported => return,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::debug!(tenant_id = %tenant, group, code = e.code(), "group lag unavailable");
                }
            }
        }
    }
}
