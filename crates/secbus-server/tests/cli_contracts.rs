//! The contracts gate through the `secbus` binary: `secbus schema ...`,
//! `secbus asyncapi`, and `secbus publish` refusing unknown types, schema
//! violations, other tenants and credentials, storing nothing and never
//! printing or storing a credential.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

fn secbus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secbus"));
    cmd.env_remove("SECBUS_BUS").env_remove("SECBUS_LOG");
    cmd
}

/// Runs `cmd` to its end (killed after [`TIMEOUT`], which fails the test),
/// reading its output meanwhile so a full pipe never blocks it.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = from.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not end within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A high-entropy 40-character AWS-style secret access key, made at run time.
fn aws_secret_access_key() -> String {
    let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        .chars()
        .collect();
    let mut state: u64 = 0x5ec0_b05e_cafe_f00d;
    (0..40)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            alphabet[((state >> 33) as usize) % alphabet.len()]
        })
        .collect()
}

fn line(id: &str, ty: &str, tenant: &str, data: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"test","type":"{ty}","tenantid":"{tenant}","data":{data}}}"#
    )
}

const LOGIN: &str = r#"{"user":"bob@acme.example","src_ip":"203.0.113.9","reason":"bad_password"}"#;

fn every_file_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(every_file_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn schema_list_shows_the_catalog() {
    let out = run(secbus().args(["schema", "list"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("TYPE"), "{stdout}");
    assert!(lines.len() > 47, "{stdout}");
    let login = lines
        .iter()
        .find(|l| l.starts_with("auth.login.failed "))
        .unwrap();
    assert!(login.contains(" v1 "), "{login}");
    assert!(login.contains("A sign-in attempt was refused"), "{login}");
}

#[test]
fn schema_show_prints_the_schema_or_says_the_type_is_unknown() {
    let out = run(secbus().args(["schema", "show", "auth.login.failed"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["$id"],
        "https://secbus.dev/schemas/events/auth.login.failed/v1.json"
    );
    let out = run(secbus().args(["schema", "show", "no.such.type"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("error: unknown_event_type: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_validate_prints_each_refusal_with_line_code_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let secret = aws_secret_access_key();
    let lines = [
        line("e1", "auth.login.failed", "acme", LOGIN),
        line("e2", "auth.login.failure", "acme", LOGIN),
        String::new(),
        line(
            "e4",
            "auth.login.failed",
            "acme",
            r#"{"user":"bob","src_ip":"999.0.0.1","reason":"bad_password","extra":1}"#,
        ),
        "{not json".to_owned(),
        line(
            "e6",
            "config.changed",
            "acme",
            &format!(
                r#"{{"actor":{{"user":"x"}},"component":"c","setting":"s","new_value":"aws_secret_access_key={secret}"}}"#
            ),
        ),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = run(secbus().args(["schema", "validate"]).arg(&file));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let expected = [
        "line 2: unknown_event_type at type: ",
        "line 4: schema_violation at /data/extra: additionalProperties",
        "line 4: schema_violation at /data/src_ip: anyOf",
        "line 5: malformed_json: ",
        "line 6: secret_detected at /data/new_value: looks like a credential (aws_secret_access_key)",
    ];
    for e in expected {
        assert!(stdout.contains(e), "missing {e:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("line 1:"), "{stdout}");
    assert!(!stdout.contains(&secret) && !text(&out.stderr).contains(&secret));
    assert!(
        text(&out.stderr).contains("5 events checked, 4 refused"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&file, line("ok", "auth.login.failed", "acme", LOGIN)).unwrap();
    let out = run(secbus().args(["schema", "validate"]).arg(&file));
    assert!(out.status.success(), "{}", text(&out.stdout));
}

/// Publishes `lines` to an embedded store in `dir`; returns the output.
fn publish(dir: &Path, lines: &[String], extra: &[&str]) -> Output {
    let file = dir.join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let bus = format!("embedded:{}", dir.join("store").display());
    run(secbus()
        .args(["publish", "--bus", &bus, "--file"])
        .arg(&file)
        .args(extra)
        .env("SECBUS_LOG", "trace"))
}

fn stored(dir: &Path, tenant: &str) -> usize {
    let bus = format!("embedded:{}", dir.join("store").display());
    let mut tail = secbus()
        .args(["tail", "--bus", &bus, "--tenant", tenant, "--from-start"])
        .args(["--format", "jsonl"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A tail waits for more: give it a second to print what is stored.
    std::thread::sleep(Duration::from_secs(1));
    let _ = tail.kill();
    let out = tail.wait_with_output().unwrap();
    text(&out.stdout).lines().count()
}

#[test]
fn publish_refuses_each_kind_of_bad_event_with_its_code_and_stores_nothing() {
    let cases: [(&str, String, &[&str], &str); 4] = [
        (
            "unknown type",
            line("x1", "made.up.type", "acme", LOGIN),
            &[],
            "line 2: unknown_event_type at `type`",
        ),
        (
            "schema violation",
            line("x2", "auth.login.failed", "acme", r#"{"user":"bob"}"#),
            &[],
            "line 2: schema_violation at `/data/src_ip`",
        ),
        (
            "another tenant",
            line("x3", "auth.login.failed", "globex", LOGIN),
            &["--tenant", "acme"],
            "line 2: tenant_mismatch at `tenantid`",
        ),
        (
            "a credential",
            line(
                "x4",
                "auth.login.failed",
                "acme",
                &LOGIN.replace(
                    "}",
                    r#","user_agent":"curl ghp_0123456789abcdefghijABCDEFGHIJ012345"}"#,
                ),
            ),
            &[],
            "line 2: secret_detected at `/data/user_agent`",
        ),
    ];
    for (name, bad, extra, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let good = line("ok-1", "auth.login.failed", "acme", LOGIN);
        let out = publish(dir.path(), &[good, bad], extra);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains("nothing was published"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(
            stored(dir.path(), "acme"),
            0,
            "{name}: something was stored"
        );
    }
}

#[test]
fn an_aws_secret_key_is_refused_and_found_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let secret = aws_secret_access_key();
    let spool = dir.path().join("spool");
    // A first file stores events, so the store's files exist when the second is refused.
    let earlier = [line("ok-1", "auth.login.failed", "acme", LOGIN)];
    let out = publish(dir.path(), &earlier, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let leaking = line(
        "leak-1",
        "config.changed",
        "acme",
        &format!(
            r#"{{"actor":{{"user":"deploy-bot"}},"component":"billing","setting":"aws.credentials","new_value":"aws_secret_access_key = {secret}"}}"#
        ),
    );
    let mut outputs = Vec::new();
    for extra in [&[][..], &["--fallback-spool", spool.to_str().unwrap()][..]] {
        let out = publish(dir.path(), std::slice::from_ref(&leaking), extra);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("line 1: secret_detected at `/data/new_value`"),
            "{err}"
        );
        assert!(err.contains("aws_secret_access_key"), "{err}");
        outputs.push(out);
    }
    let out = run(secbus()
        .args(["schema", "validate"])
        .arg(dir.path().join("events.jsonl"))
        .env("SECBUS_LOG", "trace"));
    assert_eq!(out.status.code(), Some(2));
    outputs.push(out);

    for out in &outputs {
        assert!(!contains(&out.stdout, &secret), "the secret is in stdout");
        assert!(!contains(&out.stderr, &secret), "the secret is in stderr");
    }
    let files = every_file_under(&dir.path().join("store"));
    assert!(!files.is_empty());
    for path in files.iter().chain(&every_file_under(&spool)) {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !contains(&bytes, &secret),
            "the secret is in {}",
            path.display()
        );
    }
    assert_eq!(stored(dir.path(), "acme"), 1);
}

#[test]
fn asyncapi_writes_the_committed_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asyncapi.yaml");
    let out = run(secbus().args(["asyncapi", "--output"]).arg(&path));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&path).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("specs/asyncapi.yaml")).unwrap();
    assert!(written == committed, "specs/asyncapi.yaml is stale");
    let out = run(secbus().arg("asyncapi"));
    assert_eq!(text(&out.stdout), written);
}

#[test]
fn check_compat_passes_the_catalog_and_flags_a_breaking_change() {
    let catalog = repo_root().join("specs/events");
    let out = run(secbus()
        .args(["schema", "check-compat"])
        .arg(&catalog)
        .arg(&catalog));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 breaking without a new version"),
        "{}",
        text(&out.stdout)
    );

    let changed = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&catalog).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&path, changed.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let login = changed.path().join("auth.login.failed.json");
    let mut schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&login).unwrap()).unwrap();
    schema["required"]
        .as_array_mut()
        .unwrap()
        .push("method".into());
    std::fs::write(&login, serde_json::to_vec(&schema).unwrap()).unwrap();
    let out = run(secbus()
        .args(["schema", "check-compat"])
        .arg(&catalog)
        .arg(changed.path()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("auth.login.failed new_required_property at /method"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("error: breaking_change: "));

    let out = run(secbus()
        .args(["schema", "check-compat", "/no/such/dir"])
        .arg(&catalog));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: io_error: "),
        "{}",
        text(&out.stderr)
    );
}
