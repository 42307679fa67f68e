//! At-least-once: nacked and unsettled deliveries come back.

use std::time::Duration;

use tokio::time::Instant;

use crate::Subscriber;
use crate::error::Result;
use crate::subscription::SubscribeOptions;
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event};
use crate::testkit::wait::{next, nothing_within};

/// Fails unless at least most of `delay` passed since `since`: engines time
/// redeliveries roughly, never early by much.
fn assert_waited(since: Instant, delay: Duration, what: &str) {
    let waited = since.elapsed();
    assert!(
        waited >= delay.mul_f64(0.8),
        "{what}: redelivered after {waited:?}, before the delay of {delay:?}"
    );
}

pub(crate) async fn nack_redelivery(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let backoff = vec![Duration::from_millis(150), Duration::from_millis(250)];
    let mut sub = bus
        .subscribe(
            SubscribeOptions::group(t.clone(), "retry")
                .max_deliveries(5)
                .backoff(backoff.clone()),
        )
        .await?;
    let e = event(&t, "auth.login.failed", 1);
    let seq = bus.publish(e.clone()).await?.sequence.expect("a sequence");

    let d = next(&mut sub, "the first delivery").await;
    let delivered = d.event().clone();
    assert_eq!(
        (d.event().id.clone(), d.attempt(), d.sequence()),
        (e.id.clone(), 1, seq)
    );
    // An explicit delay, during which the group goes on with other events.
    let delay = Duration::from_secs(1);
    let nacked = Instant::now();
    d.nack(Some(delay), Some("downstream timeout")).await?;
    let other = event(&t, "auth.login.failed", 2);
    bus.publish(other.clone()).await?;
    let d = next(&mut sub, "the event published after the nack").await;
    assert_eq!(
        d.event().id,
        other.id,
        "a nacked event held up the group for its delay"
    );
    assert!(
        nacked.elapsed() < delay,
        "the other event waited for the delay"
    );
    d.ack().await?;

    let d = next(&mut sub, "the redelivery after the nack delay").await;
    assert_waited(nacked, delay, "nack with a delay");
    assert_eq!(d.event(), &delivered, "a redelivery is the same event");
    assert_eq!(d.sequence(), seq, "a redelivery keeps the sequence");
    assert_eq!(d.attempt(), 2, "the attempt number did not go up");
    assert!(!d.is_last_attempt());

    // Without a delay, the subscription's backoff for the attempt applies.
    let nacked = Instant::now();
    d.nack(None, Some("still failing")).await?;
    let d = next(&mut sub, "the redelivery after the backoff").await;
    assert_waited(nacked, backoff[1], "nack with the backoff");
    assert_eq!((d.event().id.clone(), d.attempt()), (e.id.clone(), 3));
    d.ack().await?;

    nothing_within(&mut sub, Duration::from_millis(500), "group after the ack").await;
    assert!(
        bus.dead_letters(&t, 10).await?.is_empty(),
        "an acked event was dead lettered"
    );
    Ok(Verdict::Passed)
}

pub(crate) async fn ack_wait_redelivery(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let ack_wait = Duration::from_millis(300);
    // One delivery in flight per member: a member holding one cannot take the
    // redelivery itself, so it must go to the other member.
    let options = SubscribeOptions::group(t.clone(), "slow")
        .ack_wait(ack_wait)
        .max_in_flight(1)
        .max_deliveries(5);
    let mut first = bus.subscribe(options.clone()).await?;
    let e = event(&t, "edr.process.started", 1);
    bus.publish(e.clone()).await?;
    let held = next(&mut first, "the first delivery").await;
    let handed = Instant::now();
    assert_eq!((held.event().id.clone(), held.attempt()), (e.id.clone(), 1));

    let mut second = bus.subscribe(options.clone()).await?;
    let d = next(&mut second, "the redelivery after the ack wait").await;
    assert_waited(handed, ack_wait, "ack wait");
    assert_eq!(d.event().id, e.id);
    assert_eq!(d.attempt(), 2);
    d.ack().await?;
    // The first member finishing late must not bring the event back. Whether
    // the late ack succeeds is the engine's business.
    let _ = held.ack().await;
    nothing_within(&mut second, ack_wait * 2, "the second member after its ack").await;
    nothing_within(&mut first, ack_wait, "the first member after the acks").await;

    // A delivery dropped unsettled is the same as one left past the ack wait.
    drop(second);
    let f = event(&t, "edr.process.started", 2);
    bus.publish(f.clone()).await?;
    let d = next(&mut first, "a delivery to drop").await;
    assert_eq!((d.event().id.clone(), d.attempt()), (f.id.clone(), 1));
    let dropped = Instant::now();
    drop(d);
    let d = next(&mut first, "the redelivery of the dropped delivery").await;
    assert_waited(dropped, ack_wait, "a dropped delivery");
    assert_eq!((d.event().id.clone(), d.attempt()), (f.id.clone(), 2));
    d.ack().await?;
    nothing_within(&mut first, ack_wait * 2, "the group after every ack").await;
    Ok(Verdict::Passed)
}
