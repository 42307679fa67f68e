//! `publish_consume`: one task (or `--publishers K` tasks, each with its share)
//! publishes N events, one call each, while a consumer group member in another
//! task acks all N; timed until the last ack. Raw is the engine itself moving
//! the same events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::{Bus, Event, StartAt, SubscribeOptions, Subscriber, TenantId};

use super::payload;
use super::raw::{self, RawRun};
use super::scenario::{Context, Report, Target, round6};
use super::{consumer, watchdog};

pub(crate) const NAME: &str = "publish_consume";

/// Not on nats and redis: it would write into the bus's own stream or keys
/// (see `publish` and `consume` for those engines).
pub(crate) fn applies(engine: &str) -> bool {
    matches!(engine, "memory" | "embedded")
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
    .field("publishers", ctx.publishers)
    .field("wall_s", round6(ours.wall.as_secs_f64()))
    .field(
        "publish_per_s",
        (n as f64 / ours.published.as_secs_f64()).round(),
    );
    if let Some(raw) = &raw {
        report = report
            .field("raw_wall_s", round6(raw.wall.as_secs_f64()))
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

/// Publishes `events` in order, one call each; returns when the last returned.
async fn publish_all(
    bus: Bus,
    events: Vec<Event>,
    published: watchdog::Progress,
) -> anyhow::Result<Instant> {
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

/// `events` cut into `k` runs of consecutive events, as even as can be.
fn split(mut events: Vec<Event>, k: usize) -> Vec<Vec<Event>> {
    let mut chunks = Vec::with_capacity(k);
    for i in (0..k).rev() {
        let size = events.len() / (i + 1);
        chunks.push(events.split_off(events.len() - size));
    }
    chunks.reverse();
    chunks
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
    let publisher = if ctx.publishers <= 1 {
        tokio::spawn(publish_all(bus.clone(), events, published.clone()))
    } else {
        let chunks = split(events, ctx.publishers);
        let (bus, published) = (bus.clone(), published.clone());
        tokio::spawn(async move {
            let tasks: Vec<_> = chunks
                .into_iter()
                .map(|chunk| tokio::spawn(publish_all(bus.clone(), chunk, published.clone())))
                .collect();
            let mut last = start;
            for task in tasks {
                let done = task
                    .await
                    .map_err(|e| anyhow::anyhow!("a publisher task failed: {e}"))??;
                last = last.max(done);
            }
            Ok(last)
        })
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_event_in_order_in_even_runs() {
        let events = payload::login_failures(10, Utc::now());
        let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
        let chunks = split(events, 3);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 3, 3]);
        let back: Vec<_> = chunks.into_iter().flatten().map(|e| e.id).collect();
        assert_eq!(back, ids);
        assert_eq!(split(payload::login_failures(2, Utc::now()), 4).len(), 4);
    }
}
