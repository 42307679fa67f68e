//! The shipped correlations on hand-built event sequences, with times chosen
//! at the window edges and two tenants interleaved.

use chrono::{DateTime, Duration, Utc};
use secbus::{Event, EventType, TenantId};
use secbus_detect::{Detector, Finding, Mapping, RuleSet, StateLimits};
use serde_json::json;

const BRUTE_FORCE: &str = "6c1f0a52-3b1e-4c55-9a4e-1d0b8e1f7a10";
const SPRAY: &str = "6c1f0a52-3b1e-4c55-9a4e-1d0b8e1f7a11";
const TAKEOVER: &str = "6c1f0a52-3b1e-4c55-9a4e-1d0b8e1f7a12";

fn detector() -> Detector {
    let rules = RuleSet::load(&[std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules"
    ))])
    .unwrap();
    assert!(rules.failures.is_empty(), "{:?}", rules.failures);
    Detector::new(&rules, Mapping::shipped(), StateLimits::default()).unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn event(tenant: &str, ty: &str, at: Duration, data: serde_json::Value) -> Event {
    Event::builder(EventType::new(ty).unwrap(), TenantId::new(tenant).unwrap())
        .source("idp/test")
        .time(t0() + at)
        .data(data)
        .build()
        .unwrap()
}

fn failed(tenant: &str, user: &str, ip: &str, at: Duration) -> Event {
    event(
        tenant,
        "auth.login.failed",
        at,
        json!({"user": user, "src_ip": ip, "reason": "bad_password"}),
    )
}

fn succeeded(tenant: &str, user: &str, at: Duration) -> Event {
    event(
        tenant,
        "auth.login.succeeded",
        at,
        json!({"user": user, "src_ip": "198.51.100.23", "method": "password"}),
    )
}

fn admin(tenant: &str, user: &str, at: Duration) -> Event {
    event(
        tenant,
        "iam.role.assigned",
        at,
        json!({"actor": {"user": user}, "user": user, "role": "Global Administrator", "privileged": true}),
    )
}

/// Feeds `events` in order; for each, the ids of the rules that fired on it.
fn run(d: &mut Detector, events: &[Event]) -> Vec<Vec<Finding>> {
    events.iter().map(|e| d.process(e)).collect()
}

fn fired(results: &[Vec<Finding>], rule: &str) -> Vec<usize> {
    results
        .iter()
        .enumerate()
        .filter(|(_, f)| f.iter().any(|f| f.rule_id == rule))
        .map(|(i, _)| i)
        .collect()
}

fn secs(s: i64) -> Duration {
    Duration::seconds(s)
}

#[test]
fn ten_failures_for_one_user_within_five_minutes_fire_once_on_the_tenth() {
    let mut d = detector();
    // 33 s apart: the tenth is 297 s after the first, inside 5 minutes.
    let events: Vec<Event> = (0..11)
        .map(|i| failed("acme", "bob", "203.0.113.9", secs(33 * i)))
        .collect();
    let results = run(&mut d, &events);
    assert_eq!(
        results.iter().map(Vec::len).sum::<usize>(),
        1,
        "rules that only feed correlations raise nothing alone"
    );
    assert_eq!(
        fired(&results, BRUTE_FORCE),
        vec![9],
        "the tenth fires, the nine before do not, the window restarts"
    );
    let finding = results[9]
        .iter()
        .find(|f| f.rule_id == BRUTE_FORCE)
        .unwrap();
    let c = finding.correlation.as_ref().unwrap();
    assert_eq!(c.kind, "event_count");
    assert_eq!(c.value, 10.0);
    let contributing: Vec<&str> = events[..10].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        c.event_ids, contributing,
        "every contributing event, oldest first"
    );
    assert!(
        c.group_by
            .contains(&("tenantid".to_owned(), "acme".to_owned()))
    );
    assert!(c.group_by.contains(&("user".to_owned(), "bob".to_owned())));
    assert_eq!(finding.level, "high");
}

#[test]
fn the_tenth_failure_one_second_past_the_window_does_not_fire() {
    let mut d = detector();
    // 9 failures in the first 8 s, the tenth 301 s after the first: the first
    // has left the window, so only 9 are in it.
    let mut events: Vec<Event> = (0..9)
        .map(|i| failed("acme", "bob", "203.0.113.9", secs(i)))
        .collect();
    events.push(failed("acme", "bob", "203.0.113.9", secs(301)));
    assert!(fired(&run(&mut d, &events), BRUTE_FORCE).is_empty());
    // One more at 301 s: the failures at 1..8 s, 301 s and this one are ten
    // within the 5 minutes up to it.
    let more = run(&mut d, &[failed("acme", "bob", "203.0.113.9", secs(301))]);
    assert_eq!(fired(&more, BRUTE_FORCE), vec![0]);
}

#[test]
fn failures_of_two_tenants_never_count_together() {
    let mut d = detector();
    // Same user name, same address, 16 failures within a minute: 8 per tenant.
    let events: Vec<Event> = (0..16)
        .map(|i| {
            failed(
                if i % 2 == 0 { "acme" } else { "globex" },
                "bob",
                "203.0.113.9",
                secs(i),
            )
        })
        .collect();
    let results = run(&mut d, &events);
    assert!(fired(&results, BRUTE_FORCE).is_empty());
    // The spray rule counts distinct users per address: 1 per tenant here.
    assert!(fired(&results, SPRAY).is_empty());
    // Two more of acme make ten for acme only.
    let more = run(
        &mut d,
        &[
            failed("acme", "bob", "203.0.113.9", secs(20)),
            failed("acme", "bob", "203.0.113.9", secs(21)),
        ],
    );
    assert_eq!(fired(&more, BRUTE_FORCE), vec![1]);
}

#[test]
fn one_address_failing_against_five_distinct_users_is_a_spray() {
    let mut d = detector();
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let mut events = Vec::new();
    // Each of the first four users twice, then the fifth, all within 9 min 59 s.
    for (i, user) in users[..4].iter().enumerate() {
        events.push(failed("acme", user, "198.51.100.23", secs(10 * i as i64)));
        events.push(failed(
            "acme",
            user,
            "198.51.100.23",
            secs(10 * i as i64 + 5),
        ));
    }
    // Another address in between does not count.
    events.push(failed("acme", "erin", "192.0.2.1", secs(100)));
    events.push(failed("acme", "erin", "198.51.100.23", secs(599)));
    let results = run(&mut d, &events);
    assert_eq!(fired(&results, SPRAY), vec![events.len() - 1]);
    let c = results
        .last()
        .unwrap()
        .iter()
        .find(|f| f.rule_id == SPRAY)
        .unwrap()
        .correlation
        .clone()
        .unwrap();
    assert_eq!((c.kind, c.value), ("value_count", 5.0));
}

#[test]
fn the_fifth_user_past_the_spray_window_or_in_another_tenant_does_not_fire() {
    let mut d = detector();
    let mut events: Vec<Event> = ["alice", "bob", "carol", "dave"]
        .iter()
        .enumerate()
        .map(|(i, u)| failed("acme", u, "198.51.100.23", secs(i as i64)))
        .collect();
    // Globex's fifth user from the same address is not acme's.
    events.push(failed("globex", "erin", "198.51.100.23", secs(10)));
    // Acme's fifth user 10 min 1 s after the first: alice has left the window.
    events.push(failed("acme", "erin", "198.51.100.23", secs(601)));
    assert!(fired(&run(&mut d, &events), SPRAY).is_empty());
}

#[test]
fn failure_success_then_admin_role_in_order_within_ten_minutes_is_a_takeover() {
    let mut d = detector();
    let events = vec![
        failed("acme", "carol", "198.51.100.23", secs(0)),
        failed("acme", "carol", "198.51.100.23", secs(30)),
        succeeded("acme", "carol", secs(60)),
        admin("acme", "carol", secs(599)),
    ];
    let results = run(&mut d, &events);
    assert_eq!(fired(&results, TAKEOVER), vec![3]);
    let f = results[3].iter().find(|f| f.rule_id == TAKEOVER).unwrap();
    assert_eq!(f.level, "critical");
    let ids = &f.correlation.as_ref().unwrap().event_ids;
    for e in [&events[2], &events[3]] {
        assert!(ids.contains(&e.id.as_str().to_owned()), "{ids:?}");
    }
}

#[test]
fn a_takeover_out_of_order_past_the_window_or_across_tenants_does_not_fire() {
    // The role 10 min 1 s after the failure.
    let mut d = detector();
    let late = vec![
        failed("acme", "carol", "198.51.100.23", secs(0)),
        succeeded("acme", "carol", secs(60)),
        admin("acme", "carol", secs(601)),
    ];
    assert!(fired(&run(&mut d, &late), TAKEOVER).is_empty());
    // The role before the success.
    let mut d = detector();
    let out_of_order = vec![
        failed("acme", "carol", "198.51.100.23", secs(0)),
        admin("acme", "carol", secs(30)),
        succeeded("acme", "carol", secs(60)),
    ];
    assert!(fired(&run(&mut d, &out_of_order), TAKEOVER).is_empty());
    // Acme's failure and success, globex's role for a user of the same name.
    let mut d = detector();
    let split = vec![
        failed("acme", "carol", "198.51.100.23", secs(0)),
        succeeded("acme", "carol", secs(60)),
        admin("globex", "carol", secs(90)),
    ];
    assert!(fired(&run(&mut d, &split), TAKEOVER).is_empty());
}

/// A correlation naming its rule by id rather than by name, and a Sigma
/// filter on that rule: the correlation rules and the detection rules live in
/// two engines, and both references and filters must reach the right one.
const BY_ID_AND_FILTERED: &str = r#"
title: Failed login
id: 0b6f8a3e-5c1d-4e8f-9a2b-7c3d4e5f6a01
status: stable
logsource:
  category: authentication
  product: secbus
detection:
  selection:
    type: auth.login.failed
  condition: selection
level: low
---
title: Three failures for one user
id: 0b6f8a3e-5c1d-4e8f-9a2b-7c3d4e5f6a02
status: stable
correlation:
  type: event_count
  rules:
    - 0b6f8a3e-5c1d-4e8f-9a2b-7c3d4e5f6a01
  group-by:
    - user
  timespan: 1m
  condition:
    gte: 3
level: high
---
title: The backup account's failures are expected
id: 0b6f8a3e-5c1d-4e8f-9a2b-7c3d4e5f6a03
logsource:
  category: authentication
  product: secbus
filter:
  rules:
    - 0b6f8a3e-5c1d-4e8f-9a2b-7c3d4e5f6a01
  selection:
    user: svc-backup
  condition: not selection
"#;

#[test]
fn a_correlation_naming_its_rule_by_id_counts_and_a_filter_on_that_rule_holds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("by_id.yml"), BY_ID_AND_FILTERED).unwrap();
    let rules = RuleSet::load(&[dir.path().to_path_buf()]).unwrap();
    assert!(rules.failures.is_empty(), "{:?}", rules.failures);
    let mut d = Detector::new(&rules, Mapping::shipped(), StateLimits::default()).unwrap();
    let events: Vec<Event> = (0..3)
        .map(|i| failed("acme", "svc-backup", "203.0.113.9", secs(10 * i)))
        .chain((0..3).map(|i| failed("acme", "carol", "203.0.113.9", secs(40 + 10 * i))))
        .collect();
    let results = run(&mut d, &events);
    let correlation = "0b6f8a3e-5c1d-4e8f-9a2b-7c3d4e5f6a02";
    assert_eq!(
        fired(&results, correlation),
        vec![5],
        "the filtered account's three failures count for nothing; carol's third fires"
    );
    assert_eq!(
        results.iter().map(Vec::len).sum::<usize>(),
        1,
        "the rule the correlation names by id only feeds it (no generate: true)"
    );
}
