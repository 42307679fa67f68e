//! `gateway.single` (embedded, nats): the latency one `POST /v1/events` adds
//! over publishing the same event from the library, at a paced 1,000 requests
//! per second (open loop: a request starts on its tick whether or not the
//! last one has returned), p50 and p99 of each, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use secbus::Event;

use super::gateway_batch::{ScenarioBus, start_gateway};
use super::payload;
use super::scenario::{Context, Report, Target, round3};
use crate::cli::gateway_client::GatewayClient;
use crate::cli::schema::load_gate;

pub(crate) const NAME: &str = "gateway.single";

/// Requests per second of each side.
const RATE: u64 = 1000;
/// Most requests per side: five seconds at the rate.
const MAX_SAMPLES: usize = 5000;

pub(crate) fn applies(engine: &str) -> bool {
    matches!(engine, "embedded" | "nats")
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    let samples = ctx.events.clamp(1, MAX_SAMPLES);
    let lib_events = payload::login_failures(samples, Utc::now());
    let http_events = payload::login_failures(samples, Utc::now());
    let bus = ScenarioBus::open(ctx, "gateway-single").await?;
    let measured = async {
        // Both sides pass the contracts gate, so the difference is the HTTP path.
        let gate = load_gate(&[]).map_err(|_| anyhow::anyhow!("the catalog does not load"))?;
        let gated = bus.bus.with_gate(gate);
        let library = paced(lib_events, move |e| {
            let bus = gated.clone();
            async move { bus.publish(e).await.map(drop).map_err(|e| e.to_string()) }
        })
        .await?;
        let gateway = start_gateway(&bus.bus).await?;
        let client =
            GatewayClient::new(&gateway.base(), &gateway.key).map_err(|e| anyhow::anyhow!(e))?;
        let http = paced(http_events, move |e| {
            let client = client.clone();
            async move {
                client
                    .publish(&e)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        gateway.stop().await.map_err(|e| anyhow::anyhow!(e))?;
        anyhow::Ok((library, http))
    }
    .await;
    let closed = bus.close().await;
    let (library, http) = measured?;
    closed?;

    let ms = |d: Duration| round3(d.as_secs_f64() * 1e3);
    let (lib50, lib99) = (
        percentile(&library.latencies, 50.0),
        percentile(&library.latencies, 99.0),
    );
    let (http50, http99) = (
        percentile(&http.latencies, 50.0),
        percentile(&http.latencies, 99.0),
    );
    let added = |a: Duration, b: Duration| round3((a.as_secs_f64() - b.as_secs_f64()) * 1e3);
    let report = Report::new(NAME, &ctx.engine, samples as u64, http.achieved_per_s, None)
        .field("paced_per_s", RATE)
        .field("library_per_s", library.achieved_per_s.round())
        .field("library_p50_ms", ms(lib50))
        .field("library_p99_ms", ms(lib99))
        .field("http_p50_ms", ms(http50))
        .field("http_p99_ms", ms(http99))
        .field("added_p50_ms", added(http50, lib50))
        .field("added_p99_ms", added(http99, lib99))
        .field(
            "ours_method",
            "POST /v1/events, one event per request, a new request every 1 ms, \
             against Publisher::publish of the same event through the contracts gate",
        );
    Ok(report.targets([Target::at_most("added_p99_ms", 1.0)]))
}

/// What one paced side measured.
struct Paced {
    latencies: Vec<Duration>,
    achieved_per_s: f64,
}

/// Starts `send(event)` for each event on its own 1 ms tick and records how
/// long each took.
async fn paced<F, Fut>(events: Vec<Event>, send: F) -> anyhow::Result<Paced>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let send = Arc::new(send);
    let n = events.len();
    let period = Duration::from_micros(1_000_000 / RATE);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, event) in events.into_iter().enumerate() {
        tokio::time::sleep_until((start + period * i as u32).into()).await;
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            send(event).await.map(|()| began.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.push(
            t.await?
                .map_err(|e| anyhow::anyhow!("a publish failed: {e}"))?,
        );
    }
    let wall = start.elapsed();
    latencies.sort();
    Ok(Paced {
        latencies,
        achieved_per_s: n as f64 / wall.as_secs_f64(),
    })
}

/// The `p`th percentile of sorted `values` (nearest rank).
fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}
