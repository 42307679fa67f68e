//! `secbus serve` killed with SIGKILL or stopped with SIGTERM while clients
//! publish: every event that got a 2xx is in the engine afterwards.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use secbus::{Bus, HistoryQuery, TenantId};
use secbus_test_servers::NatsServer;

mod gateway_support;
use gateway_support::{Gateway, post};

const CLIENTS: usize = 4;

fn event(id: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"idp/test","type":"auth.login.failed","data":{{"user":"u@acme.example","src_ip":"203.0.113.9","reason":"bad_password"}}}}"#
    )
}

/// Clients publishing singles and batches of 20 until `stop` or until the
/// gateway is gone; returns the ids that got a 2xx.
fn ingest(addr: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<String>> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (addr, stop, acked) = (addr.to_owned(), stop.clone(), acked.clone());
            thread::spawn(move || {
                let mut failures = 0;
                for round in 0.. {
                    if stop.load(Ordering::Relaxed) || failures > 20 {
                        break;
                    }
                    let ids: Vec<String> = (0..if round % 2 == 0 { 1 } else { 20 })
                        .map(|_| uuid::Uuid::now_v7().to_string())
                        .collect();
                    let status = if ids.len() == 1 {
                        post(
                            &addr,
                            "/v1/events",
                            "application/cloudevents+json",
                            &event(&ids[0]),
                        )
                    } else {
                        let batch: Vec<String> = ids.iter().map(|id| event(id)).collect();
                        let body = format!("[{}]", batch.join(","));
                        post(
                            &addr,
                            "/v1/events/batch",
                            "application/cloudevents-batch+json",
                            &body,
                        )
                    };
                    match status {
                        Some(s) if (200..300).contains(&s) => {
                            acked.lock().unwrap().extend(ids);
                            failures = 0;
                        }
                        Some(s) => panic!("client {client}: unexpected status {s}"),
                        None => {
                            failures += 1;
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        })
        .collect();
    thread::spawn(move || {
        for h in handles {
            h.join().unwrap();
        }
        std::mem::take(&mut *acked.lock().unwrap())
    })
}

async fn stored_ids(bus_url: &str) -> std::collections::HashSet<String> {
    let bus = Bus::connect(bus_url).await.unwrap();
    let mut q = HistoryQuery::new(TenantId::new("acme").unwrap());
    q.limit = 1000;
    let mut ids = std::collections::HashSet::new();
    loop {
        let page = bus.history(&q).await.unwrap();
        ids.extend(page.events.iter().map(|(_, e)| e.id.as_str().to_owned()));
        match page.next {
            Some(next) => q.from_sequence = Some(next),
            None => break,
        }
    }
    bus.close().await.unwrap();
    ids
}

/// Long enough for the clients to be well into their run when the signal comes.
const INGEST_BEFORE_SIGNAL: Duration = Duration::from_millis(1500);

async fn killed_during_ingest_keeps_every_acknowledged_event(bus_url: String, dir: &Path) {
    let gateway = Gateway::start(dir, &bus_url);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = ingest(&gateway.addr, stop.clone());
    thread::sleep(INGEST_BEFORE_SIGNAL);
    drop(gateway); // SIGKILL: no shutdown at all.
    let acked = clients.join().unwrap();
    assert!(acked.len() > 50, "the clients got going: {}", acked.len());

    // A new gateway on the same engine answers, and every 2xx event is stored.
    let again = Gateway::start(dir, &bus_url);
    assert_eq!(
        post(
            &again.addr,
            "/v1/events",
            "application/cloudevents+json",
            &event(&uuid::Uuid::now_v7().to_string())
        ),
        Some(202)
    );
    drop(again);
    let stored = stored_ids(&bus_url).await;
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_serve_on_embedded_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().join("store").display());
    killed_during_ingest_keeps_every_acknowledged_event(url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_serve_on_nats_loses_no_acknowledged_event() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    killed_during_ingest_keeps_every_acknowledged_event(nats.url(), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_ingest_exits_0_with_every_acknowledged_event_stored() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().join("store").display());
    let mut gateway = Gateway::start(dir.path(), &url);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = ingest(&gateway.addr, stop.clone());
    thread::sleep(INGEST_BEFORE_SIGNAL);
    assert_eq!(gateway.terminate(), Some(0), "SIGTERM is a clean stop");
    stop.store(true, Ordering::Relaxed);
    let acked = clients.join().unwrap();
    assert!(acked.len() > 50, "the clients got going: {}", acked.len());
    let stored = stored_ids(&url).await;
    let lost = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(lost, 0, "of {} acknowledged", acked.len());
}
