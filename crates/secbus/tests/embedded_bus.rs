//! The embedded engine through the Bus API behaves like the memory engine:
//! groups share work, tails see everything, nacks redeliver, dead letters
//! happen after the last attempt; and a second engine on the same directory
//! (as another process would) sees what the first one publishes.
#![cfg(feature = "embedded")]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use secbus::{
    Bus, Delivery, Event, EventId, EventType, StartAt, SubscribeOptions, Subscriber, Subscription,
    TenantId,
};
use serde_json::json;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn event(tenant: &TenantId, ty: &str, n: usize) -> Event {
    Event::builder(EventType::new(ty).unwrap(), tenant.clone())
        .source("tests/embedded")
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

async fn open() -> (tempfile::TempDir, Bus) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::connect(&format!("embedded:{}", dir.path().display()))
        .await
        .unwrap();
    (dir, bus)
}

async fn next(sub: &mut Subscription) -> Delivery {
    timeout(WAIT, sub.next())
        .await
        .expect("a delivery within the wait")
        .expect("the subscription is open")
        .expect("a delivery, not an error")
}

async fn assert_quiet(sub: &mut Subscription) {
    if let Ok(Some(d)) = timeout(Duration::from_millis(300), sub.next()).await {
        panic!(
            "nothing more expected, got {:?}",
            d.map(|d| d.event().id.clone())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_the_work_and_tails_see_everything() {
    let (_dir, bus) = open().await;
    let acme = tenant("acme");
    let globex = tenant("globex");
    let mut a = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "workers"))
        .await
        .unwrap();
    let mut b = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "workers"))
        .await
        .unwrap();
    let mut audit = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "audit"))
        .await
        .unwrap();
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()))
        .await
        .unwrap();
    let mut other = bus
        .subscribe(SubscribeOptions::tail(globex.clone()))
        .await
        .unwrap();
    let mut sent = Vec::new();
    for n in 0..200 {
        sent.push(bus.publish(event(&acme, "auth.login", n)).await.unwrap().id);
    }
    // Tail: every event, in order.
    for id in &sent {
        let d = next(&mut tail).await;
        assert_eq!(&d.event().id, id);
        assert_eq!(d.attempt(), 1);
        d.ack().await.unwrap();
    }
    // Fan-out: the other group sees every event too.
    for id in &sent {
        let d = next(&mut audit).await;
        assert_eq!(&d.event().id, id);
        d.ack().await.unwrap();
    }
    // Work sharing: each event to exactly one member.
    let mut seen: HashMap<EventId, usize> = HashMap::new();
    let mut from_b = 0;
    while seen.len() < sent.len() {
        let d = tokio::select! {
            d = next(&mut a) => d,
            d = next(&mut b) => { from_b += 1; d }
        };
        *seen.entry(d.event().id.clone()).or_default() += 1;
        d.ack().await.unwrap();
    }
    assert!(seen.values().all(|&c| c == 1));
    assert!(from_b > 0, "both members got work");
    assert_quiet(&mut a).await;
    assert_quiet(&mut b).await;
    assert_quiet(&mut other).await;
    bus.close().await.unwrap();
    assert!(
        timeout(WAIT, tail.next()).await.unwrap().is_none(),
        "close ends streams"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_then_the_last_attempt_goes_to_the_dead_letters() {
    let (_dir, bus) = open().await;
    let acme = tenant("acme");
    let mut workers = bus
        .subscribe(
            SubscribeOptions::group(acme.clone(), "workers")
                .max_deliveries(3)
                .backoff(vec![Duration::from_millis(20)]),
        )
        .await
        .unwrap();
    let id = bus.publish(event(&acme, "auth.login", 1)).await.unwrap().id;
    for attempt in 1..=3 {
        let d = next(&mut workers).await;
        assert_eq!(d.event().id, id);
        assert_eq!(d.attempt(), attempt);
        d.nack(None, Some("downstream timed out")).await.unwrap();
    }
    assert_quiet(&mut workers).await;
    let dls = bus.dead_letters(&acme, 10).await.unwrap();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].event.id, id);
    assert_eq!(dls[0].attempts, 3);
    assert_eq!(dls[0].reason, "max_deliveries");
    assert_eq!(dls[0].last_error.as_deref(), Some("downstream timed out"));
    // Redriven: only this group gets it; a tail does not.
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()))
        .await
        .unwrap();
    let mut others = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "others"))
        .await
        .unwrap();
    bus.redrive(&acme, &dls[0].id).await.unwrap();
    let d = next(&mut workers).await;
    assert_eq!(d.event().id, id);
    assert_eq!(d.attempt(), 1);
    d.ack().await.unwrap();
    assert_quiet(&mut tail).await;
    assert_quiet(&mut others).await;
    assert!(bus.dead_letters(&acme, 10).await.unwrap().is_empty());
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_delivery_comes_back_after_the_ack_wait() {
    let (_dir, bus) = open().await;
    let acme = tenant("acme");
    let mut workers = bus
        .subscribe(
            SubscribeOptions::group(acme.clone(), "workers").ack_wait(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let id = bus.publish(event(&acme, "auth.login", 1)).await.unwrap().id;
    let first = next(&mut workers).await;
    assert_eq!(first.attempt(), 1);
    drop(first);
    let again = next(&mut workers).await;
    assert_eq!(again.event().id, id);
    assert_eq!(again.attempt(), 2);
    again.ack().await.unwrap();
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_filters_and_partition_key_order() {
    let (_dir, bus) = open().await;
    let acme = tenant("acme");
    let mut logins = bus
        .subscribe(
            SubscribeOptions::group(acme.clone(), "logins")
                .types("auth.login.*".parse().unwrap())
                .start(StartAt::Beginning),
        )
        .await
        .unwrap();
    let mut keyed = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "keyed").max_in_flight(64))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for n in 0..30 {
        let ty = if n % 3 == 0 {
            "auth.login.failed"
        } else {
            "net.flow"
        };
        let e = Event::builder(EventType::new(ty).unwrap(), acme.clone())
            .partition_key(format!("host-{}", n % 2))
            .data(json!({ "n": n }))
            .build()
            .unwrap();
        if n % 3 == 0 {
            expected.push(e.id.clone());
        }
        bus.publish(e).await.unwrap();
    }
    for id in &expected {
        let d = next(&mut logins).await;
        assert_eq!(&d.event().id, id);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut logins).await;
    // Per key: one in flight, in publish order, even with deliveries held.
    let mut last: HashMap<String, usize> = HashMap::new();
    let mut held: Vec<Delivery> = Vec::new();
    let mut done = 0;
    while done < 30 {
        let d = next(&mut keyed).await;
        let key = d.event().partitionkey.clone().unwrap();
        let n = d.event().data().unwrap()["n"].as_u64().unwrap() as usize;
        assert!(
            held.iter()
                .all(|h| h.event().partitionkey.as_deref() != Some(&key)),
            "two deliveries of key {key} in flight"
        );
        if let Some(prev) = last.insert(key, n) {
            assert!(prev < n, "key order broken: {prev} then {n}");
        }
        held.push(d);
        if held.len() == 2 {
            for d in held.drain(..) {
                d.ack().await.unwrap();
                done += 1;
            }
        }
    }
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_each_event_once_to_the_group() {
    let (_dir, bus) = open().await;
    let acme = tenant("acme");
    let mut workers = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "workers"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let bus = bus.clone();
        let acme = acme.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..250 {
                ids.push(
                    bus.publish(event(&acme, "auth.login", t * 1000 + n))
                        .await
                        .unwrap()
                        .id,
                );
            }
            ids
        }));
    }
    let mut sent = HashSet::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    let mut got = HashSet::new();
    while got.len() < sent.len() {
        let d = next(&mut workers).await;
        assert!(got.insert(d.event().id.clone()), "delivered twice");
        d.ack().await.unwrap();
    }
    assert_eq!(got, sent);
    assert_quiet(&mut workers).await;
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_on_the_same_directory_tails_what_the_first_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().display());
    let acme = tenant("acme");
    let writer = Bus::connect(&url).await.unwrap();
    let before = writer
        .publish(event(&acme, "auth.login", 0))
        .await
        .unwrap()
        .id;
    // Another engine instance has its own cache and writer, as another process would.
    let reader = Bus::connect(&url).await.unwrap();
    let mut tail = reader
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Beginning))
        .await
        .unwrap();
    assert_eq!(next(&mut tail).await.event().id, before);
    let mut live = Vec::new();
    for n in 1..50 {
        live.push(writer.publish(event(&acme, "auth.login", n)).await.unwrap());
    }
    for r in &live {
        let d = next(&mut tail).await;
        assert_eq!(d.event().id, r.id);
        assert_eq!(Some(d.sequence()), r.sequence);
    }
    // Both publish: sequences never collide, and each sees the other's events.
    let mine = reader
        .publish(event(&acme, "auth.login", 100))
        .await
        .unwrap();
    let theirs = writer
        .publish(event(&acme, "auth.login", 101))
        .await
        .unwrap();
    assert!(mine.sequence.unwrap() > live.last().unwrap().sequence.unwrap());
    assert!(theirs.sequence.unwrap() > mine.sequence.unwrap());
    assert_eq!(next(&mut tail).await.event().id, mine.id);
    assert_eq!(next(&mut tail).await.event().id, theirs.id);
    let mut writer_tail = writer
        .subscribe(
            SubscribeOptions::tail(acme.clone()).start(StartAt::Sequence(mine.sequence.unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut writer_tail).await.event().id, mine.id);
    assert_eq!(next(&mut writer_tail).await.event().id, theirs.id);
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}
