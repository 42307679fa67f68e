//! The mapping's cost: turning a Windows process start into the flat object
//! the Sigma rules read. It runs once per event in front of every rule, on
//! the runtime beside the evaluator's thread.
//!
//! Run by hand: `cargo bench -p secbus-detect --bench mapping`.
// `criterion_group!` generates a public function without documentation.
#![allow(missing_docs)]

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secbus::{Event, EventType, TenantId};
use secbus_detect::Mapping;
use serde_json::json;

// The allocator `secbus` itself runs with: the mapping allocates a dozen
// small strings an event, so the allocator is part of what is measured.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn process_start() -> Event {
    Event::builder(
        EventType::new("endpoint.process.created").expect("a valid type"),
        TenantId::new("acme").expect("a valid tenant"),
    )
    .source("edr/bench")
    .time(Utc::now())
    .data(json!({
        "host": "ws-0042",
        "os": "windows",
        "image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "command_line": "powershell.exe -NoProfile -WindowStyle Hidden -EncodedCommand SQBFAFgA",
        "parent_image": "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
        "user": "ACME\\\\user42",
        "process_id": 4242,
        "integrity_level": "medium",
    }))
    .build()
    .expect("a valid event")
}

fn mapping(c: &mut Criterion) {
    let mapping = Mapping::shipped();
    let event = process_start();
    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::Elements(1));
    group.bench_function("process_start_to_sigma", |b| {
        b.iter(|| mapping.to_sigma(black_box(&event)))
    });
    group.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
