//! `publish` (nats, redis): N events published through `Bus::publish_batch`,
//! timed until the last batch returned (every event acknowledged by the
//! engine), against the engine used directly with the same window of events
//! in flight, once as is and once with the dedup work secbus does per event.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::{Event, Publisher};

use super::payload;
use super::raw::{self, RawRun};
use super::scenario::{Context, Report, Target, round3, round6};
use super::scratch_bus::ScratchBus;

pub(crate) const NAME: &str = "publish";

pub(crate) fn applies(engine: &str) -> bool {
    matches!(engine, "nats" | "redis")
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

/// Events per `publish_batch` call when `--batch` is not given: on nats ten
/// PubAck windows, so the window slides inside a call as it does for the raw
/// publisher and drains only once per call; on redis one pipeline (one script
/// run), the raw pipeline depth.
pub(crate) fn default_batch(engine: &str) -> usize {
    match engine {
        "nats" => 10 * raw::window(engine),
        _ => raw::window(engine),
    }
}

/// `events` in calls of at most `batch`, in order.
pub(crate) fn in_batches(mut events: Vec<Event>, batch: usize) -> Vec<Vec<Event>> {
    let batch = batch.max(1);
    let mut chunks = Vec::with_capacity(events.len().div_ceil(batch));
    while !events.is_empty() {
        let rest = events.split_off(batch.min(events.len()));
        chunks.push(std::mem::replace(&mut events, rest));
    }
    chunks
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    anyhow::ensure!(
        applies(&ctx.engine),
        "publish runs on nats and redis, not {}",
        ctx.engine
    );
    let n = ctx.events;
    let window = raw::window(&ctx.engine);
    let batch = ctx.batch.unwrap_or_else(|| default_batch(&ctx.engine));
    let events = payload::login_failures(n, Utc::now());
    let event_bytes = events.first().map_or(0, |e| e.to_json().len());

    let (raw, with_dedup) = raw_baselines(ctx, &events, window).await?;
    let ours = through_bus(ctx, events, batch).await?;

    let ours_per_s = n as f64 / ours.as_secs_f64();
    let report = Report::new(NAME, &ctx.engine, n as u64, ours_per_s, Some(raw.per_s()))
        .field("event_bytes", event_bytes)
        .field("window", window)
        .field("ours_batch", batch)
        .field("ours_publishers", 1)
        .field(
            "ours_method",
            format!("Publisher::publish_batch of {batch} events, one call at a time, one task"),
        )
        .field("wall_s", round6(ours.as_secs_f64()))
        .field("raw_wall_s", round6(raw.wall.as_secs_f64()))
        .field("raw_baseline", raw.baseline)
        .field("raw_with_dedup_per_s", with_dedup.per_s().round())
        .field("ratio_with_dedup", round3(ours_per_s / with_dedup.per_s()))
        .field("raw_with_dedup_baseline", with_dedup.baseline);
    Ok(report.targets([Target::at_least("ratio", 0.9)]))
}

/// The raw publish, then the raw publish with secbus's dedup work, each into a
/// log of its own.
async fn raw_baselines(
    ctx: &Context,
    events: &[Event],
    window: usize,
) -> anyhow::Result<(RawRun, RawRun)> {
    if ctx.engine == "nats" {
        let mut nats = raw::nats::RawNats::connect(&ctx.url).await?;
        let measured = async {
            nats.stream("PLAIN").await?;
            let plain = nats.encode("PLAIN", events);
            let raw = nats.publish(&plain, window, false).await?;
            drop(plain);
            nats.stream("DEDUP").await?;
            let dedup = nats.encode("DEDUP", events);
            let with_dedup = nats.publish(&dedup, window, true).await?;
            anyhow::Ok((raw, with_dedup))
        }
        .await;
        let closed = nats.close().await;
        let measured = measured?;
        closed?;
        Ok(measured)
    } else {
        let redis = raw::redis::RawRedis::connect(&ctx.url).await?;
        let measured = async {
            let encoded = redis.encode(events);
            let raw = redis
                .publish(&redis.log("plain"), &encoded, window, false)
                .await?;
            let with_dedup = redis
                .publish(&redis.log("dedup"), &encoded, window, true)
                .await?;
            anyhow::Ok((raw, with_dedup))
        }
        .await;
        let closed = redis.close().await;
        let measured = measured?;
        closed?;
        Ok(measured)
    }
}

/// Publishes `events` in calls of `batch` through a bus of its own; the time
/// from the first call to the return of the last.
async fn through_bus(ctx: &Context, events: Vec<Event>, batch: usize) -> anyhow::Result<Duration> {
    let scratch = ScratchBus::new(&ctx.url, &ctx.engine)?;
    let measured = async {
        let bus = scratch.connect().await?;
        let timed = async {
            let chunks = in_batches(events, batch);
            let start = Instant::now();
            for chunk in chunks {
                let receipts = bus.publish_batch(chunk).await?;
                if let Some(dup) = receipts.iter().find(|r| r.duplicate) {
                    anyhow::bail!("event {} was taken for a duplicate", dup.id);
                }
            }
            anyhow::Ok(start.elapsed())
        }
        .await;
        let closed = bus.close().await;
        let timed = timed?;
        closed?;
        anyhow::Ok(timed)
    }
    .await;
    let removed = scratch.remove().await;
    let measured = measured?;
    removed?;
    Ok(measured)
}
