//! `/metrics` read the way Prometheus reads it: counters that move by code,
//! the publish latency histogram, and the gauges read from the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use secbus::testkit::outage::OutageEngine;
use secbus::{
    Bus, Event, FallbackOutcome, Publisher, Scope, StartAt, SubscribeOptions, Subscriber, TenantId,
};
use serde_json::json;

use super::routes::dead_letter;
use super::support::{Harness, bus_config, login_failed, parse_metrics};
use crate::gateway::api_key::Role;

const ACCEPTED: &str = "secbus_gateway_events_accepted_total";
const REFUSED: &str = "secbus_gateway_events_refused_total";
const LATENCY: &str = "secbus_gateway_publish_seconds";

async fn scrape(h: &Harness) -> HashMap<String, f64> {
    let answer = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    for line in answer.text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        assert!(series.starts_with("secbus_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    parse_metrics(&answer.text)
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

fn refused(code: &str) -> String {
    format!("{REFUSED}{{code=\"{code}\"}}")
}

#[tokio::test]
async fn accepted_and_refused_counters_move_by_code_and_latency_is_observed() {
    let h = Harness::with(|c| c.rate_limit.events_per_second = 0.0).await;
    let before = scrape(&h).await;
    for i in 0..3 {
        let a = h
            .publish("acme", &login_failed(&format!("u{i}"), "203.0.113.9"))
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
    }
    let batch: Vec<_> = (0..2)
        .map(|i| login_failed(&format!("b{i}"), "203.0.113.9"))
        .collect();
    assert_eq!(
        h.publish_batch("globex", &batch).await.status,
        StatusCode::ACCEPTED
    );
    let mut bad = login_failed("eve", "203.0.113.9");
    bad["data"]["src_ip"] = json!(7);
    assert_eq!(
        h.publish("acme", &bad).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut bad_batch: Vec<_> = (0..4)
        .map(|i| login_failed(&format!("c{i}"), "203.0.113.9"))
        .collect();
    bad_batch[3]["data"]["src_ip"] = json!(7);
    assert_eq!(
        h.publish_batch("acme", &bad_batch).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let body = serde_json::to_vec(&login_failed("x", "203.0.113.9")).unwrap();
    let ce = "application/cloudevents+json";
    let no_key = h
        .call(Method::POST, "/v1/events", None, Some((ce, body.clone())))
        .await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    let read_key = h.key("acme", Role::Read).to_owned();
    let reader = h
        .call(
            Method::POST,
            "/v1/events",
            Some(&read_key),
            Some((ce, body)),
        )
        .await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);

    let after = scrape(&h).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved(&format!(
            "{ACCEPTED}{{tenant=\"acme\",type=\"auth.login.failed\"}}"
        )),
        3.0
    );
    assert_eq!(
        moved(&format!(
            "{ACCEPTED}{{tenant=\"globex\",type=\"auth.login.failed\"}}"
        )),
        2.0
    );
    // A refused batch counts every event it carried.
    assert_eq!(moved(&refused("schema_violation")), 5.0);
    assert_eq!(moved(&refused("unauthorized")), 1.0);
    assert_eq!(moved(&refused("forbidden")), 1.0);
    assert_eq!(moved(&format!("{LATENCY}_count")), 5.0);
    assert!(moved(&format!("{LATENCY}_sum")) > 0.0);
    assert_eq!(
        value(&after, &format!("{LATENCY}_bucket{{le=\"+Inf\"}}")),
        value(&after, &format!("{LATENCY}_count")),
        "the +Inf bucket holds every observation"
    );
    let buckets: Vec<f64> = after
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{LATENCY}_bucket")))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() > 10, "the histogram has its buckets");
}

#[tokio::test]
async fn dead_letter_depth_and_consumer_lag_per_group_come_from_the_engine() {
    let h = Harness::with(|c| {
        c.metrics.consumer_groups = vec!["triage".into(), "never-subscribed".into()];
    })
    .await;
    dead_letter(&h, "acme", "enrichment").await;
    dead_letter(&h, "acme", "enrichment").await;
    let acme = TenantId::new("acme").unwrap();
    let mut group = h
        .bus
        .subscribe(SubscribeOptions::group(acme.clone(), "triage").start(StartAt::New))
        .await
        .unwrap();
    for i in 0..3 {
        let a = h
            .publish("acme", &login_failed(&format!("u{i}"), "203.0.113.9"))
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
    }
    let first = group.next().await.unwrap().unwrap();
    let lag = "secbus_consumer_lag{tenant=\"acme\",group=\"triage\"}";
    let samples = scrape(&h).await;
    assert_eq!(value(&samples, "secbus_dead_letters{tenant=\"acme\"}"), 2.0);
    assert_eq!(
        value(&samples, "secbus_dead_letters{tenant=\"globex\"}"),
        0.0
    );
    assert_eq!(samples.get(lag), Some(&3.0), "two waiting, one unacked");
    assert!(
        !samples
            .keys()
            .any(|k| k.contains("never-subscribed") || k.contains("globex\",group")),
        "a group the engine does not know has no series"
    );
    first.ack().await.unwrap();
    let second = group.next().await.unwrap().unwrap();
    second.ack().await.unwrap();
    let mut settled = 0.0;
    for _ in 0..50 {
        settled = value(&scrape(&h).await, lag);
        if settled == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(settled, 1.0, "acks lower the lag");
}

#[tokio::test]
async fn spool_depth_counts_what_waits_for_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = bus_config(&dir);
    let engine = Arc::new(OutageEngine::open("memory:", &config).await.unwrap());
    let bus = Bus::from_engine(engine.clone(), "memory:", config);
    let h = Harness::over(bus, dir, |_| {});
    assert_eq!(value(&scrape(&h).await, "secbus_spool_depth"), 0.0);
    engine.set_down(true);
    let publisher = h
        .bus
        .publisher(Scope::Tenant(TenantId::new("acme").unwrap()));
    for i in 0..2 {
        let mut event = login_failed(&format!("s{i}"), "203.0.113.9");
        event["tenantid"] = json!("acme");
        let event = Event::from_json(&serde_json::to_vec(&event).unwrap()).unwrap();
        let outcome = publisher.publish_with_fallback(event).await;
        assert!(matches!(outcome, FallbackOutcome::Spooled), "{outcome:?}");
    }
    assert_eq!(value(&scrape(&h).await, "secbus_spool_depth"), 2.0);
    // While the engine is down the gateway answers 503, and stores nothing.
    let down = h.publish("acme", &login_failed("d", "203.0.113.9")).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.text
    );
    assert_eq!(down.body["code"], "engine_unavailable");
    engine.set_down(false);
    let spool = h.bus.spool().await.unwrap();
    assert!(spool.wait_drained(Duration::from_secs(10)).await);
    assert_eq!(value(&scrape(&h).await, "secbus_spool_depth"), 0.0);
    assert_eq!(h.stored_ids("acme").await.len(), 2);
}
