//! The embedded engine keeps what it promised across a close and a reopen of
//! its directory: the log in order, group positions, the dedup window, dead
//! letters; retention deletes; replay starts where asked.
#![cfg(feature = "embedded")]

use std::time::Duration;

use secbus::{
    Bus, BusConfig, Delivery, ErrorKind, Event, EventType, Publisher, StartAt, SubscribeOptions,
    Subscriber, Subscription, TenantId,
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

fn url(dir: &tempfile::TempDir) -> String {
    format!("embedded:{}", dir.path().join("data").display())
}

async fn next(sub: &mut Subscription) -> Delivery {
    timeout(WAIT, sub.next())
        .await
        .expect("a delivery within the wait")
        .expect("the subscription is open")
        .expect("a delivery, not an error")
}

/// Everything a tail from the beginning sees, up to `n` events.
async fn read_all(bus: &Bus, tenant: &TenantId, n: usize) -> Vec<Event> {
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(tenant.clone()).start(StartAt::Beginning))
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        out.push(next(&mut tail).await.event().clone());
    }
    out
}

/// Asserts nothing more arrives on `sub` within a short while.
async fn assert_quiet(sub: &mut Subscription) {
    if let Ok(Some(d)) = timeout(Duration::from_millis(300), sub.next()).await {
        panic!(
            "nothing more expected, got {:?}",
            d.map(|d| d.event().id.clone())
        );
    }
}

#[tokio::test]
async fn publish_then_reopen_reads_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let globex = tenant("globex");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    assert_eq!(bus.engine_name(), "embedded");
    let mut sent = Vec::new();
    for n in 0..300 {
        let e = event(&acme, &format!("auth.t{}", n % 10), n);
        sent.push(e.clone());
        let receipt = bus.publish(e).await.unwrap();
        assert!(!receipt.duplicate);
    }
    let batch: Vec<Event> = (300..500).map(|n| event(&acme, "auth.batch", n)).collect();
    sent.extend(batch.iter().cloned());
    let receipts = bus.publish_batch(batch).await.unwrap();
    let seqs: Vec<u64> = receipts.iter().map(|r| r.sequence.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequences grow");
    bus.publish(event(&globex, "auth.other", 0)).await.unwrap();
    bus.close().await.unwrap();
    drop(bus);

    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let got = read_all(&bus, &acme, sent.len()).await;
    let got_ids: Vec<_> = got.iter().map(|e| e.id.clone()).collect();
    let sent_ids: Vec<_> = sent.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got_ids, sent_ids);
    // The stored JSON is the event as published, time included.
    assert_eq!(got[0].to_json(), {
        let mut first = sent[0].clone();
        first.time = got[0].time;
        first.to_json()
    });
    assert!(got.iter().all(|e| e.time.is_some()));
    // The other tenant's event is not in acme's log, and globex sees only its own.
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Beginning))
        .await
        .unwrap();
    for _ in 0..sent.len() {
        next(&mut tail).await;
    }
    assert_quiet(&mut tail).await;
    let other = read_all(&bus, &globex, 1).await;
    assert_eq!(other[0].tenant, globex);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn groups_resume_after_reopen_where_they_acked() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let options = || {
        SubscribeOptions::group(acme.clone(), "workers")
            .start(StartAt::Beginning)
            .max_in_flight(8)
    };
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(bus.publish(event(&acme, "auth.login", n)).await.unwrap().id);
    }
    let mut workers = bus.subscribe(options()).await.unwrap();
    // Ack the first 10; take 3 more and leave them unsettled.
    for id in &ids[..10] {
        let d = next(&mut workers).await;
        assert_eq!(&d.event().id, id);
        d.ack().await.unwrap();
    }
    let mut unsettled = Vec::new();
    for id in &ids[10..13] {
        let d = next(&mut workers).await;
        assert_eq!(&d.event().id, id);
        unsettled.push(d);
    }
    bus.close().await.unwrap();
    drop((workers, unsettled, bus));

    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut workers = bus.subscribe(options()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 10..20 {
        let d = next(&mut workers).await;
        seen.push((d.event().id.clone(), d.attempt()));
        d.ack().await.unwrap();
    }
    let seen_ids: Vec<_> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        seen_ids,
        ids[10..].to_vec(),
        "no acked event again, every unacked one"
    );
    assert!(
        seen[..3].iter().all(|(_, a)| *a == 2),
        "the unsettled three are redeliveries: {seen:?}"
    );
    assert!(seen[3..].iter().all(|(_, a)| *a == 1));
    assert_quiet(&mut workers).await;
    bus.close().await.unwrap();
    drop((workers, bus));

    // Everything was acked: a third opening delivers only what is new.
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut workers = bus.subscribe(options()).await.unwrap();
    let fresh = bus
        .publish(event(&acme, "auth.login", 99))
        .await
        .unwrap()
        .id;
    let d = next(&mut workers).await;
    assert_eq!(d.event().id, fresh);
    d.ack().await.unwrap();
    bus.close().await.unwrap();
}

#[tokio::test]
async fn group_reading_other_types_is_refused_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let sub = bus
        .subscribe(
            SubscribeOptions::group(acme.clone(), "auth-only").types("auth.>".parse().unwrap()),
        )
        .await
        .unwrap();
    bus.close().await.unwrap();
    drop((sub, bus));
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let err = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "auth-only"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn dedup_within_the_window_survives_reopen_and_is_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let globex = tenant("globex");
    let config = BusConfig {
        content_dedup: true,
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&url(&dir), config.clone()).await.unwrap();
    let original = event(&acme, "auth.login", 1);
    assert!(!bus.publish(original.clone()).await.unwrap().duplicate);
    assert!(bus.publish(original.clone()).await.unwrap().duplicate);
    bus.close().await.unwrap();
    drop(bus);

    let bus = Bus::connect_with(&url(&dir), config).await.unwrap();
    let again = bus.publish(original.clone()).await.unwrap();
    assert!(
        again.duplicate,
        "the id is still in the window after reopen"
    );
    assert_eq!(again.sequence, None);
    // Same content, new id: content dedup, also rebuilt at open.
    let same_content = event(&acme, "auth.login", 1);
    assert!(bus.publish(same_content).await.unwrap().duplicate);
    // Another tenant reusing the id (and the content) is not suppressed.
    let mut copy = original.clone();
    copy.tenant = globex.clone();
    assert!(!bus.publish(copy).await.unwrap().duplicate);
    // Within one batch, the second of two equal ids is the duplicate.
    let twin = event(&acme, "auth.twin", 7);
    let receipts = bus.publish_batch(vec![twin.clone(), twin]).await.unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.duplicate).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(read_all(&bus, &acme, 2).await.len(), 2);
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Beginning))
        .await
        .unwrap();
    next(&mut tail).await;
    next(&mut tail).await;
    assert_quiet(&mut tail).await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn dedup_window_zero_stores_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let config = BusConfig {
        dedup_window: Duration::ZERO,
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&url(&dir), config).await.unwrap();
    let e = event(&acme, "auth.login", 1);
    assert!(!bus.publish(e.clone()).await.unwrap().duplicate);
    assert!(!bus.publish(e).await.unwrap().duplicate);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn dead_letters_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let globex = tenant("globex");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut workers = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "workers").max_deliveries(1))
        .await
        .unwrap();
    let first = bus.publish(event(&acme, "auth.login", 1)).await.unwrap().id;
    let second = bus.publish(event(&acme, "auth.login", 2)).await.unwrap().id;
    next(&mut workers)
        .await
        .nack(None, Some("upstream said no"))
        .await
        .unwrap();
    next(&mut workers).await.term("cannot parse").await.unwrap();
    bus.close().await.unwrap();
    drop((workers, bus));

    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let dls = bus.dead_letters(&acme, 10).await.unwrap();
    assert_eq!(dls.len(), 2);
    assert_eq!(dls[0].event.id, first, "oldest first");
    assert_eq!(dls[0].reason, "max_deliveries");
    assert_eq!(dls[0].last_error.as_deref(), Some("upstream said no"));
    assert_eq!(dls[0].group, "workers");
    assert_eq!(dls[1].event.id, second);
    assert_eq!(dls[1].reason, "terminated");
    assert!(bus.dead_letters(&globex, 10).await.unwrap().is_empty());
    assert_eq!(bus.dead_letters(&acme, 1).await.unwrap().len(), 1);
    // Another tenant cannot delete acme's dead letter by id.
    assert!(!bus.delete_dead_letter(&globex, &dls[1].id).await.unwrap());
    assert!(bus.delete_dead_letter(&acme, &dls[1].id).await.unwrap());
    assert!(!bus.delete_dead_letter(&acme, &dls[1].id).await.unwrap());

    // Redrive: the event goes back to the group that gave up, and the dead letter goes away.
    let mut workers = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "workers").max_deliveries(1))
        .await
        .unwrap();
    let receipt = bus.redrive(&acme, &dls[0].id).await.unwrap();
    assert!(!receipt.duplicate, "a redrive bypasses the dedup window");
    let d = next(&mut workers).await;
    assert_eq!(d.event().id, first);
    d.ack().await.unwrap();
    bus.close().await.unwrap();
    drop((workers, bus));
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    assert!(bus.dead_letters(&acme, 10).await.unwrap().is_empty());
    bus.close().await.unwrap();
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let globex = tenant("globex");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut acme_ids = Vec::new();
    for n in 0..50 {
        acme_ids.push(bus.publish(event(&acme, "auth.login", n)).await.unwrap().id);
    }
    for n in 0..3 {
        bus.publish(event(&globex, "auth.login", n)).await.unwrap();
    }
    bus.close().await.unwrap();
    drop(bus);

    let config = BusConfig {
        retention_max_events: Some(10),
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&url(&dir), config).await.unwrap();
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Beginning))
        .await
        .unwrap();
    for id in &acme_ids[40..] {
        assert_eq!(&next(&mut tail).await.event().id, id);
    }
    assert_quiet(&mut tail).await;
    assert_eq!(
        read_all(&bus, &globex, 3).await.len(),
        3,
        "under the limit: kept"
    );

    // While open, retention runs in the background too.
    let mut more = Vec::new();
    for n in 0..15 {
        more.push(bus.publish(event(&acme, "auth.more", n)).await.unwrap().id);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut tail = bus
            .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Beginning))
            .await
            .unwrap();
        let first = next(&mut tail).await.event().id.clone();
        if first == more[5] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bus.close().await.unwrap();
}

#[tokio::test]
async fn retention_by_age_deletes_old_events() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    for n in 0..20 {
        bus.publish(event(&acme, "auth.old", n)).await.unwrap();
    }
    bus.close().await.unwrap();
    drop(bus);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let config = BusConfig {
        retention_max_age: Some(Duration::from_millis(500)),
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&url(&dir), config).await.unwrap();
    let fresh = bus.publish(event(&acme, "auth.new", 0)).await.unwrap().id;
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Beginning))
        .await
        .unwrap();
    assert_eq!(
        next(&mut tail).await.event().id,
        fresh,
        "old events are gone"
    );
    bus.close().await.unwrap();
}

#[tokio::test]
async fn replay_from_a_sequence_and_from_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let globex = tenant("globex");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut receipts = Vec::new();
    for n in 0..10 {
        receipts.push(bus.publish(event(&acme, "auth.before", n)).await.unwrap());
        // Interleaved: sequences of acme are not dense.
        bus.publish(event(&globex, "auth.noise", n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut after = Vec::new();
    for n in 0..5 {
        after.push(bus.publish(event(&acme, "auth.after", n)).await.unwrap().id);
    }
    bus.close().await.unwrap();
    drop(bus);

    let bus = Bus::connect(&url(&dir)).await.unwrap();
    // From a sequence: the event at it, then the rest.
    let from = receipts[6].sequence.unwrap();
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Sequence(from)))
        .await
        .unwrap();
    for r in &receipts[6..] {
        let d = next(&mut tail).await;
        assert_eq!(d.event().id, r.id);
        assert_eq!(Some(d.sequence()), r.sequence);
    }
    assert_eq!(next(&mut tail).await.event().id, after[0]);
    // A sequence between two of acme's (globex's) starts at acme's next.
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Sequence(from + 1)))
        .await
        .unwrap();
    assert_eq!(next(&mut tail).await.event().id, receipts[7].id);

    // From a time: only what was stored after it, for a tail and for a new group.
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Time(cut)))
        .await
        .unwrap();
    let mut group = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "late").start(StartAt::Time(cut)))
        .await
        .unwrap();
    for id in &after {
        assert_eq!(&next(&mut tail).await.event().id, id);
        let d = next(&mut group).await;
        assert_eq!(&d.event().id, id);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut tail).await;
    // A time after everything: nothing until something new.
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Time(chrono::Utc::now())))
        .await
        .unwrap();
    assert_quiet(&mut tail).await;
    let newest = bus
        .publish(event(&acme, "auth.newest", 0))
        .await
        .unwrap()
        .id;
    assert_eq!(next(&mut tail).await.event().id, newest);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn publishing_after_close_fails_closed_and_reopen_works() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    bus.publish(event(&acme, "auth.login", 0)).await.unwrap();
    bus.close().await.unwrap();
    bus.close().await.unwrap();
    let err = bus
        .publish(event(&acme, "auth.login", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(bus.ping().await.unwrap_err().kind(), ErrorKind::Closed);
    drop(bus);
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    bus.ping().await.unwrap();
    assert_eq!(read_all(&bus, &acme, 1).await.len(), 1);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Bus::connect(&format!("embedded:{}", file.join("data").display()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.message().contains("a-file"), "names the path: {err}");

    // A directory whose database file is not a database.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("secbus.db"), vec![b'x'; 8192]).unwrap();
    let err = Bus::connect(&format!("embedded:{}", bad.display()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Engine);
    assert!(err.message().contains("secbus.db"), "names the path: {err}");
}

#[tokio::test]
async fn a_corrupt_stored_event_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut seqs = Vec::new();
    for n in 0..3 {
        seqs.push(
            bus.publish(event(&acme, "auth.login", n))
                .await
                .unwrap()
                .sequence
                .unwrap(),
        );
    }
    bus.close().await.unwrap();
    drop(bus);
    let db = dir.path().join("data").join("secbus.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE log SET event = '{not json' WHERE seq = ?1",
        [seqs[1] as i64],
    )
    .unwrap();
    drop(conn);

    let bus = Bus::connect(&url(&dir)).await.unwrap();
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Beginning))
        .await
        .unwrap();
    let got = timeout(WAIT, tail.next()).await.unwrap().unwrap();
    let err = got.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Engine);
    assert!(
        err.message().contains(&seqs[1].to_string()),
        "names the position: {err}"
    );
    bus.close().await.unwrap();
}

#[tokio::test]
async fn try_publish_is_full_while_the_writer_is_stuck_and_publish_waits() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let bus = Bus::connect(&url(&dir)).await.unwrap();
    bus.publish(event(&acme, "auth.login", 0)).await.unwrap();
    // Another connection holds the write lock: the writer cannot commit.
    let db = dir.path().join("data").join("secbus.db");
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let big: Vec<Event> = (0..20_000).map(|n| event(&acme, "auth.bulk", n)).collect();
    let bulk = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish_batch(big).await })
    };
    // The test runs on one thread: this lets the batch take the whole queue
    // and reach the stuck writer before the next line runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = bus
        .try_publish(event(&acme, "auth.try", 0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Full);
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    let receipts = timeout(WAIT, bulk).await.unwrap().unwrap().unwrap();
    assert_eq!(receipts.len(), 20_000);
    assert!(receipts.iter().all(|r| !r.duplicate));
    assert!(
        !bus.try_publish(event(&acme, "auth.try", 1))
            .await
            .unwrap()
            .duplicate
    );
    bus.close().await.unwrap();
}
