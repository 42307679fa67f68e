//! What is specific to the `redis://` engine, checked against a redis-server
//! of each test's own: the keys it writes, the dedup keys' TTL, sequences as
//! stream ids, retention, type filtering that leaves nothing pending, nacks
//! other members must not take early, a dropped member handing its unread
//! entries on, partition-key order within a member, dead letters, and errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use secbus::{
    Bus, BusConfig, ErrorKind, Event, EventType, Publisher, StartAt, SubscribeOptions, Subscriber,
    Subscription, TenantId, TypePattern,
};
use secbus_test_servers::RedisServer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn event(ty: &str, n: u64) -> Event {
    Event::builder(EventType::new(ty).unwrap(), acme())
        .source("redis-engine-test")
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

fn n_of(e: &Event) -> u64 {
    e.data().and_then(|d| d["n"].as_u64()).unwrap()
}

async fn connect(url: &str) -> Bus {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = BusConfig {
        spool_dir: dir,
        ..BusConfig::default()
    };
    Bus::connect_with(url, config).await.unwrap()
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn next(sub: &mut Subscription, what: &str) -> secbus::Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(other) => panic!("{what}: {other:?}"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

async fn nothing_within(sub: &mut Subscription, quiet: Duration, what: &str) {
    if let Ok(item) = tokio::time::timeout(quiet, sub.next()).await {
        panic!("{what}: expected nothing, got {item:?}");
    }
}

#[tokio::test]
async fn events_live_in_a_stream_per_tenant_under_the_prefix_with_dedup_slices_that_expire() {
    let server = server();
    let bus = connect(&format!("{}?prefix=app", server.url())).await;
    let e = event("auth.login.failed", 1);
    let receipt = bus.publish(e.clone()).await.unwrap();
    let globex = Event::builder(
        EventType::new("auth.login.failed").unwrap(),
        TenantId::new("globex").unwrap(),
    )
    .build()
    .unwrap();
    bus.publish(globex).await.unwrap();

    let mut conn = raw(&server).await;
    let entries: redis::streams::StreamRangeReply =
        conn.xrange_all("app:{acme}:log").await.unwrap();
    assert_eq!(entries.ids.len(), 1, "one event in acme's stream");
    let entry = &entries.ids[0];
    let ty: String = entry.get("type").unwrap();
    assert_eq!(ty, "auth.login.failed");
    let json: Vec<u8> = entry.get("event").unwrap();
    let mut stored = Event::from_json(&json).unwrap();
    assert!(stored.time.is_some(), "the time is set at publish");
    stored.time = None;
    assert_eq!(stored, e, "the entry holds the CloudEvent JSON");
    let (ms, n) = entry.id.split_once('-').unwrap();
    let (ms, n): (u64, u64) = (ms.parse().unwrap(), n.parse().unwrap());
    assert_eq!(
        receipt.sequence,
        Some(ms << 20 | n),
        "the sequence is the stream id, packed"
    );
    let globex_len: usize = conn.xlen("app:{globex}:log").await.unwrap();
    assert_eq!(globex_len, 1, "globex has a stream of its own");

    let slices: Vec<String> = conn.keys("app:{acme}:dedup:*").await.unwrap();
    assert_eq!(slices.len(), 1, "one dedup slice: {slices:?}");
    let field: bool = conn
        .hexists(&slices[0], format!("id:{}", e.id))
        .await
        .unwrap();
    assert!(field, "the slice holds the event id");
    let ttl: i64 = conn.pttl(&slices[0]).await.unwrap();
    let window = BusConfig::default().dedup_window.as_millis() as i64;
    assert!(
        ttl > window - 60_000 && ttl <= window + window / 2,
        "dedup slice TTL {ttl} ms, window {window} ms"
    );
    let again = bus.publish(e.clone()).await.unwrap();
    assert!(again.duplicate && again.sequence.is_none());
    let len: usize = conn.xlen("app:{acme}:log").await.unwrap();
    assert_eq!(len, 1, "the duplicate was not stored");
    let keys: Vec<String> = conn.keys("secbus:*").await.unwrap();
    assert!(keys.is_empty(), "keys outside the prefix: {keys:?}");
}

#[tokio::test]
async fn dedup_window_of_zero_stores_every_copy_and_writes_no_dedup_key() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig {
        dedup_window: Duration::ZERO,
        spool_dir: dir.path().to_path_buf(),
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&server.url(), config).await.unwrap();
    let e = event("auth.login.failed", 1);
    let a = bus.publish(e.clone()).await.unwrap();
    let b = bus.publish(e.clone()).await.unwrap();
    assert!(!a.duplicate && !b.duplicate);
    assert!(b.sequence > a.sequence);
    let mut conn = raw(&server).await;
    let keys: Vec<String> = conn.keys("secbus:{acme}:dedup:*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn batches_keep_their_order_across_tenants_and_runs() {
    let server = server();
    let bus = connect(&server.url()).await;
    let globex = TenantId::new("globex").unwrap();
    // Long enough for several script runs, tenants interleaved.
    let events: Vec<Event> = (0..1_300u64)
        .map(|n| {
            let tenant = if n % 7 == 0 { globex.clone() } else { acme() };
            Event::builder(EventType::new("edr.process.started").unwrap(), tenant)
                .data(json!({ "n": n }))
                .build()
                .unwrap()
        })
        .collect();
    let receipts = bus.publish_batch(events.clone()).await.unwrap();
    assert_eq!(receipts.len(), events.len());
    let mut last: HashMap<String, u64> = HashMap::new();
    for (e, r) in events.iter().zip(&receipts) {
        assert_eq!(r.id, e.id);
        let seq = r.sequence.expect("stored");
        let prev = last.insert(e.tenant.to_string(), seq).unwrap_or(0);
        assert!(seq > prev, "sequences of a tenant grow in batch order");
    }
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Beginning))
        .await
        .unwrap();
    let want: Vec<u64> = events
        .iter()
        .filter(|e| e.tenant == acme())
        .map(n_of)
        .collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(n_of(next(&mut tail, "acme's batch").await.event()));
    }
    assert_eq!(got, want);
    // The whole batch again: every one a duplicate, nothing stored.
    let again = bus.publish_batch(events).await.unwrap();
    assert!(again.iter().all(|r| r.duplicate));
}

#[tokio::test]
async fn maxlen_and_max_age_trim_the_log() {
    let server = server();
    let bus = connect(&format!("{}?maxlen=200&prefix=capped", server.url())).await;
    for chunk in 0..10u64 {
        let events = (0..100)
            .map(|n| event("audit.config.changed", chunk * 100 + n))
            .collect();
        bus.publish_batch(events).await.unwrap();
    }
    let mut conn = raw(&server).await;
    let len: usize = conn.xlen("capped:{acme}:log").await.unwrap();
    // MAXLEN ~ trims whole stream nodes (100 entries each by default).
    assert!((200..=400).contains(&len), "maxlen=200 kept {len} of 1000");

    let bus = connect(&format!("{}?max_age=1s&prefix=aged", server.url())).await;
    for chunk in 0..5u64 {
        let events = (0..100)
            .map(|n| event("audit.config.changed", chunk * 100 + n))
            .collect();
        bus.publish_batch(events).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    bus.publish(event("audit.config.changed", 999))
        .await
        .unwrap();
    let len: usize = conn.xlen("aged:{acme}:log").await.unwrap();
    assert!(
        len <= 101,
        "max_age=1s kept {len} of 501 events older than a second"
    );
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers_say_which() {
    for url in [
        "redis://127.0.0.1:1?prefix={x}",
        "redis://127.0.0.1:1?max_age=soon",
        "redis://127.0.0.1:1?maxlen=-3",
        "redis://127.0.0.1:1?colour=blue",
    ] {
        let e = Bus::connect(url).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{url}: {e}");
    }
    let port = secbus_test_servers::free_port();
    let e = Bus::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::EngineUnavailable, "{e}");
    assert!(e.kind().is_transient());

    let mut server = server();
    let bus = connect(&server.url()).await;
    bus.publish(event("auth.login.failed", 1)).await.unwrap();
    server.kill();
    let e = bus
        .publish(event("auth.login.failed", 2))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::EngineUnavailable, "{e}");
    let e = bus.ping().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::EngineUnavailable, "{e}");
}

#[tokio::test]
async fn a_group_acks_the_types_it_skips_so_nothing_stays_pending() {
    let server = server();
    let bus = connect(&server.url()).await;
    let mut sub = bus
        .subscribe(
            SubscribeOptions::group(acme(), "auth-only").types(TypePattern::new("auth.>").unwrap()),
        )
        .await
        .unwrap();
    for n in 0..20 {
        bus.publish(event("audit.config.changed", n)).await.unwrap();
    }
    let wanted = event("auth.login.failed", 99);
    bus.publish(wanted.clone()).await.unwrap();
    let d = next(&mut sub, "the one auth event").await;
    assert_eq!(d.event().id, wanted.id);
    d.ack().await.unwrap();
    let mut conn = raw(&server).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending: redis::streams::StreamPendingReply = conn
            .xpending("secbus:{acme}:log", "auth-only")
            .await
            .unwrap();
        if pending.count() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} entries still pending",
            pending.count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored: String = conn
        .hget("secbus:{acme}:groups", "auth-only")
        .await
        .unwrap();
    assert_eq!(stored, "auth.>", "the group keeps its pattern");
    let other = bus
        .subscribe(SubscribeOptions::group(acme(), "auth-only"))
        .await
        .unwrap_err();
    assert_eq!(other.kind(), ErrorKind::InvalidOptions, "{other}");
}

#[tokio::test]
async fn a_nack_longer_than_the_ack_wait_is_not_taken_early_by_another_member() {
    let server = server();
    let bus = connect(&server.url()).await;
    let options = SubscribeOptions::group(acme(), "patient")
        .ack_wait(Duration::from_millis(200))
        .max_deliveries(5);
    let mut a = bus.subscribe(options.clone()).await.unwrap();
    let mut b = bus.subscribe(options).await.unwrap();
    let e = event("auth.login.failed", 1);
    bus.publish(e.clone()).await.unwrap();
    let (d, first_is_a) = tokio::select! {
        d = a.next() => (d.unwrap().unwrap(), true),
        d = b.next() => (d.unwrap().unwrap(), false),
    };
    assert_eq!((d.event().id.clone(), d.attempt()), (e.id.clone(), 1));
    let nacked = tokio::time::Instant::now();
    d.nack(Some(Duration::from_millis(1_500)), Some("later"))
        .await
        .unwrap();
    let (first, second) = if first_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    nothing_within(
        second,
        Duration::from_millis(1_000),
        "the other member before the nack is due",
    )
    .await;
    let d = next(first, "the nacked event when due").await;
    assert!(
        nacked.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        nacked.elapsed()
    );
    assert_eq!((d.event().id.clone(), d.attempt()), (e.id.clone(), 2));
    d.ack().await.unwrap();
    nothing_within(
        second,
        Duration::from_millis(600),
        "the other member after the ack",
    )
    .await;
}

#[tokio::test]
async fn the_nacks_of_a_member_gone_are_delivered_by_another() {
    let server = server();
    let bus = connect(&server.url()).await;
    let options = SubscribeOptions::group(acme(), "handover")
        .ack_wait(Duration::from_millis(200))
        .max_deliveries(5);
    let mut gone = bus.subscribe(options.clone()).await.unwrap();
    let e = event("auth.login.failed", 1);
    bus.publish(e.clone()).await.unwrap();
    let d = next(&mut gone, "the first delivery").await;
    d.nack(Some(Duration::from_millis(300)), None)
        .await
        .unwrap();
    drop(gone);
    let mut other = bus.subscribe(options).await.unwrap();
    let d = next(&mut other, "the nacked event, by the member left").await;
    assert_eq!((d.event().id.clone(), d.attempt()), (e.id.clone(), 2));
    d.ack().await.unwrap();
}

#[tokio::test]
async fn a_dropped_member_hands_what_it_never_delivered_to_the_others_at_once() {
    let server = server();
    let bus = connect(&server.url()).await;
    // A long ack wait: only the release on drop can make this quick.
    let options = SubscribeOptions::group(acme(), "handoff")
        .ack_wait(Duration::from_secs(60))
        .max_in_flight(50);
    let mut first = bus.subscribe(options.clone()).await.unwrap();
    let sent: Vec<Event> = (0..20).map(|n| event("edr.process.started", n)).collect();
    bus.publish_batch(sent.clone()).await.unwrap();
    // It reads all twenty, hands out one.
    let d = next(&mut first, "one delivery").await;
    d.ack().await.unwrap();
    drop(first);
    let mut second = bus.subscribe(options).await.unwrap();
    let mut got = HashSet::new();
    while got.len() < sent.len() - 1 {
        let d = next(&mut second, "the entries the first member never handed out").await;
        assert_eq!(
            d.attempt(),
            1,
            "an entry never delivered counts as a first delivery"
        );
        got.insert(d.event().id.clone());
        d.ack().await.unwrap();
    }
    nothing_within(&mut second, Duration::from_millis(500), "the second member").await;
}

#[tokio::test]
async fn one_member_hands_out_one_event_per_partition_key_at_a_time_in_order() {
    const KEYS: [&str; 3] = ["host-a", "host-b", "host-c"];
    const PER_KEY: u64 = 30;
    let server = server();
    let bus = connect(&server.url()).await;
    let mut sub = bus
        .subscribe(SubscribeOptions::group(acme(), "ordered").max_in_flight(8))
        .await
        .unwrap();
    for n in 0..PER_KEY {
        for key in KEYS {
            let e = Event::builder(EventType::new("edr.process.started").unwrap(), acme())
                .partition_key(key)
                .data(json!({ "n": n }))
                .build()
                .unwrap();
            bus.publish(e).await.unwrap();
        }
    }
    #[derive(Default)]
    struct Seen {
        in_flight: HashSet<String>,
        most: usize,
        order: HashMap<String, Vec<u64>>,
        violations: usize,
    }
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..KEYS.len() as u64 * PER_KEY {
        let d = next(&mut sub, "a keyed event").await;
        let seen = seen.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let key = d.event().partitionkey.clone().unwrap();
            {
                let mut s = seen.lock();
                if !s.in_flight.insert(key.clone()) {
                    s.violations += 1;
                }
                s.most = s.most.max(s.in_flight.len());
                s.order
                    .entry(key.clone())
                    .or_default()
                    .push(n_of(d.event()));
            }
            tokio::time::sleep(Duration::from_millis(rand_ms())).await;
            seen.lock().in_flight.remove(&key);
            d.ack().await.unwrap();
            let _ = done.send(());
        });
    }
    for _ in 0..KEYS.len() as u64 * PER_KEY {
        tokio::time::timeout(WAIT, finished.recv()).await.unwrap();
    }
    let s = seen.lock();
    assert_eq!(s.violations, 0, "two events of one key in flight at once");
    for key in KEYS {
        assert_eq!(s.order[key], (0..PER_KEY).collect::<Vec<_>>(), "key {key}");
    }
    assert!(s.most >= 2, "different keys never ran at once");
}

fn rand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % 3
}

#[tokio::test]
async fn dead_letters_are_a_stream_per_tenant_found_and_deleted_by_id() {
    let server = server();
    let bus = connect(&server.url()).await;
    let mut sub = bus
        .subscribe(SubscribeOptions::group(acme(), "dl"))
        .await
        .unwrap();
    let sent: Vec<Event> = (0..3).map(|n| event("auth.login.failed", n)).collect();
    for e in &sent {
        bus.publish(e.clone()).await.unwrap();
    }
    for _ in &sent {
        next(&mut sub, "an event to terminate")
            .await
            .term("unreadable")
            .await
            .unwrap();
    }
    let dls = bus.dead_letters(&acme(), 10).await.unwrap();
    assert_eq!(
        dls.iter().map(|d| d.event.id.clone()).collect::<Vec<_>>(),
        sent.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        "oldest first"
    );
    assert_eq!(bus.dead_letters(&acme(), 2).await.unwrap().len(), 2);
    assert!(
        bus.dead_letters(&TenantId::new("globex").unwrap(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(bus.delete_dead_letter(&acme(), &dls[1].id).await.unwrap());
    assert!(!bus.delete_dead_letter(&acme(), &dls[1].id).await.unwrap());
    let left = bus.dead_letters(&acme(), 10).await.unwrap();
    assert_eq!(left.len(), 2);
    let mut conn = raw(&server).await;
    let index: usize = conn.hlen("secbus:{acme}:dlq:index").await.unwrap();
    let stream: usize = conn.xlen("secbus:{acme}:dlq").await.unwrap();
    assert_eq!((index, stream), (2, 2));
}

#[tokio::test]
async fn an_id_is_remembered_across_dedup_slices_for_the_window_and_then_forgotten() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(800);
    let config = BusConfig {
        dedup_window: window,
        spool_dir: dir.path().to_path_buf(),
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&server.url(), config).await.unwrap();
    let e = event("auth.login.failed", 1);
    let start = std::time::Instant::now();
    assert!(!bus.publish(e.clone()).await.unwrap().duplicate);
    // Slices are a quarter window: these copies land in later slices.
    for wait in [250, 500] {
        tokio::time::sleep_until((start + Duration::from_millis(wait)).into()).await;
        let copy = bus.publish(e.clone()).await.unwrap();
        if start.elapsed() < window {
            assert!(copy.duplicate, "a copy after {wait} ms was stored");
        }
    }
    let batch = bus.publish_batch(vec![e.clone(), e.clone()]).await.unwrap();
    if start.elapsed() < window {
        assert!(batch.iter().all(|r| r.duplicate), "{batch:?}");
    }
    tokio::time::sleep_until((start + window + window / 4 + Duration::from_millis(100)).into())
        .await;
    let later = bus.publish_batch(vec![e.clone(), e.clone()]).await.unwrap();
    assert!(
        !later[0].duplicate,
        "the id was kept past its window and slice"
    );
    assert!(later[1].duplicate, "a copy in the same batch was stored");
    let mut conn = raw(&server).await;
    let len: usize = conn.xlen("secbus:{acme}:log").await.unwrap();
    assert_eq!(len, 2, "the event once in its window and once after");
}

#[tokio::test]
async fn a_dedup_window_longer_than_redis_takes_is_capped_not_refused() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig {
        dedup_window: Duration::MAX,
        spool_dir: dir.path().to_path_buf(),
        ..BusConfig::default()
    };
    let bus = Bus::connect_with(&server.url(), config).await.unwrap();
    let e = event("auth.login.failed", 1);
    assert!(!bus.publish(e.clone()).await.unwrap().duplicate);
    assert!(bus.publish(e).await.unwrap().duplicate);
}

#[tokio::test]
async fn a_member_whose_group_vanished_creates_it_again_and_goes_on() {
    let server = server();
    let bus = connect(&server.url()).await;
    let mut sub = bus
        .subscribe(SubscribeOptions::group(acme(), "phoenix"))
        .await
        .unwrap();
    let first = event("auth.login.failed", 1);
    bus.publish(first.clone()).await.unwrap();
    let d = next(&mut sub, "the first event").await;
    assert_eq!(d.event().id, first.id);
    d.ack().await.unwrap();
    // What a server restarted without its data looks like to the member.
    let mut conn = raw(&server).await;
    let _: () = conn.del("secbus:{acme}:log").await.unwrap();
    let second = event("auth.login.failed", 2);
    bus.publish(second.clone()).await.unwrap();
    let d = next(&mut sub, "an event after the group vanished").await;
    assert_eq!(d.event().id, second.id);
    d.ack().await.unwrap();
}
