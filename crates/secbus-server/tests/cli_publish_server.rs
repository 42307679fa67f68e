//! `secbus publish --server`: a file of events through a running gateway.

mod gateway_support;

use std::process::{Command, Output};

use secbus::{Bus, HistoryQuery, TenantId};
use gateway_support::{Gateway, KEY};

fn publish(server: &str, key: &str, file: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secbus"))
        .args(["publish", "--server", server, "--api-key", key, "--file"])
        .arg(file)
        .args(extra)
        .env_remove("SECBUS_BUS")
        .env_remove("SECBUS_API_KEY")
        .output()
        .unwrap()
}

fn line(i: usize, tenant: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"evt-{i}","source":"idp/test","type":"auth.login.failed","tenantid":"{tenant}","data":{{"user":"u{i}","src_ip":"203.0.113.9","reason":"bad_password"}}}}"#
    )
}

async fn stored(url: &str) -> Vec<String> {
    let bus = Bus::connect(url).await.unwrap();
    let mut q = HistoryQuery::new(TenantId::new("acme").unwrap());
    q.limit = 10_000;
    let ids = bus
        .history(&q)
        .await
        .unwrap()
        .events
        .iter()
        .map(|(_, e)| e.id.as_str().to_owned())
        .collect();
    bus.close().await.unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_goes_through_the_gateway_in_batches_and_refusals_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().join("store").display());
    let gateway = Gateway::start(dir.path(), &url);
    let server = format!("http://{}", gateway.addr);

    let good = dir.path().join("good.jsonl");
    let lines: Vec<String> = (0..1200).map(|i| line(i, "acme")).collect();
    std::fs::write(&good, lines.join("\n")).unwrap();
    let out = publish(&server, KEY, &good, &["--batch-size", "500"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("published 1200 events (0 duplicates)"));
    // Again: the gateway dedups by id, nothing is stored twice.
    let again = publish(&server, KEY, &good, &[]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("published 0 events (1200 duplicates)")
    );

    // Another tenant's event is refused by the gateway (the key is acme's),
    // named by its place in the file; nothing of that batch is stored.
    let foreign = dir.path().join("foreign.jsonl");
    let mixed: Vec<String> = (2000..2010)
        .map(|i| line(i, if i == 2004 { "globex" } else { "acme" }))
        .collect();
    std::fs::write(&foreign, mixed.join("\n")).unwrap();
    let out = publish(&server, KEY, &foreign, &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("event 5 of the file: tenant_mismatch"),
        "{stderr}"
    );

    let wrong_key = publish(&server, "sbk_wrong", &good, &[]);
    assert_eq!(wrong_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong_key.stderr).contains("unauthorized"));
    drop(gateway);

    let ids = stored(&url).await;
    assert_eq!(ids.len(), 1200);
    assert_eq!(ids[0], "evt-0");
    assert_eq!(ids[1199], "evt-1199");

    // No gateway: exit 1 after the retries, saying what may be stored.
    let down = publish("http://127.0.0.1:9", KEY, &good, &[]);
    assert_eq!(down.status.code(), Some(1));
}
