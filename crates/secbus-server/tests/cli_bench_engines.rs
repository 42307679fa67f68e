//! `secbus bench` on nats and redis: the `publish` and `consume` scenarios
//! report ours and both raw figures, and leave nothing behind on the server.
//! No speed is asserted here: the numbers are checked by running the bench.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use secbus_test_servers::{NatsServer, RedisServer};
use serde_json::Value;

/// Runs `secbus bench` on `url` with a few events, failing past two minutes.
fn bench(url: &str) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--bus",
        url,
        "--events",
        "500",
        "--json",
        "--scenario",
        "publish",
        "--scenario",
        "consume",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_secbus"))
        .arg("bench")
        .args(args)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("secbus starts");
    let start = Instant::now();
    let limit = Duration::from_secs(120);
    while child.try_wait().expect("secbus can be waited on").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("secbus bench {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("secbus output");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The reports, by scenario, in the order printed.
fn reports(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .expect("utf-8 output")
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

/// Checks the fields every engine's `publish` and `consume` reports carry.
fn check(reports: &[Value], engine: &str, window: u64) {
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["publish", "consume"], "{reports:?}");
    for report in reports {
        assert_eq!(report["engine"], engine, "{report}");
        assert_eq!(report["events"], 500, "{report}");
        assert_eq!(report["window"], window, "{report}");
        let ours = positive(report, "ours_per_s");
        let raw = positive(report, "raw_per_s");
        let ratio = positive(report, "ratio");
        assert!((ratio - ours / raw).abs() < 0.01, "{report}");
        positive(report, "event_bytes");
        positive(report, "wall_s");
        positive(report, "raw_wall_s");
        assert!(report["raw_baseline"].is_string(), "{report}");
        assert!(report["ours_method"].is_string(), "{report}");
        assert_eq!(report["targets"][0]["field"], "ratio", "{report}");
        assert_eq!(report["targets"][0]["min"], 0.9, "{report}");
        assert!(report["meets_targets"].is_boolean(), "{report}");
    }
    let (publish, consume) = (&reports[0], &reports[1]);
    positive(publish, "raw_with_dedup_per_s");
    positive(publish, "ratio_with_dedup");
    assert!(publish["raw_with_dedup_baseline"].is_string(), "{publish}");
    positive(publish, "ours_batch");
    assert_eq!(publish["ours_publishers"], 1, "{publish}");
    positive(consume, "raw_with_decode_per_s");
    positive(consume, "ratio_with_decode");
    assert!(consume["raw_with_decode_baseline"].is_string(), "{consume}");
}

#[test]
fn nats_bench_reports_publish_and_consume_and_deletes_its_streams() {
    let server = NatsServer::start().expect("nats-server starts");
    let out = bench(&server.url());
    check(&reports(&out), "nats", 256);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let streams: Vec<String> = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let names = js.stream_names();
        tokio::time::timeout(Duration::from_secs(10), names.map(Result::unwrap).collect())
            .await
            .expect("the stream names come")
    });
    assert!(streams.is_empty(), "left behind: {streams:?}");
}

#[test]
fn redis_bench_reports_publish_and_consume_and_deletes_its_keys() {
    let server = RedisServer::start().expect("redis-server starts");
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    // A key of someone else's, which the bench must leave alone.
    let () = redis::cmd("SET")
        .arg("secbus-bench-not-ours")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let out = bench(&server.url());
    check(&reports(&out), "redis", 500);

    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert_eq!(keys, ["secbus-bench-not-ours"]);
}
