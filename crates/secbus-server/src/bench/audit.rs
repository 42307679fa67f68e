//! `audit` (memory, embedded): the audit handler's cost per event with fsync
//! per batch. N events stored before timing are read by a consumer group
//! through the audit handler (a worker of 64 calls at once, so one fsync
//! covers the records written meanwhile), against the same group read with a
//! handler that does nothing, on the same bus: the difference is the trail's
//! cost (encoding, SHA-256, the write, the fsyncs). Also reported: the trail
//! written directly (no bus, an fsync every 64 records) and `verify_path` on
//! what was written.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::handler::{Handler, Worker, handler_fn};
use secbus::{Bus, BusConfig, Event, Publisher, StartAt, SubscribeOptions, TenantId};
use secbus_handlers::audit::{AuditHandler, AuditTrail, FsyncPolicy, verify_path};

use super::payload;
use super::scenario::{Context, Report, round3, round6};
use super::watchdog::STALL;

pub(crate) const NAME: &str = "audit";

/// Handler calls at once: the records one fsync can cover.
const CONCURRENCY: usize = 64;
/// Trail files rotate past this, as the default config does.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Events per run at most: the trail goes to a real disk.
const MAX_EVENTS: usize = 200_000;

pub(crate) fn applies(engine: &str) -> bool {
    matches!(engine, "memory" | "embedded")
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    anyhow::ensure!(
        applies(&ctx.engine),
        "audit runs on memory and embedded, not {}",
        ctx.engine
    );
    let n = ctx.events.min(MAX_EVENTS);
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let dir = ctx.scratch.join(format!("audit-{unique}"));
    let measured = measure_in(ctx, n, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

async fn measure_in(ctx: &Context, n: usize, dir: &Path) -> anyhow::Result<Report> {
    let tenant = TenantId::new("bench-audit")?;
    let mut events = payload::login_failures(n, Utc::now());
    for e in &mut events {
        e.tenant = tenant.clone();
    }
    let event_bytes = events.first().map_or(0, |e| e.to_json().len());

    let url = match ctx.engine.as_str() {
        "embedded" => format!("embedded:{}", dir.join("bus").display()),
        _ => ctx.url.clone(),
    };
    let config = BusConfig {
        // Every event stays in the memory engine's history until both groups read it.
        memory_history: n.max(65_536),
        spool_dir: dir.join("spool"),
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&url, config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {url}: {e}"))?;
    let timed = async {
        for chunk in super::publish::in_batches(events.clone(), 1_000) {
            bus.publish_batch(chunk).await?;
        }
        let noop = through_worker(
            &bus,
            &tenant,
            "noop",
            n,
            handler_fn(|_, _| async { Ok(()) }),
        )
        .await?;
        let trail_root = dir.join("trail");
        let audit = AuditHandler::new(&trail_root, MAX_FILE_BYTES, FsyncPolicy::Batch);
        let ours = through_worker(&bus, &tenant, "audit", n, audit).await?;
        let trail = dir.join("direct");
        let direct = write_directly(&trail, &events)?;
        let started = Instant::now();
        let checks = verify_path(trail_root.join(tenant.as_str()))?;
        let verify = started.elapsed();
        anyhow::ensure!(
            checks.iter().all(|c| c.is_intact())
                && checks.iter().map(|c| c.records).sum::<u64>() == n as u64,
            "the bench trail does not verify: {checks:?}"
        );
        anyhow::Ok((noop, ours, direct, verify))
    }
    .await;
    let closed = bus.close().await;
    let (noop, ours, direct, verify) = timed?;
    closed?;

    let per_s = |d: Duration| n as f64 / d.as_secs_f64();
    let (ours_per_s, raw_per_s) = (per_s(ours), per_s(noop));
    let cost_us = (ours.as_secs_f64() - noop.as_secs_f64()) * 1e6 / n as f64;
    Ok(
        Report::new(NAME, &ctx.engine, n as u64, ours_per_s, Some(raw_per_s))
            .field("event_bytes", event_bytes)
            .field("fsync", "batch")
            .field("concurrency", CONCURRENCY)
            .field(
                "ours_method",
                "a Worker with AuditHandler (fsync per batch) reads N stored events",
            )
            .field(
                "raw_baseline",
                "the same Worker reading the same events with a handler that does nothing",
            )
            .field("cost_us_per_event", round3(cost_us))
            .field("wall_s", round6(ours.as_secs_f64()))
            .field("raw_wall_s", round6(noop.as_secs_f64()))
            .field("direct_trail_per_s", per_s(direct).round())
            .field("verify_per_s", per_s(verify).round()),
    )
}

/// Times a worker of `handler` on a new group from the first stored event to
/// the last handled.
async fn through_worker<H: Handler>(
    bus: &Bus,
    tenant: &TenantId,
    group: &str,
    n: usize,
    handler: H,
) -> anyhow::Result<Duration> {
    let options = SubscribeOptions::group(tenant.clone(), group)
        .start(StartAt::Beginning)
        .max_in_flight(CONCURRENCY * 4);
    let start = Instant::now();
    let worker = Worker::new(bus.clone(), options)
        .concurrency(CONCURRENCY)
        .start(handler)
        .await?;
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let stats = worker.stats();
        anyhow::ensure!(stats.failed == 0, "the {group} handler failed: {stats:?}");
        if stats.handled >= n as u64 {
            break;
        }
        if stats.handled != last {
            (last, since) = (stats.handled, Instant::now());
        } else if since.elapsed() > STALL {
            anyhow::bail!("the {group} worker made no progress for {STALL:?} (at {last} of {n})");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    worker.shutdown().await?;
    Ok(took)
}

/// The trail alone: the same records appended on one thread, an fsync every
/// `CONCURRENCY` records.
fn write_directly(dir: &Path, events: &[Event]) -> anyhow::Result<Duration> {
    let encoded: Vec<Vec<u8>> = events.iter().map(Event::to_json).collect();
    let mut trail = AuditTrail::open(dir, MAX_FILE_BYTES)?;
    let start = Instant::now();
    for (i, bytes) in encoded.iter().enumerate() {
        trail.append(bytes)?;
        if (i + 1) % CONCURRENCY == 0 {
            trail.sync()?;
        }
    }
    trail.sync()?;
    Ok(start.elapsed())
}
