//! The gate on a real bus (the memory engine): every publish path refuses what
//! the gate refuses, stores nothing of a refused batch, and stores what passes
//! with its `dataschema`.

use std::sync::Arc;
use std::time::Duration;

use secbus::{
    Bus, BusConfig, Event, EventType, FallbackOutcome, Publisher, Scope, StartAt, SubscribeOptions,
    Subscriber, TenantId,
};
use secbus_contracts::{ContractsGate, Registry};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn event(ty: &str, tenant: &str, data: serde_json::Value) -> Event {
    Event::builder(EventType::new(ty).unwrap(), TenantId::new(tenant).unwrap())
        .source("bus-gate-test")
        .data(data)
        .build()
        .unwrap()
}

fn login(tenant: &str) -> Event {
    event(
        "auth.login.failed",
        tenant,
        json!({"user": "bob@acme.example", "src_ip": "203.0.113.9", "reason": "bad_password"}),
    )
}

fn leaking(key: &str) -> Event {
    event(
        "config.changed",
        "acme",
        json!({"actor": {"user": "x"}, "component": "c", "setting": "s", "new_value": key}),
    )
}

/// An AWS-style access key id made at run time.
fn key_id() -> String {
    format!("{}{}", ["AK", "IA"].concat(), "Q2RXW7TYZP3LMN4K")
}

/// Every stored event of `tenant`, read by a tail from the beginning: waits up
/// to [`WAIT`] for the first `expected`, then until a short quiet spell (a tail
/// waits for new events, so quiet means it has shown all).
async fn stored(bus: &Bus, tenant: &str, expected: usize) -> Vec<Event> {
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(TenantId::new(tenant).unwrap()).start(StartAt::Beginning))
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let wait = if events.len() < expected {
            WAIT
        } else {
            Duration::from_millis(300)
        };
        match tokio::time::timeout(wait, tail.next()).await {
            Ok(Some(delivery)) => events.push(delivery.unwrap().event().clone()),
            _ => return events,
        }
    }
}

#[tokio::test]
async fn every_publish_path_goes_through_the_gate() {
    let spool = tempfile::tempdir().unwrap();
    let config = BusConfig {
        spool_dir: spool.path().to_path_buf(),
        ..BusConfig::default()
    };
    let raw = Bus::connect_with("memory:", config).await.unwrap();
    let gate = Arc::new(ContractsGate::new(Arc::new(Registry::builtin().unwrap())));
    let bus = raw.with_gate(gate.clone());

    let receipt = tokio::time::timeout(WAIT, bus.publish(login("acme")))
        .await
        .unwrap();
    assert!(receipt.is_ok(), "{receipt:?}");

    let unknown = event("no.such.type", "acme", json!({}));
    let e = bus.publish(unknown).await.unwrap_err();
    assert_eq!(e.code(), "unknown_event_type");

    let e = bus
        .try_publish(event("auth.login.failed", "acme", json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "schema_violation");

    // All or nothing: the valid event of a refused batch is not stored either.
    let e = bus
        .publish_batch(vec![login("acme"), leaking(&key_id())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "secret_detected");
    assert!(!e.to_string().contains(&key_id()));

    match bus.publish_with_fallback(leaking(&key_id())).await {
        FallbackOutcome::Refused(e) => assert_eq!(e.code(), "secret_detected"),
        other => panic!("not refused: {other:?}"),
    }

    let scoped = bus.publisher(Scope::Tenant(TenantId::new("acme").unwrap()));
    let e = scoped.publish(login("globex")).await.unwrap_err();
    assert_eq!(e.code(), "tenant_mismatch");

    let events = stored(&raw, "acme", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].dataschema.as_deref(),
        Some("https://secbus.dev/schemas/events/auth.login.failed/v1.json")
    );
    assert!(stored(&raw, "globex", 0).await.is_empty());
    for entry in std::fs::read_dir(spool.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        let key = key_id();
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()));
    }
    let r = gate.refusals();
    assert_eq!(
        (r.unknown_event_type, r.schema_violation, r.secret_detected),
        (1, 1, 2)
    );
    bus.close().await.unwrap();
}
