//! `hot_path`: what emitting one event per signature check costs the check.
//!
//! An ed25519 verification loop runs M times alone ("raw") and M times with one
//! `publish` of a small `auth.signature.verified` event per verification
//! ("ours"), while a consumer group drains the bus in the background. The two
//! loops run interleaved in blocks of 20 verifications, in alternating order;
//! a round takes the median block of each loop, and the medians over rounds
//! are reported with their spread, because a shared 2-core machine drifts and
//! preempts by more than the 2% being measured.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use futures::future::BoxFuture;
use secbus::{Bus, EventType, StartAt, SubscribeOptions, Subscriber, TenantId};

use super::payload;
use super::scenario::{Context, Report, Target, round3};
use super::{consumer, watchdog};

pub(crate) const NAME: &str = "hot_path";

/// The key id the emitted events name.
const KEY_ID: &str = "kid-2026-11-a";

/// Not on nats and redis: it would write into the bus's own stream or keys
/// (see `publish` and `consume` for those engines).
pub(crate) fn applies(engine: &str) -> bool {
    matches!(engine, "memory" | "embedded")
}

pub(crate) fn run(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(measure(ctx))
}

/// A signed message of about 200 bytes, as a token or a webhook body would be.
struct Check {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
}

impl Check {
    fn new() -> Self {
        let signing = SigningKey::from_bytes(&[7; 32]);
        let message = br#"{"iss":"https://idp.acme.example","sub":"u0000042@acme.example","aud":"api.acme.example","iat":1795435200,"exp":1795438800,"jti":"5f0c2a4e-8d1b-4c7e-9a3f-2b6d1e0f9c84","scope":"read write"}"#.to_vec();
        let signature = signing.sign(&message);
        Check {
            key: signing.verifying_key(),
            message,
            signature,
        }
    }

    fn verify(&self) -> bool {
        self.key
            .verify(
                std::hint::black_box(&self.message),
                std::hint::black_box(&self.signature),
            )
            .is_ok()
    }
}

/// Microseconds per operation of each loop in one round.
#[derive(Debug, Clone, Copy)]
struct Round {
    verify_us: f64,
    with_publish_us: f64,
    /// Building and publishing the event, without the verification.
    emit_us: f64,
    /// Building the event only.
    build_us: f64,
}

impl Round {
    fn overhead_pct(&self) -> f64 {
        (self.with_publish_us - self.verify_us) / self.verify_us * 100.0
    }
}

async fn measure(ctx: &Context) -> anyhow::Result<Report> {
    let bus = ctx.connect().await?;
    let (_, tenant) = payload::signature_verified_kind();
    let group = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let subscription = bus
        .subscribe(SubscribeOptions::group(tenant, group).start(StartAt::New))
        .await?;
    let acked: watchdog::Progress = Arc::new(AtomicU64::new(0));
    let drain = consumer::spawn_acking(subscription, acked.clone(), None);
    // On a worker thread, as the application's own verification would run.
    let loops = tokio::spawn(rounds(bus.clone(), ctx.verifies, ctx.rounds, acked)).await;
    let closed = bus.close().await;
    let drained = drain.await;
    let rounds = loops.map_err(|e| anyhow::anyhow!("the hot path task failed: {e}"))??;
    closed?;
    drained.map_err(|e| anyhow::anyhow!("the drain task failed: {e}"))??;
    Ok(report(ctx, &rounds))
}

fn report(ctx: &Context, rounds: &[Round]) -> Report {
    let stat = |f: fn(&Round) -> f64| Spread::of(rounds.iter().map(f).collect());
    let verify = stat(|r| r.verify_us);
    let with = stat(|r| r.with_publish_us);
    let overhead = stat(Round::overhead_pct);
    let emit = stat(|r| r.emit_us);
    let build = stat(|r| r.build_us);
    Report::new(
        NAME,
        &ctx.engine,
        ctx.verifies as u64,
        1e6 / with.median,
        Some(1e6 / verify.median),
    )
    .field("verify_us", round3(verify.median))
    .field("with_publish_us", round3(with.median))
    .field("overhead_pct", round3(overhead.median))
    .field("overhead_us", round3(with.median - verify.median))
    .field("emit_us", round3(emit.median))
    .field("build_us", round3(build.median))
    .field("publish_us", round3(emit.median - build.median))
    .field("rounds", rounds.len())
    .field("verify_us_min", round3(verify.min))
    .field("verify_us_max", round3(verify.max))
    .field("with_publish_us_min", round3(with.min))
    .field("with_publish_us_max", round3(with.max))
    .field("overhead_pct_min", round3(overhead.min))
    .field("overhead_pct_max", round3(overhead.max))
    .targets([Target::at_most("overhead_pct", 2.0)])
}

/// Median, min and max of a few samples.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => samples[n / 2],
            _ => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: samples.first().copied().unwrap_or(f64::NAN),
            max: samples.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Verifications per timed block. Blocks of the two loops alternate, so
/// machine drift slower than a millisecond hits both loops alike.
const BLOCK: usize = 20;

/// Events per timed block of the emit-only and build-only loops.
const EMIT_BLOCK: usize = 100;

/// Runs a warm-up round, then `rounds` measured ones.
///
/// A round's figure for a loop is the median over its blocks: a block during
/// which another process held the core is an outlier that the median drops,
/// where a sum would add it to one loop only.
async fn rounds(
    bus: Bus,
    m: usize,
    rounds: usize,
    acked: watchdog::Progress,
) -> anyhow::Result<Vec<Round>> {
    let check = Check::new();
    let (ty, tenant) = payload::signature_verified_kind();
    let mut published = 0u64;
    let mut out = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let (mut verify, mut with_publish) = (Vec::new(), Vec::new());
        let mut done = 0;
        while done < m {
            let block = BLOCK.min(m - done);
            let publish_first = (done / BLOCK + round) % 2 == 1;
            for with in [publish_first, !publish_first] {
                if with {
                    let t = verify_and_publish(&bus, &check, &ty, &tenant, block).await?;
                    with_publish.push(per_op_us(t, block));
                } else {
                    verify.push(per_op_us(verify_only(&check, block)?, block));
                }
            }
            done += block;
        }
        published += m as u64;
        // The drain catches up outside the timed loops.
        watchdog::reach(&acked, published, "drain").await?;
        let (mut emit, mut build) = (Vec::new(), Vec::new());
        let mut done = 0;
        while done < m {
            let block = EMIT_BLOCK.min(m - done);
            emit.push(per_op_us(
                emit_only(&bus, &ty, &tenant, block).await?,
                block,
            ));
            build.push(per_op_us(build_only(&ty, &tenant, block), block));
            done += block;
        }
        published += m as u64;
        watchdog::reach(&acked, published, "drain").await?;
        if round > 0 {
            out.push(Round {
                verify_us: Spread::of(verify).median,
                with_publish_us: Spread::of(with_publish).median,
                emit_us: Spread::of(emit).median,
                build_us: Spread::of(build).median,
            });
        }
    }
    Ok(out)
}

fn per_op_us(elapsed: Duration, m: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / m as f64
}

fn verify_only(check: &Check, m: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..m {
        anyhow::ensure!(check.verify(), "the signature did not verify");
    }
    Ok(start.elapsed())
}

async fn verify_and_publish(
    bus: &Bus,
    check: &Check,
    ty: &EventType,
    tenant: &TenantId,
    m: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..m {
        anyhow::ensure!(check.verify(), "the signature did not verify");
        bus.publish(payload::signature_verified(ty, tenant, KEY_ID))
            .await?;
    }
    Ok(start.elapsed())
}

async fn emit_only(
    bus: &Bus,
    ty: &EventType,
    tenant: &TenantId,
    m: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..m {
        bus.publish(payload::signature_verified(ty, tenant, KEY_ID))
            .await?;
    }
    Ok(start.elapsed())
}

fn build_only(ty: &EventType, tenant: &TenantId, m: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..m {
        std::hint::black_box(payload::signature_verified(ty, tenant, KEY_ID));
    }
    start.elapsed()
}
