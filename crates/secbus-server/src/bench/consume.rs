//! `consume` (nats, redis): a consumer group member reads N events stored
//! before timing and acks each, timed from the subscription to the last ack,
//! against the engine's own consumer group reading the same events with the
//! same window, once as is and once decoding each event as secbus does.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::{Event, Publisher, StartAt, SubscribeOptions, Subscriber, TenantId};

use super::raw::{self, RawRun};
use super::scenario::{Context, Report, Target, round3, round6};
use super::scratch_bus::ScratchBus;
use super::{consumer, payload, publish, watchdog};

pub(crate) const NAME: &str = "consume";

pub(crate) fn applies(engine: &str) -> bool {
    matches!(engine, "nats" | "redis")
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    anyhow::ensure!(
        applies(&ctx.engine),
        "consume runs on nats and redis, not {}",
        ctx.engine
    );
    let n = ctx.events;
    let window = raw::window(&ctx.engine);
    let events = payload::login_failures(n, Utc::now());
    let event_bytes = events.first().map_or(0, |e| e.to_json().len());

    let (raw, with_decode) = raw_baselines(ctx, &events, window).await?;
    let ours = through_bus(ctx, events, window).await?;

    let ours_per_s = n as f64 / ours.as_secs_f64();
    let report = Report::new(NAME, &ctx.engine, n as u64, ours_per_s, Some(raw.per_s()))
        .field("event_bytes", event_bytes)
        .field("window", window)
        .field(
            "ours_method",
            format!(
                "Subscription::next + Delivery::ack of each, one member, max_in_flight {window}"
            ),
        )
        .field("wall_s", round6(ours.as_secs_f64()))
        .field("raw_wall_s", round6(raw.wall.as_secs_f64()))
        .field("raw_baseline", raw.baseline)
        .field("raw_with_decode_per_s", with_decode.per_s().round())
        .field(
            "ratio_with_decode",
            round3(ours_per_s / with_decode.per_s()),
        )
        .field("raw_with_decode_baseline", with_decode.baseline);
    Ok(report.targets([Target::at_least("ratio", 0.9)]))
}

/// Fills a log of its own (untimed), then reads it twice with new groups:
/// plain, then decoding each event.
async fn raw_baselines(
    ctx: &Context,
    events: &[Event],
    window: usize,
) -> anyhow::Result<(RawRun, RawRun)> {
    let n = events.len();
    if ctx.engine == "nats" {
        let mut nats = raw::nats::RawNats::connect(&ctx.url).await?;
        let measured = async {
            let stream = nats.stream("CONSUME").await?;
            nats.publish(&nats.encode("CONSUME", events), window, false)
                .await?;
            let raw = nats.consume(&stream, n, window, false).await?;
            let with_decode = nats.consume(&stream, n, window, true).await?;
            anyhow::Ok((raw, with_decode))
        }
        .await;
        let closed = nats.close().await;
        let measured = measured?;
        closed?;
        Ok(measured)
    } else {
        let redis = raw::redis::RawRedis::connect(&ctx.url).await?;
        let measured = async {
            let log = redis.log("consume");
            redis
                .publish(&log, &redis.encode(events), window, false)
                .await?;
            let raw = redis.consume(&log, n, window, false).await?;
            let with_decode = redis.consume(&log, n, window, true).await?;
            anyhow::Ok((raw, with_decode))
        }
        .await;
        let closed = redis.close().await;
        let measured = measured?;
        closed?;
        Ok(measured)
    }
}

/// Publishes `events` (untimed) to a bus of its own, then times one group
/// member from the subscription to its last ack.
async fn through_bus(ctx: &Context, events: Vec<Event>, window: usize) -> anyhow::Result<Duration> {
    let n = events.len() as u64;
    let scratch = ScratchBus::new(&ctx.url, &ctx.engine)?;
    let measured = async {
        let bus = scratch.connect().await?;
        let timed = async {
            for chunk in publish::in_batches(events, publish::default_batch(&ctx.engine)) {
                bus.publish_batch(chunk).await?;
            }
            let tenant = TenantId::new(payload::TENANT)?;
            let start = Instant::now();
            let subscription = bus
                .subscribe(
                    SubscribeOptions::group(tenant, "bench")
                        .start(StartAt::Beginning)
                        .max_in_flight(window),
                )
                .await?;
            let acked: watchdog::Progress = Arc::new(AtomicU64::new(0));
            let member = consumer::spawn_acking(subscription, acked.clone(), Some(n));
            let last_ack = watchdog::finish(member, &acked, "consumer").await?;
            anyhow::Ok(last_ack - start)
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
