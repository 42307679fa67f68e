//! `publish_consume`: one task publishes N events, one call each, while a
//! consumer group member in another task acks all N; timed until the last ack.
//! Raw is the engine itself moving the same events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::{Event, Publisher, StartAt, SubscribeOptions, Subscriber, TenantId};

use super::payload;
use super::raw::{self, RawRun};
use super::scenario::{Context, Report, Target, round3};
use super::{consumer, watchdog};

pub(crate) const NAME: &str = "publish_consume";

pub(crate) fn applies(_engine: &str) -> bool {
    true
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    let n = ctx.events;
    // Stamped once so the raw baseline and the bus store the very same bytes.
    let events = payload::login_failures(n, Utc::now());
    let event_bytes = events.first().map_or(0, |e| e.to_json().len());
    let raw = raw_baseline(ctx, &events).await?;
    let ours = through_bus(ctx, events).await?;

    let ours_per_s = n as f64 / ours.wall.as_secs_f64();
    let mut report = Report::new(
        NAME,
        &ctx.engine,
        n as u64,
        ours_per_s,
        raw.as_ref().map(RawRun::per_s),
    )
    .field("event_bytes", event_bytes)
    .field("wall_s", round3(ours.wall.as_secs_f64()))
    .field(
        "publish_per_s",
        (n as f64 / ours.published.as_secs_f64()).round(),
    );
    if let Some(raw) = &raw {
        report = report
            .field("raw_wall_s", round3(raw.wall.as_secs_f64()))
            .field("raw_baseline", raw.baseline);
    }
    Ok(report.targets(targets(&ctx.engine)))
}

/// The bounds of issue 2 on a 2-core machine.
fn targets(engine: &str) -> Vec<Target> {
    match engine {
        "memory" => vec![
            Target::at_least("ours_per_s", 1_000_000.0),
            Target::at_least("ratio", 0.5),
        ],
        "embedded" => vec![
            Target::at_least("ours_per_s", 100_000.0),
            Target::at_least("ratio", 0.5),
        ],
        _ => Vec::new(),
    }
}

async fn raw_baseline(ctx: &Context, events: &[Event]) -> anyhow::Result<Option<RawRun>> {
    Ok(match ctx.engine.as_str() {
        "memory" => Some(raw::memory::mpsc_transfer(events.to_vec()).await?),
        "embedded" => {
            let path = ctx.scratch.join("raw-publish-consume.db");
            Some(raw::embedded::batched_insert(&path, events).await?)
        }
        _ => None,
    })
}

struct Ours {
    /// From the first publish to the last ack.
    wall: Duration,
    /// From the first publish to the return of the last.
    published: Duration,
}

async fn through_bus(ctx: &Context, events: Vec<Event>) -> anyhow::Result<Ours> {
    let n = events.len() as u64;
    let bus = ctx.connect().await?;
    let tenant = TenantId::new(payload::TENANT)?;
    // A new group per run: on a durable engine an old one would resume.
    let group = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let subscription = bus
        .subscribe(SubscribeOptions::group(tenant, group).start(StartAt::New))
        .await?;
    let acked: watchdog::Progress = Arc::new(AtomicU64::new(0));
    let consumer = consumer::spawn_acking(subscription, acked.clone(), Some(n));

    let published: watchdog::Progress = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let publisher = tokio::spawn({
        let bus = bus.clone();
        let published = published.clone();
        async move {
            for event in events {
                let receipt = bus.publish(event).await?;
                anyhow::ensure!(
                    !receipt.duplicate,
                    "event {} was taken for a duplicate",
                    receipt.id
                );
                published.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Instant::now())
        }
    });
    let published_at = match watchdog::finish(publisher, &published, "publisher").await {
        Ok(at) => at,
        Err(e) => {
            consumer.abort();
            let _ = bus.close().await;
            return Err(e);
        }
    };
    let last_ack = watchdog::finish(consumer, &acked, "consumer").await;
    let closed = bus.close().await;
    let last_ack = last_ack?;
    closed?;
    Ok(Ours {
        wall: last_ack - start,
        published: published_at - start,
    })
}
