//! Publishing: what is stored, once, whole, and in order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::error::{ErrorKind, Result};
use crate::event::{Event, EventId};
use crate::subscription::{StartAt, SubscribeOptions};
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event, event_with, globex, ids, n_of, sorted_ids};
use crate::testkit::wait::{next, nothing_more, take, take_acked, within};
use crate::{Publisher, Subscriber};

/// An event that uses every attribute, with unknown extensions of every JSON
/// kind and data whose exact text (spacing, key order, a number no integer
/// type holds, escapes) an engine must keep.
fn full_event() -> Event {
    let id = EventId::new_v7();
    let json = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"https://idp.example.com/hooks",
        "type":"auth.login.failed","tenantid":"acme","time":"2026-01-02T03:04:05.123456789Z",
        "subject":"user/bob@example.com","datacontenttype":"application/json",
        "dataschema":"https://schemas.example.com/auth.login.failed/1",
        "correlationid":"corr-7f3a","causationid":"cause-19c2",
        "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate":"vendor=abc,other=x","partitionkey":"user-bob",
        "vendorseverity":7,"vendorscore":0.25,"vendornote":"ünïcödé \"quoted\"\n\ttab",
        "vendorflag":true,"vendornull":null,"vendorobj":{{"nested":[1,2,{{"k":null}}]}},
        "data":{{ "z" : 1,  "a": [1.50, 12345678901234567890123, -0.0], "s": "\u00e9 <\/tag> \ud83d\ude00" }}}}"#
    );
    Event::from_json(json.as_bytes()).expect("a valid event")
}

fn assert_same(got: &Event, sent: &Event, what: &str) {
    assert_eq!(got, sent, "{what}: the event changed on its way");
    assert_eq!(
        got.data_raw(),
        sent.data_raw(),
        "{what}: data is not byte for byte what was published"
    );
    assert_eq!(
        String::from_utf8_lossy(&got.to_json()),
        String::from_utf8_lossy(&sent.to_json()),
        "{what}: the encoded event differs"
    );
}

pub(crate) async fn round_trip(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let mut group = bus
        .subscribe(SubscribeOptions::group(t.clone(), "round-trip"))
        .await?;
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;

    let full = full_event();
    let receipt = bus.publish(full.clone()).await?;
    assert_eq!(receipt.id, full.id);
    assert!(!receipt.duplicate, "a new event was taken for a duplicate");
    let seq = receipt.sequence.expect("a stored event has a sequence");

    let d = next(&mut group, "the full event in a group").await;
    assert_same(d.event(), &full, "group");
    assert_eq!(d.sequence(), seq, "the group delivery's sequence");
    assert_eq!(d.attempt(), 1);
    d.ack().await?;
    let d = next(&mut tail, "the full event in a tail").await;
    assert_same(d.event(), &full, "tail");
    assert_eq!(d.sequence(), seq, "the tail delivery's sequence");

    // Without a time the bus sets it at publish.
    let plain = event(&t, "auth.login.succeeded", 1);
    assert!(plain.time.is_none());
    let before = Utc::now();
    bus.publish(plain.clone()).await?;
    let after = Utc::now();
    let d = next(&mut group, "an event without a time").await;
    let got = d.event().clone();
    d.ack().await?;
    let time = got.time.expect("the bus sets `time` at publish");
    assert!(
        before - chrono::Duration::seconds(1) <= time
            && time <= after + chrono::Duration::seconds(1),
        "time {time} was not set at publish ({before} .. {after})"
    );
    let mut expected = plain.clone();
    expected.time = got.time;
    assert_same(&got, &expected, "an event without a time");
    assert_same(
        next(&mut tail, "the event without a time in a tail")
            .await
            .event(),
        &expected,
        "tail",
    );

    if bus.capabilities().replay {
        let mut replay = bus
            .subscribe(SubscribeOptions::tail(t.clone()).start(StartAt::Beginning))
            .await?;
        assert_same(
            next(&mut replay, "the full event replayed").await.event(),
            &full,
            "replay",
        );
        assert_same(
            next(&mut replay, "the second event replayed").await.event(),
            &expected,
            "replay",
        );
    }
    Ok(Verdict::Passed)
}

pub(crate) async fn dedup_by_id(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let mut group = bus
        .subscribe(SubscribeOptions::group(t.clone(), "dedup"))
        .await?;
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;

    let e = event(&t, "auth.login.failed", 1);
    let first = bus.publish(e.clone()).await?;
    assert!(!first.duplicate && first.sequence.is_some());
    for (how, receipt) in [
        ("publish", bus.publish(e.clone()).await?),
        ("try_publish", bus.try_publish(e.clone()).await?),
    ] {
        assert!(receipt.duplicate, "{how} of a seen id is not a duplicate");
        assert_eq!(receipt.sequence, None, "{how}: a duplicate has no sequence");
        assert_eq!(receipt.id, e.id);
    }
    // The id is the key: another payload under the same id is still a duplicate.
    let mut changed = e.clone();
    changed.set_data(&json!({ "n": 99 })).expect("valid data");
    assert!(bus.publish(changed).await?.duplicate);

    // Within one batch too.
    let f = event(&t, "auth.login.failed", 2);
    let receipts = bus.publish_batch(vec![f.clone(), f.clone()]).await?;
    assert_eq!(receipts.len(), 2);
    assert!(!receipts[0].duplicate && receipts[0].sequence.is_some());
    assert!(
        receipts[1].duplicate,
        "the repeat inside a batch is not a duplicate"
    );

    // Same content under a new id is a new event while content dedup is off.
    let mut g = e.clone();
    g.id = EventId::new_v7();
    assert!(!bus.publish(g.clone()).await?.duplicate);

    let got = take_acked(&mut group, 3, "the three distinct events").await?;
    assert_eq!(sorted_ids(&got), sorted_ids([&e, &f, &g]));
    let tailed: Vec<Event> = take(&mut tail, 3, "the three distinct events in a tail")
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(ids(&tailed), ids([&e, &f, &g]));
    assert_eq!(
        n_of(&tailed[0]),
        1,
        "the first payload of an id is the one kept"
    );
    nothing_more(&mut [
        (&mut group, "group after duplicates"),
        (&mut tail, "tail after duplicates"),
    ])
    .await;

    // The window is the configured one: an id is remembered that long, no
    // longer, so the memory it takes stays bounded.
    let window = Duration::from_millis(300);
    let bus = cx.open_with(|c| c.dedup_window = window).await?;
    let h = event(&t, "auth.login.failed", 3);
    assert!(!bus.publish(h.clone()).await?.duplicate);
    assert!(bus.publish(h.clone()).await?.duplicate);
    tokio::time::sleep(window * 2).await;
    assert!(
        !bus.publish(h.clone()).await?.duplicate,
        "an id was still a duplicate after the dedup window of {window:?}"
    );
    Ok(Verdict::Passed)
}

pub(crate) async fn content_dedup(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open_with(|c| c.content_dedup = true).await?;
    let (a, b) = (acme(), globex());
    let mut group = bus
        .subscribe(SubscribeOptions::group(a.clone(), "content"))
        .await?;

    let login = |tenant, ty: &str, subject: &str, data| {
        Event::builder(crate::testkit::context::ty(ty), tenant)
            .subject(subject)
            .data(data)
            .build()
            .expect("a valid event")
    };
    let e1 = login(
        a.clone(),
        "auth.login.failed",
        "user/bob",
        json!({"user": "bob", "ip": "203.0.113.9"}),
    );
    assert!(!bus.publish(e1.clone()).await?.duplicate);

    // Same type, tenant, subject and data, written another way, under a new id.
    let same = Event::from_json(
        format!(
            r#"{{"specversion":"1.0","id":"{}","source":"elsewhere","type":"auth.login.failed",
            "tenantid":"acme","subject":"user/bob","data":{{ "ip" : "203.0.113.9", "user":"bob" }}}}"#,
            EventId::new_v7()
        )
        .as_bytes(),
    )
    .expect("a valid event");
    let r = bus.publish(same).await?;
    assert!(
        r.duplicate,
        "the same content under a new id was stored again"
    );
    assert_eq!(r.sequence, None);

    let other_data = login(
        a.clone(),
        "auth.login.failed",
        "user/bob",
        json!({"user": "bob", "ip": "198.51.100.7"}),
    );
    let other_subject = login(
        a.clone(),
        "auth.login.failed",
        "user/alice",
        json!({"user": "bob", "ip": "203.0.113.9"}),
    );
    let other_type = login(
        a.clone(),
        "auth.login.succeeded",
        "user/bob",
        json!({"user": "bob", "ip": "203.0.113.9"}),
    );
    let other_tenant = login(
        b.clone(),
        "auth.login.failed",
        "user/bob",
        json!({"user": "bob", "ip": "203.0.113.9"}),
    );
    for (what, e) in [
        ("other data", &other_data),
        ("another subject", &other_subject),
        ("another type", &other_type),
        ("another tenant", &other_tenant),
    ] {
        assert!(
            !bus.publish(e.clone()).await?.duplicate,
            "an event with {what} was taken for a duplicate"
        );
    }
    let got = take_acked(&mut group, 4, "the distinct contents").await?;
    assert_eq!(
        sorted_ids(&got),
        sorted_ids([&e1, &other_data, &other_subject, &other_type])
    );
    nothing_more(&mut [(&mut group, "group after content duplicates")]).await;
    Ok(Verdict::Passed)
}

/// An event of about `bytes` bytes.
fn sized(t: &crate::event::TenantId, bytes: usize) -> Event {
    event_with(t, "edr.file.uploaded", json!({ "pad": "x".repeat(bytes) }))
}

pub(crate) async fn size_limit(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open_with(|c| c.max_event_bytes = 4096).await?;
    let t = acme();
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;
    let mut group = bus
        .subscribe(SubscribeOptions::group(t.clone(), "size"))
        .await?;

    let big = sized(&t, 8192);
    let refusals = [
        ("publish", bus.publish(big.clone()).await.map(|_| ())),
        (
            "try_publish",
            bus.try_publish(big.clone()).await.map(|_| ()),
        ),
        (
            "publish_batch",
            bus.publish_batch(vec![big.clone()]).await.map(|_| ()),
        ),
    ];
    for (how, outcome) in refusals {
        let err = outcome.expect_err("an event over the limit was accepted");
        assert_eq!(err.kind(), ErrorKind::EventTooLarge, "{how}: {err}");
        assert_eq!(err.code(), "event_too_large");
    }

    let fits = sized(&t, 2048);
    bus.publish(fits.clone()).await?;
    // The first thing anyone sees is the event that fit: the refused one was never stored.
    assert_eq!(
        next(&mut tail, "the event that fits").await.event().id,
        fits.id
    );
    let got = take_acked(&mut group, 1, "the event that fits").await?;
    assert_eq!(got[0].id, fits.id);
    // Refused, the id was not taken either.
    let mut small = big.clone();
    small
        .set_data(&json!({ "pad": "small now" }))
        .expect("valid data");
    assert!(
        !bus.publish(small).await?.duplicate,
        "a refused event's id was kept"
    );
    if bus.capabilities().replay {
        let mut replay = bus
            .subscribe(SubscribeOptions::tail(t.clone()).start(StartAt::Beginning))
            .await?;
        let replayed = take(&mut replay, 2, "the stored events").await;
        assert_eq!(replayed[0].event().id, fits.id);
        assert_eq!(replayed[1].event().id, big.id);
        assert_eq!(
            replayed[1].event().data(),
            Some(json!({ "pad": "small now" }))
        );
        nothing_more(&mut [(&mut replay, "replay of what was stored")]).await;
    }
    Ok(Verdict::Passed)
}

pub(crate) async fn batch_publish_all_or_nothing(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open_with(|c| c.max_event_bytes = 4096).await?;
    let t = acme();
    let mut tail = bus.subscribe(SubscribeOptions::tail(t.clone())).await?;

    let batch: Vec<Event> = (0..3).map(|n| event(&t, "audit.user.created", n)).collect();
    let mut with_bad = batch.clone();
    with_bad.insert(2, sized(&t, 8192));
    let err = bus
        .publish_batch(with_bad)
        .await
        .expect_err("a batch with an event over the limit was accepted");
    assert_eq!(err.kind(), ErrorKind::EventTooLarge, "{err}");
    nothing_more(&mut [(&mut tail, "tail after a refused batch")]).await;

    // None of the batch was stored, so none of its ids is a duplicate now.
    let receipts = bus.publish_batch(batch.clone()).await?;
    assert_eq!(receipts.len(), batch.len());
    let mut last = 0;
    for (r, e) in receipts.iter().zip(&batch) {
        assert_eq!(r.id, e.id, "receipts are in the order of the events");
        assert!(!r.duplicate, "an event of the refused batch was stored");
        let seq = r.sequence.expect("a stored event has a sequence");
        assert!(seq > last, "sequences of a batch are not increasing");
        last = seq;
    }
    let got: Vec<Event> = take(&mut tail, 3, "the batch")
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(ids(&got), ids(&batch), "the batch is stored in order");
    nothing_more(&mut [(&mut tail, "tail after the batch")]).await;

    // A batch may mix tenants; each event goes to its own tenant's log.
    let g = globex();
    let mut other = bus.subscribe(SubscribeOptions::tail(g.clone())).await?;
    let mixed = vec![
        event(&t, "audit.user.created", 10),
        event(&g, "audit.user.created", 11),
        event(&t, "audit.user.created", 12),
    ];
    let receipts = bus.publish_batch(mixed.clone()).await?;
    assert_eq!(
        ids(&mixed),
        receipts
            .iter()
            .map(|r| r.id.as_str().to_owned())
            .collect::<Vec<_>>()
    );
    let got: Vec<Event> = take(&mut tail, 2, "acme's part of a mixed batch")
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect();
    assert_eq!(ids(&got), ids([&mixed[0], &mixed[2]]));
    let got = take(&mut other, 1, "globex's part of a mixed batch").await;
    assert_eq!(got[0].event().id, mixed[1].id);
    nothing_more(&mut [
        (&mut tail, "acme's tail after a mixed batch"),
        (&mut other, "globex's tail after a mixed batch"),
    ])
    .await;
    Ok(Verdict::Passed)
}

pub(crate) async fn concurrent_publishers(cx: &Cx<'_>) -> Result<Verdict> {
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 500;
    let bus = cx.open().await?;
    let t = acme();
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(t.clone()).max_in_flight(1024))
        .await?;
    let mut group = bus
        .subscribe(SubscribeOptions::group(t.clone(), "all").max_in_flight(1024))
        .await?;

    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let bus = bus.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for n in 0..EACH {
                let e = event_with(&t, "edr.process.started", json!({ "p": p, "n": n }));
                let r = bus.publish(e).await?;
                let seq = r.sequence.expect("a new event has a sequence");
                assert!(seq > last, "publisher {p}: sequence {seq} after {last}");
                last = seq;
            }
            Ok::<_, crate::Error>(())
        }));
    }
    for task in tasks {
        within("the publishers", task)
            .await
            .expect("a publisher panicked")?;
    }

    let total = (PUBLISHERS * EACH) as usize;
    let mut next_n: HashMap<u64, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let mut last_seq = 0;
    for i in 0..total {
        let d = next(&mut tail, &format!("event {i} of {total} in the tail")).await;
        let data = d.event().data().expect("data");
        let (p, n) = (
            data["p"].as_u64().expect("p"),
            data["n"].as_u64().expect("n"),
        );
        assert!(
            seen.insert(d.event().id.clone()),
            "event {} stored twice",
            d.event().id
        );
        let expected = next_n.entry(p).or_insert(0);
        assert_eq!(
            n, *expected,
            "publisher {p}'s events are out of order in the log"
        );
        *expected += 1;
        assert!(d.sequence() > last_seq, "log positions are not increasing");
        last_seq = d.sequence();
    }
    let got = within("the group", take_acked(&mut group, total, "the group")).await?;
    assert_eq!(
        got.iter().map(|e| &e.id).collect::<HashSet<_>>().len(),
        total
    );
    nothing_more(&mut [
        (&mut tail, "tail after all publishers"),
        (&mut group, "group after all publishers"),
    ])
    .await;
    Ok(Verdict::Passed)
}
