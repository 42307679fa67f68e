//! Reading the gauges that live in the engine: group lag and dead letters.

use std::sync::atomic::{AtomicBool, Ordering};

use secbus::{Bus, ErrorKind, TenantId};

use super::HandlerMetrics;

/// Dead letters counted per tenant at most, per refresh.
const DEAD_LETTER_SCAN: usize = 100_000;

/// Set once the engine said it cannot report lag, so the log says it once.
static LAG_UNSUPPORTED_LOGGED: AtomicBool = AtomicBool::new(false);

pub(super) async fn refresh(
    metrics: &HandlerMetrics,
    bus: &Bus,
    tenants: &[TenantId],
    groups: &[String],
) {
    for tenant in tenants {
        for group in groups {
            let labels = HandlerMetrics::group_labels(tenant, group);
            match bus.group_lag(tenant, group).await {
                Ok(lag) => {
                    metrics.lag.get_or_create(&labels).set(clamp(lag.total()));
                    metrics
                        .unacked
                        .get_or_create(&labels)
                        .set(clamp(lag.unacked));
                }
                // A group nobody has opened yet has no lag to show.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    metrics.lag.remove(&labels);
                    metrics.unacked.remove(&labels);
                }
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    if !LAG_UNSUPPORTED_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::info!(engine = bus.engine_name(), error = %e, "no group lag metrics");
                    }
                }
                Err(e) => tracing::warn!(
                    tenant_id = %tenant,
                    group = %group,
                    code = e.code(),
                    error = %e,
                    "cannot read a consumer group's lag"
                ),
            }
        }
        match bus.dead_letters(tenant, DEAD_LETTER_SCAN).await {
            Ok(dl) => {
                metrics
                    .dead_letters
                    .get_or_create(&vec![("tenant".to_owned(), tenant.as_str().to_owned())])
                    .set(clamp(dl.len() as u64));
            }
            Err(e) => tracing::warn!(
                tenant_id = %tenant,
                code = e.code(),
                error = %e,
                "cannot count the dead letters"
            ),
        }
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
