//! `gateway.batch` (embedded, nats): N events through `POST /v1/events/batch`
//! of a gateway in this process (HTTP, auth, decoding and the contracts gate
//! included), from a few concurrent clients, against the engine's raw publish
//! of the same events in the same run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::{Bus, Event};

use super::payload;
use super::raw::{self, RawRun};
use super::scenario::{Context, Report, Target, round6};
use super::scratch_bus::ScratchBus;
use crate::cli::gateway_client::{GatewayClient, batch_body};
use crate::gateway::config::GatewayConfig;
use crate::gateway::in_process::InProcessGateway;

pub(crate) const NAME: &str = "gateway.batch";

/// Events per request: the gateway's default batch limit, and the raw
/// embedded baseline's rows per transaction.
const BATCH: usize = 1000;
/// Clients sending at once, each one request at a time.
const CLIENTS: usize = 4;

pub(crate) fn applies(engine: &str) -> bool {
    matches!(engine, "embedded" | "nats")
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

/// A bus of the scenario's own: a new dir under the run's scratch dir
/// (embedded) or a stream of its own on the server (nats).
pub(crate) struct ScenarioBus {
    pub(crate) bus: Bus,
    scratch: Option<ScratchBus>,
}

impl ScenarioBus {
    pub(crate) async fn open(ctx: &Context, name: &str) -> anyhow::Result<ScenarioBus> {
        if ctx.engine == "embedded" {
            let url = format!("embedded:{}", ctx.scratch.join(name).display());
            let bus = Bus::connect(&url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open {url}: {e}"))?;
            return Ok(ScenarioBus { bus, scratch: None });
        }
        let scratch = ScratchBus::new(&ctx.url, &ctx.engine)?;
        let bus = scratch.connect().await?;
        Ok(ScenarioBus {
            bus,
            scratch: Some(scratch),
        })
    }

    pub(crate) async fn close(self) -> anyhow::Result<()> {
        let closed = self.bus.close().await;
        if let Some(scratch) = self.scratch {
            scratch.remove().await?;
        }
        closed.map_err(|e| anyhow::anyhow!("closing the bus: {e}"))
    }
}

/// A gateway for the bench tenant without a rate limit.
pub(crate) async fn start_gateway(bus: &Bus) -> anyhow::Result<InProcessGateway> {
    let mut config = GatewayConfig::default();
    config.rate_limit.events_per_second = 0.0;
    InProcessGateway::start(bus.clone(), payload::TENANT, "127.0.0.1:0", config)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    let n = ctx.events;
    let events = payload::login_failures(n, Utc::now());
    let event_bytes = events.first().map_or(0, |e| e.to_json().len());
    let raw = raw_publish(ctx, &events).await?;
    let ours = through_gateway(ctx, &events).await?;
    let ours_per_s = n as f64 / ours.as_secs_f64();
    let report = Report::new(NAME, &ctx.engine, n as u64, ours_per_s, Some(raw.per_s()))
        .field("event_bytes", event_bytes)
        .field("batch", BATCH)
        .field("clients", CLIENTS)
        .field(
            "ours_method",
            format!(
                "POST /v1/events/batch of {BATCH} events (bodies encoded before timing), \
                 {CLIENTS} HTTP/1.1 clients, gateway in the same process"
            ),
        )
        .field("wall_s", round6(ours.as_secs_f64()))
        .field("raw_wall_s", round6(raw.wall.as_secs_f64()))
        .field("raw_baseline", raw.baseline);
    Ok(report.targets([Target::at_least("ratio", 0.5)]))
}

/// The engine's own publish of `events`: SQLite transactions of 1,000 rows
/// (embedded) or JetStream publishes with the PubAck window (nats).
async fn raw_publish(ctx: &Context, events: &[Event]) -> anyhow::Result<RawRun> {
    if ctx.engine == "embedded" {
        return raw::embedded::batched_insert(&ctx.scratch.join("raw-gateway-batch.db"), events)
            .await;
    }
    let mut nats = raw::nats::RawNats::connect(&ctx.url).await?;
    let measured = async {
        nats.stream("GATEWAY").await?;
        let encoded = nats.encode("GATEWAY", events);
        nats.publish(&encoded, raw::window(&ctx.engine), false)
            .await
    }
    .await;
    let closed = nats.close().await;
    let measured = measured?;
    closed?;
    Ok(measured)
}

async fn through_gateway(ctx: &Context, events: &[Event]) -> anyhow::Result<Duration> {
    let bus = ScenarioBus::open(ctx, "gateway-batch").await?;
    let measured = async {
        let gateway = start_gateway(&bus.bus).await?;
        let client =
            GatewayClient::new(&gateway.base(), &gateway.key).map_err(|e| anyhow::anyhow!(e))?;
        let bodies: VecDeque<(usize, bytes::Bytes)> = events
            .chunks(BATCH)
            .map(|c| (c.len(), batch_body(c)))
            .collect();
        let queue = Arc::new(Mutex::new(bodies));
        let start = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (client, queue) = (client.clone(), queue.clone());
                tokio::spawn(async move {
                    let mut stored = 0usize;
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                        let Some((len, body)) = next else {
                            return anyhow::Ok(stored);
                        };
                        let results = client
                            .publish_batch_body(body)
                            .await
                            .map_err(|e| anyhow::anyhow!("a batch failed: {e}"))?;
                        anyhow::ensure!(
                            results.len() == len,
                            "{} receipts for {len} events",
                            results.len()
                        );
                        anyhow::ensure!(
                            results.iter().all(|r| !r.duplicate),
                            "an event was taken for a duplicate"
                        );
                        stored += len;
                    }
                })
            })
            .collect();
        let mut stored = 0;
        for c in clients {
            stored += c.await??;
        }
        let wall = start.elapsed();
        anyhow::ensure!(
            stored == events.len(),
            "stored {stored} of {}",
            events.len()
        );
        gateway.stop().await.map_err(|e| anyhow::anyhow!(e))?;
        anyhow::Ok(wall)
    }
    .await;
    let closed = bus.close().await;
    let wall = measured?;
    closed?;
    Ok(wall)
}
