//! The alerting handler on a real bus (memory engine behind the contracts
//! gate, so every `alert.*` event it publishes must pass its schema) against
//! a real HTTP receiver on 127.0.0.1: signatures verify, a 500 is retried
//! until it works, a dead hook ends in `alert.failed` after its attempts,
//! throttling suppresses and counts, and rules match on severity and fields.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::Mutex;
use secbus::{
    Bus, Event, EventType, SubscribeOptions, Subscriber, Subscription, TenantId, TypePattern,
};
use secbus_contracts::{ContractsGate, Registry};
use secbus_handlers::Workers;
use secbus_handlers::alerting::{
    self, AlertingConfig, FieldCondition, OutputConfig, OutputKind, RuleConfig, Severity,
    verify_signature,
};
use serde_json::{Value, json};

const SECRET: &str = "s3cret-for-tests";
const WAIT: Duration = Duration::from_secs(15);

/// What the receiver got, and the statuses it answers with next (then 204).
#[derive(Default)]
struct Received {
    requests: Vec<(String, HeaderMap, Bytes)>,
    statuses: VecDeque<u16>,
    always: Option<u16>,
}

type Shared = Arc<Mutex<Received>>;

async fn receive(
    State((shared, path)): State<(Shared, &'static str)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut r = shared.lock();
    r.requests.push((path.to_owned(), headers, body));
    let code = r.statuses.pop_front().or(r.always).unwrap_or(204);
    StatusCode::from_u16(code).unwrap()
}

/// Starts the receiver; returns its base URL.
async fn receiver(shared: Shared) -> String {
    let app = Router::new()
        .route("/hook", post(receive).with_state((shared.clone(), "/hook")))
        .route("/slack", post(receive).with_state((shared, "/slack")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

async fn gated_bus() -> Bus {
    let gate = ContractsGate::new(Arc::new(Registry::builtin().unwrap()));
    Bus::connect("memory:")
        .await
        .unwrap()
        .with_gate(Arc::new(gate))
}

fn attack(severity: &str, target: &str) -> Event {
    Event::builder(EventType::new("security.attack.detected").unwrap(), acme())
        .source("waf")
        .data(json!({
            "attack_type": "sql_injection",
            "severity": severity,
            "detector": "modsecurity:942100",
            "target": target,
        }))
        .build()
        .unwrap()
}

fn webhook(base: &str, retries: u32) -> OutputConfig {
    let mut o = OutputConfig::new(
        "soc-webhook",
        OutputKind::Webhook,
        Some(format!("{base}/hook")),
    );
    o.secret = Some(SECRET.to_owned());
    o.retries = retries;
    o.backoff_ms = 10;
    o.timeout_ms = 2_000;
    o
}

fn rule(id: &str, outputs: &[&str]) -> RuleConfig {
    RuleConfig {
        id: id.to_owned(),
        types: "security.>".to_owned(),
        min_severity: Some(Severity::High),
        tenants: vec![],
        when: vec![],
        outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
        throttle_key: None,
        throttle_window_ms: 0,
    }
}

fn config(outputs: Vec<OutputConfig>, rules: Vec<RuleConfig>) -> AlertingConfig {
    AlertingConfig {
        tenants: vec!["acme".to_owned()],
        group: "alerting".to_owned(),
        concurrency: 4,
        outputs,
        rules,
    }
}

/// The running handler and a tail of the `alert.*` events it publishes.
async fn start(bus: &Bus, config: &AlertingConfig) -> (Workers, Subscription) {
    let outcomes = bus
        .subscribe(SubscribeOptions::tail(acme()).types(TypePattern::new("alert.>").unwrap()))
        .await
        .unwrap();
    let workers = alerting::spawn(bus, config).await.unwrap();
    (workers, outcomes)
}

async fn next_outcome(tail: &mut Subscription) -> Event {
    match tokio::time::timeout(WAIT, tail.next()).await {
        Ok(Some(Ok(d))) => d.event().clone(),
        other => panic!("no alert outcome: {other:?}"),
    }
}

async fn quiet(tail: &mut Subscription, what: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), tail.next()).await {
        panic!("{what}: expected no outcome, got {item:?}");
    }
}

fn data(e: &Event) -> Value {
    e.data().unwrap()
}

#[tokio::test]
async fn a_webhook_alert_is_signed_and_reported_as_sent() {
    let shared = Shared::default();
    let base = receiver(shared.clone()).await;
    let bus = gated_bus().await;
    let config = config(
        vec![webhook(&base, 0)],
        vec![rule("high-attacks", &["soc-webhook"])],
    );
    let (workers, mut tail) = start(&bus, &config).await;

    // Below the rule's minimum severity: no alert.
    bus.publish(attack("medium", "https://shop/a"))
        .await
        .unwrap();
    let trigger = attack("critical", "https://shop/b");
    bus.publish(trigger.clone()).await.unwrap();

    let sent = next_outcome(&mut tail).await;
    assert_eq!(sent.ty.as_str(), "alert.sent");
    assert_eq!(sent.causationid.as_deref(), Some(trigger.id.as_str()));
    assert_eq!(sent.correlationid, trigger.correlationid);
    let d = data(&sent);
    assert_eq!(d["rule_id"], "high-attacks");
    assert_eq!(d["output"], "webhook");
    assert_eq!(d["output_name"], "soc-webhook");
    assert_eq!(d["destination_host"], "127.0.0.1");
    assert_eq!(d["trigger_event_id"], trigger.id.as_str());
    assert_eq!(d["severity"], "critical");
    assert_eq!(
        (d["attempts"].as_u64(), d["http_status"].as_u64()),
        (Some(1), Some(204))
    );
    quiet(&mut tail, "the medium event").await;

    {
        let r = shared.lock();
        assert_eq!(r.requests.len(), 1);
        let (path, headers, body) = &r.requests[0];
        assert_eq!(path, "/hook");
        let sig = headers["x-secbus-signature"].to_str().unwrap();
        assert!(verify_signature(SECRET.as_bytes(), body, sig), "{sig}");
        assert!(!verify_signature(b"another secret", body, sig));
        let mut changed = body.to_vec();
        changed[10] ^= 1;
        assert!(!verify_signature(SECRET.as_bytes(), &changed, sig));
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["event"]["id"], trigger.id.as_str());
        assert_eq!(body["event"]["data"]["target"], "https://shop/b");
        assert_eq!(body["rule_id"], "high-attacks");
    }
    workers.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_500_is_retried_with_backoff_until_it_works() {
    let shared = Shared::default();
    shared.lock().statuses.extend([500, 500]);
    let base = receiver(shared.clone()).await;
    let bus = gated_bus().await;
    let config = config(
        vec![webhook(&base, 3)],
        vec![rule("high-attacks", &["soc-webhook"])],
    );
    let (workers, mut tail) = start(&bus, &config).await;
    let trigger = attack("high", "https://shop/c");
    bus.publish(trigger.clone()).await.unwrap();

    for attempt in 1..=2u64 {
        let failed = next_outcome(&mut tail).await;
        assert_eq!(failed.ty.as_str(), "alert.failed");
        assert_eq!(failed.causationid.as_deref(), Some(trigger.id.as_str()));
        let d = data(&failed);
        assert_eq!(d["attempts"].as_u64(), Some(attempt));
        assert_eq!(d["http_status"], 500);
        assert_eq!(d["error_kind"], "http_status");
        assert_eq!(d["will_retry"], true);
        assert!(d["next_attempt_at"].is_string(), "{d}");
    }
    let sent = next_outcome(&mut tail).await;
    assert_eq!(sent.ty.as_str(), "alert.sent");
    assert_eq!(data(&sent)["attempts"], 3);
    assert_eq!(shared.lock().requests.len(), 3);
    // Three attempts, one body: the same signed alert each time.
    {
        let r = shared.lock();
        assert!(r.requests.windows(2).all(|w| w[0].2 == w[1].2));
    }
    workers.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dead_hook_ends_in_alert_failed_after_its_attempts() {
    let shared = Shared::default();
    shared.lock().always = Some(503);
    let base = receiver(shared.clone()).await;
    let bus = gated_bus().await;
    let mut refusing = webhook(&base, 0);
    refusing.name = "refusing".to_owned();
    refusing.url = Some(format!("{base}/slack"));
    let config = config(
        vec![webhook(&base, 2), refusing],
        vec![
            rule("high-attacks", &["soc-webhook"]),
            rule("to-refusing", &["refusing"]),
        ],
    );
    let (workers, mut tail) = start(&bus, &config).await;
    let trigger = attack("high", "https://shop/d");
    bus.publish(trigger).await.unwrap();

    let mut by_output: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for _ in 0..4 {
        let e = next_outcome(&mut tail).await;
        assert_eq!(e.ty.as_str(), "alert.failed");
        let d = data(&e);
        by_output
            .entry(d["output_name"].as_str().unwrap().to_owned())
            .or_default()
            .push(d);
    }
    let soc = &by_output["soc-webhook"];
    assert_eq!(soc.len(), 3);
    assert_eq!(
        soc.iter()
            .map(|d| d["will_retry"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(soc[2]["attempts"], 3);
    assert_eq!(soc[2]["http_status"], 503);
    assert!(soc[2].get("next_attempt_at").is_none());
    // No retries configured: one attempt, then done.
    let refusing = &by_output["refusing"];
    assert_eq!(refusing.len(), 1);
    assert_eq!(refusing[0]["will_retry"], false);
    quiet(&mut tail, "after the last attempt").await;
    assert_eq!(shared.lock().requests.len(), 4);
    workers.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_and_a_4xx_are_reported() {
    let shared = Shared::default();
    shared.lock().always = Some(400);
    let base = receiver(shared.clone()).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let mut nowhere = webhook(&base, 1);
    nowhere.name = "nowhere".to_owned();
    nowhere.url = Some(closed_url);
    let config = config(
        vec![webhook(&base, 3), nowhere],
        vec![rule("high-attacks", &["soc-webhook", "nowhere"])],
    );
    let bus = gated_bus().await;
    let (workers, mut tail) = start(&bus, &config).await;
    bus.publish(attack("high", "https://shop/e")).await.unwrap();
    // The 400 is not retried: one alert.failed for soc-webhook.
    let first = data(&next_outcome(&mut tail).await);
    assert_eq!(first["output_name"], "soc-webhook");
    assert_eq!(
        (first["http_status"].as_u64(), first["will_retry"].as_bool()),
        (Some(400), Some(false))
    );
    // The refused connection is retried once.
    for will_retry in [true, false] {
        let d = data(&next_outcome(&mut tail).await);
        assert_eq!(d["output_name"], "nowhere");
        assert_eq!(d["error_kind"], "connection");
        assert_eq!(d["will_retry"], will_retry);
    }
    assert_eq!(shared.lock().requests.len(), 1);
    workers.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttling_suppresses_repeats_and_counts_them() {
    let shared = Shared::default();
    let base = receiver(shared.clone()).await;
    let bus = gated_bus().await;
    let mut throttled = rule("high-attacks", &["soc-webhook"]);
    throttled.throttle_key = Some("/data/target".to_owned());
    throttled.throttle_window_ms = 700;
    let mut config = config(vec![webhook(&base, 0)], vec![throttled]);
    // One at a time, so the order of the events is the order of the decisions.
    config.concurrency = 1;
    let (workers, mut tail) = start(&bus, &config).await;

    for _ in 0..4 {
        bus.publish(attack("high", "https://shop/login"))
            .await
            .unwrap();
    }
    bus.publish(attack("high", "https://shop/other"))
        .await
        .unwrap();
    let first = data(&next_outcome(&mut tail).await);
    assert_eq!(first["throttle_key"], "https://shop/login");
    assert_eq!(first["suppressed_count"], 0);
    let other = data(&next_outcome(&mut tail).await);
    assert_eq!(other["throttle_key"], "https://shop/other");
    quiet(&mut tail, "the three repeats within the window").await;

    tokio::time::sleep(Duration::from_millis(800)).await;
    bus.publish(attack("high", "https://shop/login"))
        .await
        .unwrap();
    let after = data(&next_outcome(&mut tail).await);
    assert_eq!(after["throttle_key"], "https://shop/login");
    assert_eq!(after["suppressed_count"], 3);
    {
        let r = shared.lock();
        assert_eq!(r.requests.len(), 3);
        let last: Value = serde_json::from_slice(&r.requests[2].2).unwrap();
        assert_eq!(last["suppressed_count"], 3);
    }
    workers.shutdown().await.unwrap();
}

#[tokio::test]
async fn field_conditions_route_to_slack_and_the_log() {
    let shared = Shared::default();
    let base = receiver(shared.clone()).await;
    let bus = gated_bus().await;
    let slack = OutputConfig::new(
        "soc-slack",
        OutputKind::Slack,
        Some(format!("{base}/slack")),
    );
    let log = OutputConfig::new("log", OutputKind::Log, None);
    let mut sqli = rule("sqli-to-slack", &["soc-slack", "log"]);
    sqli.min_severity = None;
    sqli.when = vec![
        FieldCondition {
            field: "/data/attack_type".into(),
            equals: None,
            contains: None,
            one_of: Some(vec![json!("sql_injection"), json!("xss")]),
        },
        FieldCondition {
            field: "/data/target".into(),
            equals: None,
            contains: Some(json!("/admin")),
            one_of: None,
        },
    ];
    let config = config(vec![slack, log], vec![sqli]);
    let (workers, mut tail) = start(&bus, &config).await;
    bus.publish(attack("low", "https://shop/cart"))
        .await
        .unwrap();
    let trigger = attack("low", "https://shop/admin/users");
    bus.publish(trigger.clone()).await.unwrap();

    let mut outputs = Vec::new();
    for _ in 0..2 {
        let e = next_outcome(&mut tail).await;
        assert_eq!(e.ty.as_str(), "alert.sent");
        assert_eq!(e.causationid.as_deref(), Some(trigger.id.as_str()));
        outputs.push(data(&e)["output"].as_str().unwrap().to_owned());
    }
    outputs.sort();
    assert_eq!(outputs, ["log", "slack"]);
    quiet(&mut tail, "the event that fails a condition").await;
    {
        let r = shared.lock();
        assert_eq!(r.requests.len(), 1);
        let body: Value = serde_json::from_slice(&r.requests[0].2).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("sqli-to-slack") && text.contains(trigger.id.as_str()),
            "{text}"
        );
        assert!(r.requests[0].1.get("x-secbus-signature").is_none());
    }
    workers.shutdown().await.unwrap();
}

#[test]
fn config_is_checked_at_load() {
    let good = r#"
        tenants = ["acme"]
        [[outputs]]
        name = "soc-webhook"
        kind = "webhook"
        url = "https://soc.acme.example/hook"
        secret = "k"
        [[rules]]
        id = "r1"
        types = "detection.>"
        min_severity = "high"
        outputs = ["soc-webhook"]
        when = [{ field = "/data/user", equals = "bob" }]
    "#;
    let config: AlertingConfig = toml::from_str(good).unwrap();
    config.validate().unwrap();
    assert_eq!(config.group, "alerting");

    let unknown = good.replace("secret = \"k\"", "secret = \"k\"\nsecrett = 1");
    assert!(toml::from_str::<AlertingConfig>(&unknown).is_err());

    let cases = [
        (good.replace("secret = \"k\"", ""), "secret"),
        (
            good.replace("outputs = [\"soc-webhook\"]", "outputs = [\"nope\"]"),
            "nope",
        ),
        (good.replace("id = \"r1\"", "id = \"R 1\""), "id"),
        (
            good.replace("types = \"detection.>\"", "types = \"a..b\""),
            "type pattern",
        ),
        (
            good.replace("equals = \"bob\"", "equals = \"bob\", in = [\"x\"]"),
            "exactly one",
        ),
        (
            good.replace("https://soc.acme.example/hook", "ftp://x/y"),
            "http",
        ),
    ];
    for (text, says) in cases {
        let config: AlertingConfig = toml::from_str(&text).unwrap();
        let err = config.validate().unwrap_err();
        assert_eq!(err.code(), "invalid_config");
        assert!(err.message().contains(says), "{err} should mention {says}");
    }
}
