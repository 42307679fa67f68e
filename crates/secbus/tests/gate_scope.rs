//! The gate runs on every publish path and the scope binds a publisher to its tenant.

use std::sync::Arc;
use std::time::Duration;

use secbus::{
    Bus, Error, ErrorKind, Event, EventType, Gate, Publisher, Scope, StartAt, SubscribeOptions,
    Subscriber, TenantId,
};

struct RefuseBad;

impl Gate for RefuseBad {
    fn check(&self, event: &mut Event) -> secbus::Result<()> {
        if event.ty.as_str() == "x.bad" {
            return Err(
                Error::new(ErrorKind::UnknownEventType, "no schema for x.bad").with_field("type"),
            );
        }
        event.dataschema = Some(format!(
            "https://secbus.dev/schemas/events/{}/v1.json",
            event.ty
        ));
        Ok(())
    }
}

fn event(ty: &str, tenant: &str) -> Event {
    Event::builder(EventType::new(ty).unwrap(), TenantId::new(tenant).unwrap())
        .data(serde_json::json!({"n": 1}))
        .build()
        .unwrap()
}

async fn stored(bus: &Bus, tenant: &str) -> Vec<Event> {
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(TenantId::new(tenant).unwrap()).start(StartAt::Beginning))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), tail.next()).await {
        out.push(d.unwrap().event().clone());
    }
    out
}

#[tokio::test]
async fn the_gate_refuses_and_amends_on_every_publish_path() {
    let bus = Bus::connect("memory:")
        .await
        .unwrap()
        .with_gate(Arc::new(RefuseBad));
    let err = bus.publish(event("x.bad", "acme")).await.unwrap_err();
    assert_eq!(err.code(), "unknown_event_type");
    let err = bus
        .publish_batch(vec![event("x.good", "acme"), event("x.bad", "acme")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownEventType);
    assert!(
        stored(&bus, "acme").await.is_empty(),
        "a refused batch stores nothing"
    );

    bus.publish(event("x.good", "acme")).await.unwrap();
    let events = stored(&bus, "acme").await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].dataschema.as_deref(),
        Some("https://secbus.dev/schemas/events/x.good/v1.json")
    );
}

#[tokio::test]
async fn a_scoped_publisher_cannot_publish_for_another_tenant() {
    let bus = Bus::connect("memory:").await.unwrap();
    let acme = bus.publisher(Scope::Tenant(TenantId::new("acme").unwrap()));
    let err = acme.publish(event("x.good", "globex")).await.unwrap_err();
    assert_eq!(err.code(), "tenant_mismatch");
    assert_eq!(err.field(), Some("tenantid"));
    let err = acme
        .publish_batch(vec![event("x.good", "acme"), event("x.good", "globex")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TenantMismatch);
    assert!(stored(&bus, "globex").await.is_empty());
    assert!(stored(&bus, "acme").await.is_empty());

    acme.publish(event("x.good", "acme")).await.unwrap();
    assert_eq!(stored(&bus, "acme").await.len(), 1);
    let admin = bus.publisher(Scope::Admin);
    admin.publish(event("x.good", "globex")).await.unwrap();
    assert_eq!(stored(&bus, "globex").await.len(), 1);
}
