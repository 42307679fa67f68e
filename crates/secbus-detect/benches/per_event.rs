//! What the detection worker does per event besides running the rules, on the
//! runtime beside the evaluator's thread: mapping a Windows process start to
//! the flat object the rules read, and building the `detection.finding` event
//! of a rule that matched it.
//!
//! Run by hand: `cargo bench -p secbus-detect --bench per_event`.
// `criterion_group!` generates a public function without documentation.
#![allow(missing_docs)]

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secbus::{Event, EventType, TenantId};
use secbus_detect::{Finding, Mapping, finding_event};
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

/// A finding as a SigmaHQ process-creation rule raises it.
fn encoded_powershell() -> Finding {
    Finding {
        rule_id: "ca2092a1-c273-4878-9b4b-0d60115bf5ea".into(),
        title: "Suspicious Encoded PowerShell Command Line".into(),
        description: Some(
            "Detects suspicious powershell process starts with base64 encoded commands \
             (e.g. Emotet)"
                .into(),
        ),
        level: "high",
        tags: vec!["attack.execution".into(), "attack.t1059.001".into()],
        category: Some("process_creation".into()),
        correlation: None,
    }
}

fn per_event(c: &mut Criterion) {
    let mapping = Mapping::shipped();
    let event = process_start();
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("process_start_to_sigma", |b| {
        b.iter(|| mapping.to_sigma(black_box(&event)))
    });
    let finding = encoded_powershell();
    group.bench_function("finding_event", |b| {
        b.iter(|| finding_event(black_box(&finding), black_box(&event)))
    });
    group.finish();
}

criterion_group!(benches, per_event);
criterion_main!(benches);
