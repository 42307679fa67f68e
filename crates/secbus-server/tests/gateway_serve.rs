//! The `secbus serve` and `secbus keys new` commands as a user runs them:
//! a key made by `keys new` admits its tenant, config mistakes are refused
//! naming the key, and SIGTERM of an idle server exits 0.

use std::process::Command;

use sha2::{Digest, Sha256};

mod gateway_support;
use gateway_support::{Gateway, request};

fn secbus(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_secbus"));
    command
        .args(args)
        .env_remove("SECBUS_BUS")
        .env_remove("SECBUS_LISTEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_key_from_keys_new_admits_its_tenant_and_roles_only() {
    let (code, stdout, stderr) = secbus(
        &[
            "keys",
            "new",
            "--tenant",
            "acme",
            "--roles",
            "publish,read",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let made: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let key = made["key"].as_str().unwrap();
    assert!(key.starts_with("sbk_"), "{key}");
    let entry = made["config"].as_str().unwrap();
    let parsed: toml::Table = entry.parse().unwrap();
    let stored = &parsed["keys"][0];
    assert_eq!(
        stored["hash"].as_str().unwrap(),
        format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
    );
    assert!(
        !entry.contains(key),
        "the config holds the hash, never the key"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secbus.toml");
    std::fs::write(
        &config,
        format!("bus = \"memory:\"\nlisten = \"127.0.0.1:0\"\n{entry}"),
    )
    .unwrap();
    let mut gateway =
        Gateway::spawn(&["serve", "--config", config.to_str().unwrap()], &[]).unwrap();
    let bearer = format!("Bearer {key}");
    let auth = [("authorization", bearer.as_str())];
    let (status, body) = request(&gateway.addr, "GET", "/v1/events", &auth, "").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(&gateway.addr, "GET", "/v1/dlq", &auth, "").unwrap();
    assert_eq!(status, 403, "no admin role: {body}");
    let (status, _) = request(&gateway.addr, "GET", "/healthz", &[], "").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        gateway.terminate(),
        Some(0),
        "SIGTERM of an idle server exits 0"
    );

    let (code, _, stderr) = secbus(&["keys", "new", "--tenant", "acme", "--roles", "root"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("root"), "{stderr}");
}

/// Arguments, environment, and the key the refusal must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn serve_refuses_a_bad_config_naming_the_key_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secbus.toml");
    std::fs::write(
        &config,
        "bus = \"memory:\"\n[limits]\nbatch_max_event = 5\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let cases: [Case; 3] = [
        (
            &["serve", "--config", config],
            &[],
            "limits.batch_max_event",
        ),
        (
            &["serve", "--bus", "memory:", "--listen", "127.0.0.1:0"],
            &[("SECBUS_LIMITS__BATCH_MAX_EVENTS", "many")],
            "limits.batch_max_events",
        ),
        (
            &["serve", "--bus", "memory:", "--listen", "here"],
            &[],
            "listen",
        ),
    ];
    for (args, env, key) in cases {
        let (code, _, stderr) = secbus(args, env);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: invalid_config: {key}:")),
            "{args:?} names {key}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

#[test]
fn request_logs_never_carry_a_key_from_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secbus.toml");
    std::fs::write(&config, "bus = \"memory:\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut gateway = Gateway::spawn(
        &["serve", "--config", config.to_str().unwrap()],
        &[("SECBUS_LOG", "debug")],
    )
    .unwrap();
    let secret = "sbk_this-key-must-not-be-logged";
    for path in [
        format!("/v1/events?api_key={secret}"),
        format!("/v1/stream?api_key={secret}"),
    ] {
        let (status, _) = request(&gateway.addr, "GET", &path, &[], "").unwrap();
        assert_eq!(status, 401, "{path}");
    }
    assert_eq!(gateway.terminate(), Some(0));
    let log = gateway.stderr.lock().unwrap().clone();
    assert!(
        log.contains("/v1/stream"),
        "requests are logged at debug:\n{log}"
    );
    assert!(!log.contains(secret), "a key leaked into the log:\n{log}");
}

#[test]
fn sigterm_ends_open_streams_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secbus.toml");
    let hash = hex::encode(Sha256::digest(gateway_support::KEY.as_bytes()));
    std::fs::write(
        &config,
        format!(
            "bus = \"memory:\"\nlisten = \"127.0.0.1:0\"\n[[keys]]\nname = \"r\"\n\
             tenant = \"acme\"\nroles = [\"read\"]\nhash = \"sha256:{hash}\"\n"
        ),
    )
    .unwrap();
    let mut gateway =
        Gateway::spawn(&["serve", "--config", config.to_str().unwrap()], &[]).unwrap();
    let addr = gateway.addr.clone();
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let bearer = format!("Bearer {}", gateway_support::KEY);
                request(
                    &addr,
                    "GET",
                    "/v1/stream",
                    &[("authorization", &bearer)],
                    "",
                )
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert_eq!(gateway.terminate(), Some(0));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "open streams do not hold the shutdown: {:?}",
        started.elapsed()
    );
    for stream in streams {
        let (status, _) = stream
            .join()
            .unwrap()
            .expect("the stream answered, then ended");
        assert_eq!(status, 200);
    }
}
