//! The gate's verdicts, table-driven: unknown types, schema violations of many
//! kinds, every secret detector, and near misses that must pass. Each bad input
//! names the code it must get and where; no refusal may quote a secret.
//!
//! Credentials are assembled at run time from a fixed pseudo-random stream, so
//! this file holds no string shaped like one.

use std::sync::{Arc, OnceLock};

use secbus::{Event, EventType, Gate, TenantId};
use secbus_contracts::{Contract, ContractsGate, Origin, Registry, SecretGuard, SecretMode};
use serde_json::{Value, json};

fn registry() -> Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| Arc::new(Registry::builtin().unwrap()))
        .clone()
}

fn gate() -> &'static ContractsGate {
    static GATE: OnceLock<ContractsGate> = OnceLock::new();
    GATE.get_or_init(|| ContractsGate::new(registry()))
}

/// A deterministic stream of characters from `alphabet`.
fn random(alphabet: &str, n: usize, seed: u64) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            chars[((state >> 33) as usize) % chars.len()]
        })
        .collect()
}

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const UPPER_B32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &str = "0123456789abcdef";

fn aws_key_id(seed: u64) -> String {
    format!("{}{}", ["AK", "IA"].concat(), random(UPPER_B32, 16, seed))
}
fn aws_secret(seed: u64) -> String {
    random(B64, 40, seed)
}
fn jwt(seed: u64) -> String {
    format!(
        "eyJ{}.eyJ{}.{}",
        random(B64URL, 30, seed),
        random(B64URL, 60, seed + 1),
        random(B64URL, 43, seed + 2)
    )
}
fn pem(kind: &str) -> String {
    format!(
        "-----BEGIN {kind}PRIVATE KEY-----\n{}\n-----END {kind}PRIVATE KEY-----",
        random(B64, 64, 7)
    )
}

/// What the gate must answer.
#[derive(Debug, Clone)]
enum Expect {
    Pass,
    /// The code, the first field (a JSON pointer into the event), and a text the
    /// first detail's reason contains (the keyword or the detector).
    Refuse(&'static str, &'static str, &'static str),
}
use Expect::{Pass, Refuse};

struct Case {
    name: String,
    ty: String,
    /// `None`: the event has no `data`.
    data: Option<Value>,
    expect: Expect,
    /// Must appear nowhere in the refusal.
    secret: Option<String>,
}

fn example(ty: &str) -> Value {
    registry().get(ty).unwrap().schema()["examples"][0].clone()
}

fn case(name: &str, ty: &str, edit: impl FnOnce(&mut Value), expect: Expect) -> Case {
    let mut data = example(ty);
    edit(&mut data);
    Case {
        name: name.to_owned(),
        ty: ty.to_owned(),
        data: Some(data),
        expect,
        secret: None,
    }
}

/// `config.changed` with `new_value` set to `value` (a setting holds any JSON).
fn in_setting(name: &str, value: Value, expect: Expect, secret: &str) -> Case {
    let mut c = case(name, "config.changed", |d| d["new_value"] = value, expect);
    c.secret = Some(secret.to_owned());
    c
}

/// `endpoint.process.created` with `command_line` set to `text`.
fn in_command(name: &str, text: String, expect: Expect, secret: &str) -> Case {
    let mut c = case(
        name,
        "endpoint.process.created",
        |d| d["command_line"] = Value::String(text),
        expect,
    );
    c.secret = Some(secret.to_owned());
    c
}

fn secret_in_setting(detector: &'static str, secret: String) -> Case {
    in_setting(
        &format!("{detector} as a setting value"),
        Value::String(secret.clone()),
        Refuse("secret_detected", "/data/new_value", detector),
        &secret,
    )
}

fn bad_inputs() -> Vec<Case> {
    let mut cases = Vec::new();

    // Unknown types.
    for ty in [
        "auth.login.failure",
        "auth.login",
        "made.up.type",
        "auth.login.failed.v2",
        "authz",
        "x",
        "incident.created.extra",
        "iot.sensor",
        "detection",
        "alert.send",
        "type0.seen",
        "auth-login-failed",
    ] {
        cases.push(Case {
            name: format!("unknown type {ty}"),
            ty: ty.to_owned(),
            data: Some(json!({"user": "bob"})),
            expect: Refuse("unknown_event_type", "type", ""),
            secret: None,
        });
    }

    // Schema violations: required, type, format, enum, lengths, limits,
    // patterns, closed objects, nested objects, arrays, const, conditionals.
    let login = "auth.login.failed";
    let v =
        |name: &str,
         ty: &str,
         edit: Box<dyn FnOnce(&mut Value)>,
         at: &'static str,
         kw: &'static str| { case(name, ty, edit, Refuse("schema_violation", at, kw)) };
    let remove = |key: &'static str| -> Box<dyn FnOnce(&mut Value)> {
        Box::new(move |d: &mut Value| {
            d.as_object_mut().unwrap().remove(key);
        })
    };
    let set = |key: &'static str, value: Value| -> Box<dyn FnOnce(&mut Value)> {
        Box::new(move |d: &mut Value| d[key] = value)
    };
    cases.extend([
        v(
            "login without user",
            login,
            remove("user"),
            "/data/user",
            "required",
        ),
        v(
            "login without src_ip",
            login,
            remove("src_ip"),
            "/data/src_ip",
            "required",
        ),
        v(
            "login without reason",
            login,
            remove("reason"),
            "/data/reason",
            "required",
        ),
        v(
            "src_ip out of range",
            login,
            set("src_ip", json!("999.1.1.1")),
            "/data/src_ip",
            "anyOf",
        ),
        v(
            "src_ip a word",
            login,
            set("src_ip", json!("localhost")),
            "/data/src_ip",
            "anyOf",
        ),
        v(
            "src_ip a number",
            login,
            set("src_ip", json!(3232235777u32)),
            "/data/src_ip",
            "type",
        ),
        v(
            "reason not in the enum",
            login,
            set("reason", json!("wrong_password")),
            "/data/reason",
            "enum",
        ),
        v(
            "empty user",
            login,
            set("user", json!("")),
            "/data/user",
            "minLength",
        ),
        v(
            "user too long",
            login,
            set("user", json!("u".repeat(257))),
            "/data/user",
            "maxLength",
        ),
        v(
            "mfa a string",
            login,
            set("mfa", json!("yes")),
            "/data/mfa",
            "type",
        ),
        v(
            "zero consecutive failures",
            login,
            set("consecutive_failures", json!(0)),
            "/data/consecutive_failures",
            "minimum",
        ),
        v(
            "fractional failures",
            login,
            set("consecutive_failures", json!(1.5)),
            "/data/consecutive_failures",
            "type",
        ),
        v(
            "idp in capitals",
            login,
            set("idp", json!("OKTA")),
            "/data/idp",
            "pattern",
        ),
        v(
            "misspelt field",
            login,
            set("usr", json!("bob")),
            "/data/usr",
            "additionalProperties",
        ),
        v(
            "user null",
            login,
            set("user", Value::Null),
            "/data/user",
            "type",
        ),
        v(
            "signature fingerprint not OpenSSH",
            "auth.signature.verified",
            set("key_fingerprint", json!("SHA256:short")),
            "/data/key_fingerprint",
            "pattern",
        ),
        v(
            "negative duration",
            "auth.signature.verified",
            set("duration_us", json!(-1)),
            "/data/duration_us",
            "minimum",
        ),
        v(
            "unknown algorithm",
            "auth.signature.verified",
            set("algorithm", json!("md5")),
            "/data/algorithm",
            "enum",
        ),
        v(
            "key id with spaces",
            "auth.signature.verified",
            set("key_id", json!("key one")),
            "/data/key_id",
            "pattern",
        ),
        v(
            "evidence hash not hex",
            "evidence.collected",
            set("sha256", json!("xyz")),
            "/data/sha256",
            "pattern",
        ),
        v(
            "evidence uri not a uri",
            "evidence.collected",
            set("storage_uri", json!("not a uri")),
            "/data/storage_uri",
            "format",
        ),
        v(
            "evidence size negative",
            "evidence.collected",
            set("size_bytes", json!(-5)),
            "/data/size_bytes",
            "minimum",
        ),
        v(
            "evidence retention not a time",
            "evidence.collected",
            set("retention_until", json!("next year")),
            "/data/retention_until",
            "format",
        ),
        v(
            "incident severity unknown",
            "incident.created",
            set("severity", json!("urgent")),
            "/data/severity",
            "enum",
        ),
        v(
            "incident duplicate alert ids",
            "incident.created",
            set("alert_ids", json!(["a-1", "a-1"])),
            "/data/alert_ids",
            "uniqueItems",
        ),
        v(
            "incident entity without value",
            "incident.created",
            set("entities", json!([{"type": "host"}])),
            "/data/entities/0/value",
            "required",
        ),
        v(
            "incident entity of unknown type",
            "incident.created",
            set("entities", json!([{"type": "planet", "value": "mars"}])),
            "/data/entities/0/type",
            "enum",
        ),
        v(
            "incident entity extra field",
            "incident.created",
            set(
                "entities",
                json!([{"type": "host", "value": "h1", "os": "linux"}]),
            ),
            "/data/entities/0/os",
            "additionalProperties",
        ),
        v(
            "role privileged as a string",
            "iam.role.assigned",
            set("privileged", json!("true")),
            "/data/privileged",
            "type",
        ),
        v(
            "role actor without user",
            "iam.role.assigned",
            set("actor", json!({"user_id": "00u1"})),
            "/data/actor/user",
            "required",
        ),
        v(
            "role actor a string",
            "iam.role.assigned",
            set("actor", json!("bob")),
            "/data/actor",
            "type",
        ),
        v(
            "role expiry not a time",
            "iam.role.assigned",
            set("expires_at", json!("2026-13-45")),
            "/data/expires_at",
            "format",
        ),
        v(
            "config component with spaces",
            "config.changed",
            set("component", json!("payments api")),
            "/data/component",
            "pattern",
        ),
        v(
            "config value hash too short",
            "config.changed",
            set("value_sha256", json!("abc123")),
            "/data/value_sha256",
            "pattern",
        ),
        v(
            "finding of another class",
            "detection.finding",
            set("class_uid", json!(2005)),
            "/data/class_uid",
            "const",
        ),
        v(
            "finding time a string",
            "detection.finding",
            set("time", json!("now")),
            "/data/time",
            "type",
        ),
        v(
            "finding severity id unknown",
            "detection.finding",
            set("severity_id", json!(7)),
            "/data/severity_id",
            "enum",
        ),
        v(
            "sync start not a time",
            "integration.synced",
            set("started_at", json!("yesterday")),
            "/data/started_at",
            "format",
        ),
        v(
            "sync outcome unknown",
            "integration.synced",
            set("outcome", json!("partial")),
            "/data/outcome",
            "enum",
        ),
        v(
            "ioc confidence over 100",
            "intel.ioc.shared",
            set("confidence", json!(101)),
            "/data/confidence",
            "maximum",
        ),
        v(
            "ioc tlp unknown",
            "intel.ioc.shared",
            set("tlp", json!("white")),
            "/data/tlp",
            "enum",
        ),
        v(
            "ioc bad technique id",
            "intel.ioc.shared",
            set("mitre_techniques", json!(["T12"])),
            "/data/mitre_techniques/0",
            "pattern",
        ),
        v(
            "telemetry reading not a number",
            "iot.sensor.telemetry",
            set("readings", json!({"temperature_c": "hot"})),
            "/data/readings/temperature_c",
            "type",
        ),
        v(
            "telemetry reading name in capitals",
            "iot.sensor.telemetry",
            set("readings", json!({"Temp": 1.0})),
            "/data/readings",
            "propertyNames",
        ),
        v(
            "telemetry without readings",
            "iot.sensor.telemetry",
            set("readings", json!({})),
            "/data/readings",
            "minProperties",
        ),
        v(
            "telemetry battery over 100",
            "iot.sensor.telemetry",
            set("battery_pct", json!(120)),
            "/data/battery_pct",
            "maximum",
        ),
        v(
            "proposal without actions",
            "incident.actions.proposed",
            set("actions", json!([])),
            "/data/actions",
            "minItems",
        ),
        v(
            "attack confidence over 1",
            "security.attack.detected",
            set("confidence", json!(1.5)),
            "/data/confidence",
            "maximum",
        ),
        v(
            "attack type unknown",
            "security.attack.detected",
            set("attack_type", json!("sorcery")),
            "/data/attack_type",
            "enum",
        ),
        v(
            "throughput negative",
            "perf.throughput.sampled",
            set("events_per_second", json!(-1.0)),
            "/data/events_per_second",
            "minimum",
        ),
        v(
            "asset mac in capitals",
            "asset.discovered",
            set("mac_addresses", json!(["AA:BB:CC:DD:EE:FF"])),
            "/data/mac_addresses/0",
            "pattern",
        ),
        v(
            "asset hostname with spaces",
            "asset.discovered",
            set("hostname", json!("web 01")),
            "/data/hostname",
            "format",
        ),
        v(
            "process os unknown",
            "endpoint.process.created",
            set("os", json!("plan9")),
            "/data/os",
            "enum",
        ),
        v(
            "process hash not hex",
            "endpoint.process.created",
            set("hashes", json!({"sha256": "zz"})),
            "/data/hashes/sha256",
            "pattern",
        ),
    ]);
    for (name, data, at, kw) in [
        ("data null", Value::Null, "/data", "type"),
        ("data an array", json!([1, 2]), "/data", "type"),
        ("data a string", json!("user=bob"), "/data", "type"),
        ("data a number", json!(42), "/data", "type"),
    ] {
        cases.push(Case {
            name: name.to_owned(),
            ty: login.to_owned(),
            data: Some(data),
            expect: Refuse("schema_violation", at, kw),
            secret: None,
        });
    }
    cases.push(Case {
        name: "no data at all".to_owned(),
        ty: login.to_owned(),
        data: None,
        expect: Refuse("schema_violation", "/data", "type"),
        secret: None,
    });
    cases.push(case(
        "ioc sha256 without its hash",
        "intel.ioc.shared",
        |d| {
            *d = json!({"ioc_id": "ioc-1", "type": "sha256", "tlp": "green", "source": "feed"});
        },
        Refuse("schema_violation", "/data/hash", "required"),
    ));

    // Every secret detector, where producers leak them.
    let gh = |prefix: &str, seed| format!("{prefix}{}", random(ALNUM, 36, seed));
    let secrets: Vec<(&'static str, String)> = vec![
        ("private_key", pem("RSA ")),
        ("private_key", pem("")),
        ("private_key", pem("OPENSSH ")),
        ("private_key", pem("EC ")),
        ("private_key", pem("ENCRYPTED ")),
        (
            "private_key",
            format!("PuTTY-User-Key-File-3: ssh-ed25519\n{}", random(B64, 40, 8)),
        ),
        ("aws_access_key_id", aws_key_id(1)),
        (
            "aws_access_key_id",
            format!("{}{}", ["AS", "IA"].concat(), random(UPPER_B32, 16, 2)),
        ),
        (
            "aws_secret_access_key",
            format!("aws_secret_access_key = {}", aws_secret(3)),
        ),
        (
            "aws_secret_access_key",
            format!("AWS_SECRET_ACCESS_KEY={}", aws_secret(4)),
        ),
        (
            "aws_secret_access_key",
            format!("\"SecretAccessKey\": \"{}\"", aws_secret(5)),
        ),
        (
            "gcp_api_key",
            format!("{}{}", ["AI", "za"].concat(), random(B64URL, 35, 6)),
        ),
        (
            "gcp_oauth_client_secret",
            format!("GOCSPX-{}", random(B64URL, 28, 7)),
        ),
        (
            "google_oauth_access_token",
            format!("ya29.{}", random(B64URL, 80, 8)),
        ),
        (
            "azure_storage_key",
            format!(
                "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={}==;EndpointSuffix=core.windows.net",
                random(B64, 86, 9)
            ),
        ),
        (
            "azure_sas_signature",
            format!(
                "https://acme.blob.core.windows.net/c/f?sv=2022-11-02&sr=b&sig={}%3D",
                random(ALNUM, 43, 10)
            ),
        ),
        (
            "azure_client_secret",
            format!("{}8Q~{}", random(ALNUM, 3, 11), random(ALNUM, 34, 12)),
        ),
        ("github_token", gh("ghp_", 13)),
        ("github_token", gh("gho_", 14)),
        ("github_token", gh("ghs_", 15)),
        (
            "github_token",
            format!("github_pat_{}", random(ALNUM, 82, 16)),
        ),
        ("gitlab_token", format!("glpat-{}", random(B64URL, 20, 17))),
        ("gitlab_token", format!("glrt-{}", random(B64URL, 24, 18))),
        (
            "slack_token",
            format!(
                "xoxb-{}-{}-{}",
                random("0123456789", 12, 19),
                random("0123456789", 13, 20),
                random(ALNUM, 24, 21)
            ),
        ),
        (
            "slack_token",
            format!(
                "xoxp-{}-{}",
                random("0123456789", 12, 22),
                random(ALNUM, 32, 23)
            ),
        ),
        (
            "slack_webhook",
            format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                random(UPPER, 8, 24),
                random(UPPER, 10, 25),
                random(ALNUM, 24, 26)
            ),
        ),
        (
            "stripe_key",
            format!("{}{}", ["sk_", "live_"].concat(), random(ALNUM, 24, 27)),
        ),
        (
            "stripe_key",
            format!("{}{}", ["rk_", "test_"].concat(), random(ALNUM, 24, 28)),
        ),
        ("stripe_key", format!("whsec_{}", random(ALNUM, 32, 29))),
        ("npm_token", format!("npm_{}", random(ALNUM, 36, 30))),
        (
            "pypi_token",
            format!("pypi-AgEIcHlwaS5vcmc{}", random(B64URL, 60, 31)),
        ),
        (
            "sendgrid_key",
            format!("SG.{}.{}", random(B64URL, 22, 32), random(B64URL, 43, 33)),
        ),
        ("openai_key", format!("sk-proj-{}", random(B64URL, 48, 34))),
        ("jwt", jwt(35)),
        ("jwt", format!("session cookie {} expired", jwt(36))),
        (
            "url_password",
            format!(
                "postgres://app:{}@db.acme.example:5432/app",
                random(ALNUM, 16, 37)
            ),
        ),
        (
            "url_password",
            format!(
                "https://deploy:{}@git.acme.example/repo.git",
                random(ALNUM, 12, 38)
            ),
        ),
        (
            "bearer_credential",
            format!("Authorization: Bearer {}", random(B64URL, 40, 39)),
        ),
        (
            "bearer_credential",
            format!("Basic {}", random(B64, 32, 40)),
        ),
        (
            "credential_assignment",
            format!("db.password={}", random(ALNUM, 14, 41)),
        ),
        (
            "credential_assignment",
            format!("api_key: \"{}\"", random(ALNUM, 20, 42)),
        ),
        (
            "credential_assignment",
            format!("client_secret => {}", random(ALNUM, 20, 43)),
        ),
    ];
    for (detector, secret) in secrets {
        cases.push(secret_in_setting(detector, secret));
    }
    let pw = random(ALNUM, 14, 44);
    cases.push(in_command(
        "password flag on a command line",
        format!("mysql -u root --password {pw} -h db1"),
        Refuse(
            "secret_detected",
            "/data/command_line",
            "credential_assignment",
        ),
        &pw,
    ));
    let key = aws_key_id(45);
    cases.push(in_command(
        "aws key id in a command line",
        format!("aws configure set aws_access_key_id {key}"),
        Refuse("secret_detected", "/data/command_line", "aws_access_key_id"),
        &key,
    ));
    let token = gh("ghp_", 46);
    cases.push(in_command(
        "github token in a git url",
        format!("git clone https://{token}@github.example/acme/app.git"),
        Refuse("secret_detected", "/data/command_line", "github_token"),
        &token,
    ));
    // Fields named like credentials, at any depth, in keys and in arrays.
    let value = random(ALNUM, 12, 47);
    for (name, data, at) in [
        (
            "password field",
            json!({"password": value}),
            "/data/new_value/password",
        ),
        (
            "nested api_key field",
            json!({"service": {"api_key": value}}),
            "/data/new_value/service/api_key",
        ),
        (
            "camelCase secret field",
            json!({"clientSecret": value}),
            "/data/new_value/clientSecret",
        ),
        (
            "tokens array",
            json!({"tokens": ["abc", value]}),
            "/data/new_value/tokens/1",
        ),
        (
            "numeric password",
            json!({"db_password": 73519264}),
            "/data/new_value/db_password",
        ),
        (
            "private key field",
            json!({"signing_key": value}),
            "/data/new_value/signing_key",
        ),
    ] {
        cases.push(in_setting(
            name,
            data,
            Refuse("secret_detected", at, "credential_field"),
            &value,
        ));
    }
    let aws = aws_secret(48);
    cases.push(in_setting(
        "aws secret alone in a field so named",
        json!({"aws_secret_access_key": aws}),
        Refuse(
            "secret_detected",
            "/data/new_value/aws_secret_access_key",
            "aws_secret_access_key",
        ),
        &aws,
    ));
    let key = aws_key_id(49);
    cases.push(in_setting(
        "aws key id as an object key",
        json!({ key.clone(): {"region": "eu-west-1"} }),
        Refuse("secret_detected", "/data/new_value", "a key of this object"),
        &key,
    ));
    // A credential outside a free-text field is a secret before it is a schema error.
    let token = gh("ghp_", 50);
    cases.push(case(
        "token in a field the schema does not have",
        login,
        |d| d["github"] = Value::String(token.clone()),
        Refuse("secret_detected", "/data/github", "github_token"),
    ));
    let jwt_value = jwt(51);
    cases.push(case(
        "jwt as the user agent",
        login,
        |d| d["user_agent"] = Value::String(jwt_value.clone()),
        Refuse("secret_detected", "/data/user_agent", "jwt"),
    ));
    cases
}

fn near_misses() -> Vec<Case> {
    let pass = |name: &str, value: Value| in_setting(name, value, Pass, "");
    vec![
        case("the example as is", "auth.login.failed", |_| {}, Pass),
        case(
            "hash fields of a process",
            "endpoint.process.created",
            |d| {
                d["hashes"] = json!({
                    "sha256": random(HEX, 64, 60),
                    "sha1": random(HEX, 40, 61),
                    "md5": random(HEX, 32, 62),
                    "imphash": random(HEX, 32, 63),
                })
            },
            Pass,
        ),
        case(
            "an OpenSSH key fingerprint",
            "auth.signature.verified",
            |d| d["key_fingerprint"] = Value::String(format!("SHA256:{}", random(B64, 43, 64))),
            Pass,
        ),
        case(
            "the hash of a setting",
            "config.changed",
            |d| d["value_sha256"] = Value::String(random(HEX, 64, 65)),
            Pass,
        ),
        pass("a UUID", json!("0192f0c1-7b4e-7d3a-9c1e-5a6b7c8d9e0f")),
        pass(
            "a git commit id next to the word secret",
            json!(format!("secret rotation at commit {}", random(HEX, 40, 66))),
        ),
        pass(
            "forty hex characters under a secret name",
            json!({"secret_sha1": random(HEX, 40, 67)}),
        ),
        pass(
            "normal words about passwords",
            json!("password reset requested; token expired; api key rotated"),
        ),
        pass(
            "a policy sentence",
            json!("password: required, minimum length 12"),
        ),
        pass(
            "short strings",
            json!(["pw=abc", "key", "AKIA", "ghp_", "eyJ"]),
        ),
        pass("a masked password", json!({"password": "********"})),
        pass("a redacted token", json!({"token": "[REDACTED:jwt]"})),
        pass("a masked value", json!({"api_key": "[MASKED]"})),
        pass(
            "a reference to a vault",
            json!({"db_password": "${DB_PASSWORD}"}),
        ),
        pass(
            "a template reference",
            json!({"secret": "{{ vault \"db/creds\" }}"}),
        ),
        pass(
            "an environment reference",
            json!({"token": "$GITHUB_TOKEN"}),
        ),
        pass("a short password field", json!({"password": "abc"})),
        pass("an empty secret", json!({"client_secret": ""})),
        pass(
            "a count of tokens",
            json!({"max_tokens": 1024, "token_count": 7}),
        ),
        pass(
            "key ids and key prefixes",
            json!({"key_id": "kid-2026-11-a", "key_prefix": "sk_live_ab", "partition_key": "tenant-a"}),
        ),
        pass(
            "a boolean under a password name",
            json!({"password_reset": true, "password": false}),
        ),
        pass(
            "a url with a user and no password",
            json!("https://alice@git.acme.example/repo.git"),
        ),
        pass(
            "a url with a port",
            json!("https://api.acme.example:8443/v1/keys?limit=10"),
        ),
        pass(
            "a windows path",
            json!("C:\\Users\\bob\\AppData\\Local\\Temp\\setup.exe"),
        ),
        pass("an email address", json!("alice.smith+alerts@acme.example")),
        pass(
            "base64 that names no credential",
            json!(random(B64, 24, 68)),
        ),
        pass(
            "a sentence with bearer",
            json!("the bearer of this badge may enter"),
        ),
        pass(
            "basic before a long word",
            json!("basic configuration-management-system enabled"),
        ),
        pass(
            "numbers and timestamps",
            json!({"at": "2026-03-14T09:26:53Z", "n": 42, "ratio": 0.5}),
        ),
        pass(
            "an AWS ARN",
            json!("arn:aws:iam::123456789012:role/secbus-reader"),
        ),
        pass(
            "an ip and a cidr",
            json!(["203.0.113.9", "198.51.100.0/24", "2001:db8::1"]),
        ),
        pass(
            "a docker image digest",
            json!(format!("ghcr.io/acme/app@sha256:{}", random(HEX, 64, 69))),
        ),
        pass("a low-entropy secret assignment", json!("secret=changeme")),
    ]
}

fn check(case: &Case) -> Result<(), String> {
    let mut builder = Event::builder(
        EventType::new(case.ty.as_str()).unwrap(),
        TenantId::new("acme").unwrap(),
    )
    .source("refusals-test");
    if let Some(data) = &case.data {
        builder = builder.data(data);
    }
    let mut event = builder.build().unwrap();
    let verdict = gate().check(&mut event);
    match (&case.expect, verdict) {
        (Pass, Ok(())) => Ok(()),
        (Pass, Err(e)) => Err(format!("refused: {e} {:?}", e.details())),
        (Refuse(..), Ok(())) => Err("passed".to_owned()),
        (Refuse(code, field, reason), Err(e)) => {
            let shown = format!("{e} {:?} {:?}", e.field(), e.details());
            if let Some(secret) = &case.secret
                && !secret.is_empty()
                && shown.contains(secret.as_str())
            {
                return Err(format!("the refusal shows the secret: {shown}"));
            }
            if e.code() != *code {
                return Err(format!("code {} instead of {code}: {shown}", e.code()));
            }
            if e.field() != Some(*field) {
                return Err(format!("field {:?} instead of {field}: {shown}", e.field()));
            }
            let first = e.details().first().map_or("", |d| d.reason.as_str());
            if !first.contains(reason) {
                return Err(format!("first reason {first:?} lacks {reason:?}: {shown}"));
            }
            if *code == "schema_violation" && !first.starts_with(reason) {
                return Err(format!(
                    "the reason does not start with the keyword: {first}"
                ));
            }
            Ok(())
        }
    }
}

#[test]
fn at_least_a_hundred_bad_inputs_each_get_their_code() {
    let cases = bad_inputs();
    assert!(cases.len() >= 100, "only {} bad inputs", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn near_misses_pass() {
    let failures: Vec<String> = near_misses()
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_detector_of_the_table_is_exercised() {
    let covered: std::collections::BTreeSet<&str> = bad_inputs()
        .iter()
        .filter_map(|c| match c.expect {
            Refuse("secret_detected", _, reason) => Some(reason),
            _ => None,
        })
        .collect();
    for name in SecretGuard::detector_names() {
        assert!(covered.contains(name), "no case for detector {name}");
    }
}

#[test]
fn schema_refusals_list_every_failure_up_to_ten_without_values() {
    let mut data = example("auth.login.failed");
    data["src_ip"] = json!("not-an-address-at-all");
    data["reason"] = json!("a secret reason text");
    data.as_object_mut().unwrap().remove("user");
    for i in 0..12 {
        data[format!("extra_{i:02}")] = json!(i);
    }
    let mut event = Event::builder(
        EventType::new("auth.login.failed").unwrap(),
        TenantId::new("acme").unwrap(),
    )
    .source("t")
    .data(&data)
    .build()
    .unwrap();
    let e = gate().check(&mut event).unwrap_err();
    assert_eq!(e.code(), "schema_violation");
    assert_eq!(e.details().len(), secbus_contracts::MAX_DETAILS);
    let shown = format!("{e} {:?}", e.details());
    assert!(!shown.contains("not-an-address-at-all"), "{shown}");
    assert!(!shown.contains("a secret reason text"), "{shown}");
    assert!(e.message().contains("and more"), "{}", e.message());
    let fields: Vec<&str> = e.details().iter().map(|d| d.field.as_str()).collect();
    assert!(fields.contains(&"/data/user"), "{fields:?}");
    assert!(fields.contains(&"/data/src_ip"), "{fields:?}");
    assert!(event.dataschema.is_none(), "a refused event is not amended");
}

#[test]
fn a_hash_mark_is_what_exempts_a_field() {
    let schema = |marked: bool| {
        let mut token = json!({"type": "string"});
        if marked {
            token["x-secbus-hash"] = json!(true);
        }
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://secbus.dev/schemas/events/test.hashed/v1.json",
            "title": "test", "x-secbus-type": "test.hashed", "x-secbus-summary": "test",
            "type": "object", "properties": {"token": token}, "additionalProperties": false
        })
    };
    let data = json!({"token": random(HEX, 64, 70)});
    for (marked, expect_refusal) in [(true, false), (false, true)] {
        let mut registry = Registry::empty();
        registry.insert(Contract::compile(schema(marked), Origin::Builtin).unwrap());
        let gate = ContractsGate::new(Arc::new(registry));
        let mut event = Event::builder(
            EventType::new("test.hashed").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .source("t")
        .data(&data)
        .build()
        .unwrap();
        let verdict = gate.check(&mut event);
        assert_eq!(
            verdict.is_err(),
            expect_refusal,
            "marked {marked}: {verdict:?}"
        );
    }
}

#[test]
fn redact_mode_stores_the_event_without_the_secret() {
    let gate = ContractsGate::new(registry())
        .with_secret_mode("endpoint.process.created", SecretMode::Redact);
    let pw = random(ALNUM, 16, 71);
    let mut data = example("endpoint.process.created");
    data["command_line"] = json!(format!("mysql --password {pw}"));
    let mut event = Event::builder(
        EventType::new("endpoint.process.created").unwrap(),
        TenantId::new("acme").unwrap(),
    )
    .source("edr")
    .data(&data)
    .build()
    .unwrap();
    gate.check(&mut event).unwrap();
    let stored = String::from_utf8(event.to_json()).unwrap();
    assert!(!stored.contains(&pw), "{stored}");
    assert_eq!(
        event.data().unwrap()["command_line"],
        "[REDACTED:credential_assignment]"
    );
    assert_eq!(gate.refusals().redacted, 1);
    // Other types still refuse.
    let mut other = Event::builder(
        EventType::new("config.changed").unwrap(),
        TenantId::new("acme").unwrap(),
    )
    .source("cfg")
    .data(json!({"actor": {"user": "x"}, "component": "c", "setting": "s", "new_value": format!("--password {pw}")}))
    .build()
    .unwrap();
    assert_eq!(
        gate.check(&mut other).unwrap_err().code(),
        "secret_detected"
    );
    assert_eq!(gate.refusals().secret_detected, 1);
}

#[test]
fn refusals_are_counted_by_code() {
    let gate = ContractsGate::new(registry());
    let mut events = [
        ("no.such.type", json!({})),
        ("auth.login.failed", json!({"user": "bob"})),
        ("auth.login.failed", json!({"user": "bob"})),
        ("config.changed", json!({"actor": {"user": "x"}, "component": "c", "setting": "s", "new_value": aws_key_id(72)})),
    ]
    .map(|(ty, data)| {
        Event::builder(EventType::new(ty).unwrap(), TenantId::new("acme").unwrap())
            .source("t")
            .data(data)
            .build()
            .unwrap()
    });
    for event in &mut events {
        assert!(gate.check(event).is_err());
    }
    let r = gate.refusals();
    assert_eq!(
        r.by_code(),
        [
            ("unknown_event_type", 1),
            ("schema_violation", 2),
            ("secret_detected", 1)
        ]
    );
}
