//! The metrics handler on a real bus (memory engine): events counted per
//! tenant and type, handler calls timed by outcome, consumer-group lag and
//! dead-letter depth read from the engine, all in a prometheus-client registry.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use secbus::handler::{HandlerError, HandlerExt, Worker, handler_fn};
use secbus::{Bus, Event, EventType, StartAt, SubscribeOptions, Subscriber, TenantId};
use secbus_handlers::metrics::{self, HandlerMetrics, MetricsConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn event(ty: &str) -> Event {
    Event::builder(EventType::new(ty).unwrap(), acme())
        .data(json!({ "user": "bob" }))
        .build()
        .unwrap()
}

async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn counts_times_and_reads_lag_and_dead_letters_into_the_registry() {
    let bus = Bus::connect("memory:").await.unwrap();
    let metrics = HandlerMetrics::new();
    let mut registry = Registry::with_prefix("secbus");
    metrics.register(&mut registry);

    // A group that takes events and never acks them: its lag is what it holds.
    let _stalled = bus
        .subscribe(
            SubscribeOptions::group(acme(), "stalled")
                .start(StartAt::Beginning)
                .max_in_flight(1),
        )
        .await
        .unwrap();
    // A group whose handler refuses everything: each event is a dead letter.
    let refusing = handler_fn(|_ctx, _event| async { Err(HandlerError::permanent("no")) })
        .with(metrics.layer("refusing"));
    let refuser = Worker::new(bus.clone(), SubscribeOptions::group(acme(), "refusing"))
        .start(refusing)
        .await
        .unwrap();

    let mut config = MetricsConfig::new(vec!["acme".into()]);
    config.groups = vec!["stalled".into(), "refusing".into(), "never-opened".into()];
    config.refresh_ms = 50;
    let workers = metrics::spawn(&bus, &config, &metrics).await.unwrap();

    for ty in [
        "auth.login.failed",
        "auth.login.failed",
        "auth.login.succeeded",
    ] {
        bus.publish(event(ty)).await.unwrap();
    }
    until("three events counted", || {
        metrics.events_seen("acme", "auth.login.failed") == 2
            && metrics.events_seen("acme", "auth.login.succeeded") == 1
    })
    .await;
    until("the stalled group's lag", || {
        metrics.group_lag(&acme(), "stalled") == Some(3)
    })
    .await;
    until("three dead letters", || {
        metrics.dead_letter_depth(&acme()) == Some(3)
    })
    .await;
    until("the refusing group caught up", || {
        metrics.group_lag(&acme(), "refusing") == Some(0)
    })
    .await;

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for line in [
        r#"secbus_handler_events_total{tenant="acme",type="auth.login.failed"} 2"#,
        r#"secbus_handler_events_total{tenant="acme",type="auth.login.succeeded"} 1"#,
        r#"secbus_handler_seconds_count{handler="refusing",outcome="permanent"} 3"#,
        r#"secbus_handler_seconds_count{handler="metrics",outcome="ok"} 3"#,
        r#"secbus_group_lag{tenant="acme",group="stalled"} 3"#,
        r#"secbus_dead_letter_depth{tenant="acme"} 3"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // A group nobody opened has no gauge rather than a made-up zero.
    assert!(!text.contains("never-opened"), "{text}");
    workers.shutdown().await.unwrap();
    refuser.shutdown().await.unwrap();
}

#[test]
fn config_refuses_unknown_fields_and_empty_tenants() {
    let config: MetricsConfig = toml::from_str("tenants = [\"acme\"]").unwrap();
    assert_eq!(config.group, "metrics");
    assert_eq!(config.refresh_ms, 5000);
    assert!(toml::from_str::<MetricsConfig>("tenants = [\"acme\"]\nrefresh = 1").is_err());
}
