//! `contracts.validate` and `contracts.secrets`: what the contracts gate costs
//! a publish, on one core.
//!
//! Neither touches the engine, so both run on every bus; the report names the
//! bus's engine only to say where the run was asked for. Each is a plain loop
//! on the calling thread (the runtime's other workers stay idle), after a
//! warm-up of up to 10,000 rounds, so the rate is that of one core.
//!
//! - `contracts.validate`: [`ContractsGate::check`] of a typical
//!   `auth.login.failed` event (parse `data`, secret scan, schema check,
//!   `dataschema`). Raw is the compiled JSON Schema validator alone on the same
//!   data, already parsed: the ratio is the share of the gate's time the schema
//!   check itself takes.
//! - `contracts.secrets`: [`SecretGuard::scan`] of the parsed data of an
//!   `endpoint.process.created` event of about 1 KB (the catalog's example),
//!   as the gate runs it. There is no raw baseline (`raw_per_s` is null);
//!   `with_parse_per_s` adds parsing the data from its JSON text each time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use secbus::{Event, EventType, Gate, TenantId};
use secbus_contracts::{ContractsGate, Registry, SecretGuard};
use serde_json::Value;

use super::scenario::{Context, Report, Target, round3};

pub(crate) const VALIDATE: &str = "contracts.validate";
pub(crate) const SECRETS: &str = "contracts.secrets";

/// Checks per second each scenario should reach on one core (5 µs each).
const TARGET_PER_S: f64 = 200_000.0;

/// The engine is not touched: every bus.
pub(crate) fn applies(_engine: &str) -> bool {
    true
}

pub(crate) fn run_validate(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(async move { validate(ctx) })
}

pub(crate) fn run_secrets(ctx: &Context) -> BoxFuture<'_, anyhow::Result<Report>> {
    Box::pin(async move { secrets(ctx) })
}

fn validate(ctx: &Context) -> anyhow::Result<Report> {
    const TYPE: &str = "auth.login.failed";
    let registry = Arc::new(builtin()?);
    let gate = ContractsGate::new(registry.clone());
    let contract = registry
        .get(TYPE)
        .ok_or_else(|| anyhow::anyhow!("the built-in catalog has no {TYPE}"))?;
    let data = serde_json::json!({
        "user": "u0000042@acme.example",
        "src_ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "reason": "bad_password",
        "mfa": false
    });
    let mut event = event(TYPE, &data)?;
    gate.check(&mut event)
        .map_err(|e| anyhow::anyhow!("the gate refuses the bench's {TYPE} event: {e}"))?;
    anyhow::ensure!(
        contract.validator().is_valid(&data),
        "the schema of {TYPE} refuses the bench's data"
    );

    let raw_s = timed(ctx.events, || {
        contract.validator().is_valid(black_box(&data))
    })?;
    let ours_s = timed(ctx.events, || gate.check(black_box(&mut event)).is_ok())?;

    let n = ctx.events as f64;
    Ok(Report::new(
        VALIDATE,
        &ctx.engine,
        ctx.events as u64,
        n / ours_s,
        Some(n / raw_s),
    )
    .field("event_type", TYPE)
    .field("event_bytes", event.to_json().len())
    .field("data_bytes", data_bytes(&event))
    .field("ours_us", round3(ours_s * 1e6 / n))
    .field("raw_us", round3(raw_s * 1e6 / n))
    .field(
        "raw_is",
        "the JSON Schema validator alone (is_valid) on the parsed data",
    )
    .field("threads", 1)
    .targets([Target::at_least("ours_per_s", TARGET_PER_S)]))
}

fn secrets(ctx: &Context) -> anyhow::Result<Report> {
    const TYPE: &str = "endpoint.process.created";
    let registry = builtin()?;
    let contract = registry
        .get(TYPE)
        .ok_or_else(|| anyhow::anyhow!("the built-in catalog has no {TYPE}"))?;
    let data = contract.schema()["examples"][0].clone();
    anyhow::ensure!(data.is_object(), "the schema of {TYPE} has no example");
    let marks = contract.hash_marks().clone();
    let event = event(TYPE, &data)?;
    let text = event
        .data_raw()
        .ok_or_else(|| anyhow::anyhow!("the bench's {TYPE} event has no JSON data"))?
        .to_owned();
    let guard = SecretGuard::new();
    anyhow::ensure!(
        guard.scan(&data, &marks).is_empty(),
        "the secret guard finds a credential in the example of {TYPE}"
    );

    let ours_s = timed(ctx.events, || {
        guard.scan(black_box(&data), &marks).is_empty()
    })?;
    let with_parse_s = timed(ctx.events, || {
        serde_json::from_str::<Value>(black_box(&text))
            .is_ok_and(|parsed| guard.scan(&parsed, &marks).is_empty())
    })?;

    let n = ctx.events as f64;
    Ok(
        Report::new(SECRETS, &ctx.engine, ctx.events as u64, n / ours_s, None)
            .field("event_type", TYPE)
            .field("event_bytes", event.to_json().len())
            .field("data_bytes", text.len())
            .field("ours_us", round3(ours_s * 1e6 / n))
            .field("with_parse_per_s", (n / with_parse_s).round())
            .field("with_parse_us", round3(with_parse_s * 1e6 / n))
            .field("raw_is", "none: no baseline for the secret scan")
            .field("threads", 1)
            .targets([Target::at_least("ours_per_s", TARGET_PER_S)]),
    )
}

fn builtin() -> anyhow::Result<Registry> {
    Registry::builtin().map_err(|e| anyhow::anyhow!("cannot load the built-in catalog: {e}"))
}

fn event(ty: &str, data: &Value) -> anyhow::Result<Event> {
    Event::builder(EventType::new(ty)?, TenantId::new("acme")?)
        .source("idp/okta")
        .data(data)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the bench's {ty} event: {e}"))
}

fn data_bytes(event: &Event) -> usize {
    event.data_raw().map_or(0, str::len)
}

/// Seconds `n` calls of `once` take after a warm-up; every call must pass
/// (`true`), so a loop that starts refusing is an error, not a fast number.
fn timed(n: usize, mut once: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let mut passed = 0usize;
    for _ in 0..n.min(10_000) {
        passed += usize::from(once());
    }
    let start = Instant::now();
    for _ in 0..n {
        passed += usize::from(once());
    }
    let seconds = start.elapsed().as_secs_f64();
    let expected = n + n.min(10_000);
    anyhow::ensure!(
        passed == expected,
        "{} of {expected} checks failed",
        expected - passed
    );
    Ok(seconds.max(1e-9))
}
