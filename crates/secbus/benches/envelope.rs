//! The envelope's cost: encoding, decoding and building a typical
//! `auth.login.failed` event of about 423 bytes, and decoding a stream of
//! such events that differ in their ids and trace context.
//!
//! Run by hand: `cargo bench -p secbus --bench envelope`.
// `criterion_group!` generates a public function without documentation.
#![allow(missing_docs)]

use std::hint::black_box;

use chrono::{SubsecRound, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secbus::{Event, EventType, TenantId};
use serde::Serialize;

/// What an identity provider says about a failed login.
#[derive(Serialize)]
struct LoginFailed<'a> {
    user: &'a str,
    source_ip: &'a str,
    user_agent: &'a str,
    reason: &'a str,
    mfa: bool,
}

const DATA: LoginFailed<'static> = LoginFailed {
    user: "u0000042@acme.example",
    source_ip: "203.0.113.9",
    user_agent: "Mozilla/5.0 (X11)",
    reason: "bad_password",
    mfa: false,
};

fn login_failed(ty: &EventType, tenant: &TenantId) -> Event {
    let mut event = Event::builder(ty.clone(), tenant.clone())
        .source("idp/okta")
        .time(Utc::now().trunc_subsecs(3))
        .data(&DATA)
        .build()
        .expect("a valid event");
    // As `secbus bench` sends it: structured mode implies JSON.
    event.datacontenttype = None;
    event
}

/// Events in the `decode_distinct` pool: more than the branch predictor can
/// remember, few enough to stay in cache as a batch of a gateway does.
const DISTINCT: usize = 1024;

fn envelope(c: &mut Criterion) {
    let ty = EventType::new("auth.login.failed").expect("a valid type");
    let tenant = TenantId::new("bench").expect("a valid tenant");
    let event = login_failed(&ty, &tenant);
    let bytes = event.to_json();
    eprintln!("envelope: the event is {} bytes encoded", bytes.len());

    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(&event).to_json()));
    group.bench_function("decode", |b| {
        b.iter(|| Event::from_json(black_box(&bytes)).expect("decodes"))
    });
    // A gateway or a consumer decodes events that differ in their ids and
    // trace context; decoding the one event again and again lets the branch
    // predictor learn its bytes, which no real stream allows.
    let distinct: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|_| login_failed(&ty, &tenant).to_json())
        .collect();
    let mut next = distinct.iter().cycle();
    group.bench_function("decode_distinct", |b| {
        b.iter(|| {
            let bytes = next.next().expect("a cycle never ends");
            Event::from_json(black_box(bytes)).expect("decodes")
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("build", |b| b.iter(|| login_failed(&ty, &tenant)));
    group.bench_function("build_minimal", |b| {
        b.iter(|| {
            Event::builder(ty.clone(), tenant.clone())
                .build()
                .expect("a valid event")
        })
    });
    group.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
