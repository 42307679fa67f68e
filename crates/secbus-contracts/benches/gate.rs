//! Speed of the contracts gate on one core.
//!
//! - `contracts.validate`: the whole gate (parse `data`, secret scan, schema
//!   check, `dataschema`) on a typical `auth.login.failed` event, and the schema
//!   check alone;
//! - `contracts.secrets`: the secret scan of a 1 KB event (an EDR process
//!   event whose data is 863 bytes), over parsed data and with the parse.
//!
//! Targets: 200,000 per second each (5 us). Run with
//! `cargo bench -p secbus-contracts --bench gate`.

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secbus::{Event, EventType, Gate, TenantId};
use secbus_contracts::{ContractsGate, Registry, SecretGuard};
use serde_json::Value;

fn event(ty: &str, data: &Value) -> Event {
    Event::builder(EventType::new(ty).unwrap(), TenantId::new("acme").unwrap())
        .source("idp/okta")
        .data(data)
        .build()
        .unwrap()
}

fn example(registry: &Registry, ty: &str) -> Value {
    registry.get(ty).unwrap().schema()["examples"][0].clone()
}

fn benches(c: &mut Criterion) {
    let registry = Arc::new(Registry::builtin().unwrap());
    let gate = ContractsGate::new(registry.clone());
    let guard = SecretGuard::new();

    let mut group = c.benchmark_group("contracts.validate");
    group.throughput(Throughput::Elements(1));
    let login = serde_json::json!({
        "user": "u0000042@acme.example",
        "src_ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (X11)",
        "reason": "bad_password",
        "mfa": false
    });
    let mut login_event = event("auth.login.failed", &login);
    group.bench_function("gate_auth_login_failed", |b| {
        b.iter(|| gate.check(black_box(&mut login_event)).unwrap())
    });
    let contract = registry.get("auth.login.failed").unwrap();
    group.bench_function("schema_only_auth_login_failed", |b| {
        b.iter(|| assert!(contract.validator().is_valid(black_box(&login))))
    });
    group.finish();

    let mut group = c.benchmark_group("contracts.secrets");
    group.throughput(Throughput::Elements(1));
    let process = example(&registry, "endpoint.process.created");
    let process_event = event("endpoint.process.created", &process);
    let marks = registry
        .get("endpoint.process.created")
        .unwrap()
        .hash_marks()
        .clone();
    let raw = process_event.data_raw().unwrap().to_owned();
    eprintln!(
        "contracts.secrets: event {} bytes, data {} bytes",
        process_event.to_json().len(),
        raw.len()
    );
    group.bench_function("scan_1kb_event", |b| {
        b.iter(|| assert!(guard.scan(black_box(&process), &marks).is_empty()))
    });
    group.bench_function("parse_and_scan_1kb_event", |b| {
        b.iter(|| {
            let data: Value = serde_json::from_str(black_box(&raw)).unwrap();
            assert!(guard.scan(&data, &marks).is_empty())
        })
    });
    group.finish();
}

criterion_group!(gate_benches, benches);
criterion_main!(gate_benches);
