//! `Bus::group_lag` on every engine: an unknown group is `not_found`; a group
//! started at the beginning is behind by what was stored; acks bring the lag
//! down and a delivery handed out but not acked stays in it as `unacked`.
//! NATS and Redis run on servers of the test's own.

use std::time::Duration;

use secbus::{
    Bus, BusConfig, ErrorKind, Event, EventType, GroupLag, StartAt, SubscribeOptions, Subscriber,
    Subscription, TenantId,
};
use secbus_test_servers::{NatsServer, RedisServer};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

async fn connect(url: &str) -> Bus {
    let spool = tempfile::tempdir().unwrap().keep();
    let config = BusConfig {
        spool_dir: spool,
        ..BusConfig::default()
    };
    Bus::connect_with(url, config).await.unwrap()
}

async fn next(sub: &mut Subscription) -> secbus::Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Ok(d))) => d,
        other => panic!("no delivery: {other:?}"),
    }
}

/// Waits until the lag satisfies `ok` (acks reach some engines in batches).
async fn lag_until(bus: &Bus, what: &str, ok: impl Fn(GroupLag) -> bool) -> GroupLag {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lag = bus.group_lag(&acme(), "lagging").await.unwrap();
        if ok(lag) {
            return lag;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: the lag stayed {lag:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lag_follows_the_group(bus: Bus) {
    let unknown = bus.group_lag(&acme(), "nobody").await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown}");
    for n in 0..5 {
        let event = Event::builder(EventType::new("auth.login.failed").unwrap(), acme())
            .data(json!({ "n": n }))
            .build()
            .unwrap();
        bus.publish(event).await.unwrap();
    }
    let mut sub = bus
        .subscribe(
            SubscribeOptions::group(acme(), "lagging")
                .start(StartAt::Beginning)
                .max_in_flight(1)
                .ack_wait(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    lag_until(&bus, "a new group", |l| l.total() == 5).await;

    for _ in 0..2 {
        next(&mut sub).await.ack().await.unwrap();
    }
    lag_until(&bus, "after two acks", |l| l.total() == 3).await;

    let held = next(&mut sub).await;
    let lag = lag_until(&bus, "one held", |l| l.total() == 3 && l.unacked >= 1).await;
    assert!(lag.waiting <= 2, "{lag:?}");
    held.ack().await.unwrap();
    lag_until(&bus, "after the third ack", |l| l.total() == 2).await;
    // Another tenant's group of the same name is another group.
    let other = TenantId::new("globex").unwrap();
    let err = bus.group_lag(&other, "lagging").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    drop(sub);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn memory() {
    lag_follows_the_group(connect("memory:").await).await;
}

#[tokio::test]
async fn embedded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().display());
    lag_follows_the_group(connect(&url).await).await;
}

#[tokio::test]
async fn embedded_reports_a_saved_group_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().display());
    let bus = connect(&url).await;
    for n in 0..3 {
        let event = Event::builder(EventType::new("auth.login.failed").unwrap(), acme())
            .data(json!({ "n": n }))
            .build()
            .unwrap();
        bus.publish(event).await.unwrap();
    }
    let mut sub = bus
        .subscribe(SubscribeOptions::group(acme(), "lagging").start(StartAt::Beginning))
        .await
        .unwrap();
    next(&mut sub).await.ack().await.unwrap();
    drop(sub);
    bus.close().await.unwrap();
    drop(bus);
    // No member runs now: the lag comes from the state saved in the file.
    let bus = connect(&url).await;
    let lag = bus.group_lag(&acme(), "lagging").await.unwrap();
    assert_eq!(lag.total(), 2, "{lag:?}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn nats() {
    let server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
    lag_follows_the_group(connect(&server.url()).await).await;
}

#[tokio::test]
async fn redis() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    lag_follows_the_group(connect(&server.url()).await).await;
}
