//! `secbus bench` runs its scenarios and prints reports a machine can read.
//! No speed is asserted here: the numbers are checked by running the bench.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `secbus bench` with `args`, failing the test if it runs past `limit`.
fn bench(args: &[&str], tmpdir: &Path, limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secbus"))
        .arg("bench")
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("secbus starts");
    let start = Instant::now();
    while child.try_wait().expect("secbus can be waited on").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("secbus bench {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("secbus output")
}

fn reports(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 output");
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

fn positive(report: &Value, field: &str) -> f64 {
    let v = report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {report}"));
    assert!(v > 0.0 && v.is_finite(), "{field} = {v} in {report}");
    v
}

#[test]
fn memory_bench_prints_one_json_report_per_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench(
        &["--bus", "memory:", "--events", "2000", "--json"],
        tmp.path(),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = reports(&out);
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["scenario"].as_str().expect("scenario is a string"))
        .collect();
    assert_eq!(
        names,
        [
            "publish_consume",
            "hot_path",
            "contracts.validate",
            "contracts.secrets",
            "audit"
        ]
    );
    for r in &reports[..2] {
        assert_eq!(r["engine"], "memory", "{r}");
        positive(r, "events");
        let ours = positive(r, "ours_per_s");
        let raw = positive(r, "raw_per_s");
        let ratio = positive(r, "ratio");
        assert!((ratio - ours / raw).abs() < 0.01 * ratio + 0.002, "{r}");
        assert!(r["meets_targets"].is_boolean(), "{r}");
    }
    let publish_consume = &reports[0];
    assert_eq!(publish_consume["events"], 2000);
    assert!(publish_consume["event_bytes"].as_u64().unwrap() > 400);
    let hot_path = &reports[1];
    for field in ["verify_us", "with_publish_us", "build_us"] {
        positive(hot_path, field);
    }
    for field in ["overhead_pct", "overhead_pct_min", "overhead_pct_max"] {
        assert!(hot_path[field].is_number(), "{field} in {hot_path}");
    }
    assert!(
        hot_path["verify_us_min"].as_f64() <= hot_path["verify_us"].as_f64()
            && hot_path["verify_us"].as_f64() <= hot_path["verify_us_max"].as_f64(),
        "{hot_path}"
    );
}

#[test]
fn embedded_bench_without_a_directory_cleans_up_its_temporary_store() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench(
        &[
            "--bus",
            "embedded:",
            "--events",
            "300",
            "--scenario",
            "publish_consume",
            "--json",
        ],
        tmp.path(),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = reports(&out);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["scenario"], "publish_consume");
    assert_eq!(r["engine"], "embedded");
    assert_eq!(r["events"], 300);
    positive(r, "ours_per_s");
    positive(r, "raw_per_s");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn an_unknown_scenario_is_refused_with_the_known_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench(
        &["--bus", "memory:", "--scenario", "publish_consum"],
        tmp.path(),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("publish_consum") && stderr.contains("publish_consume, hot_path"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn contracts_scenarios_report_the_gate_and_the_secret_scan_on_one_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench(
        &[
            "--bus",
            "memory:",
            "--events",
            "2000",
            "--scenario",
            "contracts.validate",
            "--scenario",
            "contracts.secrets",
            "--json",
        ],
        tmp.path(),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = reports(&out);
    assert_eq!(reports.len(), 2, "{reports:?}");
    for r in &reports {
        assert_eq!(r["engine"], "memory", "{r}");
        assert_eq!(r["events"], 2000, "{r}");
        assert_eq!(r["threads"], 1, "{r}");
        positive(r, "ours_per_s");
        positive(r, "ours_us");
        assert!(r["raw_is"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        assert_eq!(
            r["targets"],
            serde_json::json!([{"field": "ours_per_s", "min": 200000.0}]),
            "{r}"
        );
        let met = r["ours_per_s"].as_f64().unwrap() >= 200_000.0;
        assert_eq!(r["meets_targets"], met, "{r}");
    }

    let validate = &reports[0];
    assert_eq!(validate["scenario"], "contracts.validate");
    assert_eq!(validate["event_type"], "auth.login.failed");
    let ours = positive(validate, "ours_per_s");
    let raw = positive(validate, "raw_per_s");
    let ratio = positive(validate, "ratio");
    assert!(
        (ratio - ours / raw).abs() < 0.01 * ratio + 0.002,
        "{validate}"
    );
    positive(validate, "raw_us");
    assert!(
        validate["data_bytes"].as_u64().unwrap() > 100
            && validate["event_bytes"].as_u64().unwrap() > validate["data_bytes"].as_u64().unwrap(),
        "{validate}"
    );

    let secrets = &reports[1];
    assert_eq!(secrets["scenario"], "contracts.secrets");
    assert_eq!(secrets["event_type"], "endpoint.process.created");
    assert!(secrets["raw_per_s"].is_null(), "{secrets}");
    assert!(secrets["ratio"].is_null(), "{secrets}");
    positive(secrets, "with_parse_per_s");
    positive(secrets, "with_parse_us");
    let event_bytes = secrets["event_bytes"].as_u64().unwrap();
    assert!((900..=1400).contains(&event_bytes), "about 1 KB: {secrets}");
}

#[test]
fn contracts_scenarios_run_on_every_bus() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench(
        &[
            "--bus",
            "embedded:",
            "--events",
            "50",
            "--scenario",
            "contracts.secrets",
            "--json",
        ],
        tmp.path(),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = reports(&out);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["engine"], "embedded");
    assert_eq!(reports[0]["scenario"], "contracts.secrets");
}
