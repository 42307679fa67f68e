//! `secbus audit verify`: exit 0 and the head on an intact trail; exit 1 and
//! the first broken record (file, line, seq, why) on a tampered copy; exit 2
//! on a path holding no trail.

use std::path::Path;
use std::process::{Command, Output};

use secbus::{Event, EventType, TenantId};
use secbus_handlers::audit::AuditTrail;
use serde_json::{Value, json};

fn verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secbus"))
        .args(["audit", "verify"])
        .args(args)
        .output()
        .expect("secbus runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A trail of `n` records for tenant `acme` under `root`, over several files.
fn trail(root: &Path, n: u64) {
    let mut trail = AuditTrail::open(root.join("acme"), 2_000).unwrap();
    for i in 0..n {
        let event = Event::builder(
            EventType::new("auth.login.failed").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .data(json!({ "user": format!("user-{i:03}") }))
        .build()
        .unwrap();
        trail.append(&event.to_json()).unwrap();
    }
    trail.sync().unwrap();
}

#[test]
fn an_intact_trail_exits_0_with_its_head() {
    let root = tempfile::tempdir().unwrap();
    trail(root.path(), 12);
    let out = verify(&[root.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.starts_with("intact: "), "{text}");
    assert!(text.contains("12 records"), "{text}");
    assert!(text.contains("last seq 12 hash "), "{text}");

    let out = verify(&["--json", root.path().join("acme").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["intact"], true);
    assert_eq!(report["records"], 12);
    assert_eq!(report["last_seq"], 12);
    assert!(report["files"].as_u64().unwrap() > 1, "{report}");
}

#[test]
fn a_changed_byte_exits_1_naming_the_record() {
    let root = tempfile::tempdir().unwrap();
    trail(root.path(), 12);
    let file = root.path().join("acme").join("audit-000002.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().position(|l| l.contains("user-")).unwrap() + 1;
    let seq: Value = serde_json::from_str(text.lines().nth(line - 1).unwrap()).unwrap();
    let seq = seq["seq"].as_u64().unwrap();
    // One byte: a digit of the user name in the first record of the file.
    let at = text.find("user-0").unwrap() + 5;
    let mut bytes = text.into_bytes();
    bytes[at] = b'9';
    std::fs::write(&file, bytes).unwrap();

    let out = verify(&[root.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    let expected = format!(
        "broken: {}:{line} (seq {seq}): hash mismatch",
        file.display()
    );
    assert!(text.starts_with(&expected), "{text}\nexpected {expected}");

    let out = verify(&["--json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["broken"]["code"], "hash_mismatch");
    assert_eq!(report["broken"]["seq"], seq);
}

#[test]
fn a_removed_line_exits_1_with_a_seq_gap() {
    let root = tempfile::tempdir().unwrap();
    trail(root.path(), 6);
    let file = root.path().join("acme").join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&file, kept.join("\n") + "\n").unwrap();
    let out = verify(&[root.path().join("acme").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains(":2 (seq 3): seq gap: expected seq 2, found 3"),
        "{text}"
    );
}

#[test]
fn a_path_without_a_trail_exits_2() {
    let empty = tempfile::tempdir().unwrap();
    let out = verify(&[empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: invalid_config: "), "{err}");
    let out = verify(&[empty.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
