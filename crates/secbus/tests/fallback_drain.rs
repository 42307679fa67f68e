//! `publish_with_fallback` while the engine is down and after it is back: what
//! is spooled reaches the engine, in publish order, once per consumer group,
//! across restarts of the process and through damaged spool files.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use secbus::{Bus, Event, FallbackOutcome, Publisher};
use tokio::time::timeout;

mod fallback_support;

use fallback_support::{WAIT, config, consume, event, group, numbers, outage_bus};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("segment-"))
        })
        .collect();
    out.sort();
    out
}

async fn spool_all(bus: &Bus, events: impl IntoIterator<Item = Event>) {
    for e in events {
        match bus.publish_with_fallback(e).await {
            FallbackOutcome::Spooled => {}
            other => panic!("expected the event to be spooled, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn spooled_events_drain_in_publish_order_once_the_engine_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;

    engine.set_down(true);
    let sent: Vec<Event> = (0..300).map(event).collect();
    spool_all(&bus, sent.clone()).await;
    let spool = bus.spool().await.unwrap();
    assert_eq!(spool.depth(), 300);
    assert!(!spool.wait_drained(Duration::from_millis(200)).await);

    engine.set_down(false);
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    let got = consume(&mut workers, 300).await;
    let ids: Vec<_> = got.iter().map(|e| e.id.clone()).collect();
    let want: Vec<_> = sent.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, want);
    assert_eq!(got[0].data(), sent[0].data());
    assert_eq!(spool.depth(), 0);
    assert!(
        segments(dir.path()).is_empty(),
        "drained segments are deleted"
    );

    // Empty again: publishing is direct.
    match bus.publish_with_fallback(event(300)).await {
        FallbackOutcome::Published(receipt) => assert!(!receipt.duplicate),
        other => panic!("expected a direct publish, got {other:?}"),
    }
    assert_eq!(numbers(&consume(&mut workers, 1).await), vec![300]);
}

#[tokio::test]
async fn while_events_are_spooled_new_ones_queue_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;

    engine.set_down(true);
    spool_all(&bus, (0..2000).map(event)).await;
    engine.set_down(false);
    // The engine answers, but older events wait in the spool: new ones must not
    // overtake them. This single-threaded runtime runs the drain only when the
    // test awaits something that is not ready, and spooling never waits.
    spool_all(&bus, (2000..2200).map(event)).await;

    let spool = bus.spool().await.unwrap();
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    let got = numbers(&consume(&mut workers, 2200).await);
    assert_eq!(got, (0..2200).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_new_bus_on_the_same_spool_directory_drains_what_the_old_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, engine) = outage_bus(config(dir.path())).await;
    engine.set_down(true);
    spool_all(&bus, (0..50).map(event)).await;
    drop(bus);
    drop(engine);

    // A restarted service: a new bus over a new engine, the same spool directory.
    let (bus, _engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(
        numbers(&consume(&mut workers, 50).await),
        (0..50).collect::<Vec<_>>()
    );
}

const CHILD_SPOOL_DIR: &str = "SECBUS_TEST_CHILD_SPOOL_DIR";
const CHILD_SPOOLED: &str = "child: all events spooled";
const CHILD_EVENTS: u64 = 500;

/// Run by `spool_survives_a_killed_process` in a child process, which it kills.
#[tokio::test]
#[ignore = "a child process of spool_survives_a_killed_process"]
async fn spooling_child_process() {
    let Ok(dir) = std::env::var(CHILD_SPOOL_DIR) else {
        eprintln!("{CHILD_SPOOL_DIR} is not set: nothing to do outside the parent test");
        return;
    };
    let (bus, engine) = outage_bus(config(Path::new(&dir))).await;
    engine.set_down(true);
    spool_all(&bus, (0..CHILD_EVENTS).map(event)).await;
    let mut out = std::io::stdout();
    writeln!(out, "{CHILD_SPOOLED}").unwrap();
    out.flush().unwrap();
    // Nothing is synced on purpose: a killed process leaves its writes to the OS.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn spool_survives_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "spooling_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SPOOL_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let spooled = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains(CHILD_SPOOLED))
    });
    let spooled = timeout(Duration::from_secs(60), spooled).await;
    // SIGKILL on Unix: no destructor, no sync, no unlock by the process itself.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        matches!(spooled, Ok(Ok(true))),
        "the child did not spool its events"
    );

    let (bus, _engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert_eq!(spool.depth(), CHILD_EVENTS);
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(
        numbers(&consume(&mut workers, CHILD_EVENTS as usize).await),
        (0..CHILD_EVENTS).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn draining_again_after_a_crash_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    engine.set_down(true);
    spool_all(&bus, (0..100).map(event)).await;
    let spool = bus.spool().await.unwrap();
    spool.sync().unwrap();

    // The spool as a crash would leave it if the cursor had not moved yet.
    let copy = tempfile::tempdir().unwrap();
    for f in segments(dir.path()) {
        std::fs::copy(&f, copy.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(dir.path().join("cursor"), copy.path().join("cursor")).unwrap();

    engine.set_down(false);
    assert!(spool.wait_drained(WAIT).await);
    assert_eq!(
        numbers(&consume(&mut workers, 100).await),
        (0..100).collect::<Vec<_>>()
    );

    // The same engine, drained into again from the old copy: the dedup window
    // takes every event as a duplicate, and the group sees none again.
    let again = Bus::from_engine(engine.clone(), "memory:", config(copy.path()));
    let spool = again.spool().await.unwrap();
    assert_eq!(spool.depth(), 100);
    assert!(spool.wait_drained(WAIT).await);
    let extra = timeout(Duration::from_millis(500), workers.next()).await;
    assert!(
        extra.is_err(),
        "a re-drained event was delivered again: {extra:?}"
    );
}

/// Writes a spool directory by hand, as an earlier run would have left it.
fn write_segment(dir: &Path, lines: &[Vec<u8>]) {
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l);
    }
    std::fs::write(dir.join("segment-00000000000000000001.jsonl"), bytes).unwrap();
}

fn json_line(e: &Event) -> Vec<u8> {
    let mut l = e.to_json();
    l.push(b'\n');
    l
}

fn quarantined(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("quarantine.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_torn_last_line_is_set_aside_and_the_rest_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<Vec<u8>> = (0..5).map(|n| json_line(&event(n))).collect();
    let torn = event(5).to_json();
    lines.push(torn[..torn.len() / 2].to_vec());
    write_segment(dir.path(), &lines);

    let (bus, engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(
        numbers(&consume(&mut workers, 5).await),
        (0..5).collect::<Vec<_>>()
    );
    assert_eq!(spool.skipped_total(), 1);
    let q = quarantined(dir.path());
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["code"], "malformed_json");

    // The spool keeps working after the repair.
    engine.set_down(true);
    spool_all(&bus, (10..13).map(event)).await;
    engine.set_down(false);
    assert!(spool.wait_drained(WAIT).await);
    assert_eq!(numbers(&consume(&mut workers, 3).await), vec![10, 11, 12]);
}

#[tokio::test]
async fn a_corrupt_line_is_set_aside_without_stopping_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![
        json_line(&event(0)),
        b"{\"specversion\": \"1.0\", garbage\n".to_vec(),
        json_line(&event(1)),
        b"{\"specversion\":\"1.0\",\"id\":\"x\",\"source\":\"s\",\"type\":\"a.b\"}\n".to_vec(),
        json_line(&event(2)),
    ];
    write_segment(dir.path(), &lines);

    let (bus, _engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert_eq!(spool.depth(), 5);
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(numbers(&consume(&mut workers, 3).await), vec![0, 1, 2]);
    assert_eq!(spool.skipped_total(), 2);
    let codes: Vec<String> = quarantined(dir.path())
        .iter()
        .map(|q| q["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, vec!["malformed_json", "missing_attribute"]);
}

#[tokio::test]
async fn a_closed_bus_keeps_its_spool_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, engine) = outage_bus(config(dir.path())).await;
    engine.set_down(true);
    spool_all(&bus, (0..20).map(event)).await;
    let spool = bus.spool().await.unwrap();
    bus.close().await.unwrap();
    // Nothing can drain into a closed bus: the wait says so rather than time out.
    assert!(!spool.wait_drained(WAIT).await);
    assert_eq!(spool.depth(), 20);
    assert!(!segments(dir.path()).is_empty());

    let (bus, _engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(
        numbers(&consume(&mut workers, 20).await),
        (0..20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_torn_line_ending_an_older_segment_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let torn = event(2).to_json();
    let mut first = [json_line(&event(0)), json_line(&event(1))].concat();
    first.extend_from_slice(&torn[..10]);
    std::fs::write(dir.path().join("segment-00000000000000000001.jsonl"), first).unwrap();
    let second = [json_line(&event(3)), json_line(&event(4))].concat();
    std::fs::write(
        dir.path().join("segment-00000000000000000002.jsonl"),
        second,
    )
    .unwrap();

    let (bus, _engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert_eq!(spool.depth(), 4);
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(numbers(&consume(&mut workers, 4).await), vec![0, 1, 3, 4]);
    assert_eq!(spool.skipped_total(), 1);
    assert!(segments(dir.path()).is_empty());
}

#[tokio::test]
async fn the_drain_resumes_at_the_saved_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..5).map(|n| json_line(&event(n))).collect();
    let offset: usize = lines[..3].iter().map(Vec::len).sum();
    write_segment(dir.path(), &lines);
    std::fs::write(dir.path().join("cursor"), format!("1 {offset}\n")).unwrap();

    let (bus, _engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert_eq!(spool.depth(), 2);
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(numbers(&consume(&mut workers, 2).await), vec![3, 4]);
}

#[tokio::test]
async fn a_cursor_inside_a_line_drains_its_segment_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..3).map(|n| json_line(&event(n))).collect();
    write_segment(dir.path(), &lines);
    std::fs::write(dir.path().join("cursor"), "1 7\n").unwrap();

    let (bus, _engine) = outage_bus(config(dir.path())).await;
    let mut workers = group(&bus).await;
    let spool = bus.spool().await.unwrap();
    assert_eq!(spool.depth(), 3);
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(numbers(&consume(&mut workers, 3).await), vec![0, 1, 2]);
}
