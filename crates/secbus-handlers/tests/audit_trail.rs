//! The audit trail on disk: records chained across rotated files, the chain
//! resumed after a restart, and `verify_path` naming the first record that a
//! changed byte, a removed line or swapped lines break. The handler runs on a
//! worker of a real bus (memory engine) with fsync per batch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secbus::{Bus, Event, EventType, TenantId};
use secbus_handlers::audit::{
    self, AuditConfig, AuditTrail, Breakage, FsyncPolicy, GENESIS, verify_path,
};
use serde_json::json;

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn event(n: u64) -> Event {
    Event::builder(EventType::new("auth.login.failed").unwrap(), acme())
        .data(json!({ "user": format!("user-{n}"), "n": n }))
        .build()
        .unwrap()
}

/// Writes `n` records to a trail in `dir`, rotating past `max_file_bytes`.
fn write_trail(dir: &Path, n: u64, max_file_bytes: u64) -> AuditTrail {
    let mut trail = AuditTrail::open(dir, max_file_bytes).unwrap();
    for i in 0..n {
        trail.append(&event(i).to_json()).unwrap();
    }
    trail.sync().unwrap();
    trail
}

fn file(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("audit-{index:06}.jsonl"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_intact_trail_verifies_and_reports_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let trail = write_trail(dir.path(), 10, 1 << 20);
    let checks = verify_path(dir.path()).unwrap();
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert!(check.is_intact(), "{:?}", check.broken);
    assert_eq!(check.records, 10);
    assert_eq!(check.files, 1);
    let head = trail.head();
    assert_eq!(head.next_seq, 11);
    assert_eq!(check.last, Some((10, head.last_hash.clone())));
    let first: serde_json::Value = serde_json::from_str(&lines(&file(dir.path(), 1))[0]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev"], GENESIS);
    assert_eq!(first["event"]["data"]["user"], "user-0");
}

#[test]
fn a_changed_byte_in_an_event_is_a_hash_mismatch_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    write_trail(dir.path(), 10, 1 << 20);
    let path = file(dir.path(), 1);
    let mut all = lines(&path);
    assert!(all[6].contains("user-6"));
    all[6] = all[6].replace("user-6", "user-X");
    write_lines(&path, &all);
    let check = &verify_path(dir.path()).unwrap()[0];
    let broken = check.broken.as_ref().expect("the change is found");
    assert_eq!((broken.line, broken.seq), (7, Some(7)));
    assert_eq!(broken.file, path);
    assert!(
        matches!(broken.why, Breakage::HashMismatch { .. }),
        "{broken}"
    );
    assert_eq!(check.records, 6);
}

#[test]
fn a_changed_hash_breaks_the_next_record_link() {
    let dir = tempfile::tempdir().unwrap();
    write_trail(dir.path(), 5, 1 << 20);
    let path = file(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    // The last hex digit of the second record's hash, flipped.
    let second_end = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0;
    let at = second_end - 3;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, bytes).unwrap();
    let broken = verify_path(&path).unwrap()[0].broken.clone().unwrap();
    assert_eq!((broken.line, broken.seq), (2, Some(2)));
    assert_eq!(broken.why.code(), "hash_mismatch");
}

#[test]
fn a_removed_line_is_a_seq_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_trail(dir.path(), 10, 1 << 20);
    let path = file(dir.path(), 1);
    let mut all = lines(&path);
    all.remove(3);
    write_lines(&path, &all);
    let broken = verify_path(dir.path()).unwrap()[0].broken.clone().unwrap();
    assert_eq!(broken.line, 4);
    assert_eq!(
        broken.why,
        Breakage::SeqGap {
            expected: 4,
            found: 5
        }
    );
}

#[test]
fn swapped_lines_break_at_the_first_of_them() {
    let dir = tempfile::tempdir().unwrap();
    write_trail(dir.path(), 10, 1 << 20);
    let path = file(dir.path(), 1);
    let mut all = lines(&path);
    all.swap(4, 5);
    write_lines(&path, &all);
    let broken = verify_path(dir.path()).unwrap()[0].broken.clone().unwrap();
    assert_eq!((broken.line, broken.seq), (5, Some(6)));
    assert_eq!(broken.why.code(), "seq_gap");
}

#[test]
fn renumbered_swapped_lines_are_a_prev_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_trail(dir.path(), 6, 1 << 20);
    let path = file(dir.path(), 1);
    let mut all = lines(&path);
    all.swap(2, 3);
    all[2] = all[2].replacen("\"seq\":4", "\"seq\":3", 1);
    all[3] = all[3].replacen("\"seq\":3", "\"seq\":4", 1);
    write_lines(&path, &all);
    let broken = verify_path(dir.path()).unwrap()[0].broken.clone().unwrap();
    assert_eq!((broken.line, broken.seq), (3, Some(3)));
    assert_eq!(broken.why.code(), "prev_mismatch");
}

#[test]
fn a_line_that_is_not_a_record_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    write_trail(dir.path(), 4, 1 << 20);
    let path = file(dir.path(), 1);
    let mut all = lines(&path);
    let cut = all[1].len() - 5;
    all[1].truncate(cut);
    write_lines(&path, &all);
    let broken = verify_path(dir.path()).unwrap()[0].broken.clone().unwrap();
    assert_eq!((broken.line, broken.seq), (2, None));
    assert_eq!(broken.why.code(), "malformed");
}

#[test]
fn the_chain_goes_on_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    // About 500 bytes a record: two or three records a file.
    write_trail(dir.path(), 20, 1_500);
    let files: Vec<_> = (1..)
        .map(|i| file(dir.path(), i))
        .take_while(|p| p.exists())
        .collect();
    assert!(files.len() >= 5, "{} files", files.len());
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 1_500);
    }
    let check = &verify_path(dir.path()).unwrap()[0];
    assert!(check.is_intact(), "{:?}", check.broken);
    assert_eq!((check.records, check.files), (20, files.len()));
    // The second file starts where the first ended.
    let last_of_first: serde_json::Value =
        serde_json::from_str(lines(&files[0]).last().unwrap()).unwrap();
    let first_of_second: serde_json::Value = serde_json::from_str(&lines(&files[1])[0]).unwrap();
    assert_eq!(first_of_second["prev"], last_of_first["hash"]);
    assert_eq!(
        first_of_second["seq"].as_u64(),
        last_of_first["seq"].as_u64().map(|s| s + 1)
    );
    // A file removed from the middle breaks the chain at the next file.
    std::fs::remove_file(&files[2]).unwrap();
    let broken = verify_path(dir.path()).unwrap()[0].broken.clone().unwrap();
    assert_eq!(broken.file, files[3]);
    assert_eq!(broken.line, 1);
    assert_eq!(broken.why.code(), "seq_gap");
}

#[test]
fn a_restart_continues_the_chain_and_cuts_a_partial_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_trail(dir.path(), 5, 2_500);
    let head = first.head().clone();
    drop(first);
    // A crash in the middle of a write leaves half a line.
    let last = (1..)
        .map(|i| file(dir.path(), i))
        .take_while(|p| p.exists())
        .last()
        .unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(br#"{"seq":6,"event":{"id":"#);
    std::fs::write(&last, bytes).unwrap();

    let mut again = AuditTrail::open(dir.path(), 2_500).unwrap();
    assert_eq!(again.head(), &head);
    for i in 5..12 {
        again.append(&event(i).to_json()).unwrap();
    }
    again.sync().unwrap();
    let check = &verify_path(dir.path()).unwrap()[0];
    assert!(check.is_intact(), "{:?}", check.broken);
    assert_eq!(check.records, 12);
}

#[test]
fn a_damaged_last_record_is_not_extended() {
    let dir = tempfile::tempdir().unwrap();
    write_trail(dir.path(), 3, 1 << 20);
    let path = file(dir.path(), 1);
    let mut all = lines(&path);
    all[2] = all[2].replace("user-2", "user-9");
    write_lines(&path, &all);
    let err = AuditTrail::open(dir.path(), 1 << 20).unwrap_err();
    assert_eq!(err.code(), "broken_trail", "{err}");
}

#[test]
fn a_root_checks_every_tenant_and_names_the_broken_one() {
    let root = tempfile::tempdir().unwrap();
    write_trail(&root.path().join("acme"), 3, 1 << 20);
    write_trail(&root.path().join("globex"), 3, 1 << 20);
    let path = file(&root.path().join("globex"), 1);
    let mut all = lines(&path);
    all.remove(0);
    write_lines(&path, &all);
    let checks = verify_path(root.path()).unwrap();
    assert_eq!(checks.len(), 2);
    assert!(checks[0].is_intact());
    let broken = checks[1].broken.clone().unwrap();
    assert_eq!(
        broken.why,
        Breakage::SeqGap {
            expected: 1,
            found: 2
        }
    );
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        verify_path(empty.path()).unwrap_err().code(),
        "invalid_config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_records_a_groups_events_with_fsync_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::connect("memory:").await.unwrap();
    let mut config = AuditConfig::new(dir.path(), vec!["acme".into()]);
    config.fsync = FsyncPolicy::Batch;
    config.max_file_bytes = 8 * 1024;
    for n in 0..200 {
        bus.publish(event(n)).await.unwrap();
    }
    let workers = audit::spawn(&bus, &config).await.unwrap();
    // The group starts at new events; these 300 are the ones recorded.
    for n in 0..300 {
        bus.publish(event(n)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while workers.stats().handled < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            workers.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = workers.shutdown().await.unwrap();
    assert_eq!((stats.handled, stats.failed), (300, 0));
    let check = &verify_path(dir.path().join("acme")).unwrap()[0];
    assert!(check.is_intact(), "{:?}", check.broken);
    assert_eq!(check.records, 300);
    assert!(check.files > 1);
}
