//! Dead letters: made when attempts run out or on `term`, listed per tenant,
//! redriven to their group only.

use std::time::Duration;

use chrono::Utc;

use crate::delivery::DeadLetter;
use crate::error::{ErrorKind, Result};
use crate::event::Event;
use crate::subscription::{StartAt, SubscribeOptions};
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event};
use crate::testkit::wait::{QUIET, next, nothing_more, nothing_within, take, take_acked, within};
use crate::{Bus, Subscriber};

fn only_dead_letter<'d>(dls: &'d [DeadLetter], event: &Event) -> &'d DeadLetter {
    let mine: Vec<&DeadLetter> = dls.iter().filter(|d| d.event.id == event.id).collect();
    assert_eq!(
        mine.len(),
        1,
        "expected one dead letter for event {}, found {}: {dls:?}",
        event.id,
        mine.len()
    );
    mine[0]
}

/// Checks what every dead letter must say about `delivered`, the event as the
/// group received it.
fn assert_dead_letter(dl: &DeadLetter, delivered: &Event, group: &str) {
    assert_eq!(&dl.event, delivered, "the dead letter's event");
    assert_eq!(dl.group, group);
    assert!(!dl.id.is_empty(), "a dead letter needs an id");
    assert_eq!(
        dl.published_at, delivered.time,
        "published_at is the event's time"
    );
    let published = dl.published_at.expect("a published event has a time");
    assert!(
        published <= dl.dead_at && dl.dead_at <= Utc::now(),
        "dead_at {} is not between the publish ({published}) and now",
        dl.dead_at
    );
}

pub(crate) async fn dead_letter_after_max_deliveries(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let ack_wait = Duration::from_millis(300);
    let mut sub = bus
        .subscribe(
            SubscribeOptions::group(t.clone(), "enrich")
                .max_deliveries(3)
                .ack_wait(ack_wait)
                .backoff(vec![Duration::from_millis(50)]),
        )
        .await?;

    // Nacked on every attempt.
    let e = event(&t, "auth.login.failed", 1);
    bus.publish(e.clone()).await?;
    let mut delivered = None;
    for attempt in 1..=3 {
        let d = next(&mut sub, &format!("attempt {attempt}")).await;
        assert_eq!((d.event().id.clone(), d.attempt()), (e.id.clone(), attempt));
        assert_eq!(d.is_last_attempt(), attempt == 3);
        delivered = Some(d.event().clone());
        d.nack(None, Some(&format!("lookup failed ({attempt})")))
            .await?;
    }
    nothing_within(&mut sub, Duration::from_millis(500), "after the last nack").await;
    let delivered = delivered.expect("three deliveries");
    let dls = bus.dead_letters(&t, 100).await?;
    let dl = only_dead_letter(&dls, &e);
    assert_dead_letter(dl, &delivered, "enrich");
    assert_eq!(dl.reason, "max_deliveries");
    assert_eq!(dl.attempts, 3);
    assert_eq!(dl.last_error.as_deref(), Some("lookup failed (3)"));

    // Left unsettled on every attempt: the ack wait runs out three times.
    let f = event(&t, "auth.login.failed", 2);
    bus.publish(f.clone()).await?;
    for attempt in 1..=3 {
        let d = next(&mut sub, &format!("unsettled attempt {attempt}")).await;
        assert_eq!((d.event().id.clone(), d.attempt()), (f.id.clone(), attempt));
        drop(d);
    }
    // The subscription is read meanwhile (it is where the bus may notice the
    // last ack wait ran out), by a task, so no read is ever cut short.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            let got = item.map(|d| (d.event().id.clone(), d.attempt()));
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    let dls = within("the unsettled event to become a dead letter", async {
        loop {
            tokio::time::sleep(ack_wait / 3).await;
            let dls = bus.dead_letters(&t, 100).await?;
            if dls.len() >= 2 {
                return Ok::<_, crate::Error>(dls);
            }
        }
    })
    .await?;
    tokio::time::sleep(QUIET).await;
    reader.abort();
    if let Ok(got) = rx.try_recv() {
        panic!("after the last ack wait the group delivered {got:?}");
    }
    assert_eq!(dls.len(), 2, "dead letters: {dls:?}");
    let dl = only_dead_letter(&dls, &f);
    assert_eq!(dl.event.id, f.id);
    assert_eq!(dl.group, "enrich");
    assert_eq!(dl.reason, "max_deliveries");
    assert_eq!(dl.attempts, 3);
    assert!(
        dl.last_error.is_some(),
        "a dead letter says what went wrong last"
    );
    assert!(
        dls[0].dead_at <= dls[1].dead_at,
        "dead letters are listed oldest first"
    );
    Ok(Verdict::Passed)
}

pub(crate) async fn term_dead_letters_immediately(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let mut sub = bus
        .subscribe(SubscribeOptions::group(t.clone(), "validate").max_deliveries(5))
        .await?;
    let e = event(&t, "auth.login.failed", 1);
    bus.publish(e.clone()).await?;
    let d = next(&mut sub, "the delivery to term").await;
    let delivered = d.event().clone();
    d.term("schema violation: missing user").await?;
    nothing_within(&mut sub, Duration::from_millis(500), "after term").await;
    let dls = bus.dead_letters(&t, 100).await?;
    let dl = only_dead_letter(&dls, &e);
    assert_dead_letter(dl, &delivered, "validate");
    assert_eq!(dl.reason, "terminated");
    assert_eq!(dl.attempts, 1);
    assert_eq!(
        dl.last_error.as_deref(),
        Some("schema violation: missing user")
    );

    // Term on a later attempt counts the attempts made.
    let f = event(&t, "auth.login.failed", 2);
    bus.publish(f.clone()).await?;
    let d = next(&mut sub, "the delivery to nack").await;
    d.nack(Some(Duration::ZERO), Some("transient")).await?;
    let d = next(&mut sub, "the redelivery to term").await;
    assert_eq!((d.event().id.clone(), d.attempt()), (f.id.clone(), 2));
    d.term("gave up").await?;
    nothing_within(
        &mut sub,
        Duration::from_millis(500),
        "after the second term",
    )
    .await;
    let dls = bus.dead_letters(&t, 100).await?;
    let dl = only_dead_letter(&dls, &f);
    assert_eq!((dl.reason.as_str(), dl.attempts), ("terminated", 2));
    Ok(Verdict::Passed)
}

async fn the_dead_letter(bus: &Bus, tenant: &crate::TenantId) -> Result<DeadLetter> {
    let dls = bus.dead_letters(tenant, 100).await?;
    assert_eq!(dls.len(), 1, "dead letters: {dls:?}");
    Ok(dls.into_iter().next().expect("one dead letter"))
}

pub(crate) async fn redrive(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let mut a = bus
        .subscribe(SubscribeOptions::group(t.clone(), "a"))
        .await?;
    let mut b = bus
        .subscribe(SubscribeOptions::group(t.clone(), "b"))
        .await?;
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;

    let e = event(&t, "edr.process.started", 1);
    bus.publish(e.clone()).await?;
    assert_eq!(next(&mut tail, "the tail").await.event().id, e.id);
    assert_eq!(take_acked(&mut b, 1, "group b").await?[0].id, e.id);
    let d = next(&mut a, "group a").await;
    assert_eq!(d.event().id, e.id);
    d.term("parser bug").await?;
    let dl = the_dead_letter(&bus, &t).await?;
    assert_eq!(dl.group, "a");

    let receipt = bus.redrive(&t, &dl.id).await?;
    assert_eq!(receipt.id, e.id);
    assert!(
        !receipt.duplicate,
        "a redrive is not a duplicate of the original"
    );
    let d = next(&mut a, "the redriven event in group a").await;
    assert_eq!(
        d.event(),
        &dl.event,
        "the redriven event is the dead letter's"
    );
    assert_eq!(d.attempt(), 1, "a redriven event starts its attempts again");
    d.ack().await?;
    assert!(
        bus.dead_letters(&t, 100).await?.is_empty(),
        "a redriven dead letter stayed in the dead letters"
    );
    let err = bus
        .redrive(&t, &dl.id)
        .await
        .expect_err("a dead letter was redriven twice");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    nothing_more(&mut [
        (&mut a, "group a after its redrive"),
        (&mut b, "group b, which acked the event"),
        (&mut tail, "the tail, which saw the event"),
    ])
    .await;

    if bus.capabilities().replay {
        // Replays see the event once: the redriven copy is for group a only.
        let mut late = bus
            .subscribe(SubscribeOptions::group(t.clone(), "c").start(StartAt::Beginning))
            .await?;
        let mut replay = bus
            .subscribe(SubscribeOptions::tail(t.clone()).start(StartAt::Beginning))
            .await?;
        assert_eq!(take_acked(&mut late, 1, "a new group").await?[0].id, e.id);
        assert_eq!(take(&mut replay, 1, "a replay").await[0].event().id, e.id);
        nothing_more(&mut [
            (&mut late, "a new group from the beginning"),
            (&mut replay, "a tail from the beginning"),
        ])
        .await;
    }

    // Deleting a dead letter removes it without delivering it.
    let f = event(&t, "edr.process.started", 2);
    bus.publish(f.clone()).await?;
    take_acked(&mut b, 1, "group b").await?;
    next(&mut a, "group a").await.term("unwanted").await?;
    let dl = the_dead_letter(&bus, &t).await?;
    assert!(bus.delete_dead_letter(&t, &dl.id).await?);
    assert!(!bus.delete_dead_letter(&t, &dl.id).await?);
    assert!(bus.dead_letters(&t, 100).await?.is_empty());
    nothing_more(&mut [(&mut a, "group a after a delete")]).await;
    Ok(Verdict::Passed)
}
