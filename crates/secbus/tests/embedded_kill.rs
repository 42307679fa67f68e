//! A process publishing to the embedded engine is killed with SIGKILL; every
//! event whose publish returned Ok is in the log afterwards, and a consumer
//! group resumes after what it acknowledged (and saved) before the kill.
//!
//! The test re-runs its own binary as the child, selected by an environment
//! variable, so the child is a real separate process running the library.
#![cfg(all(feature = "embedded", unix))]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secbus::{Bus, Event, EventId, EventType, StartAt, SubscribeOptions, Subscriber, TenantId};
use tokio::time::timeout;

const CHILD_DIR: &str = "SECBUS_TEST_KILL_CHILD_DIR";
const WAIT: Duration = Duration::from_secs(30);
/// Events the child publishes and its group acknowledges before saying `saved`.
const ACKED: usize = 60;
/// Events published in the first phase (the rest are delivered, not acked).
const FIRST: usize = 100;

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn group() -> SubscribeOptions {
    SubscribeOptions::group(acme(), "workers")
        .start(StartAt::Beginning)
        .max_in_flight(64)
        .max_deliveries(10)
}

fn event(n: usize) -> Event {
    Event::builder(EventType::new("auth.login").unwrap(), acme())
        .source("tests/embedded-kill")
        .data(serde_json::json!({ "n": n, "pad": "x".repeat(200) }))
        .build()
        .unwrap()
}

/// The child: publishes, acks some, says so, then publishes from four tasks
/// until it is killed, printing each id only after its publish returned Ok.
async fn child(dir: String) {
    let bus = Bus::connect(&format!("embedded:{dir}")).await.unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = |line: String| {
        let mut out = out.lock().unwrap();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    let mut workers = bus.subscribe(group()).await.unwrap();
    for n in 0..FIRST {
        let receipt = bus.publish(event(n)).await.unwrap();
        say(format!("published {}", receipt.id));
    }
    for _ in 0..ACKED {
        let d = workers.next().await.unwrap().unwrap();
        let id = d.event().id.clone();
        d.ack().await.unwrap();
        say(format!("acked {id}"));
    }
    // Longer than the group-save interval: these acks are now in the file.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    say("saved".to_owned());
    // Deliveries held, never acked: they must come back after the kill.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(Ok(d)) = workers.next().await {
            held.push(d);
        }
    });
    let mut tasks = Vec::new();
    for t in 0..4 {
        let bus = bus.clone();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let receipt = bus.publish(event(10_000 * (t + 1) + n)).await.unwrap();
                let mut out = out.lock().unwrap();
                writeln!(out, "published {}", receipt.id).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    holder.await.unwrap();
}

/// What follows `tag` in a line of the child's output (the test harness may
/// have printed on the same line before it).
fn after<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.find(tag).map(|i| &line[i + tag.len()..])
}

#[test]
fn kill_9_loses_no_published_event_and_groups_resume_where_they_acked() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(child(dir));
        return;
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill_9_loses_no_published_event_and_groups_resume_where_they_acked",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut published: Vec<EventId> = Vec::new();
    let mut acked_before_save: Vec<EventId> = Vec::new();
    let mut saved = false;
    let mut after_save = 0;
    let started = Instant::now();
    // Kill it while its publishers are busy, well after the acks were saved.
    while !(saved && after_save >= 2_000) {
        assert!(started.elapsed() < WAIT, "the child did not get far enough");
        let line = lines
            .next()
            .expect("the child exited early")
            .expect("the child's output is text");
        if let Some(id) = after(&line, "published ") {
            published.push(EventId::new(id).unwrap());
            after_save += usize::from(saved);
        } else if let Some(id) = after(&line, "acked ") {
            acked_before_save.push(EventId::new(id).unwrap());
        } else if line.ends_with("saved") {
            saved = true;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What the child printed before it died is still in the pipe.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(id) = after(&line, "published ") {
            published.push(EventId::new(id).unwrap());
        }
    }
    assert_eq!(acked_before_save.len(), ACKED);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = Bus::connect(&format!("embedded:{}", dir.display()))
            .await
            .unwrap();
        // Every printed id is in the log; the log holds nothing else but
        // publishes that committed without being printed (at most one per task).
        let mut tail = bus
            .subscribe(SubscribeOptions::tail(acme()).start(StartAt::Beginning))
            .await
            .unwrap();
        let printed: HashSet<&EventId> = published.iter().collect();
        let mut stored = Vec::new();
        let mut found = 0;
        while found < printed.len() {
            let d = timeout(WAIT, tail.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "only {found} of {} printed ids are in the log",
                        printed.len()
                    )
                })
                .unwrap()
                .unwrap();
            found += usize::from(printed.contains(&d.event().id));
            stored.push(d.event().id.clone());
        }
        assert!(
            stored.len() <= printed.len() + 4,
            "{} stored, {} printed",
            stored.len(),
            printed.len()
        );
        // The first phase was one task: its order is the log's order.
        assert_eq!(stored[..FIRST], published[..FIRST]);

        // The group: nothing acked and saved comes back; everything else does.
        let acked: HashSet<&EventId> = acked_before_save.iter().collect();
        let mut workers = bus.subscribe(group()).await.unwrap();
        let mut missing: HashSet<&EventId> =
            stored.iter().filter(|id| !acked.contains(id)).collect();
        while !missing.is_empty() {
            let d = timeout(WAIT, workers.next())
                .await
                .unwrap_or_else(|_| panic!("{} unacked events never came back", missing.len()))
                .unwrap()
                .unwrap();
            assert!(
                !acked.contains(&d.event().id),
                "an event acked and saved before the kill was delivered again"
            );
            missing.remove(&d.event().id);
            d.ack().await.unwrap();
        }
        bus.close().await.unwrap();
    });
}
