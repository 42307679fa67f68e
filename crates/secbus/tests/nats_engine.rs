//! What is specific to the `nats://` engine, checked against a nats-server of
//! each test's own: what a plain NATS client sees of what secbus wrote (the
//! CloudEvents binding), tenant-scoped message ids, the stream and consumer
//! settings made from the URL and the subscribe options, redrives and dead
//! letters as stored, messages that are not secbus events, double acks,
//! partition-key order between the members on one bus, and errors.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use secbus::{
    Bus, BusConfig, ErrorKind, Event, EventId, EventType, Publisher, StartAt, SubscribeOptions,
    Subscriber, Subscription, TenantId, TypePattern,
};
use secbus_test_servers::NatsServer;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn acme() -> TenantId {
    tenant("acme")
}

fn event(ty: &str, n: u64) -> Event {
    Event::builder(EventType::new(ty).unwrap(), acme())
        .source("nats-engine-test")
        .data(json!({ "n": n }))
        .build()
        .unwrap()
}

async fn connect(url: &str) -> Bus {
    connect_with(url, BusConfig::default()).await
}

async fn connect_with(url: &str, config: BusConfig) -> Bus {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = BusConfig {
        spool_dir: dir,
        ..config
    };
    Bus::connect_with(url, config).await.unwrap()
}

async fn jetstream(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
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

/// Every message of `stream` on `filter`, read by a plain JetStream consumer.
async fn read_raw(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> Vec<async_nats::jetstream::Message> {
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending as usize;
    let mut out = Vec::new();
    if pending == 0 {
        return out;
    }
    let mut batch = consumer
        .batch()
        .max_messages(pending)
        .expires(WAIT)
        .messages()
        .await
        .unwrap();
    while let Some(m) = batch.next().await {
        out.push(m.unwrap());
    }
    out
}

#[tokio::test]
async fn a_plain_nats_client_reads_and_filters_what_secbus_wrote() {
    let server = server();
    let bus = connect(&server.url()).await;
    let js = jetstream(&server).await;
    // A core NATS subscriber sees live events on the subject, as `nats sub` would.
    let mut live = js.client().subscribe("secbus.acme.auth.>").await.unwrap();
    // A request on the same connection returns after the server has the SUB.
    js.get_stream("SECBUS").await.unwrap();

    let login = Event::builder(EventType::new("auth.login.failed").unwrap(), acme())
        .source("idp")
        .subject("user/bob")
        .partition_key("bob")
        .extension("region", "eu-west-1")
        .data(json!({ "user": "bob", "ip": "203.0.113.9" }))
        .build()
        .unwrap();
    let receipt = bus.publish(login.clone()).await.unwrap();
    bus.publish(event("edr.process.started", 1)).await.unwrap();
    let globex = Event::builder(
        EventType::new("auth.login.failed").unwrap(),
        tenant("globex"),
    )
    .build()
    .unwrap();
    bus.publish(globex).await.unwrap();

    let seen = tokio::time::timeout(WAIT, live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.subject.as_str(), "secbus.acme.auth.login.failed");

    // Filtering by tenant and type is a subject filter.
    let stored = read_raw(&js, "SECBUS", "secbus.acme.auth.>").await;
    assert_eq!(stored.len(), 1, "only acme's auth events match");
    let m = &stored[0];
    assert_eq!(m.info().unwrap().stream_sequence, receipt.sequence.unwrap());
    let headers = m.headers.as_ref().expect("headers");
    assert_eq!(
        headers.get("Content-Type").map(|v| v.as_str()),
        Some("application/cloudevents+json"),
        "structured content mode of the CloudEvents NATS binding"
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(format!("acme:{}", login.id).as_str())
    );
    // The body is the CloudEvent, readable by any JSON parser.
    let body: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], login.id.as_str());
    assert_eq!(body["type"], "auth.login.failed");
    assert_eq!(body["source"], "idp");
    assert_eq!(body["subject"], "user/bob");
    assert_eq!(body["tenantid"], "acme");
    assert_eq!(body["partitionkey"], "bob");
    assert_eq!(body["region"], "eu-west-1");
    assert_eq!(body["data"], json!({ "user": "bob", "ip": "203.0.113.9" }));
    assert!(body["time"].is_string(), "time is set at publish");
    // And secbus reads it back as the same event.
    assert_eq!(Event::from_json(&m.payload).unwrap().id, login.id);

    assert_eq!(read_raw(&js, "SECBUS", "secbus.acme.>").await.len(), 2);
    assert_eq!(
        read_raw(&js, "SECBUS", "secbus.*.auth.login.failed")
            .await
            .len(),
        2
    );
    assert_eq!(read_raw(&js, "SECBUS", "secbus.globex.>").await.len(), 1);
}

#[tokio::test]
async fn message_ids_are_scoped_by_tenant() {
    let server = server();
    let bus = connect(&server.url()).await;
    let id = EventId::new("shared-id-1").unwrap();
    let for_tenant = |t: &str| {
        Event::builder(EventType::new("auth.login.failed").unwrap(), tenant(t))
            .id(id.clone())
            .build()
            .unwrap()
    };
    let first = bus.publish(for_tenant("acme")).await.unwrap();
    assert!(!first.duplicate);
    // Another tenant reusing the id is not a duplicate: it cannot suppress acme's events.
    let other = bus.publish(for_tenant("globex")).await.unwrap();
    assert!(
        !other.duplicate,
        "globex's event was dropped as acme's duplicate"
    );
    assert_ne!(other.sequence, first.sequence);
    let again = bus.publish(for_tenant("acme")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, None);

    let js = jetstream(&server).await;
    let info = js
        .get_stream("SECBUS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 2);
}

#[tokio::test]
async fn streams_and_consumers_follow_the_url_and_the_subscribe_options() {
    let server = server();
    let url = format!(
        "{}?stream=EVENTS&prefix=prod.events&max_age=2h&max_bytes=64MiB",
        server.url()
    );
    let config = BusConfig {
        dedup_window: Duration::from_secs(90),
        ..BusConfig::default()
    };
    let bus = connect_with(&url, config).await;
    let js = jetstream(&server).await;
    let events = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(events.config.subjects, vec!["prod.events.>".to_owned()]);
    assert_eq!(events.config.max_age, Duration::from_secs(7200));
    assert_eq!(events.config.max_bytes, 64 << 20);
    assert_eq!(events.config.duplicate_window, Duration::from_secs(90));
    let dlq = js
        .get_stream("EVENTS_DLQ")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(dlq.config.subjects, vec!["prod.events-dlq.>".to_owned()]);

    let options = SubscribeOptions::group(acme(), "detect")
        .types(TypePattern::new("auth.*.failed").unwrap())
        .ack_wait(Duration::from_secs(7))
        .max_deliveries(4);
    let _member = bus.subscribe(options).await.unwrap();
    let stream = js.get_stream("EVENTS").await.unwrap();
    let consumer = stream.consumer_info("acme__detect").await.unwrap();
    assert_eq!(
        consumer.config.filter_subject,
        "prod.events.acme.auth.*.failed"
    );
    assert_eq!(consumer.config.ack_wait, Duration::from_secs(7));
    // The limit is the subscription's: the server never drops an event the
    // subscription could not dead-letter yet.
    assert_eq!(consumer.config.max_deliver, -1);
    assert!(
        consumer
            .config
            .description
            .as_deref()
            .is_some_and(|d| d.contains("after 4 deliveries")),
        "{:?}",
        consumer.config.description
    );
    assert_eq!(
        consumer.config.durable_name.as_deref(),
        Some("acme__detect")
    );

    // Another process asking the same group for other types is refused.
    let other = connect(&url).await;
    let err = other
        .subscribe(
            SubscribeOptions::group(acme(), "detect").types(TypePattern::new("edr.>").unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
}

#[tokio::test]
async fn retention_removes_events_older_than_max_age() {
    let server = server();
    // The dedup window is cut down to the retention, which JetStream requires.
    let bus = connect(&format!("{}?max_age=1s", server.url())).await;
    let e = event("auth.login.failed", 1);
    bus.publish(e.clone()).await.unwrap();
    let mut replay = bus
        .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Beginning))
        .await
        .unwrap();
    assert_eq!(next(&mut replay, "before expiry").await.event().id, e.id);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut late = bus
        .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Beginning))
        .await
        .unwrap();
    nothing_within(&mut late, Duration::from_millis(500), "after max_age").await;
    // The id can be published again: it left the window with the event.
    assert!(!bus.publish(e).await.unwrap().duplicate);
}

#[tokio::test]
async fn a_redrive_is_a_new_message_for_one_group_and_dead_letters_are_json() {
    let server = server();
    let bus = connect(&server.url()).await;
    let js = jetstream(&server).await;
    let mut workers = bus
        .subscribe(SubscribeOptions::group(acme(), "workers"))
        .await
        .unwrap();
    let mut others = bus
        .subscribe(SubscribeOptions::group(acme(), "others"))
        .await
        .unwrap();
    let e = event("auth.login.failed", 1);
    bus.publish(e.clone()).await.unwrap();
    next(&mut others, "others").await.ack().await.unwrap();
    next(&mut workers, "workers")
        .await
        .term("cannot parse")
        .await
        .unwrap();

    let dls = bus.dead_letters(&acme(), 10).await.unwrap();
    assert_eq!(dls.len(), 1);
    let stored = read_raw(&js, "SECBUS_DLQ", "secbus-dlq.acme.>").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].subject.as_str(),
        format!("secbus-dlq.acme.{}", dls[0].id)
    );
    let body: Value = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!(body["reason"], "terminated");
    assert_eq!(body["group"], "workers");
    assert_eq!(body["event"]["id"], e.id.as_str());
    assert!(
        bus.dead_letters(&tenant("globex"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let err = bus
        .redrive(&tenant("globex"), &dls[0].id)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "another tenant redrove acme's dead letter"
    );
    assert!(
        !bus.delete_dead_letter(&tenant("globex"), &dls[0].id)
            .await
            .unwrap(),
        "another tenant deleted acme's dead letter"
    );
    assert!(!bus.delete_dead_letter(&acme(), "no.such>id").await.unwrap());

    let receipt = bus.redrive(&acme(), &dls[0].id).await.unwrap();
    assert!(!receipt.duplicate, "the redrive was taken for a duplicate");
    let d = next(&mut workers, "the redrive").await;
    assert_eq!(d.event().id, e.id);
    d.ack().await.unwrap();
    nothing_within(
        &mut others,
        Duration::from_millis(500),
        "a group that did not ask",
    )
    .await;

    let redriven = read_raw(&js, "SECBUS", "secbus.acme.>").await;
    assert_eq!(redriven.len(), 2);
    let headers = redriven[1].headers.as_ref().unwrap();
    assert_eq!(
        headers.get("Secbus-Redrive-For").map(|v| v.as_str()),
        Some("workers")
    );
    let msg_id = headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
    assert!(
        msg_id.starts_with(&format!("acme:{}:redrive:", e.id)),
        "{msg_id}"
    );
    assert!(bus.dead_letters(&acme(), 10).await.unwrap().is_empty());
    assert!(read_raw(&js, "SECBUS_DLQ", "secbus-dlq.>").await.is_empty());
}

#[tokio::test]
async fn a_message_that_is_not_a_secbus_event_is_skipped_not_redelivered_forever() {
    let server = server();
    let bus = connect(&server.url()).await;
    let js = jetstream(&server).await;
    let mut group = bus
        .subscribe(SubscribeOptions::group(acme(), "workers").ack_wait(Duration::from_millis(300)))
        .await
        .unwrap();
    let mut tail = bus.subscribe(SubscribeOptions::tail(acme())).await.unwrap();
    js.publish("secbus.acme.auth.login.failed", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let e = event("auth.login.failed", 1);
    bus.publish(e.clone()).await.unwrap();
    let d = next(&mut group, "the group").await;
    assert_eq!((d.event().id.clone(), d.attempt()), (e.id.clone(), 1));
    d.ack().await.unwrap();
    assert_eq!(next(&mut tail, "the tail").await.event().id, e.id);
    nothing_within(
        &mut group,
        Duration::from_secs(1),
        "the foreign message again",
    )
    .await;
}

#[tokio::test]
async fn double_acks_are_confirmed_by_the_server() {
    let server = server();
    let bus = connect(&format!("{}?ack=double", server.url())).await;
    let options = SubscribeOptions::group(acme(), "careful");
    let mut group = bus.subscribe(options.clone()).await.unwrap();
    let sent: Vec<Event> = (0..20).map(|n| event("auth.login.failed", n)).collect();
    bus.publish_batch(sent.clone()).await.unwrap();
    let mut got = HashSet::new();
    for _ in 0..sent.len() {
        let d = next(&mut group, "a delivery").await;
        got.insert(d.event().id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(got.len(), sent.len());
    // Acked means acked on the server: nothing is pending, without a close.
    let js = jetstream(&server).await;
    let info = js
        .get_stream("SECBUS")
        .await
        .unwrap()
        .consumer_info("acme__careful")
        .await
        .unwrap();
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
}

#[tokio::test]
async fn an_unreachable_server_is_engine_unavailable() {
    let port = secbus_test_servers::free_port();
    let err = Bus::connect(&format!("nats://127.0.0.1:{port}?timeout=1s"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EngineUnavailable, "{err}");
    assert!(err.kind().is_transient());

    let mut server = server();
    let bus = connect(&format!("{}?timeout=1s", server.url())).await;
    bus.publish(event("auth.login.failed", 1)).await.unwrap();
    server.kill();
    let err = tokio::time::timeout(WAIT, bus.publish(event("auth.login.failed", 2)))
        .await
        .expect("publish gave up within its timeout")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EngineUnavailable, "{err}");
    let err = bus.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EngineUnavailable, "{err}");
}

#[tokio::test]
async fn bad_urls_are_refused_with_a_code() {
    for url in [
        "nats://127.0.0.1:4222?replicas=7",
        "nats://127.0.0.1:4222?colour=blue",
        "nats://127.0.0.1:4222?max_age=forever",
        "nats://",
    ] {
        let err = Bus::connect(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
    }
    let config = BusConfig {
        retention_max_events: Some(1000),
        ..BusConfig::default()
    };
    let err = Bus::connect_with("nats://127.0.0.1:4222", config)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_one_bus_keep_partition_key_order_between_them() {
    use std::collections::HashMap;
    use std::sync::Arc;

    const KEYS: [&str; 3] = ["host-a", "host-b", "host-c"];
    const PER_KEY: u64 = 30;
    let server = server();
    let bus = connect(&server.url()).await;
    let options = SubscribeOptions::group(acme(), "ordered").max_in_flight(8);
    #[derive(Default)]
    struct Log {
        busy: HashSet<String>,
        seen: HashMap<String, Vec<u64>>,
        overlaps: usize,
        done: usize,
    }
    let log = Arc::new(parking_lot::Mutex::new(Log::default()));
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut sub = bus.subscribe(options.clone()).await.unwrap();
        let log = log.clone();
        members.push(tokio::spawn(async move {
            while let Some(Ok(d)) = sub.next().await {
                let log = log.clone();
                // Each delivery in a task of its own: only the key serializes them.
                tokio::spawn(async move {
                    let key = d.event().partitionkey.clone().unwrap();
                    let n = d.event().data().unwrap()["n"].as_u64().unwrap();
                    {
                        let mut l = log.lock();
                        if !l.busy.insert(key.clone()) {
                            l.overlaps += 1;
                        }
                        l.seen.entry(key.clone()).or_default().push(n);
                    }
                    tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 3)).await;
                    log.lock().busy.remove(&key);
                    d.ack().await.unwrap();
                    log.lock().done += 1;
                });
            }
        }));
    }
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
    let expected = KEYS.len() * PER_KEY as usize;
    tokio::time::timeout(WAIT, async {
        while log.lock().done < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every keyed event processed");
    members.iter().for_each(|m| m.abort());
    let l = log.lock();
    assert_eq!(
        l.overlaps, 0,
        "two events of one key were in flight at once"
    );
    for key in KEYS {
        let want: Vec<u64> = (0..PER_KEY).collect();
        assert_eq!(l.seen[key], want, "key {key} out of publish order");
    }
}
