//! `secbus publish` and `secbus tail`, run as the real binary against a durable
//! store in a temporary directory, each command in a process of its own.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Generous: a bug fails the test instead of hanging it, noise does not.
const TIMEOUT: Duration = Duration::from_secs(30);

fn secbus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secbus"));
    cmd.env_remove("SECBUS_BUS").env_remove("SECBUS_LOG");
    cmd
}

fn bus_url(dir: &Path) -> String {
    format!("embedded:{}", dir.join("store").display())
}

/// The type and `data` of event `i`: ten types of the catalog, cycling, each
/// with data its schema accepts (every publish passes the contracts gate).
fn type_and_data(i: usize) -> (&'static str, String) {
    match i % 10 {
        0 => (
            "auth.login.failed",
            format!(
                r#"{{"user": "u{i}@acme.example",  "src_ip": "203.0.113.9", "reason": "bad_password"}}"#
            ),
        ),
        1 => (
            "auth.login.succeeded",
            format!(
                r#"{{"user":"u{i}@acme.example","src_ip":"203.0.113.24","method":"password"}}"#
            ),
        ),
        2 => (
            "auth.mfa.challenged",
            format!(r#"{{"user":"u{i}@acme.example","factor":"push","challenge_id":"chl-{i}"}}"#),
        ),
        3 => (
            "iam.role.assigned",
            format!(
                r#"{{"actor":{{"user":"admin@acme.example"}},"user":"u{i}@acme.example","role":"Auditor","privileged":false}}"#
            ),
        ),
        4 => (
            "authz.access.denied",
            format!(
                r#"{{"user":"u{i}@acme.example","action":"secrets:read","resource":"vault/prod/{i}","reason":"missing_permission"}}"#
            ),
        ),
        5 => (
            "incident.ticket.created",
            format!(r#"{{"incident_id":"INC-{i}","system":"jira","ticket_id":"SEC-{i}"}}"#),
        ),
        6 => (
            "agent.task.result",
            format!(
                r#"{{"task_id":"task-{i}","agent_id":"edr-agent-1","outcome":"success","duration_ms":{i}}}"#
            ),
        ),
        7 => (
            "iot.sensor.alert",
            format!(
                r#"{{"sensor_id":"rack-{i}-temp","alert_type":"threshold_exceeded","severity":"high"}}"#
            ),
        ),
        8 => (
            "incident.status.changed",
            format!(
                r#"{{"incident_id":"INC-{i}","from_status":"investigating","to_status":"contained","changed_by":{{"user":"alice@acme.example"}}}}"#
            ),
        ),
        _ => (
            "config.changed",
            format!(
                r#"{{"actor":{{"user":"deploy-bot"}},"component":"api-{i}","setting":"tls.verify_peer"}}"#
            ),
        ),
    }
}

/// One event line of tenant `acme`; `type` cycles over ten catalog types.
fn event_line(prefix: &str, i: usize) -> String {
    let (ty, data) = type_and_data(i);
    format!(
        r#"{{"specversion":"1.0","id":"{prefix}-{i:05}","source":"test","type":"{ty}","tenantid":"acme","subject":"host-{i}","data":{data}}}"#
    )
}

fn write_events(path: &Path, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    let text: String = (0..n).map(|i| event_line(prefix, i) + "\n").collect();
    std::fs::write(path, text).unwrap();
    ids
}

/// Spawns `cmd` with piped output, feeding stdout and stderr to threads so a
/// full pipe never blocks the child.
struct Running {
    child: Child,
    stdout: thread::JoinHandle<Vec<u8>>,
    stderr: thread::JoinHandle<Vec<u8>>,
}

fn drain(mut from: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits up to `limit` for the exit; `None` when it is still running then.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        self.output(status)
    }

    fn output(self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }

    /// The exit of a command that must end on its own within [`TIMEOUT`].
    fn finish(mut self) -> Output {
        match self.wait_for(TIMEOUT) {
            Some(status) => self.output(status),
            None => {
                let out = self.kill();
                panic!(
                    "the command did not end within {TIMEOUT:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    Running::start(cmd).finish()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn publish(bus: &str, file: &Path) -> Output {
    run(secbus().args(["publish", "--bus", bus, "--file"]).arg(file))
}

fn tail_args(bus: &str, tenant: &str, limit: usize) -> Vec<String> {
    [
        "tail",
        "--bus",
        bus,
        "--tenant",
        tenant,
        "--from-start",
        "--limit",
        &limit.to_string(),
        "--format",
        "jsonl",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The ids of JSON lines, in order; panics on a line that is not an event.
fn ids(stdout: &[u8]) -> Vec<String> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Everything stored for `tenant` when at most `expected` events exist: asks
/// for one more than that, so the tail prints what there is and then waits,
/// and stops it after a second of quiet.
fn stored_ids(bus: &str, tenant: &str, expected: usize) -> Vec<String> {
    let mut tail = Running::start(secbus().args(tail_args(bus, tenant, expected + 1)));
    let status = tail.wait_for(Duration::from_secs(1));
    assert!(
        status.is_none(),
        "the tail ended although fewer events than its limit exist: {status:?}"
    );
    ids(&tail.kill().stdout)
}

#[test]
fn publish_then_tail_in_new_processes_gives_the_same_ids_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let file = dir.path().join("events.jsonl");
    let published = write_events(&file, "ev", 2000);

    let out = publish(&bus, &file);
    assert!(out.status.success(), "publish failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("published 2000 events (0 duplicates)"),
        "{}",
        stderr(&out)
    );

    let out = run(secbus().args(tail_args(&bus, "acme", 2000)));
    assert!(out.status.success(), "tail failed: {}", stderr(&out));
    assert_eq!(ids(&out.stdout), published);

    // Exactly as stored: the data is the text that was published, spacing and all.
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.contains(
            r#""data":{"user": "u0@acme.example",  "src_ip": "203.0.113.9", "reason": "bad_password"}"#
        ),
        "{first}"
    );
}

#[test]
fn a_tail_of_another_tenant_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let file = dir.path().join("events.jsonl");
    write_events(&file, "ev", 200);
    let out = publish(&bus, &file);
    assert!(out.status.success(), "publish failed: {}", stderr(&out));

    let mut tail = Running::start(secbus().args(tail_args(&bus, "globex", 1)));
    let status = tail.wait_for(Duration::from_secs(1));
    let out = tail.kill();
    assert!(status.is_none(), "the tail of globex ended: {status:?}");
    assert!(
        out.stdout.is_empty(),
        "globex saw: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The same store does hold acme's events.
    assert_eq!(stored_ids(&bus, "acme", 200).len(), 200);
}

#[test]
fn a_file_with_one_malformed_line_stores_nothing_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let earlier_file = dir.path().join("earlier.jsonl");
    let earlier = write_events(&earlier_file, "earlier", 50);
    let out = publish(&bus, &earlier_file);
    assert!(out.status.success(), "publish failed: {}", stderr(&out));

    let mut lines: Vec<String> = (0..100).map(|i| event_line("later", i)).collect();
    lines[41] = lines[41].replace(r#""tenantid":"acme","#, "");
    let bad_file = dir.path().join("bad.jsonl");
    std::fs::write(&bad_file, lines.join("\n") + "\n").unwrap();

    let out = publish(&bus, &bad_file);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 42: missing_attribute at `tenantid`"),
        "{err}"
    );
    assert!(
        !err.contains("line 41:") && !err.contains("line 43:"),
        "{err}"
    );
    assert!(err.contains("nothing was published"), "{err}");

    assert_eq!(stored_ids(&bus, "acme", 150), earlier);
}

#[test]
fn every_bad_line_is_named_with_its_attribute_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    let mut lines: Vec<String> = (0..10).map(|i| event_line("ev", i)).collect();
    lines[2] = "{not json".to_owned();
    lines[4] = String::new();
    lines[6] = lines[6].replace(r#""specversion":"1.0""#, r#""specversion":"0.3""#);
    lines[8] = lines[8].replace(
        r#""type":"incident.status.changed""#,
        r#""type":"Bad Type""#,
    );
    std::fs::write(&file, lines.join("\n")).unwrap();

    let out = run(secbus()
        .args(["publish", "--bus", "memory:", "--file"])
        .arg(&file));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 3: malformed_json"), "{err}");
    assert!(
        !err.contains("line 5:"),
        "a blank line is not an error: {err}"
    );
    assert!(
        err.contains("line 7: unsupported_specversion at `specversion`"),
        "{err}"
    );
    assert!(err.contains("line 9: invalid_attribute at `type`"), "{err}");
    assert!(
        err.contains("error: invalid_file: ") && err.contains("has 3 invalid lines"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn publishing_the_same_file_twice_reports_duplicates_and_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let file = dir.path().join("events.jsonl");
    let published = write_events(&file, "ev", 30);
    assert!(publish(&bus, &file).status.success());

    let out = publish(&bus, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("published 0 events (30 duplicates)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stored_ids(&bus, "acme", 60), published);
}

/// A command whose stdout is read line by line while it runs; killed on drop,
/// so a failing test never leaves it behind.
struct Live {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
}

impl Live {
    fn start(cmd: &mut Command) -> Live {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Some(drain(child.stderr.take().unwrap()));
        Live {
            child,
            lines,
            stderr,
        }
    }

    /// The next `n` lines, each within [`TIMEOUT`].
    fn lines(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(TIMEOUT)
                    .unwrap_or_else(|e| panic!("line {} of {n} did not come: {e}", i + 1))
            })
            .collect()
    }

    /// The exit status and stderr, once it ends within [`TIMEOUT`], with the
    /// lines printed since the last `lines` call.
    fn finish(&mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the command did not end");
            thread::sleep(Duration::from_millis(20));
        };
        let rest = self.lines.iter().collect();
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        (status, rest, String::from_utf8_lossy(&err).into_owned())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Does nothing once the child was reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_tail_from_the_start_prints_history_then_follows_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let first = dir.path().join("first.jsonl");
    let second = dir.path().join("second.jsonl");
    let mut expected = write_events(&first, "first", 3);
    expected.extend(write_events(&second, "second", 3));
    assert!(publish(&bus, &first).status.success());

    let mut tail = Live::start(secbus().args(tail_args(&bus, "acme", 6)));
    // Three lines out means the tail is reading: the next ones must come live.
    let mut lines = tail.lines(3);
    let out = publish(&bus, &second);
    assert!(out.status.success(), "{}", stderr(&out));
    lines.extend(tail.lines(3));
    let (status, rest, err) = tail.finish();
    assert!(status.success(), "{status:?}: {err}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(ids(lines.join("\n").as_bytes()), expected);
}

#[cfg(unix)]
#[test]
fn ctrl_c_ends_a_tail_with_status_zero_and_everything_printed() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let file = dir.path().join("events.jsonl");
    let published = write_events(&file, "ev", 20);
    assert!(publish(&bus, &file).status.success());

    let mut tail = Live::start(
        secbus()
            .args(["tail", "--bus", &bus, "--tenant", "acme", "--from-start"])
            .args(["--format", "jsonl"]),
    );
    let mut lines = tail.lines(20);
    let sent = Command::new("kill")
        .args(["-INT", &tail.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (status, rest, err) = tail.finish();
    assert_eq!(status.code(), Some(0), "{status:?}: {err}");
    lines.extend(rest);
    assert_eq!(ids(lines.join("\n").as_bytes()), published);
}

#[test]
fn a_type_pattern_and_the_pretty_format() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let file = dir.path().join("events.jsonl");
    write_events(&file, "ev", 30);
    assert!(publish(&bus, &file).status.success());

    let out = run(secbus().args([
        "tail",
        "--bus",
        &bus,
        "--tenant",
        "acme",
        "--from-start",
        "--type",
        "iam.role.*",
        "--limit",
        "3",
        "--format",
        "pretty",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, i) in lines.iter().zip([3, 13, 23]) {
        assert!(line.contains("iam.role.assigned"), "{line}");
        assert!(line.contains(&format!("host-{i} ")), "{line}");
        assert!(
            line.contains(&format!("id=ev-{i:05}  corr=ev-{i:05}")),
            "{line}"
        );
    }
}

#[test]
fn bad_arguments_say_what_is_wrong_with_a_code() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["tail", "--bus", "memory:", "--tenant", "Not A Tenant"],
            "error: invalid_attribute: ",
        ),
        (
            &[
                "tail", "--bus", "memory:", "--tenant", "acme", "--type", "a..b",
            ],
            "error: invalid_options: ",
        ),
        (
            &["tail", "--bus", "nowhere", "--tenant", "acme"],
            "error: invalid_url: cannot open the bus nowhere",
        ),
        (
            &[
                "publish",
                "--bus",
                "memory:",
                "--file",
                "/no/such/file.jsonl",
            ],
            "error: io_error: cannot read /no/such/file.jsonl",
        ),
    ];
    for (args, expected) in cases {
        let out = run(secbus().args(args));
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn help_shows_examples() {
    for sub in ["publish", "tail"] {
        let out = run(secbus().args([sub, "--help"]));
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Examples:"), "{sub}: {text}");
        assert!(text.contains(&format!("secbus {sub} --")), "{sub}: {text}");
    }
}

#[test]
fn with_a_working_engine_the_fallback_spool_ends_empty() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_url(dir.path());
    let spool = dir.path().join("spool");
    let file = dir.path().join("events.jsonl");
    let published = write_events(&file, "ev", 300);

    let out = run(secbus()
        .args(["publish", "--bus", &bus, "--file"])
        .arg(&file)
        .arg("--fallback-spool")
        .arg(&spool)
        .args(["--drain-timeout", "20s"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stored_ids(&bus, "acme", 300), published);
    // The spool keeps its lock and cursor files; no event may be left in it.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&spool).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let len = entry.metadata().unwrap().len();
        assert!(
            !(name.starts_with("segment-") || name.starts_with("quarantine")) || len == 0,
            "the spool still holds {name} ({len} bytes)"
        );
        names.push(name);
    }
    assert!(names.iter().all(|n| n != "quarantine.jsonl"), "{names:?}");
    assert!(
        !stderr(&out).contains("still in the spool"),
        "{}",
        stderr(&out)
    );
}
