//! The detection worker on a durable bus with the contracts gate: findings
//! go back on the bus as valid `detection.finding` events, and correlation
//! state is rebuilt after a restart by replaying the window from the log.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secbus::{Bus, Event, EventType, HistoryQuery, Publisher, TenantId, TypePattern};
use secbus_contracts::{ContractsConfig, ContractsGate};
use secbus_detect::{DetectionConfig, DetectionWorker};
use serde_json::json;

fn config() -> DetectionConfig {
    config_for(&["acme", "globex"])
}

fn config_for(tenants: &[&str]) -> DetectionConfig {
    DetectionConfig::new(
        vec![concat!(env!("CARGO_MANIFEST_DIR"), "/rules").into()],
        tenants.iter().map(|t| (*t).to_owned()).collect(),
    )
}

fn failed(tenant: &str, user: &str, i: i64) -> Event {
    Event::builder(
        EventType::new("auth.login.failed").unwrap(),
        TenantId::new(tenant).unwrap(),
    )
    .source("idp/test")
    .time(Utc::now() + chrono::Duration::milliseconds(i))
    .data(json!({"user": user, "src_ip": "203.0.113.9", "reason": "bad_password"}))
    .build()
    .unwrap()
}

async fn findings(bus: &Bus, tenant: &str) -> Vec<Event> {
    let mut q = HistoryQuery::new(TenantId::new(tenant).unwrap());
    q.types = TypePattern::new("detection.finding").unwrap();
    q.limit = 1000;
    bus.history(&q)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|(_, e)| (*e).clone())
        .collect()
}

async fn wait_for(bus: &Bus, tenant: &str, n: usize) -> Vec<Event> {
    for _ in 0..100 {
        let f = findings(bus, tenant).await;
        if f.len() >= n {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    findings(bus, tenant).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_worker_rebuilds_the_window_and_fires_once_on_the_tenth_failure() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().join("bus").display());
    let gate = Arc::new(ContractsGate::from_config(&ContractsConfig::default()).unwrap());
    let bus = Bus::connect(&url).await.unwrap().with_gate(gate);

    let worker = DetectionWorker::spawn(&bus, &config()).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..6 {
        let e = failed("acme", "bob", i);
        sent.push(e.clone());
        bus.publish(e).await.unwrap();
        // Globex's failures for a user of the same name interleave.
        bus.publish(failed("globex", "bob", i)).await.unwrap();
    }
    let stats = worker.stats();
    for _ in 0..100 {
        if stats.events.load(std::sync::atomic::Ordering::Relaxed) >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await.unwrap();

    // While no worker runs, four more: ten for acme's bob in all.
    for i in 6..10 {
        let e = failed("acme", "bob", i);
        sent.push(e.clone());
        bus.publish(e).await.unwrap();
    }
    let early = findings(&bus, "acme").await;
    assert!(
        early.is_empty(),
        "{:?}",
        early.iter().map(|e| e.data()).collect::<Vec<_>>()
    );

    let worker = DetectionWorker::spawn(&bus, &config()).await.unwrap();
    let raised = wait_for(&bus, "acme", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raised_after = findings(&bus, "acme").await;
    worker.stop().await.unwrap();

    assert_eq!(raised.len(), 1, "one finding: {raised:?}");
    assert_eq!(
        raised_after.len(),
        1,
        "and no second one for events delivered again"
    );
    let finding = &raised[0];
    let tenth = &sent[9];
    assert_eq!(
        finding.causationid.as_deref(),
        Some(tenth.id.as_str()),
        "caused by the tenth failure"
    );
    assert_eq!(
        finding.correlationid, tenth.correlationid,
        "the correlation is inherited"
    );
    let data = finding.data().unwrap();
    assert_eq!(data["class_uid"], 2004);
    assert_eq!(
        data["finding_info"]["analytic"]["uid"],
        "6c1f0a52-3b1e-4c55-9a4e-1d0b8e1f7a10"
    );
    assert_eq!(data["unmapped"]["correlation_type"], "event_count");
    assert_eq!(data["unmapped"]["group_by"]["tenantid"], "acme");
    let related: Vec<&str> = data["finding_info"]["related_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        related,
        sent.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        "all ten contributing events"
    );
    assert!(
        findings(&bus, "globex").await.is_empty(),
        "globex had six failures only"
    );
    bus.close().await.unwrap();
}

fn encoded_powershell(i: u64) -> Event {
    Event::builder(
        EventType::new("endpoint.process.created").unwrap(),
        TenantId::new("acme").unwrap(),
    )
    .source("edr/test")
    .data(json!({
        "host": format!("ws-{i}"),
        "os": "windows",
        "image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "command_line": "powershell.exe -NoProfile -EncodedCommand SQBFAFgA",
        "parent_image": "C:\\Windows\\explorer.exe",
    }))
    .build()
    .unwrap()
}

/// A memory history much smaller than the burst: the publisher fills it
/// faster than the worker reads, and every event raises a finding that the
/// worker publishes before it acks the event. Without room for caused events
/// past the history, a finding would wait for the worker's own acks and the
/// worker would hang with the history full.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_memory_history_is_evaluated_to_the_end() {
    const EVENTS: u64 = 2_000;
    let config = secbus::BusConfig {
        memory_history: 64,
        ..secbus::BusConfig::default()
    };
    let bus = Bus::connect_with("memory:", config).await.unwrap();
    let mut detection = config_for(&["acme"]);
    detection.replay_on_start = false;
    let worker = DetectionWorker::spawn(&bus, &detection).await.unwrap();
    let stats = worker.stats();
    let burst: Vec<Event> = (0..EVENTS).map(encoded_powershell).collect();
    for chunk in burst.chunks(500) {
        tokio::time::timeout(Duration::from_secs(60), bus.publish_batch(chunk.to_vec()))
            .await
            .expect("the publisher waited for a history the worker never freed")
            .unwrap();
    }
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while stats.events.load(std::sync::atomic::Ordering::Relaxed) < EVENTS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let done = stats.events.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        drained.is_ok(),
        "the worker stopped after {done} of {EVENTS} events"
    );
    assert_eq!(
        stats.findings.load(std::sync::atomic::Ordering::Relaxed),
        EVENTS,
        "one finding per encoded PowerShell start"
    );
    assert_eq!(
        stats
            .publish_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    worker.stop().await.unwrap();
}

/// The findings of one event stream on a worker with `threads` detection
/// threads: their ids (the same rule on the same event gives the same id) and
/// how many came from correlation rules.
async fn findings_with_threads(stream: &[Event], threads: usize) -> (Vec<String>, usize) {
    let bus = Bus::connect("memory:").await.unwrap();
    let mut detection = config_for(&["acme"]);
    detection.replay_on_start = false;
    detection.threads = Some(threads);
    let worker = DetectionWorker::spawn(&bus, &detection).await.unwrap();
    let stats = worker.stats();
    bus.publish_batch(stream.to_vec()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while stats.events.load(std::sync::atomic::Ordering::Relaxed) < stream.len() as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the worker evaluated the stream");
    worker.stop().await.unwrap();
    let found = findings(&bus, "acme").await;
    let correlations = found
        .iter()
        .filter(|f| f.data().unwrap()["finding_info"]["types"][0] == "sigma_correlation")
        .count();
    let mut ids: Vec<String> = found.iter().map(|f| f.id.as_str().to_owned()).collect();
    ids.sort();
    bus.close().await.unwrap();
    (ids, correlations)
}

/// Detection rules run on several threads at once; correlation must still
/// see every event in delivery order, so a counting window fires on the same
/// failure whatever the thread count.
#[tokio::test(flavor = "multi_thread")]
async fn several_detection_threads_find_what_one_finds() {
    let mut stream = Vec::new();
    for i in 0..30 {
        for user in ["alice", "bob", "carol"] {
            stream.push(failed("acme", user, i));
        }
        stream.push(encoded_powershell(i as u64));
    }
    let (one, one_correlations) = findings_with_threads(&stream, 1).await;
    let (four, four_correlations) = findings_with_threads(&stream, 4).await;
    assert!(one_correlations > 0, "the brute-force window fired");
    assert!(
        one.len() > one_correlations,
        "the PowerShell rule fired too"
    );
    assert_eq!(one_correlations, four_correlations);
    assert_eq!(one, four, "the same findings, on the same events");
}
