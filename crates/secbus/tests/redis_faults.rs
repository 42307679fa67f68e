//! Faults on the `redis://` engine, each against a redis-server of its own:
//! a group member that dies (SIGKILL of its process) holding unacked events,
//! whose events another member claims after the ack wait, none lost, with the
//! delivery count going up into the dead-letter logic; and a SIGKILL of the
//! server itself while events are published and consumed: every acknowledged
//! publish survives (append-only file, fsync always) and the consumer goes on
//! after the restart.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use secbus::{
    Bus, BusConfig, Event, EventType, Publisher, StartAt, SubscribeOptions, Subscriber,
    Subscription, TenantId,
};
use secbus_test_servers::RedisServer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
/// Set in the child process: the URL of the server its member joins.
const CHILD_URL: &str = "SECBUS_REDIS_FAULT_CHILD_URL";
const CHILD_GROUP: &str = "SECBUS_REDIS_FAULT_CHILD_GROUP";
const CHILD_HOLD: &str = "SECBUS_REDIS_FAULT_CHILD_HOLD";

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn event(n: u64) -> Event {
    Event::builder(EventType::new("edr.process.started").unwrap(), acme())
        .source("redis-faults-test")
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

async fn connect(url: &str) -> Bus {
    let config = BusConfig {
        spool_dir: tempfile::tempdir().unwrap().keep(),
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

/// The member that dies. Run as a test of this binary in a child process, it
/// joins the group, takes deliveries without acking them, prints their ids and
/// waits to be killed. Run as an ordinary test it does nothing.
#[tokio::test]
async fn child_member_that_holds_events_until_killed() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let group = std::env::var(CHILD_GROUP).unwrap();
    let hold: usize = std::env::var(CHILD_HOLD).unwrap().parse().unwrap();
    let bus = connect(&url).await;
    let mut sub = bus
        .subscribe(
            SubscribeOptions::group(acme(), group.as_str())
                .start(StartAt::Beginning)
                .max_in_flight(hold),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..hold {
        held.push(next(&mut sub, "a delivery to hold").await);
    }
    let ids: Vec<String> = held.iter().map(|d| d.event().id.to_string()).collect();
    println!("HELD {}", ids.join(","));
    std::future::pending::<()>().await;
}

/// Runs the dying member in a child process until it holds `hold` deliveries
/// of `group`, kills it with SIGKILL, and returns the ids it held.
fn run_member_and_kill_it(url: &str, group: &str, hold: usize) -> HashSet<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "child_member_that_holds_events_until_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, url)
        .env(CHILD_GROUP, group)
        .env(CHILD_HOLD, hold.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest's "test <name> ... " has no line end of its own.
            if let Some((_, ids)) = line.split_once("HELD ") {
                let _ = tx.send(ids.trim().to_owned());
                return;
            }
        }
    });
    let held = rx.recv_timeout(WAIT);
    child.kill().unwrap();
    child.wait().unwrap();
    let held = held.expect("the child member took its deliveries");
    held.split(',').map(str::to_owned).collect()
}

#[tokio::test]
async fn a_member_killed_holding_events_loses_none_another_member_claims_them() {
    const EVENTS: u64 = 100;
    const HOLD: usize = 10;
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let bus = connect(&url).await;
    let sent: Vec<Event> = (0..EVENTS).map(event).collect();
    bus.publish_batch(sent.clone()).await.unwrap();

    let held = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run_member_and_kill_it(&url, "survivors", HOLD)
    })
    .await
    .unwrap();
    assert_eq!(held.len(), HOLD);

    let ack_wait = Duration::from_millis(800);
    let mut survivor = bus
        .subscribe(
            SubscribeOptions::group(acme(), "survivors")
                .ack_wait(ack_wait)
                .max_deliveries(5),
        )
        .await
        .unwrap();
    let mut got: HashMap<String, u32> = HashMap::new();
    while got.len() < EVENTS as usize {
        let d = next(
            &mut survivor,
            &format!("every event ({} so far)", got.len()),
        )
        .await;
        let id = d.event().id.to_string();
        assert!(
            got.insert(id.clone(), d.attempt()).is_none(),
            "event {id} twice"
        );
        d.ack().await.unwrap();
    }
    let all: HashSet<String> = sent.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(
        got.keys().cloned().collect::<HashSet<_>>(),
        all,
        "events were lost"
    );
    for id in &held {
        assert_eq!(
            got[id], 2,
            "event {id}, held by the dead member, is a second delivery"
        );
    }
    if let Ok(item) = tokio::time::timeout(ack_wait * 2, survivor.next()).await {
        panic!("a delivery after every event was acked: {item:?}");
    }
}

#[tokio::test]
async fn deliveries_of_dead_members_count_toward_the_dead_letters() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let bus = connect(&url).await;
    let poison = event(1);
    bus.publish(poison.clone()).await.unwrap();

    // Two members die holding it, one after the other: two deliveries.
    let url2 = url.clone();
    let held = tokio::task::spawn_blocking(move || run_member_and_kill_it(&url2, "fragile", 1))
        .await
        .unwrap();
    assert!(held.contains(poison.id.as_str()));
    let ack_wait = Duration::from_millis(300);
    let options = SubscribeOptions::group(acme(), "fragile")
        .ack_wait(ack_wait)
        .max_deliveries(2);
    // The second delivery, left unsettled past the ack wait by a member that
    // is then dropped without a word (its process stuck): a third delivery
    // goes over max_deliveries and to the dead letters instead.
    let mut second = bus.subscribe(options.clone()).await.unwrap();
    let d = next(&mut second, "the second delivery").await;
    assert_eq!((d.event().id.clone(), d.attempt()), (poison.id.clone(), 2));
    std::mem::forget(d);
    let mut third = bus.subscribe(options).await.unwrap();
    // Pulled without interruption: the subscription dead-letters the third
    // delivery inside `next`, which must not be cut short by a timeout.
    let puller =
        tokio::spawn(async move { third.next().await.map(|d| d.map(|d| d.event().id.clone())) });
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let dls = bus.dead_letters(&acme(), 10).await.unwrap();
        if let Some(dl) = dls.first() {
            assert_eq!(dls.len(), 1, "{dls:?}");
            assert_eq!(dl.event.id, poison.id);
            assert_eq!(dl.reason, "max_deliveries");
            assert_eq!(dl.attempts, 2);
            assert_eq!(dl.group, "fragile");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        assert!(
            !puller.is_finished(),
            "a delivery past max_deliveries reached the subscriber: {:?}",
            puller.await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!puller.is_finished(), "the dead letter was delivered again");
    puller.abort();
    drop(second);
}

#[tokio::test]
async fn a_server_killed_and_restarted_keeps_every_acknowledged_publish_and_consumers_go_on() {
    const EVENTS: u64 = 600;
    const KILL_AT: usize = 200;
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let bus = connect(&server.url()).await;
    let mut group = bus
        .subscribe(SubscribeOptions::group(acme(), "through-the-crash"))
        .await
        .unwrap();
    let (consumed_tx, mut consumed) = tokio::sync::mpsc::unbounded_channel();
    let consumer = tokio::spawn(async move {
        while let Some(item) = group.next().await {
            let Ok(d) = item else { continue };
            let _ = consumed_tx.send(d.event().id.to_string());
            let _ = d.ack().await;
        }
    });

    let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel();
    let publisher = tokio::spawn({
        let bus = bus.clone();
        async move {
            let mut failures = 0u32;
            for n in 0..EVENTS {
                let e = event(n);
                // What a producer does when unsure: publish again until Ok.
                loop {
                    match bus.publish(e.clone()).await {
                        Ok(_) => break,
                        Err(err) => {
                            assert!(err.kind().is_transient(), "{err}");
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                let _ = acked_tx.send(e.id.to_string());
            }
            failures
        }
    });

    let mut before_kill = HashSet::new();
    while before_kill.len() < KILL_AT {
        let id = tokio::time::timeout(WAIT, acked.recv())
            .await
            .unwrap()
            .unwrap();
        before_kill.insert(id);
    }
    let mut server = tokio::task::spawn_blocking(move || {
        server.kill();
        std::thread::sleep(Duration::from_millis(500));
        server.restart().unwrap();
        server
    })
    .await
    .unwrap();
    let failures = tokio::time::timeout(WAIT * 2, publisher)
        .await
        .unwrap()
        .unwrap();
    assert!(failures > 0, "the publisher never saw the server down");
    let mut published = before_kill.clone();
    while let Ok(id) = acked.try_recv() {
        published.insert(id);
    }
    assert_eq!(published.len(), EVENTS as usize);

    // The log after the crash: every event once, in publish order.
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Beginning))
        .await
        .unwrap();
    let mut log = Vec::new();
    while log.len() < EVENTS as usize {
        log.push(
            next(&mut tail, "the log after the crash")
                .await
                .event()
                .clone(),
        );
    }
    let ns: Vec<u64> = log
        .iter()
        .map(|e| e.data().and_then(|d| d["n"].as_u64()).unwrap())
        .collect();
    assert_eq!(
        ns,
        (0..EVENTS).collect::<Vec<_>>(),
        "the log lost or repeated events"
    );
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), tail.next()).await {
        panic!("the log holds more than was published: {item:?}");
    }

    // The group got every event (those in flight at the kill may come twice).
    let mut seen = HashSet::new();
    while seen.len() < EVENTS as usize {
        let id = tokio::time::timeout(WAIT, consumed.recv())
            .await
            .unwrap_or_else(|_| panic!("the group has {} of {EVENTS} events", seen.len()))
            .unwrap();
        seen.insert(id);
    }
    assert_eq!(seen, published);

    // And goes on with what comes after.
    let after = event(EVENTS);
    bus.publish(after.clone()).await.unwrap();
    loop {
        let id = tokio::time::timeout(WAIT, consumed.recv())
            .await
            .unwrap()
            .unwrap();
        if id == after.id.as_str() {
            break;
        }
    }
    consumer.abort();
    server.kill();
}
