//! `publish_with_fallback`: while the engine is down events wait in the spool,
//! and reach the engine in order once it is back.

use std::collections::HashSet;

use serde_json::json;

use crate::error::{ErrorKind, Result};
use crate::event::Event;
use crate::fallback::FallbackOutcome;
use crate::subscription::SubscribeOptions;
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event, event_with, ids};
use crate::testkit::wait::{WAIT, next, nothing_more, take, take_acked};
use crate::{Publisher, Subscriber};

pub(crate) async fn fallback_spool_drains_in_order(cx: &Cx<'_>) -> Result<Verdict> {
    const SPOOLED: u64 = 50;
    let (bus, outage) = cx.open_with_outage(|c| c.max_event_bytes = 4096).await?;
    let t = acme();
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;
    let mut group = bus
        .subscribe(SubscribeOptions::group(t.clone(), "drain"))
        .await?;
    let spool = bus.spool().await?;

    let first = event(&t, "edr.process.started", 0);
    match bus.publish_with_fallback(first.clone()).await {
        FallbackOutcome::Published(r) => assert_eq!(r.id, first.id),
        other => panic!("with the engine up, publish_with_fallback gave {other:?}"),
    }
    assert_eq!(
        next(&mut tail, "the event published while up")
            .await
            .event()
            .id,
        first.id
    );

    outage.down().await?;
    let mut spooled: Vec<Event> = Vec::new();
    for n in 1..=SPOOLED {
        let e = event(&t, "edr.process.started", n);
        match bus.publish_with_fallback(e.clone()).await {
            FallbackOutcome::Spooled => spooled.push(e),
            other => panic!("with the engine down, event {n} gave {other:?}, not Spooled"),
        }
    }
    assert_eq!(
        spool.depth(),
        SPOOLED,
        "the spool's depth while the engine is down"
    );
    // An event the bus refuses anyway is refused, not spooled.
    let big = event_with(&t, "edr.file.uploaded", json!({ "pad": "x".repeat(8192) }));
    match bus.publish_with_fallback(big).await {
        FallbackOutcome::Refused(e) => assert_eq!(e.kind(), ErrorKind::EventTooLarge, "{e}"),
        other => panic!("an event over the size limit gave {other:?}, not Refused"),
    }
    assert_eq!(spool.depth(), SPOOLED, "a refused event went to the spool");

    outage.up().await?;
    assert!(
        spool.wait_drained(WAIT).await,
        "the spool did not drain within {WAIT:?} of the engine coming back ({} left)",
        spool.depth()
    );
    assert_eq!(spool.depth(), 0);
    let got: Vec<Event> = take(&mut tail, spooled.len(), "the drained events in the tail")
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(ids(&got), ids(&spooled), "the spool drained out of order");
    let mut expected: HashSet<String> = ids(&spooled).into_iter().collect();
    expected.insert(first.id.as_str().to_owned());
    let got = take_acked(&mut group, expected.len(), "the group, after the drain").await?;
    let got: HashSet<String> = ids(&got).into_iter().collect();
    assert_eq!(
        got, expected,
        "the group did not get every event exactly once"
    );
    nothing_more(&mut [
        (&mut tail, "the tail after the drain"),
        (&mut group, "the group after the drain"),
    ])
    .await;

    let after = event(&t, "edr.process.started", SPOOLED + 1);
    match bus.publish_with_fallback(after.clone()).await {
        FallbackOutcome::Published(r) => assert!(!r.duplicate),
        other => panic!("with the engine back, publish_with_fallback gave {other:?}"),
    }
    Ok(Verdict::Passed)
}
