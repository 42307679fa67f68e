//! What the fallback tests share: a memory engine that can be switched off,
//! test events numbered by `n`, and a group consumer that checks nothing
//! arrives twice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secbus::testkit::outage::OutageEngine;
use secbus::{
    Bus, BusConfig, Event, EventType, SubscribeOptions, Subscriber, Subscription, TenantId,
};
use tokio::time::timeout;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

pub(crate) fn event(n: u64) -> Event {
    Event::builder(EventType::new("auth.login.failed").unwrap(), acme())
        .data(serde_json::json!({"n": n, "user": "bob", "ip": "203.0.113.9"}))
        .build()
        .unwrap()
}

pub(crate) fn config(spool: &Path) -> BusConfig {
    BusConfig {
        spool_dir: spool.to_owned(),
        ..BusConfig::default()
    }
}

pub(crate) async fn outage_bus(config: BusConfig) -> (Bus, Arc<OutageEngine>) {
    let engine = Arc::new(OutageEngine::open("memory:", &config).await.unwrap());
    let bus = Bus::from_engine(engine.clone(), "memory:", config);
    (bus, engine)
}

pub(crate) async fn group(bus: &Bus) -> Subscription {
    bus.subscribe(SubscribeOptions::group(acme(), "workers"))
        .await
        .unwrap()
}

/// Takes and acks `count` deliveries, then checks no further one comes.
pub(crate) async fn consume(sub: &mut Subscription, count: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let delivery = timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", out.len()))
            .expect("the subscription ended")
            .expect("a delivery failed");
        out.push(delivery.event().clone());
        delivery.ack().await.unwrap();
    }
    let extra = timeout(Duration::from_millis(300), sub.next()).await;
    assert!(
        extra.is_err(),
        "an event was delivered more than once: {extra:?}"
    );
    out
}

/// The `n` of each event, in order.
pub(crate) fn numbers(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.data().unwrap()["n"].as_u64().unwrap())
        .collect()
}
