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
    // role, two processes; one of them cannot be enriched. The bus also holds
    // the 4 findings and the 4 alert.sent events they caused.
    for line in [
        "played 16 events of tenant acme over HTTP",
        "auth.login.failed              12",
        "auth.login.succeeded            1",
        "iam.role.assigned               1",
        "endpoint.process.created        2",
        "total                          24",
        "(8 events)",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // The takeover's chain: failure -> success -> admin role, whose effects
    // are the takeover finding (and its alert) and the PowerShell start (and
    // its finding and alert); each effect one level under its cause.
    let chain: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("(8 events)"))
        .skip(1)
        .take(8)
        .collect();
    let expected = [
        ("auth.login.failed", 0),
        ("auth.login.succeeded", 1),
        ("iam.role.assigned", 2),
        ("detection.finding", 3),
        ("alert.sent", 4),
        ("endpoint.process.created", 3),
        ("detection.finding", 4),
        ("alert.sent", 5),
    ];
    assert_eq!(chain.len(), expected.len(), "{stdout}");
    // Siblings come in log order, and the detection worker's finding may be
    // stored before or after the process start: compare as a set of
    // (type, depth), each effect one level (3 columns) under its cause.
    let mut seen: Vec<(String, usize)> = chain
        .iter()
        .map(|line| {
            let ty = expected
                .iter()
                .map(|(t, _)| *t)
                .find(|t| line.contains(t))
                .unwrap_or_else(|| panic!("an unexpected event: {line}\n{stdout}"));
            let indent = line[..line.find(ty).unwrap()].chars().count();
            assert_eq!((indent - 4) % 3, 0, "{line}");
            (ty.to_owned(), (indent - 4) / 3)
        })
        .collect();
    let mut want: Vec<(String, usize)> = expected
        .iter()
        .map(|(t, d)| ((*t).to_owned(), *d))
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want, "{stdout}");
    for (line, (ty, depth)) in chain.iter().zip(&expected[..3]) {
        assert!(
            line.contains(ty),
            "the chain starts failure, success, role: {line}"
        );
        assert_eq!(
            line[..line.find(ty).unwrap()].chars().count(),
            4 + depth * 3
        );
    }
    let section = |title: &str| -> Vec<&str> {
        stdout
            .lines()
            .skip_while(|l| !l.starts_with(&format!("== {title}")))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect()
    };
    let dead = section("dead letters");
    assert_eq!(dead.len(), 1, "{stdout}");
    assert!(
        dead[0].contains("group enrichment")
            && dead[0].contains("lab-vm-17 is not in the asset inventory")
    );

    // Findings: the spray reaches five distinct users in each of its two
    // rounds; the takeover fires on the admin role; the encoded PowerShell.
    let findings = section("detection findings");
    let titles: Vec<&str> = findings
        .iter()
        .filter(|l| l.starts_with("  ["))
        .copied()
        .collect();
    assert_eq!(titles.len(), 4, "{stdout}");
    assert_eq!(
        titles
            .iter()
            .filter(|l| l.contains("Password spray from one address"))
            .count(),
        2
    );
    assert!(
        titles
            .iter()
            .any(|l| l.starts_with("  [critical] Account takeover then privilege escalation"))
    );
    assert!(
        titles
            .iter()
            .any(|l| l.starts_with("  [high] Encoded PowerShell command line"))
    );
    let takeover = findings
        .iter()
        .position(|l| l.contains("Account takeover"))
        .unwrap();
    assert!(
        findings[takeover + 1].contains("caused by iam.role.assigned"),
        "{stdout}"
    );
    assert!(
        findings[takeover + 2].contains("temporal_ordered over 4 contributing events"),
        "{stdout}"
    );
    // Every high or critical finding reached the webhook, signed.
    let alerts = section("alerts");
    assert!(
        alerts[0].contains("received 4 alerts, 4 with a valid HMAC-SHA256 signature"),
        "{stdout}"
    );
    assert!(
        alerts[1].contains("4 alert.sent, 0 alert.failed"),
        "{stdout}"
    );
    // The trail holds every stored event and breaks where it was changed.
    let audit = section("audit trail");
    assert!(
        audit[0].contains("intact, 24 records"),
        "16 story events, 4 findings, 4 alerts: {stdout}"
    );
    let line: String = audit[1]
        .split("line ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(
        audit[2].contains(&format!(".jsonl:{line} ")) && audit[2].contains("hash mismatch"),
        "{stdout}"
    );
}
