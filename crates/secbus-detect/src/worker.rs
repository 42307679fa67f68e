//! The detection worker: a consumer group per tenant whose events go through
//! the rules; each finding is published back on the bus, caused by the event
//! that triggered it.
//!
//! Correlation state lives in memory and is rebuilt at start by replaying the
//! longest correlation window from the log: events of the window are fed
//! again in log order, and a finding they raise again has the id it had the
//! first time (see [`finding_id`](crate::finding::finding_id)), so the bus's
//! dedup window drops it. Events the group then delivers again (they were not
//! acked before the stop) are not counted twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use secbus::{
    Bus, Event, HistoryQuery, Publisher, StartAt, SubscribeOptions, Subscriber, TenantId,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::DetectionConfig;
use crate::detector::Detector;
use crate::error::{DetectError, Result};
use crate::finding::finding_event;
use crate::mapping::Mapping;
use crate::rules::RuleSet;

/// Counters of a running worker.
#[derive(Debug, Default)]
pub struct DetectionStats {
    /// Events evaluated (replayed ones included).
    pub events: AtomicU64,
    /// Findings published (before the bus's dedup).
    pub findings: AtomicU64,
    /// Findings the bus refused or could not store.
    pub publish_failures: AtomicU64,
    /// Events replayed at start.
    pub replayed: AtomicU64,
}

/// A running detection worker.
pub struct DetectionWorker {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<()>>,
    stats: Arc<DetectionStats>,
    detector: Arc<Mutex<Detector>>,
}

impl std::fmt::Debug for DetectionWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectionWorker")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DetectionWorker {
    /// Loads the rules and the mapping of `config` and starts a group per
    /// tenant on `bus`. Fails when no rule loads.
    pub async fn spawn(bus: &Bus, config: &DetectionConfig) -> Result<DetectionWorker> {
        let rules = RuleSet::load(&config.rules)?;
        if rules.loaded == 0 {
            return Err(DetectError::Rules(format!(
                "no rule loads from {:?} ({} failed)",
                config.rules,
                rules.failures.len()
            )));
        }
        for f in &rules.failures {
            tracing::warn!(path = %f.path.display(), reason = %f.reason, "a Sigma rule does not load");
        }
        let mapping = match &config.mapping {
            Some(path) => Mapping::load(path)?,
            None => Mapping::shipped(),
        };
        let detector = Detector::new(&rules, mapping, config.limits())?;
        DetectionWorker::start(bus, config, detector).await
    }

    /// Starts the worker with a detector already built.
    pub async fn start(
        bus: &Bus,
        config: &DetectionConfig,
        detector: Detector,
    ) -> Result<DetectionWorker> {
        if config.tenants.is_empty() {
            return Err(DetectError::Config(
                "detection.tenants: name at least one tenant".into(),
            ));
        }
        let detector = Arc::new(Mutex::new(detector));
        let stats = Arc::new(DetectionStats::default());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for tenant in &config.tenants {
            let tenant = TenantId::new(tenant.as_str())?;
            // Subscribe before the replay, so nothing stored in between is missed.
            let deliveries = bus
                .subscribe(
                    SubscribeOptions::group(tenant.clone(), config.group.clone())
                        .start(StartAt::New),
                )
                .await?;
            let replayed = if config.replay_on_start {
                replay(bus, &tenant, &detector, &stats).await?
            } else {
                HashSet::new()
            };
            let (bus, detector, stats, mut stopped) = (
                bus.clone(),
                detector.clone(),
                stats.clone(),
                stopped.clone(),
            );
            tasks.spawn(async move {
                let mut deliveries = deliveries;
                let mut replayed = replayed;
                loop {
                    let next = tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return Ok(()),
                        next = deliveries.next() => next,
                    };
                    let delivery = match next {
                        None => return Ok(()),
                        Some(Ok(d)) => d,
                        Some(Err(e)) => return Err(e.into()),
                    };
                    if !replayed.remove(delivery.event().id.as_str()) {
                        evaluate(&bus, &detector, &stats, delivery.event()).await;
                    }
                    delivery.ack().await?;
                }
            });
        }
        Ok(DetectionWorker {
            stop,
            tasks,
            stats,
            detector,
        })
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<DetectionStats> {
        self.stats.clone()
    }

    /// Correlation windows held now, and times the state cap was reached.
    pub fn state(&self) -> (usize, u64) {
        let d = self.detector.lock();
        (d.state_entries(), d.state_cap_hits())
    }

    /// Stops every group after the event in hand and waits for them.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            let done =
                done.map_err(|e| DetectError::Config(format!("a detection task failed: {e}")))?;
            if first.is_ok() {
                first = done;
            }
        }
        first
    }
}

/// Feeds the tenant's events of the longest window again; the ids fed.
async fn replay(
    bus: &Bus,
    tenant: &TenantId,
    detector: &Mutex<Detector>,
    stats: &DetectionStats,
) -> Result<HashSet<String>> {
    let window = detector.lock().max_timespan_secs();
    let mut fed = HashSet::new();
    if window == 0 {
        return Ok(fed);
    }
    let mut q = HistoryQuery::new(tenant.clone());
    q.since = Some(chrono::Utc::now() - chrono::Duration::seconds(window as i64));
    q.limit = 1000;
    loop {
        let page = bus.history(&q).await?;
        for (_, event) in &page.events {
            if event.ty.as_str() == crate::finding::FINDING_TYPE {
                continue;
            }
            evaluate(bus, detector, stats, event).await;
            fed.insert(event.id.as_str().to_owned());
            stats.replayed.fetch_add(1, Ordering::Relaxed);
        }
        match page.next {
            Some(next) => q.from_sequence = Some(next),
            None => return Ok(fed),
        }
    }
}

/// Runs `event` through the rules and publishes each finding.
async fn evaluate(bus: &Bus, detector: &Mutex<Detector>, stats: &DetectionStats, event: &Event) {
    // A finding is itself an event on the bus: rules do not see findings,
    // so a rule can never trigger on its own output.
    if event.ty.as_str() == crate::finding::FINDING_TYPE {
        return;
    }
    let findings = detector.lock().process(event);
    stats.events.fetch_add(1, Ordering::Relaxed);
    for finding in findings {
        let published = match finding_event(&finding, event) {
            Ok(f) => bus.publish(f).await.map(drop),
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => {
                stats.findings.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    rule = %finding.rule_id,
                    event_id = %event.id,
                    tenant_id = %event.tenant,
                    code = e.code(),
                    error = %e,
                    "a finding could not be published"
                );
            }
        }
    }
}
