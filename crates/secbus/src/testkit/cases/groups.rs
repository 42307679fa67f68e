//! Consumer groups: work shared within a group, every event to every group,
//! order per partition key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Subscriber;
use crate::bus::Bus;
use crate::error::Result;
use crate::event::{Event, EventId};
use crate::subscription::SubscribeOptions;
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event, ids, keyed, n_of, sorted_ids};
use crate::testkit::wait::{QUIET, next, nothing_more, take, take_acked, within};

/// What a member task reports for each delivery it settled.
struct Settled {
    member: usize,
    id: EventId,
    attempt: u32,
}

/// Runs `members` members of `options`' group, each acking after `work`, and
/// reporting every delivery.
async fn spawn_members(
    bus: &Bus,
    options: SubscribeOptions,
    members: usize,
    work: Duration,
) -> Result<(Vec<JoinHandle<()>>, mpsc::UnboundedReceiver<Settled>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for member in 0..members {
        let mut sub = bus.subscribe(options.clone()).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(d)) = sub.next().await {
                tokio::time::sleep(work).await;
                let settled = Settled {
                    member,
                    id: d.event().id.clone(),
                    attempt: d.attempt(),
                };
                if d.ack().await.is_err() || tx.send(settled).is_err() {
                    return;
                }
            }
        }));
    }
    Ok((tasks, rx))
}

pub(crate) async fn group_work_sharing(cx: &Cx<'_>) -> Result<Verdict> {
    const EVENTS: usize = 300;
    const MEMBERS: usize = 3;
    let bus = cx.open().await?;
    let t = acme();
    // One delivery at a time per member, each taking a moment: the others must
    // get work meanwhile.
    let options = SubscribeOptions::group(t.clone(), "workers").max_in_flight(1);
    let (tasks, mut settled) =
        spawn_members(&bus, options, MEMBERS, Duration::from_millis(1)).await?;

    let mut sent = HashSet::new();
    for n in 0..EVENTS as u64 {
        let e = event(&t, "edr.process.started", n);
        sent.insert(e.id.clone());
        bus.publish(e).await?;
    }
    let mut per_member = [0usize; MEMBERS];
    let mut got = HashSet::new();
    while got.len() < EVENTS {
        let s = within(
            &format!("the group's deliveries ({} of {EVENTS} so far)", got.len()),
            settled.recv(),
        )
        .await
        .expect("the members stopped");
        assert_eq!(s.attempt, 1, "event {} was delivered again", s.id);
        assert!(
            got.insert(s.id.clone()),
            "event {} went to two members",
            s.id
        );
        per_member[s.member] += 1;
    }
    assert_eq!(
        got, sent,
        "the group did not get exactly the events published"
    );
    if let Ok(Some(s)) = tokio::time::timeout(QUIET, settled.recv()).await {
        panic!("event {} was delivered again (attempt {})", s.id, s.attempt);
    }
    for (member, n) in per_member.iter().enumerate() {
        assert!(
            *n > 0,
            "member {member} got no work: {per_member:?} of {EVENTS} events"
        );
    }
    tasks.iter().for_each(JoinHandle::abort);
    Ok(Verdict::Passed)
}

pub(crate) async fn fan_out_across_groups(cx: &Cx<'_>) -> Result<Verdict> {
    const EVENTS: u64 = 100;
    let bus = cx.open().await?;
    let t = acme();
    let mut alerting = bus
        .subscribe(SubscribeOptions::group(t.clone(), "alerting"))
        .await?;
    let mut audit = bus
        .subscribe(SubscribeOptions::group(t.clone(), "audit"))
        .await?;
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;
    let (tasks, mut detection) = spawn_members(
        &bus,
        SubscribeOptions::group(t.clone(), "detection"),
        2,
        Duration::ZERO,
    )
    .await?;

    let sent: Vec<Event> = (0..EVENTS)
        .map(|n| event(&t, "auth.login.failed", n))
        .collect();
    for e in &sent {
        bus.publish(e.clone()).await?;
    }
    for (name, sub) in [("alerting", &mut alerting), ("audit", &mut audit)] {
        let got = take_acked(sub, sent.len(), &format!("group {name}")).await?;
        assert_eq!(sorted_ids(&got), sorted_ids(&sent), "group {name}");
    }
    let tailed: Vec<Event> = take(&mut tail, sent.len(), "the tail")
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(
        ids(&tailed),
        ids(&sent),
        "the tail sees every event in order"
    );
    let mut got = HashSet::new();
    while got.len() < sent.len() {
        let s = within("group detection", detection.recv())
            .await
            .expect("the members stopped");
        assert!(
            got.insert(s.id.clone()),
            "event {} twice in detection",
            s.id
        );
    }
    nothing_more(&mut [
        (&mut alerting, "group alerting"),
        (&mut audit, "group audit"),
        (&mut tail, "the tail"),
    ])
    .await;
    if let Ok(Some(s)) = tokio::time::timeout(QUIET, detection.recv()).await {
        panic!("event {} twice in detection", s.id);
    }
    tasks.iter().for_each(JoinHandle::abort);
    Ok(Verdict::Passed)
}

/// The partition keys of the ordering case, and events per key.
const KEYS: [&str; 4] = ["host-a", "host-b", "host-c", "host-d"];
const PER_KEY: u64 = 40;

/// What the members of the ordering case saw, under one lock.
#[derive(Default)]
struct OrderLog {
    /// Keys with a delivery being processed.
    in_flight: HashSet<String>,
    most_keys_at_once: usize,
    /// Per key, the `n`s in the order they were processed.
    processed: HashMap<String, Vec<u64>>,
    total: usize,
    violations: Vec<String>,
}

pub(crate) async fn order_per_partition_key(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    // Where the engine declares order within a member only, the same checks run
    // on one member, which still works on several keys at once.
    let member_count = if bus.capabilities().key_order_across_members {
        3
    } else {
        1
    };
    let t = acme();
    let log = Arc::new(parking_lot::Mutex::new(OrderLog::default()));
    let done = Arc::new(tokio::sync::Notify::new());
    let options = SubscribeOptions::group(t.clone(), "ordered").max_in_flight(8);
    let mut members = Vec::new();
    for _ in 0..member_count {
        let mut sub = bus.subscribe(options.clone()).await?;
        let log = log.clone();
        let done = done.clone();
        // Each delivery is processed in a task of its own, so a member works on
        // several events at once: only the partition key may serialize them.
        members.push(tokio::spawn(async move {
            while let Some(Ok(d)) = sub.next().await {
                let log = log.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let e = d.event();
                    let key = e.partitionkey.clone().unwrap_or_default();
                    {
                        let mut l = log.lock();
                        if !l.in_flight.insert(key.clone()) {
                            let msg = format!("two events of key {key} in flight at once");
                            l.violations.push(msg);
                        }
                        l.most_keys_at_once = l.most_keys_at_once.max(l.in_flight.len());
                        l.processed.entry(key.clone()).or_default().push(n_of(e));
                    }
                    let pause = 1 + rand::random::<u64>() % 3;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    {
                        let mut l = log.lock();
                        l.in_flight.remove(&key);
                        l.total += 1;
                    }
                    // The key is released before the ack: once acked, the next
                    // event of the key may be handed out at once.
                    let _ = d.ack().await;
                    done.notify_one();
                });
            }
        }));
    }

    for n in 0..PER_KEY {
        for key in KEYS {
            bus.publish(keyed(&t, key, n)).await?;
        }
    }
    let expected = KEYS.len() * PER_KEY as usize;
    within("every keyed event to be processed", async {
        while log.lock().total < expected {
            let _ = tokio::time::timeout(Duration::from_millis(50), done.notified()).await;
        }
    })
    .await;
    tokio::time::sleep(QUIET).await;
    members.iter().for_each(JoinHandle::abort);

    check_order(&log.lock(), expected);
    retry_holds_the_key(&bus).await?;
    Ok(Verdict::Passed)
}

fn check_order(l: &OrderLog, expected: usize) {
    assert!(
        l.violations.is_empty(),
        "{} violations of the partition key order, first: {:?}",
        l.violations.len(),
        &l.violations[..l.violations.len().min(3)]
    );
    assert_eq!(l.total, expected, "events were processed more than once");
    for key in KEYS {
        let got = l.processed.get(key).cloned().unwrap_or_default();
        let want: Vec<u64> = (0..PER_KEY).collect();
        assert_eq!(got, want, "key {key} was not processed in publish order");
    }
    assert!(
        l.most_keys_at_once >= 2,
        "different partition keys never ran at the same time"
    );
}

/// A key's next event waits while an earlier one waits for its retry; other
/// keys go on.
async fn retry_holds_the_key(bus: &Bus) -> Result<()> {
    let t = acme();
    let mut sub = bus
        .subscribe(
            SubscribeOptions::group(t.clone(), "retry-order")
                .max_in_flight(8)
                .max_deliveries(5),
        )
        .await?;
    let (x0, x1, y0) = (keyed(&t, "x", 0), keyed(&t, "x", 1), keyed(&t, "y", 0));
    for e in [&x0, &x1, &y0] {
        bus.publish(e.clone()).await?;
    }
    let mut first = take(&mut sub, 2, "the first event of each key").await;
    first.sort_by_key(|d| d.event().partitionkey.clone());
    let got: Vec<&EventId> = first.iter().map(|d| &d.event().id).collect();
    assert_eq!(
        got,
        [&x0.id, &y0.id],
        "the second event of a key was handed out while the first was in flight"
    );
    let mut first = first.into_iter();
    let (dx, dy) = (first.next().expect("x0"), first.next().expect("y0"));
    dx.nack(Some(Duration::from_millis(300)), Some("retry later"))
        .await?;
    dy.ack().await?;
    let d = next(&mut sub, "the retried first event of key x").await;
    assert_eq!(
        d.event().id,
        x0.id,
        "the second event of key x overtook the first while it waited for a retry"
    );
    assert_eq!(d.attempt(), 2);
    d.ack().await?;
    let d = next(&mut sub, "the second event of key x").await;
    assert_eq!(d.event().id, x1.id);
    d.ack().await?;
    nothing_more(&mut [(&mut sub, "the group after both keys")]).await;
    Ok(())
}

pub(crate) async fn group_keeps_position_without_members(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let options = SubscribeOptions::group(t.clone(), "audit");
    let mut sub = bus.subscribe(options.clone()).await?;
    let before: Vec<Event> = (0..5).map(|n| event(&t, "audit.user.created", n)).collect();
    for e in &before {
        bus.publish(e.clone()).await?;
    }
    take_acked(&mut sub, before.len(), "the group's first events").await?;
    drop(sub);
    // Published while the group has no member: kept for it.
    let during: Vec<Event> = (5..10)
        .map(|n| event(&t, "audit.user.created", n))
        .collect();
    for e in &during {
        bus.publish(e.clone()).await?;
    }
    let mut sub = bus.subscribe(options.clone()).await?;
    let got = take_acked(&mut sub, during.len(), "events published with no member").await?;
    assert_eq!(
        sorted_ids(&got),
        sorted_ids(&during),
        "a returning member did not resume where the group acknowledged"
    );
    nothing_more(&mut [(&mut sub, "the group after resuming")]).await;
    Ok(Verdict::Passed)
}
