//! The consumer group member the scenarios run beside their publisher: it
//! acknowledges every delivery and counts them.

use std::sync::atomic::Ordering;
use std::time::Instant;

use secbus::Subscription;
use tokio::task::JoinHandle;

use super::watchdog::Progress;

/// Spawns a member that acks every delivery of `subscription`, adding each to
/// `acked`, until it has acked `limit` (when given) or the bus closes. The task
/// returns when it stopped: with a limit, the time of the last ack.
pub(crate) fn spawn_acking(
    mut subscription: Subscription,
    acked: Progress,
    limit: Option<u64>,
) -> JoinHandle<anyhow::Result<Instant>> {
    tokio::spawn(async move {
        let mut count = 0u64;
        while limit.is_none_or(|l| count < l) {
            let Some(delivery) = subscription.next().await else {
                anyhow::ensure!(
                    limit.is_none(),
                    "the subscription ended after {count} deliveries"
                );
                break;
            };
            delivery?.ack().await?;
            count += 1;
            acked.store(count, Ordering::Relaxed);
        }
        Ok(Instant::now())
    })
}
