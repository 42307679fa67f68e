//! `secbus replay` as the real binary: a tenant's history, filtered, in log order.

use std::process::{Command, Output};

use secbus::{Bus, Event, EventType, TenantId};
use serde_json::{Value, json};

fn replay(url: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secbus"))
        .args(["replay", "--bus", url])
        .args(extra)
        .env_remove("SECBUS_BUS")
        .output()
        .unwrap()
}

fn ids(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_writes_the_history_as_stored_and_filters_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().join("store").display());
    let bus = Bus::connect(&url).await.unwrap();
    let acme = TenantId::new("acme").unwrap();
    let failed = EventType::new("auth.login.failed").unwrap();
    let succeeded = EventType::new("auth.login.succeeded").unwrap();
    let mut all = Vec::new();
    let mut root: Option<Event> = None;
    // 2,500 events: more than two pages; every 100th a success in one story.
    for i in 0..2500u32 {
        let time = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").unwrap()
            + chrono::Duration::seconds(i64::from(i));
        let builder = if i % 100 == 99 {
            Event::builder(succeeded.clone(), acme.clone())
                .data(json!({"user": "bob", "src_ip": "203.0.113.9", "method": "password"}))
        } else {
            Event::builder(failed.clone(), acme.clone()).data(
                json!({"user": format!("u{i}"), "src_ip": "203.0.113.9", "reason": "bad_password"}),
            )
        };
        let mut builder = builder
            .source("idp/test")
            .time(time.with_timezone(&chrono::Utc));
        if let (Some(r), true) = (&root, i % 100 == 99) {
            builder = builder.caused_by(r);
        }
        let event = builder.build().unwrap();
        if i == 0 {
            root = Some(event.clone());
        }
        all.push(event.id.as_str().to_owned());
        bus.publish(event).await.unwrap();
    }
    let globex = Event::builder(failed.clone(), TenantId::new("globex").unwrap())
        .source("idp/test")
        .data(json!({"user": "g", "src_ip": "203.0.113.9", "reason": "bad_password"}))
        .build()
        .unwrap();
    bus.publish(globex).await.unwrap();
    bus.close().await.unwrap();

    let out_file = dir.path().join("acme.jsonl");
    let to_file = replay(
        &url,
        &["--tenant", "acme", "--out", out_file.to_str().unwrap()],
    );
    assert!(
        to_file.status.success(),
        "{}",
        String::from_utf8_lossy(&to_file.stderr)
    );
    assert!(String::from_utf8_lossy(&to_file.stderr).contains("replayed 2500 events"));
    let written: Vec<String> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(written, all, "every event, in log order");

    let successes = ids(&replay(
        &url,
        &["--tenant", "acme", "--type", "auth.login.succeeded"],
    ));
    assert_eq!(successes.len(), 25);
    assert_eq!(successes[0], all[99]);
    let story = ids(&replay(
        &url,
        &["--tenant", "acme", "--correlation", &all[0]],
    ));
    assert_eq!(
        story.len(),
        1 + 25,
        "the root and every success caused by it"
    );
    let window = ids(&replay(
        &url,
        &[
            "--tenant",
            "acme",
            "--since",
            "2026-03-01T00:10:00Z",
            "--until",
            "2026-03-01T00:10:09Z",
        ],
    ));
    assert_eq!(window, all[600..610].to_vec());
    assert!(
        ids(&replay(&url, &["--tenant", "acme", "--since", "1h"])).is_empty(),
        "all older than an hour"
    );
    assert_eq!(ids(&replay(&url, &["--tenant", "globex"])).len(), 1);
    let bad = replay(&url, &["--tenant", "acme", "--since", "last tuesday"]);
    assert_eq!(bad.status.code(), Some(2));
}
