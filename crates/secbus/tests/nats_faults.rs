//! The `nats://` engine when servers die: each test starts its own nats-server
//! (or three-node cluster) and kills it with SIGKILL.
//!
//! - a kill -9 in the middle of 50,000 `publish_with_fallback` calls, and a
//!   restart on the same store dir 3 s later: every event ends up in the stream
//!   once, and a consumer group gets each once;
//! - a member that dies holding unacked events: another member (another
//!   connection, as another process) gets them after the ack wait;
//! - a group member and a tail waiting across a kill -9 and restart get what is
//!   published after it, rather than stopping quietly;
//! - a three-node cluster with an R3 stream loses no acknowledged event when the
//!   stream's leader is killed mid-stream, and its consumer goes on;
//! - a memory-only stream, gone with its server, is created again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secbus::{
    Bus, BusConfig, Event, EventId, EventType, FallbackOutcome, Publisher, StartAt,
    SubscribeOptions, Subscriber, Subscription, TenantId,
};
use secbus_test_servers::{NatsCluster, NatsServer};
use serde_json::json;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn event(n: u64) -> Event {
    Event::builder(EventType::new("edr.process.started").unwrap(), acme())
        .source("nats-faults-test")
        .data(json!({ "n": n, "host": "srv-7", "pid": 4242 }))
        .build()
        .unwrap()
}

async fn connect(url: &str, spool: &std::path::Path) -> Bus {
    let config = BusConfig {
        spool_dir: spool.to_path_buf(),
        ..BusConfig::default()
    };
    Bus::connect_with(url, config).await.unwrap()
}

async fn next(sub: &mut Subscription, what: &str) -> secbus::Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(other) => panic!("{what}: {other:?}"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// Runs a fixture call that blocks (kill, restart) without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Publishes `event` until the engine takes it (a node may be down or a leader
/// being elected), within `WAIT`.
async fn publish_until_stored(bus: &Bus, event: &Event) {
    let deadline = Instant::now() + WAIT;
    loop {
        match bus.publish(event.clone()).await {
            Ok(_) => return,
            Err(e) if e.kind().is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("event {} was never stored: {e}", event.id),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_fallback_publish_of_50000_events_loses_and_doubles_nothing() {
    const EVENTS: u64 = 50_000;
    const PUBLISHERS: u64 = 8;
    let mut server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
    let spool_dir = tempfile::tempdir().unwrap();
    // A short PubAck wait: publishes caught by the kill spool after 1 s.
    let bus = connect(&format!("{}?timeout=1s", server.url()), spool_dir.path()).await;
    let spool = bus.spool().await.unwrap();

    let attempted = Arc::new(AtomicU64::new(0));
    let spooled = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let bus = bus.clone();
        let attempted = attempted.clone();
        let spooled = spooled.clone();
        publishers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (p..EVENTS).step_by(PUBLISHERS as usize) {
                let e = event(n);
                ids.push(e.id.clone());
                match bus.publish_with_fallback(e).await {
                    FallbackOutcome::Published(_) => {}
                    FallbackOutcome::Spooled => {
                        spooled.fetch_add(1, Ordering::Relaxed);
                    }
                    FallbackOutcome::Refused(e) => panic!("event {n} was refused: {e}"),
                }
                attempted.fetch_add(1, Ordering::Relaxed);
            }
            ids
        }));
    }

    // Kill mid-stream, restart on the same store dir 3 s later.
    let started = Instant::now();
    while attempted.load(Ordering::Relaxed) < EVENTS / 5 {
        assert!(started.elapsed() < WAIT, "the publishers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    blocking(|| server.kill());
    let at_kill = attempted.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocking(|| server.restart()).unwrap_or_else(|e| panic!("{e}"));

    let mut sent = HashSet::new();
    for p in publishers {
        let ids = tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("the publishers finished")
            .unwrap();
        sent.extend(ids);
    }
    assert_eq!(sent.len() as u64, EVENTS);
    assert!(at_kill < EVENTS, "the kill came after the last publish");
    assert!(
        spooled.load(Ordering::Relaxed) > 0,
        "nothing was spooled: the kill missed the publish"
    );
    assert!(
        spool.wait_drained(Duration::from_secs(60)).await,
        "the spool did not drain ({} left)",
        spool.depth()
    );

    // In the stream: every event, once.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("SECBUS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, EVENTS);

    // In a consumer group: every event, none twice.
    let mut group = bus
        .subscribe(
            SubscribeOptions::group(acme(), "after-the-kill")
                .start(StartAt::Beginning)
                .max_in_flight(512),
        )
        .await
        .unwrap();
    let mut got: HashSet<EventId> = HashSet::new();
    for i in 0..EVENTS {
        let d = next(&mut group, &format!("group delivery {i}")).await;
        assert!(
            got.insert(d.event().id.clone()),
            "event {} came twice to the group",
            d.event().id
        );
        d.ack().await.unwrap();
    }
    assert_eq!(got, sent);
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(1), group.next()).await {
        panic!("more than {EVENTS} deliveries: {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_holding_events_hands_them_to_another_after_the_ack_wait() {
    let server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
    let spool = tempfile::tempdir().unwrap();
    let ack_wait = Duration::from_secs(1);
    let options = SubscribeOptions::group(acme(), "workers")
        .ack_wait(ack_wait)
        .max_in_flight(5);
    // Two connections: the members are as good as two processes.
    let dying = connect(&server.url(), spool.path()).await;
    let survivor = connect(&server.url(), &spool.path().join("b")).await;
    let mut member = dying.subscribe(options.clone()).await.unwrap();

    let sent: Vec<Event> = (0..5).map(event).collect();
    survivor.publish_batch(sent.clone()).await.unwrap();
    let mut held = Vec::new();
    for i in 0..sent.len() {
        held.push(next(&mut member, &format!("held delivery {i}")).await);
    }
    assert!(held.iter().all(|d| d.attempt() == 1));
    // Dies: nothing settled, its connection gone.
    let died = Instant::now();
    drop(held);
    drop(member);
    drop(dying);

    let mut other = survivor.subscribe(options).await.unwrap();
    let mut got = HashSet::new();
    for i in 0..sent.len() {
        let d = next(&mut other, &format!("taken over {i}")).await;
        assert!(
            died.elapsed() >= ack_wait.mul_f64(0.8),
            "redelivered after {:?}, before the ack wait",
            died.elapsed()
        );
        assert_eq!(d.attempt(), 2, "a redelivery counts as the second attempt");
        got.insert(d.event().id.clone());
        d.ack().await.unwrap();
    }
    let want: HashSet<EventId> = sent.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, want);
    if let Ok(Some(item)) = tokio::time::timeout(ack_wait * 2, other.next()).await {
        panic!("an acked event came back: {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_member_and_tail_keep_working_across_a_kill_9_and_restart() {
    let mut server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
    let spool = tempfile::tempdir().unwrap();
    let bus = connect(&format!("{}?timeout=1s", server.url()), spool.path()).await;
    let mut member = bus
        .subscribe(SubscribeOptions::group(acme(), "steady"))
        .await
        .unwrap();
    let mut tail = bus.subscribe(SubscribeOptions::tail(acme())).await.unwrap();
    let before = event(1);
    bus.publish(before.clone()).await.unwrap();
    let d = next(&mut member, "before the kill").await;
    assert_eq!(d.event().id, before.id);
    d.ack().await.unwrap();
    assert_eq!(
        next(&mut tail, "the tail before the kill").await.event().id,
        before.id
    );

    // Both wait on the server when it dies.
    let waiting_member = tokio::spawn(async move {
        let d = next(&mut member, "the member after the restart").await;
        let id = d.event().id.clone();
        d.ack().await.unwrap();
        id
    });
    let waiting_tail = tokio::spawn(async move {
        next(&mut tail, "the tail after the restart")
            .await
            .event()
            .id
            .clone()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(|| server.kill());
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| server.restart()).unwrap_or_else(|e| panic!("{e}"));

    let after = event(2);
    publish_until_stored(&bus, &after).await;
    let got = tokio::time::timeout(WAIT, waiting_member)
        .await
        .expect("the member got nothing after the restart")
        .unwrap();
    assert_eq!(got, after.id);
    let got = tokio::time::timeout(WAIT, waiting_tail)
        .await
        .expect("the tail got nothing after the restart")
        .unwrap();
    assert_eq!(got, after.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_loses_no_acknowledged_event_when_its_leader_dies() {
    const EVENTS: u64 = 3_000;
    let mut cluster = NatsCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let spool = tempfile::tempdir().unwrap();
    let bus = connect(
        &format!("{}?replicas=3&timeout=2s", cluster.url()),
        spool.path(),
    )
    .await;

    // A member consuming all along.
    let mut member = bus
        .subscribe(SubscribeOptions::group(acme(), "detection").max_in_flight(64))
        .await
        .unwrap();
    let consumed = Arc::new(parking_lot::Mutex::new(HashSet::<EventId>::new()));
    let consumer = tokio::spawn({
        let consumed = consumed.clone();
        async move {
            while let Some(item) = member.next().await {
                let d = item.unwrap();
                consumed.lock().insert(d.event().id.clone());
                let _ = d.ack().await;
            }
        }
    });

    let acked = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let bus = bus.clone();
        let acked = acked.clone();
        async move {
            let mut ids = Vec::new();
            for n in 0..EVENTS {
                let e = event(n);
                publish_until_stored(&bus, &e).await;
                ids.push(e.id);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            ids
        }
    });

    while acked.load(Ordering::Relaxed) < EVENTS / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = async_nats::connect(cluster.node_url(0)).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream("SECBUS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let victim = (0..NatsCluster::NODES)
        .find(|&i| cluster.node_name(i) == leader)
        .expect("the leader is a node of the cluster");
    blocking(|| cluster.kill(victim));
    let killed_at = acked.load(Ordering::Relaxed);

    let sent: HashSet<EventId> = tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("the publisher finished")
        .unwrap()
        .into_iter()
        .collect();
    assert!(killed_at < EVENTS, "the kill came after the last publish");

    // Every acknowledged event reached the consumer, which went on after the kill.
    let deadline = Instant::now() + WAIT;
    loop {
        let missing = sent.difference(&consumed.lock()).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events never reached the consumer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.abort();

    // And a replay from the start, opened once the cluster settled, has them all.
    let deadline = Instant::now() + WAIT;
    let mut replay = loop {
        match bus
            .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Beginning))
            .await
        {
            Ok(replay) => break replay,
            Err(e) if e.kind().is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no replay after the kill: {e}"),
        }
    };
    let mut stored = HashSet::new();
    while stored.len() < sent.len() {
        stored.insert(next(&mut replay, "the replay").await.event().id.clone());
    }
    assert_eq!(stored, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_stream_lost_in_a_restart_is_created_again() {
    let mut server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
    let spool = tempfile::tempdir().unwrap();
    let bus = connect(
        &format!("{}?storage=memory&timeout=1s", server.url()),
        spool.path(),
    )
    .await;
    assert!(!bus.capabilities().persistent);
    let lost = event(1);
    bus.publish(lost.clone()).await.unwrap();
    blocking(|| server.kill());
    blocking(|| server.restart()).unwrap_or_else(|e| panic!("{e}"));

    // Publishing works again once the engine has made the stream anew.
    let after = event(2);
    publish_until_stored(&bus, &after).await;
    let mut replay = bus
        .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Beginning))
        .await
        .unwrap();
    assert_eq!(next(&mut replay, "the replay").await.event().id, after.id);
}
