//! A stalled consumer: nothing buffers without bound.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::delivery::Delivery;
use crate::error::{ErrorKind, Result};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event, ty};
use crate::testkit::wait::{QUIET, WAIT, take, take_acked, within};
use crate::{Bus, Event, Publisher, Subscriber};

/// Fails if `sub` hands out another delivery while `held` are unsettled.
async fn assert_holds_at_most(sub: &mut Subscription, held: usize) {
    if let Ok(item) = tokio::time::timeout(QUIET, sub.next()).await {
        let what = match item {
            Some(Ok(d)) => format!("event {}", d.event().id),
            Some(Err(e)) => format!("the error {e}"),
            None => "the end".to_owned(),
        };
        panic!("a member holding {held} unsettled deliveries (its max_in_flight) got {what}");
    }
}

/// The history of an in-memory log (`BusConfig::memory_history`; other engines
/// ignore it).
const HISTORY: usize = 32;

pub(crate) async fn backpressure(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open_with(|c| c.memory_history = HISTORY).await?;
    if bus.capabilities().publish_waits_for_stalled_groups {
        publisher_waits(bus).await
    } else {
        log_absorbs(bus).await
    }
}

/// An in-memory log: once its history is full of events a stalled group has
/// not settled, `try_publish` fails with `full` and `publish` waits for an ack;
/// events caused by a held delivery have a bounded reserve.
async fn publisher_waits(bus: Bus) -> Result<Verdict> {
    const IN_FLIGHT: usize = 4;
    let t = acme();
    let mut stalled = bus
        .subscribe(SubscribeOptions::group(t.clone(), "stalled").max_in_flight(IN_FLIGHT))
        .await?;
    for n in 0..HISTORY as u64 {
        bus.try_publish(event(&t, "edr.process.started", n)).await?;
    }
    let mut held = take(&mut stalled, IN_FLIGHT, "the stalled member").await;
    assert_holds_at_most(&mut stalled, IN_FLIGHT).await;

    let over = event(&t, "edr.process.started", HISTORY as u64);
    let err = bus
        .try_publish(over.clone())
        .await
        .expect_err("try_publish grew the history past its bound");
    assert_eq!(err.kind(), ErrorKind::Full, "{err}");
    assert_eq!(err.code(), "full");

    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish(over).await }
    });
    tokio::time::sleep(QUIET).await;
    assert!(
        !waiting.is_finished(),
        "publish did not wait for the stalled group"
    );
    held.remove(0).ack().await?;
    let receipt = within("publish to go on after an ack", waiting)
        .await
        .expect("the publisher panicked")?;
    assert!(
        !receipt.duplicate,
        "a refused try_publish kept the event's id"
    );

    // What a member publishes in reaction to a delivery it holds (caused by
    // it) has a reserve of a quarter of the history: it does not wait on the
    // member's own acks. The reserve is bounded too.
    let reaction = |n: u64| {
        Event::builder(ty("edr.process.flagged"), t.clone())
            .source("secbus-conformance")
            .data(serde_json::json!({ "n": n }))
            .caused_by(held[0].event())
            .build()
            .expect("a valid event")
    };
    let reserve = HISTORY as u64 / 4;
    for n in 0..reserve {
        bus.try_publish(reaction(n))
            .await
            .expect("a caused event waited for the acks of the member it reacts to");
    }
    let err = bus
        .try_publish(reaction(reserve))
        .await
        .expect_err("caused events grew the history past its reserve");
    assert_eq!(err.kind(), ErrorKind::Full, "{err}");

    for d in held {
        d.ack().await?;
    }
    let rest = HISTORY + 1 + reserve as usize - IN_FLIGHT;
    let got = take_acked(&mut stalled, rest, "the rest, once the member goes on").await?;
    let distinct: HashSet<_> = got.iter().map(|e| e.id.clone()).collect();
    assert_eq!(distinct.len(), rest, "events were lost or repeated");
    Ok(Verdict::Passed)
}

/// A log on disk: publishers go on while a stalled member holds no more than
/// its `max_in_flight`, and every event is delivered once it moves again.
async fn log_absorbs(bus: Bus) -> Result<Verdict> {
    const EVENTS: u64 = 5_000;
    const IN_FLIGHT: usize = 8;
    let t = acme();
    let mut sub = bus
        .subscribe(SubscribeOptions::group(t.clone(), "stalled").max_in_flight(IN_FLIGHT))
        .await?;
    let held: Arc<parking_lot::Mutex<Vec<Delivery>>> = Arc::default();
    let seen: Arc<parking_lot::Mutex<HashSet<String>>> = Arc::default();
    let (release, mut released) = watch::channel(false);
    let consumer = tokio::spawn({
        let held = held.clone();
        let seen = seen.clone();
        async move {
            while let Some(Ok(d)) = sub.next().await {
                seen.lock().insert(d.event().id.as_str().to_owned());
                if *released.borrow_and_update() {
                    if d.ack().await.is_err() {
                        return;
                    }
                } else {
                    held.lock().push(d);
                }
            }
        }
    });

    within("5,000 publishes past a stalled member", async {
        for n in 0..EVENTS {
            bus.publish(event(&t, "edr.process.started", n)).await?;
        }
        Ok::<_, crate::Error>(())
    })
    .await?;
    within("the member to fill its in-flight window", async {
        while held.lock().len() < IN_FLIGHT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let holding = held.lock().len();
    assert_eq!(
        holding, IN_FLIGHT,
        "a member with max_in_flight {IN_FLIGHT} holds {holding} unsettled deliveries"
    );

    release.send_replace(true);
    let stuck: Vec<Delivery> = std::mem::take(&mut *held.lock());
    for d in stuck {
        d.ack().await?;
    }
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while seen.lock().len() < EVENTS as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {EVENTS} events delivered once the member moved again",
            seen.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.abort();
    Ok(Verdict::Passed)
}
