//! The same API on the networked engines (each test starts its own server),
//! and two gateways sharing one NATS engine.

use axum::http::{Method, StatusCode};
use secbus_test_servers::{NatsServer, RedisServer};
use serde_json::Value;

use super::routes::dead_letter;
use super::stream_socket::{SseClient, event_id, serve};
use super::support::{Harness, ids_of, login_failed, login_succeeded_after};
use crate::gateway::api_key::Role;

fn id(event: &Value) -> String {
    event["id"].as_str().unwrap().to_owned()
}

/// Publish one and a batch, page through history, read the correlation, and
/// redrive a dead letter, checking each answer.
async fn round_trip(h: &Harness) {
    let root = login_failed("bob", "203.0.113.9");
    let answer = h.publish("acme", &root).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let batch = vec![
        login_succeeded_after(&root, "bob"),
        login_failed("eve", "198.51.100.1"),
        login_failed("eve", "198.51.100.2"),
    ];
    let answer = h.publish_batch("acme", &batch).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let sent: Vec<String> = std::iter::once(&root).chain(&batch).map(id).collect();

    let mut paged = Vec::new();
    let mut path = "/v1/events?limit=2".to_owned();
    loop {
        let page = h.get(&path, "acme", Role::Read).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        paged.extend(ids_of(&page.body["events"]));
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/events?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, sent, "pages neither skip nor repeat");
    assert!(h.stored_ids("globex").await.is_empty());

    let story = h
        .get(
            &format!("/v1/correlations/{}", id(&root)),
            "acme",
            Role::Read,
        )
        .await;
    assert_eq!(story.status, StatusCode::OK, "{}", story.text);
    assert_eq!(story.body["tree"][0]["children"][0]["id"], batch[0]["id"]);

    let (dl_id, event_id) = dead_letter(h, "acme", "triage").await;
    let list = h.get("/v1/dlq", "acme", Role::Admin).await;
    assert_eq!(
        list.body["dead_letters"][0]["id"],
        dl_id.as_str(),
        "{}",
        list.text
    );
    let admin = h.key("acme", Role::Admin).to_owned();
    let redrive = h
        .call(
            Method::POST,
            &format!("/v1/dlq/{dl_id}/redrive"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(redrive.status, StatusCode::ACCEPTED, "{}", redrive.text);
    assert_eq!(redrive.body["id"], event_id.as_str());
    let ready = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_works_unchanged_on_nats() {
    let nats = NatsServer::start().unwrap();
    round_trip(&Harness::on(&nats.url(), |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_works_unchanged_on_redis() {
    let redis = RedisServer::start().unwrap();
    round_trip(&Harness::on(&redis.url(), |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_nats_engine_serve_one_history() {
    let nats = NatsServer::start().unwrap();
    let first = Harness::on(&nats.url(), |_| {}).await;
    let second = Harness::on(&nats.url(), |_| {}).await;
    let a = login_failed("bob", "203.0.113.9");
    let b = login_failed("eve", "198.51.100.1");
    assert_eq!(first.publish("acme", &a).await.status, StatusCode::ACCEPTED);
    assert_eq!(
        second.publish("acme", &b).await.status,
        StatusCode::ACCEPTED
    );
    for h in [&first, &second] {
        assert_eq!(h.stored_ids("acme").await, [id(&a), id(&b)]);
        assert!(h.stored_ids("globex").await.is_empty());
    }
    // The same id through the other gateway is a duplicate: the engine dedups.
    let again = second.publish("acme", &a).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["duplicate"], true, "{}", again.text);
    assert_eq!(first.stored_ids("acme").await.len(), 2);

    // A stream resumed on the other gateway starts right after the position
    // the first one gave.
    let c = login_failed("mallory", "192.0.2.66");
    let stored = first.publish("acme", &c).await;
    let position = stored.body["sequence"].to_string();
    let addr = serve(&second).await;
    let bearer = format!("Bearer {}", second.key("acme", Role::Read));
    let resume = [
        ("authorization", bearer.as_str()),
        ("last-event-id", position.as_str()),
    ];
    let (status, mut client) = SseClient::open(addr, "/v1/stream", &resume).await;
    assert_eq!(status, 200);
    let d = login_failed("trent", "192.0.2.67");
    assert_eq!(first.publish("acme", &d).await.status, StatusCode::ACCEPTED);
    let frames = client.events(1).await;
    assert_eq!(
        event_id(&frames[0]),
        id(&d),
        "the next event, none before it"
    );
}
