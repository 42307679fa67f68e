//! The demo's consumer: a group that "enriches" each event and gives up, with
//! the story's reason, on the one it cannot handle, which makes a dead letter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secbus::{Bus, StartAt, SubscribeOptions, Subscriber, TenantId};
use tokio::sync::watch;

/// The group's name, as dead letters show it.
pub(super) const GROUP: &str = "enrichment";

/// A running enrichment group and how many events it has settled.
pub(super) struct Enrichment {
    settled: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Enrichment {
    /// Starts the group on `tenant`'s events; `give_up` maps event ids to the
    /// reason the consumer terminates them with.
    pub(super) async fn start(
        bus: &Bus,
        tenant: TenantId,
        give_up: Arc<std::sync::Mutex<HashMap<String, String>>>,
    ) -> secbus::Result<Enrichment> {
        let mut deliveries = bus
            .subscribe(SubscribeOptions::group(tenant, GROUP).start(StartAt::Beginning))
            .await?;
        let (tx, settled) = watch::channel(0usize);
        let task = tokio::spawn(async move {
            let mut n = 0;
            while let Some(Ok(delivery)) = deliveries.next().await {
                let reason = give_up
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(delivery.event().id.as_str())
                    .cloned();
                let done = match reason {
                    Some(reason) => delivery.term(&reason).await,
                    None => delivery.ack().await,
                };
                if let Err(e) = done {
                    tracing::warn!(error = %e, "demo enrichment could not settle an event");
                }
                n += 1;
                let _ = tx.send(n);
            }
        });
        Ok(Enrichment { settled, task })
    }

    /// Waits until `n` events are settled, at most `wait`; false on timeout.
    pub(super) async fn wait_settled(&mut self, n: usize, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.settled.wait_for(|s| *s >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Enrichment {
    fn drop(&mut self) {
        self.task.abort();
    }
}
