//! What survives a close and a restart.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::{ErrorKind, Result};
use crate::event::Event;
use crate::subscription::{StartAt, SubscribeOptions};
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event, ids, pattern, sorted_ids};
use crate::testkit::wait::{next, next_item, nothing_more, take, take_acked};
use crate::{Publisher, Subscriber};

/// The ack wait of groups that live through a restart: deliveries unsettled
/// at the restart come back after it.
const RESTART_ACK_WAIT: Duration = Duration::from_secs(1);

pub(crate) async fn persistence_across_restart(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let caps = bus.capabilities();
    if !caps.persistent {
        return Ok(Verdict::NotSupported("persistent"));
    }
    let t = acme();
    // What is in flight at the restart comes back after the ack wait: keep it
    // short, as engines that keep deliveries on a server only redeliver then.
    let keep = SubscribeOptions::group(t.clone(), "keep")
        .types(pattern("auth.>"))
        .ack_wait(RESTART_ACK_WAIT);
    let poison = SubscribeOptions::group(t.clone(), "poison").types(pattern("audit.>"));
    let mut sub = bus.subscribe(keep.clone()).await?;
    let mut poisoned = bus.subscribe(poison.clone()).await?;

    let mut sent: Vec<Event> = (0..20).map(|n| event(&t, "auth.login.failed", n)).collect();
    let mut last_seq = 0;
    for e in &sent {
        last_seq = bus.publish(e.clone()).await?.sequence.expect("a sequence");
    }
    let bad = event(&t, "audit.record.broken", 99);
    last_seq = last_seq.max(
        bus.publish(bad.clone())
            .await?
            .sequence
            .expect("a sequence"),
    );
    next(&mut poisoned, "the poison event")
        .await
        .term("unreadable")
        .await?;
    let acked = take_acked(&mut sub, 10, "the first half").await?;
    drop(sub);
    drop(poisoned);

    let bus = cx.reopen(bus).await?;
    sent.push(bad.clone());
    let mut replay = bus
        .subscribe(SubscribeOptions::tail(t.clone()).start(StartAt::Beginning))
        .await?;
    let got: Vec<Event> = take(&mut replay, sent.len(), "the log after a restart")
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(ids(&got), ids(&sent), "the log after a restart");
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(
            g.data_raw(),
            s.data_raw(),
            "event {} changed in the restart",
            s.id
        );
    }
    nothing_more(&mut [(&mut replay, "the log after a restart")]).await;

    let dls = bus.dead_letters(&t, 100).await?;
    assert_eq!(dls.len(), 1, "dead letters after a restart: {dls:?}");
    assert_eq!(dls[0].event.id, bad.id);
    assert_eq!(dls[0].reason, "terminated");

    // Republishing after a restart (what a producer does when unsure) is safe.
    let again = bus.publish(sent[0].clone()).await?;
    assert!(
        again.duplicate,
        "the dedup window was forgotten in the restart"
    );
    let new = event(&t, "auth.login.failed", 100);
    let seq = bus
        .publish(new.clone())
        .await?
        .sequence
        .expect("a sequence");
    assert!(
        seq > last_seq,
        "sequence {seq} reused after a restart (had {last_seq})"
    );

    if !caps.durable_groups {
        println!("not supported: durable_groups (group positions after a restart)");
        return Ok(Verdict::Passed);
    }
    let mut sub = bus.subscribe(keep).await?;
    let acked: HashSet<String> = ids(&acked).into_iter().collect();
    let mut rest: Vec<Event> = sent[..20]
        .iter()
        .filter(|e| !acked.contains(e.id.as_str()))
        .cloned()
        .collect();
    rest.push(new);
    let got = take_acked(&mut sub, rest.len(), "the group resuming after a restart").await?;
    assert_eq!(
        sorted_ids(&got),
        sorted_ids(&rest),
        "the group did not resume where it acknowledged"
    );
    let mut poisoned = bus.subscribe(poison).await?;
    nothing_more(&mut [
        (&mut sub, "the group after a restart"),
        (&mut poisoned, "the group whose event is a dead letter"),
    ])
    .await;
    Ok(Verdict::Passed)
}

pub(crate) async fn graceful_shutdown(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let caps = bus.capabilities();
    let t = acme();
    let options = SubscribeOptions::group(t.clone(), "shutdown").ack_wait(RESTART_ACK_WAIT);
    let mut group = bus.subscribe(options.clone()).await?;
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;
    let sent: Vec<Event> = (0..11).map(|n| event(&t, "auth.login.failed", n)).collect();
    for e in &sent {
        bus.publish(e.clone()).await?;
    }
    take(&mut tail, sent.len(), "the tail").await;
    // Ten acked right before the close, one left in flight.
    let deliveries = take(&mut group, sent.len(), "the group").await;
    let mut deliveries = deliveries.into_iter();
    let held = deliveries.next().expect("eleven deliveries");
    let unacked = held.event().clone();
    for d in deliveries {
        d.ack().await?;
    }
    bus.close().await?;
    drop(held);

    for (what, sub) in [("group", &mut group), ("tail", &mut tail)] {
        match next_item(sub, &format!("the {what} to end on close")).await {
            None => {}
            Some(Ok(d)) => panic!("a {what} got event {} after the close", d.event().id),
            Some(Err(e)) => panic!("a {what} ended with {e} instead of None on close"),
        }
    }
    let e = event(&t, "auth.login.failed", 99);
    let refused = [
        ("publish", bus.publish(e.clone()).await.err()),
        ("try_publish", bus.try_publish(e.clone()).await.err()),
        (
            "publish_batch",
            bus.publish_batch(vec![e.clone()]).await.err(),
        ),
        ("subscribe", bus.subscribe(options.clone()).await.err()),
    ];
    for (how, err) in refused {
        let err = err.unwrap_or_else(|| panic!("{how} worked on a closed bus"));
        assert_eq!(
            err.kind(),
            ErrorKind::Closed,
            "{how} on a closed bus: {err}"
        );
    }

    if !caps.durable_groups {
        return Ok(Verdict::Passed);
    }
    let bus = cx.reopen(bus).await?;
    let mut group = bus.subscribe(options).await?;
    let d = next(&mut group, "the delivery left in flight at the close").await;
    assert_eq!(
        d.event().id,
        unacked.id,
        "an acked event came back after a restart"
    );
    d.ack().await?;
    nothing_more(&mut [(&mut group, "the group after a restart: acks were lost")]).await;
    let live = event(&t, "auth.login.failed", 100);
    bus.publish(live.clone()).await?;
    assert_eq!(
        take_acked(&mut group, 1, "a new event").await?[0].id,
        live.id
    );
    Ok(Verdict::Passed)
}
