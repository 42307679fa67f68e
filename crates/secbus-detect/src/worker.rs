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

use futures::FutureExt;
use parking_lot::Mutex;
use rayon::prelude::*;
use secbus::{Bus, Delivery, Event, HistoryQuery, StartAt, SubscribeOptions, Subscriber, TenantId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::DetectionConfig;
use crate::detector::{DetectionRules, Detections, Detector, Finding};
use crate::error::{DetectError, Result};
use crate::finding::finding_event;
use crate::mapping::Mapping;
use crate::rules::RuleSet;

/// Counters of a running worker.
#[derive(Debug, Default)]
pub struct DetectionStats {
    /// Events evaluated, their findings published (replayed ones included).
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
        let evaluator = spawn_evaluator(detector.clone(), config.detection_threads())?;
        for tenant in &config.tenants {
            let tenant = TenantId::new(tenant.as_str())?;
            // Subscribe before the replay, so nothing stored in between is missed.
            let deliveries = bus
                .subscribe(
                    SubscribeOptions::group(tenant.clone(), config.group.clone())
                        .start(StartAt::New)
                        .max_in_flight(IN_FLIGHT),
                )
                .await?;
            let replayed = if config.replay_on_start {
                replay(bus, &tenant, &detector, &stats).await?
            } else {
                HashSet::new()
            };
            let (bus, stats, mut stopped) = (bus.clone(), stats.clone(), stopped.clone());
            let (settle, settling) = mpsc::channel(PIPELINE_DEPTH);
            let jobs = evaluator.clone();
            tasks.spawn(async move {
                let mut deliveries = deliveries;
                let mut replayed = replayed;
                loop {
                    let next = tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return Ok(()),
                        next = deliveries.next() => next,
                    };
                    let mut ended = false;
                    let mut batch = Vec::with_capacity(BATCH);
                    let mut next = Some(next);
                    // One hand-off to the evaluator per batch of what is
                    // already delivered: each hand-off across threads costs a
                    // wake-up, which per event costs as much as a small rule set.
                    while let Some(item) = next.take() {
                        match item {
                            None => {
                                ended = true;
                                break;
                            }
                            Some(Err(e)) => return Err(e.into()),
                            Some(Ok(delivery)) => {
                                let event = delivery.event();
                                // A finding is itself an event on the bus: rules
                                // do not see findings, so a rule can never
                                // trigger on its own output.
                                let skip = replayed.remove(event.id.as_str())
                                    || event.ty.as_str() == crate::finding::FINDING_TYPE;
                                // Skipped events take the same path, so that each
                                // tenant's events settle in the order they were
                                // delivered.
                                batch.push((delivery, !skip));
                            }
                        }
                        if batch.len() < BATCH {
                            next = deliveries.next().now_or_never();
                        }
                    }
                    if !batch.is_empty() {
                        let jobs_sent = jobs
                            .send(Jobs {
                                batch,
                                settle: settle.clone(),
                            })
                            .await;
                        if jobs_sent.is_err() {
                            return Err(DetectError::Config(
                                "the detection evaluator stopped".into(),
                            ));
                        }
                    }
                    if ended {
                        return Ok(());
                    }
                }
            });
            tasks.spawn(settle_in_order(bus, stats, settling));
        }
        drop(evaluator);
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

    /// Stops taking deliveries, settles those already taken (evaluated, their
    /// findings published, acked) and waits for every tenant's tasks.
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

/// Events handed to the evaluator at once, at most. Every batch costs
/// hand-offs between threads and, with several detection threads, waiting
/// for the slowest of them. In three detect.sigma bench runs each, 512 gave
/// 0.94 to 0.96 of raw rsigma's rate and 128 gave 0.90 to 1.00.
const BATCH: usize = 512;

/// Batches in each stage of the pipeline at most: enough to keep the
/// evaluator busy while the settling side publishes and acks.
const PIPELINE_DEPTH: usize = 4;

/// Deliveries a tenant's intake holds unacked: enough for every stage to hold
/// batches at once (waiting, being evaluated, settling), so that the
/// evaluator never waits for acks to let the next deliveries in.
const IN_FLIGHT: usize = (2 * PIPELINE_DEPTH + 1) * BATCH;

/// Deliveries on their way to the evaluator, each with whether it is for the
/// rules.
struct Jobs {
    batch: Vec<(Delivery, bool)>,
    settle: mpsc::Sender<Vec<Evaluated>>,
}

/// An event the evaluator is done with (`findings` `None`: not for the rules).
struct Evaluated {
    delivery: Delivery,
    findings: Option<Vec<Finding>>,
}

/// What the detection rules made of one delivery.
enum Detected {
    /// Not for the rules.
    Skipped,
    /// No detection rule matched: there is nothing to correlate.
    Clean,
    /// Matches, with the event in Sigma shape and its time, for correlation.
    Matched(serde_json::Value, i64, Detections),
}

impl Detected {
    /// Maps `event` and runs the detection rules on it. The Sigma-shaped event
    /// is made, read and (when nothing matched) dropped on one thread, while
    /// it is in that core's cache.
    fn of(event: &Event, mapping: &Mapping, rules: &DetectionRules) -> Detected {
        let sigma = mapping.to_sigma(event);
        let detections = rules.detect(&sigma);
        if detections.is_empty() {
            return Detected::Clean;
        }
        let at = event.time.unwrap_or_else(chrono::Utc::now).timestamp();
        Detected::Matched(sigma, at, detections)
    }
}

/// The two threads that run the rules, one after the other on each batch:
/// the first maps each event and runs the detection rules on it, the second
/// feeds their matches to the correlation rules in delivery order.
/// Evaluation is CPU work of tens of microseconds an event over a large
/// corpus: on threads of their own the rules neither stall the runtime's
/// other tasks nor wait for them, and the delivery, finding publishes and
/// acks of other events proceed beside them on the runtime. Apart, the
/// detection of a batch runs while the one before it is correlated. With
/// more than one detection thread, a batch's events are mapped and detected
/// on a pool of that many. Both end when every intake has stopped.
fn spawn_evaluator(detector: Arc<Mutex<Detector>>, threads: usize) -> Result<mpsc::Sender<Jobs>> {
    let pool = (threads > 1)
        .then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("secbus-detect-{i}"))
                .build()
        })
        .transpose()
        .map_err(|e| DetectError::Config(format!("cannot start the detection threads: {e}")))?;
    let (rules, mapping) = {
        let detector = detector.lock();
        (detector.rules(), detector.mapping())
    };
    let (jobs, mut incoming) = mpsc::channel::<Jobs>(PIPELINE_DEPTH);
    // One batch detected ahead of the one being correlated is all the overlap
    // there is to have; more would only hold deliveries longer.
    let (detected, mut correlating) = mpsc::channel::<(Jobs, Vec<Detected>)>(1);
    let thread_error =
        |e: std::io::Error| DetectError::Config(format!("cannot start a detection thread: {e}"));
    std::thread::Builder::new()
        .name("secbus-detect".into())
        .spawn(move || {
            while let Some(jobs) = incoming.blocking_recv() {
                let detect = |(delivery, for_rules): &(Delivery, bool)| match for_rules {
                    true => Detected::of(delivery.event(), &mapping, &rules),
                    false => Detected::Skipped,
                };
                let detections = match &pool {
                    Some(pool) => pool.install(|| jobs.batch.par_iter().map(detect).collect()),
                    None => jobs.batch.iter().map(detect).collect(),
                };
                if detected.blocking_send((jobs, detections)).is_err() {
                    return;
                }
            }
        })
        .map_err(thread_error)?;
    std::thread::Builder::new()
        .name("secbus-correlate".into())
        .spawn(move || {
            while let Some((Jobs { batch, settle }, detections)) = correlating.blocking_recv() {
                let done = {
                    let mut detector = detector.lock();
                    batch
                        .into_iter()
                        .zip(detections)
                        .map(|((delivery, _), detected)| Evaluated {
                            findings: match detected {
                                Detected::Skipped => None,
                                Detected::Clean => Some(Vec::new()),
                                Detected::Matched(sigma, at, detections) => {
                                    Some(detector.correlate(&sigma, detections, at))
                                }
                            },
                            delivery,
                        })
                        .collect()
                };
                // A closed settle side means the worker is stopping: the
                // events stay unacked and are delivered again.
                let _ = settle.blocking_send(done);
            }
        })
        .map_err(thread_error)?;
    Ok(jobs)
}

/// Publishes each event's findings, then acks it, in delivery order.
async fn settle_in_order(
    bus: Bus,
    stats: Arc<DetectionStats>,
    mut settling: mpsc::Receiver<Vec<Evaluated>>,
) -> Result<()> {
    while let Some(batch) = settling.recv().await {
        for done in batch {
            if let Some(findings) = done.findings {
                publish_findings(&bus, &stats, findings, done.delivery.event()).await;
                stats.events.fetch_add(1, Ordering::Relaxed);
            }
            done.delivery.ack().await?;
        }
    }
    Ok(())
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
    if event.ty.as_str() == crate::finding::FINDING_TYPE {
        return;
    }
    let findings = detector.lock().process(event);
    publish_findings(bus, stats, findings, event).await;
    stats.events.fetch_add(1, Ordering::Relaxed);
}

/// Publishes the findings `trigger` raised, each caused by it.
async fn publish_findings(
    bus: &Bus,
    stats: &DetectionStats,
    findings: Vec<Finding>,
    trigger: &Event,
) {
    for finding in findings {
        let published = match finding_event(&finding, trigger) {
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
                    event_id = %trigger.id,
                    tenant_id = %trigger.tenant,
                    code = e.code(),
                    error = %e,
                    "a finding could not be published"
                );
            }
        }
    }
}
