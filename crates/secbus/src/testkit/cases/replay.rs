//! Reading history: replay from the beginning, a sequence or a time, and tails
//! that fall behind.

use std::time::Duration;

use chrono::Utc;

use crate::error::{ErrorKind, Result};
use crate::event::Event;
use crate::subscription::{StartAt, SubscribeOptions, Subscription};
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event, ids, n_of, sorted_ids};
use crate::testkit::wait::{next, next_item, nothing_more, take, take_acked};
use crate::{Bus, Subscriber};

async fn publish_numbered(bus: &Bus, from: u64, to: u64) -> Result<(Vec<Event>, Vec<u64>)> {
    let t = acme();
    let mut events = Vec::new();
    let mut seqs = Vec::new();
    for n in from..to {
        let e = event(&t, "audit.config.changed", n);
        let r = bus.publish(e.clone()).await?;
        seqs.push(r.sequence.expect("a stored event has a sequence"));
        events.push(e);
    }
    Ok((events, seqs))
}

/// A tail and a new group (named `group`) both starting at `start`, checked to
/// see exactly `expected` (the tail in order), then a live event, whose
/// sequence is returned.
async fn check_start(bus: &Bus, start: StartAt, group: &str, expected: &[Event]) -> Result<u64> {
    let t = acme();
    let what = format!("from {start:?}");
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(t.clone()).start(start))
        .await?;
    let mut members = bus
        .subscribe(SubscribeOptions::group(t.clone(), group).start(start))
        .await?;
    let got: Vec<Event> = take(&mut tail, expected.len(), &format!("a tail {what}"))
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(ids(&got), ids(expected), "a tail {what}");
    let got = take_acked(&mut members, expected.len(), &format!("a group {what}")).await?;
    assert_eq!(sorted_ids(&got), sorted_ids(expected), "a group {what}");
    nothing_more(&mut [
        (&mut tail, &format!("a tail {what}")),
        (&mut members, &format!("a group {what}")),
    ])
    .await;
    // Having caught up, both go on with live events.
    let live = event(&t, "audit.config.changed", 1_000);
    let seq = bus
        .publish(live.clone())
        .await?
        .sequence
        .expect("a sequence");
    assert_eq!(next(&mut tail, "a live event").await.event().id, live.id);
    assert_eq!(
        take_acked(&mut members, 1, "a live event").await?[0].id,
        live.id
    );
    Ok(seq)
}

pub(crate) async fn replay_from_beginning(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    if !bus.capabilities().replay {
        return Ok(Verdict::NotSupported("replay"));
    }
    let (sent, _) = publish_numbered(&bus, 0, 10).await?;
    // A group starting with new events sees none of the history.
    let t = acme();
    let mut fresh = bus
        .subscribe(SubscribeOptions::group(t.clone(), "new-only"))
        .await?;
    let mut live_tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;
    check_start(&bus, StartAt::Beginning, "from-start", &sent).await?;
    let got = take_acked(&mut fresh, 1, "a group of new events").await?;
    assert_eq!(n_of(&got[0]), 1_000, "a group starting new saw history");
    let d = next(&mut live_tail, "a tail of new events").await;
    assert_eq!(n_of(d.event()), 1_000, "a tail starting new saw history");
    Ok(Verdict::Passed)
}

pub(crate) async fn replay_from_sequence(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    if !bus.capabilities().replay {
        return Ok(Verdict::NotSupported("replay"));
    }
    let (sent, seqs) = publish_numbered(&bus, 0, 10).await?;
    let live = check_start(&bus, StartAt::Sequence(seqs[5]), "from-sixth", &sent[5..]).await?;
    // Just past the newest event: nothing until the next one.
    check_start(&bus, StartAt::Sequence(live + 1), "from-next", &[]).await?;
    Ok(Verdict::Passed)
}

pub(crate) async fn replay_from_time(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    if !bus.capabilities().replay {
        return Ok(Verdict::NotSupported("replay"));
    }
    let before = Utc::now() - chrono::Duration::seconds(1);
    let (mut early, _) = publish_numbered(&bus, 0, 5).await?;
    // The time is when the event was stored, not the `time` its producer
    // wrote, which may be skewed or replayed from long ago.
    let skewed = |n: u64, time| {
        let mut e = event(&acme(), "audit.config.changed", n);
        e.time = Some(time);
        e
    };
    let ahead = skewed(5, Utc::now() + chrono::Duration::days(1));
    bus.publish(ahead.clone()).await?;
    early.push(ahead);
    // Clear gaps around the mark, so clocks that tick coarsely cannot blur it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mark = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let behind = skewed(6, before - chrono::Duration::days(365));
    bus.publish(behind.clone()).await?;
    let (more, _) = publish_numbered(&bus, 7, 12).await?;
    let late: Vec<Event> = std::iter::once(behind).chain(more).collect();
    check_start(&bus, StartAt::Time(mark), "from-mark", &late).await?;
    let all: Vec<Event> = early.into_iter().chain(late).collect();
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Time(before)))
        .await?;
    let got: Vec<Event> = take(&mut tail, all.len(), "a tail from before everything")
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(ids(&got), ids(&all), "a tail from before everything");
    // The live event `check_start` published is history now too.
    let d = next(&mut tail, "the live event, replayed").await;
    assert_eq!(n_of(d.event()), 1_000);
    Ok(Verdict::Passed)
}

/// Reads `tail` until the event numbered `last`, counting deliveries and
/// checking they are contiguous.
async fn read_until(tail: &mut Subscription, last: u64) -> u64 {
    let mut got = 0;
    let mut prev: Option<u64> = None;
    loop {
        let d = next(tail, &format!("the tail to reach event {last}")).await;
        let n = n_of(d.event());
        if let Some(p) = prev {
            assert_eq!(n, p + 1, "the tail skipped events without saying so");
        }
        prev = Some(n);
        got += 1;
        if n == last {
            return got;
        }
    }
}

pub(crate) async fn tail_lag(cx: &Cx<'_>) -> Result<Verdict> {
    const HISTORY: usize = 16;
    const EVENTS: u64 = 40;
    let bus = cx.open_with(|c| c.memory_history = HISTORY).await?;
    if !bus.capabilities().tail_lag_reported {
        return Ok(Verdict::NotSupported("tail_lag_reported"));
    }
    let t = acme();
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;
    // Nothing holds history for the tail: it falls behind while not reading.
    publish_numbered(&bus, 0, EVENTS).await?;
    let missed = match next_item(&mut tail, "the lag report").await {
        Some(Err(e)) => {
            assert_eq!(e.kind(), ErrorKind::Lagged, "{e}");
            assert_eq!(e.code(), "lagged");
            e.missed()
                .expect("a lag report says how many events were missed")
        }
        Some(Ok(d)) => panic!(
            "a tail {EVENTS} events behind a history of {HISTORY} got event {} without a lag report",
            n_of(d.event())
        ),
        None => panic!("the lagging tail ended"),
    };
    assert!(missed > 0, "a lag of zero events");
    let got = read_until(&mut tail, EVENTS - 1).await;
    assert_eq!(
        missed + got,
        EVENTS,
        "missed {missed} and received {got}: events were lost without a report"
    );
    // The tail goes on live.
    let live = event(&t, "audit.config.changed", EVENTS);
    bus.publish(live.clone()).await?;
    assert_eq!(
        next(&mut tail, "a live event after the lag")
            .await
            .event()
            .id,
        live.id
    );
    Ok(Verdict::Passed)
}
