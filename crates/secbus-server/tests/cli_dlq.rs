//! `secbus dlq list|redrive|delete` as the real binary, on every engine.

use std::process::{Command, Output};

use secbus::{Bus, Event, EventType, StartAt, SubscribeOptions, Subscriber, TenantId};
use secbus_test_servers::{NatsServer, RedisServer};
use serde_json::{Value, json};

fn secbus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secbus"))
        .args(args)
        .env_remove("SECBUS_BUS")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Publishes `n` events of acme that group `triage` terminates; their ids.
async fn make_dead_letters(url: &str, n: usize) -> Vec<String> {
    let bus = Bus::connect(url).await.unwrap();
    let acme = TenantId::new("acme").unwrap();
    let mut group = bus
        .subscribe(SubscribeOptions::group(acme.clone(), "triage").start(StartAt::Beginning))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let e = Event::builder(EventType::new("auth.login.failed").unwrap(), acme.clone())
            .source("idp/test")
            .data(
                json!({"user": format!("u{i}"), "src_ip": "203.0.113.9", "reason": "bad_password"}),
            )
            .build()
            .unwrap();
        ids.push(e.id.as_str().to_owned());
        bus.publish(e).await.unwrap();
    }
    for _ in 0..n {
        let d = group.next().await.unwrap().unwrap();
        d.term("triage cannot parse it").await.unwrap();
    }
    drop(group);
    bus.close().await.unwrap();
    ids
}

fn list(url: &str) -> Vec<Value> {
    let out = secbus(&["dlq", "list", "--bus", url, "--tenant", "acme", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn dead_letters_are_listed_redriven_and_deleted(url: &str) {
    let events = make_dead_letters(url, 3).await;
    let dead = list(url);
    assert_eq!(dead.len(), 3);
    let event_ids: Vec<&str> = dead
        .iter()
        .map(|d| d["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        event_ids,
        events.iter().map(String::as_str).collect::<Vec<_>>(),
        "oldest first"
    );
    assert!(
        dead.iter()
            .all(|d| d["reason"] == "terminated" && d["group"] == "triage")
    );
    let dl: Vec<String> = dead
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();

    let table = secbus(&["dlq", "list", "--bus", url, "--tenant", "acme"]);
    assert!(stdout(&table).contains(&dl[0]) && stdout(&table).contains("triage cannot parse it"));
    let other = secbus(&["dlq", "list", "--bus", url, "--tenant", "globex", "--json"]);
    assert!(
        other.status.success() && stdout(&other).is_empty(),
        "another tenant sees none"
    );

    let redriven = secbus(&["dlq", "redrive", "--bus", url, "--tenant", "acme", &dl[0]]);
    assert!(
        redriven.status.success(),
        "{}",
        String::from_utf8_lossy(&redriven.stderr)
    );
    assert!(stdout(&redriven).contains(&events[0]));
    let deleted = secbus(&["dlq", "delete", "--bus", url, "--tenant", "acme", &dl[1]]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let missing = secbus(&["dlq", "delete", "--bus", url, "--tenant", "acme", &dl[1]]);
    assert_eq!(
        missing.status.code(),
        Some(4),
        "a missing dead letter is named"
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));
    let foreign = secbus(&["dlq", "redrive", "--bus", url, "--tenant", "globex", &dl[2]]);
    assert_eq!(
        foreign.status.code(),
        Some(4),
        "another tenant's dead letter does not exist for it"
    );
    let left: Vec<String> = list(url)
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, [dl[2].clone()]);

    // The redriven event reaches the group that gave up on it.
    let bus = Bus::connect(url).await.unwrap();
    let mut group = bus
        .subscribe(SubscribeOptions::group(
            TenantId::new("acme").unwrap(),
            "triage",
        ))
        .await
        .unwrap();
    let again = tokio::time::timeout(std::time::Duration::from_secs(10), group.next())
        .await
        .expect("the redriven event arrives")
        .unwrap()
        .unwrap();
    assert_eq!(again.event().id.as_str(), events[0]);
    again.ack().await.unwrap();
    drop(group);
    bus.close().await.unwrap();

    let all = secbus(&["dlq", "redrive", "--bus", url, "--tenant", "acme", "--all"]);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    assert!(list(url).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().join("store").display());
    dead_letters_are_listed_redriven_and_deleted(&url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_on_nats() {
    let nats = NatsServer::start().unwrap();
    dead_letters_are_listed_redriven_and_deleted(&nats.url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_on_redis() {
    let redis = RedisServer::start().unwrap();
    dead_letters_are_listed_redriven_and_deleted(&redis.url()).await;
}

#[test]
fn bad_arguments_exit_2() {
    let out = secbus(&[
        "dlq",
        "list",
        "--bus",
        "memory:",
        "--tenant",
        "Not A Tenant",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = secbus(&["dlq", "redrive", "--bus", "memory:", "--tenant", "acme"]);
    assert_eq!(out.status.code(), Some(2), "an id or --all is required");
}
