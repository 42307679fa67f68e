//! `secbus detect check-rules` and `secbus detect run` as the real binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use secbus::{Bus, Event, EventType, HistoryQuery, TenantId, TypePattern};
use secbus_test_servers::NatsServer;
use serde_json::json;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../secbus-detect/rules");

fn secbus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_secbus"));
    c.env_remove("SECBUS_BUS");
    c
}

#[test]
fn check_rules_counts_what_loads_and_names_what_does_not() {
    let ok = secbus()
        .args(["detect", "check-rules", SHIPPED])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("7 of 7 rules load (100.00%)"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{SHIPPED}/credential_attacks.yml"),
        dir.path().join("good.yml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.yml"),
        "title: Broken\ndetection:\n  sel: {a: b}\n  condition: sel and\n",
    )
    .unwrap();
    let out = secbus()
        .arg("detect")
        .arg("check-rules")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "below the default --min-loaded 1.0: {stdout}"
    );
    assert!(
        stdout.contains("broken.yml: "),
        "the failing file is named with its reason: {stdout}"
    );
    assert!(stdout.contains("6 of 7 rules load"), "{stdout}");
    let lenient = secbus()
        .arg("detect")
        .arg("check-rules")
        .arg(dir.path())
        .args(["--min-loaded", "0.8", "--json"])
        .output()
        .unwrap();
    assert!(lenient.status.success());
    let report: serde_json::Value = serde_json::from_slice(&lenient.stdout).unwrap();
    assert_eq!(
        (report["loaded"].as_u64(), report["failed"].as_u64()),
        (Some(6), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn detect_run_publishes_a_finding_for_ten_failed_logins_and_stops_on_sigterm() {
    let nats = NatsServer::start().unwrap();
    let mut child = secbus()
        .args([
            "detect",
            "run",
            "--bus",
            &nats.url(),
            "--rules",
            SHIPPED,
            "--tenant",
            "acme",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(
        ready.starts_with("secbus detect: group detection"),
        "{ready}"
    );

    let bus = Bus::connect(&nats.url()).await.unwrap();
    let acme = TenantId::new("acme").unwrap();
    for i in 0..10 {
        let e = Event::builder(EventType::new("auth.login.failed").unwrap(), acme.clone())
            .source("idp/test")
            .data(
                json!({"user": "bob", "src_ip": "203.0.113.9", "reason": format!("bad_password")}),
            )
            .time(chrono::Utc::now() + chrono::Duration::milliseconds(i))
            .build()
            .unwrap();
        bus.publish(e).await.unwrap();
    }
    let mut q = HistoryQuery::new(acme);
    q.types = TypePattern::new("detection.finding").unwrap();
    let mut found = Vec::new();
    for _ in 0..100 {
        found = bus.history(&q).await.unwrap().events;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found.len(), 1, "one brute-force finding");
    assert_eq!(
        found[0].1.data().unwrap()["finding_info"]["title"],
        "Brute force against one user"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("10 events evaluated") && l.contains("1 findings published")),
        "{rest:?}"
    );
    bus.close().await.unwrap();
}
