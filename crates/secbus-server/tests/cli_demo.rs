//! `secbus demo --once` as the real binary: the story's events, chain and dead
//! letter, read back through the gateway.

use std::process::Command;

#[test]
fn the_demo_plays_its_story_and_prints_what_the_bus_saw() {
    let out = Command::new(env!("CARGO_BIN_EXE_secbus"))
        .args(["demo", "--once"])
        .env_remove("SECBUS_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The story: 12 failed logins (6 users, twice), one success, one new admin
    // role, two processes; one of them cannot be enriched.
    for line in [
        "played 16 events of tenant acme over HTTP",
        "auth.login.failed              12",
        "auth.login.succeeded            1",
        "iam.role.assigned               1",
        "endpoint.process.created        2",
        "total                          16",
        "(4 events)",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // The chain: failure -> success -> admin role -> process, each a child of the last.
    let chain: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("(4 events)"))
        .skip(1)
        .take(4)
        .collect();
    let types = [
        "auth.login.failed",
        "auth.login.succeeded",
        "iam.role.assigned",
        "endpoint.process.created",
    ];
    for (depth, (line, ty)) in chain.iter().zip(types).enumerate() {
        assert!(line.contains(ty), "{line}");
        let indent = line[..line.find(ty).unwrap()].chars().count();
        assert_eq!(
            indent,
            4 + depth * 3,
            "each effect one level under its cause: {line}"
        );
    }
    let dead: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("== dead letters"))
        .skip(1)
        .collect();
    assert_eq!(dead.len(), 1, "{stdout}");
    assert!(
        dead[0].contains("group enrichment")
            && dead[0].contains("lab-vm-17 is not in the asset inventory")
    );
}
