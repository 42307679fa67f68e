//! The gateway's settings: a TOML file, then `SECBUS_...` environment
//! overrides, validated once at start.
//!
//! Environment scheme: `SECBUS_<KEY>` for a top-level key, `__` between the
//! levels of a nested one (`SECBUS_LIMITS__BATCH_MAX_EVENTS=500`). Values are
//! read as TOML values (numbers, booleans, `["a","b"]`), else as strings. Only
//! variables whose first level is a key of this file are read, so unrelated
//! `SECBUS_` variables (SECBUS_LOG) are left alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::api_key::{KeyEntry, parse_hash};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GatewayConfig {
    /// The engine URL (default `embedded:./secbus-data`).
    pub(crate) bus: String,
    /// The address to listen on (default `127.0.0.1:7400`).
    pub(crate) listen: String,
    /// Request and batch size limits.
    pub(crate) limits: LimitsConfig,
    /// The per-tenant publish rate limit.
    pub(crate) rate_limit: RateLimitConfig,
    /// `GET /v1/stream` settings.
    pub(crate) stream: StreamConfig,
    /// Extra schema folders for the contracts gate.
    pub(crate) contracts: ContractsSection,
    /// What `GET /metrics` reports beyond the gateway's own counters.
    pub(crate) metrics: MetricsConfig,
    /// API keys, each bound to one tenant (default: none, so every API call is refused).
    pub(crate) keys: Vec<KeyEntry>,
    /// The tamper-evident audit trail (default: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) audit: Option<secbus_handlers::audit::AuditConfig>,
    /// Alerting rules and their outputs (default: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) alerting: Option<secbus_handlers::alerting::AlertingConfig>,
    /// Sigma detection; findings are published back on the bus (default: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detection: Option<secbus_detect::DetectionConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            bus: "embedded:./secbus-data".to_owned(),
            listen: "127.0.0.1:7400".to_owned(),
            limits: LimitsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            stream: StreamConfig::default(),
            contracts: ContractsSection::default(),
            metrics: MetricsConfig::default(),
            keys: Vec::new(),
            audit: None,
            alerting: None,
            detection: None,
        }
    }
}

/// Size limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    /// Largest body of `POST /v1/events`, bytes (default 1 MiB).
    pub(crate) max_body_bytes: usize,
    /// Largest body of `POST /v1/events/batch`, bytes (default 4 MiB).
    pub(crate) batch_max_bytes: usize,
    /// Most events in one batch (default 1,000).
    pub(crate) batch_max_events: usize,
    /// Largest `limit` of `GET /v1/events` (default 1,000).
    pub(crate) history_max_limit: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1 << 20,
            batch_max_bytes: 4 << 20,
            batch_max_events: 1000,
            history_max_limit: 1000,
        }
    }
}

/// Token bucket per tenant, counted in events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RateLimitConfig {
    /// Sustained events per second per tenant (default 1,000; 0 turns the limit off).
    pub(crate) events_per_second: f64,
    /// Events a tenant may publish at once above the rate (default 2,000;
    /// at least `batch_max_events`, or a full batch could never pass).
    pub(crate) burst: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            events_per_second: 1000.0,
            burst: 2000.0,
        }
    }
}

/// Server-Sent Events settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StreamConfig {
    /// Seconds between heartbeat comments (default 15).
    pub(crate) heartbeat_secs: u64,
    /// Events buffered per client before a client too slow to read is closed
    /// with `event: lagged` (default 1,024).
    pub(crate) buffer_events: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            heartbeat_secs: 15,
            buffer_events: 1024,
        }
    }
}

/// The contracts gate every published event passes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ContractsSection {
    /// Folders of `<type>.json` schemas added to the built-in catalog (default none).
    pub(crate) schema_dirs: Vec<PathBuf>,
}

/// `GET /metrics` settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// Consumer groups whose lag is reported, for every tenant with a key
    /// (default none). Engines cannot list their groups, so they are named here.
    pub(crate) consumer_groups: Vec<String>,
    /// Counting every event by tenant and type, handler latency, group lag
    /// and dead-letter depth, from a consumer group of its own (default: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) handlers: Option<secbus_handlers::metrics::MetricsConfig>,
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl GatewayConfig {
    /// Reads `path` (or the defaults when `None`), applies the environment
    /// `env` (name, value pairs), and validates the result.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<GatewayConfig, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?,
            None => String::new(),
        };
        let origin = path.map_or("the configuration".to_owned(), |p| p.display().to_string());
        GatewayConfig::parse(&text, &origin, env)
    }

    /// Parses TOML text, applies `env`, validates.
    pub(crate) fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<GatewayConfig, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        let known = [
            "bus",
            "listen",
            "limits",
            "rate_limit",
            "stream",
            "contracts",
            "metrics",
        ];
        let mut overridden = false;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("SECBUS_") else {
                continue;
            };
            let path: Vec<String> = rest
                .to_ascii_lowercase()
                .split("__")
                .map(str::to_owned)
                .collect();
            if !known.contains(&path[0].as_str()) {
                continue;
            }
            set_path(&mut table, &path, parse_env_value(&value))
                .map_err(|e| ConfigError(format!("{name}: {e}")))?;
            overridden = true;
        }
        let origin = if overridden {
            format!("{origin} (with SECBUS_ environment overrides)")
        } else {
            origin.to_owned()
        };
        // Read back from text so a refusal has a span, and so the key it names.
        let merged = toml::to_string(&table).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        let config: GatewayConfig = toml::from_str(&merged).map_err(|e: toml::de::Error| {
            let key = e
                .span()
                .map(|span| key_at(&merged, span.start))
                .filter(|k| !k.is_empty());
            match key {
                Some(key) => ConfigError(format!("{key}: {} (in {origin})", e.message())),
                None => ConfigError(format!("{origin}: {}", e.message())),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value, naming the key of the first bad one.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.bus.trim().is_empty() {
            return bad(
                "bus",
                "must name an engine (memory:, embedded:<dir>, nats://, redis://)",
            );
        }
        if self.listen_addr().is_err() {
            return bad("listen", "must be an address and port, e.g. 127.0.0.1:7400");
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.batch_max_bytes", l.batch_max_bytes),
            ("limits.batch_max_events", l.batch_max_events),
            ("limits.history_max_limit", l.history_max_limit),
            ("stream.buffer_events", self.stream.buffer_events),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if self.stream.heartbeat_secs == 0 {
            return bad("stream.heartbeat_secs", "must be at least 1");
        }
        let r = &self.rate_limit;
        if !(r.events_per_second >= 0.0 && r.events_per_second.is_finite()) {
            return bad("rate_limit.events_per_second", "must be 0 (off) or more");
        }
        if r.events_per_second > 0.0 && r.burst < l.batch_max_events as f64 {
            return bad(
                "rate_limit.burst",
                "must be at least limits.batch_max_events, or a full batch never passes",
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            let at = |field: &str| format!("keys[{i}].{field}");
            if key.name.trim().is_empty() {
                return bad(&at("name"), "must not be empty");
            }
            if !names.insert(key.name.as_str()) {
                return bad(&at("name"), "is used by another key");
            }
            if let Err(e) = secbus::TenantId::new(key.tenant.as_str()) {
                return bad(&at("tenant"), e.message());
            }
            if key.roles.is_empty() {
                return bad(
                    &at("roles"),
                    "must name at least one of publish, read, admin",
                );
            }
            if let Err(why) = parse_hash(&key.hash) {
                return bad(&at("hash"), &why);
            }
        }
        for (i, group) in self.metrics.consumer_groups.iter().enumerate() {
            if group.trim().is_empty() {
                return bad(
                    &format!("metrics.consumer_groups[{i}]"),
                    "must not be empty",
                );
            }
        }
        let handlers = |key: &str, r: secbus_handlers::Result<()>| {
            r.map_err(|e| ConfigError(format!("{key}: {e}")))
        };
        if let Some(audit) = &self.audit {
            handlers("audit", audit.validate())?;
        }
        if let Some(alerting) = &self.alerting {
            handlers("alerting", alerting.validate())?;
        }
        if let Some(d) = &self.detection {
            if d.tenants.is_empty() {
                return bad("detection.tenants", "must name at least one tenant");
            }
            if d.rules.is_empty() {
                return bad("detection.rules", "must name at least one rules folder");
            }
        }
        Ok(())
    }

    /// `listen` as a socket address.
    pub(crate) fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }
}

/// The dotted key (`limits.batch_max_events`, `keys[1].roles`) of the line
/// holding byte `at` of `text`, a document as `toml::to_string` writes it.
fn key_at(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let header = |line: &str| {
        let t = line.trim();
        let name = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]"));
        let name = name.or_else(|| t.strip_prefix('[').and_then(|r| r.strip_suffix(']')));
        name.map(|n| (n.trim().to_owned(), t.starts_with("[[")))
    };
    let table = |upto: &str| -> Option<String> {
        let (name, array) = upto.lines().rev().find_map(header)?;
        if !array {
            return Some(name);
        }
        let marker = format!("[[{name}]]");
        let index = upto.lines().filter(|l| l.trim() == marker).count();
        Some(format!("{name}[{}]", index.saturating_sub(1)))
    };
    if header(line).is_some() {
        return table(&text[..line_start + line.len()]).unwrap_or_default();
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    match table(&text[..line_start]) {
        Some(t) if !key.is_empty() => format!("{t}.{key}"),
        Some(t) => t,
        None => key.to_owned(),
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut at = table;
    for part in parents {
        let entry = at
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("{part} is not a table"))?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        GatewayConfig::parse(text, "test.toml", env)
    }

    const EXAMPLE: &str = include_str!("../../../../secbus.example.toml");

    /// Every key path of a table: `limits.batch_max_events`, `keys[0].hash`.
    fn key_paths(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => key_paths(&path, t, out),
                toml::Value::Array(items)
                    if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
                {
                    for (i, item) in items.iter().enumerate() {
                        key_paths(&format!("{path}[{i}]"), item.as_table().unwrap(), out);
                    }
                }
                _ => out.push((path, value.clone())),
            }
        }
    }

    #[test]
    fn the_workers_documented_in_the_example_parse_and_validate_when_turned_on() {
        let marker = "# ==== Workers";
        let (head, workers) = EXAMPLE.split_at(EXAMPLE.find(marker).unwrap());
        let uncommented: String = workers
            .lines()
            .filter(|l| !l.starts_with("##"))
            .filter_map(|l| l.strip_prefix("# "))
            // A commented setting: a table header or `key = value`.
            .filter(|l| {
                l.starts_with('[')
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            })
            .collect::<Vec<_>>()
            .join("\n");
        // [metrics.handlers] is a sub-table of the head's [metrics].
        // The webhook's key is read from the environment at start: point it
        // at a variable every test process has.
        let text = format!("{head}\n{uncommented}").replace("SECBUS_SOC_WEBHOOK_SECRET", "PATH");
        let config = parse(&text, &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.audit.unwrap().tenants, ["acme"]);
        assert_eq!(config.alerting.unwrap().rules.len(), 1);
        assert_eq!(config.detection.unwrap().group, "detection");
        assert_eq!(config.metrics.handlers.unwrap().refresh_ms, 5000);
    }

    #[test]
    fn the_example_file_parses_and_documents_every_key_at_its_default() {
        let config = parse(EXAMPLE, &[]).unwrap();
        assert_eq!(config.keys.len(), 1);
        assert_eq!(config.keys[0].tenant, "acme");
        let example: toml::Table = EXAMPLE.parse().unwrap();
        let mut in_example = Vec::new();
        key_paths("", &example, &mut in_example);
        let defaults = GatewayConfig {
            keys: config.keys.clone(),
            ..GatewayConfig::default()
        };
        let defaults = toml::Table::try_from(&defaults).unwrap();
        let mut expected = Vec::new();
        key_paths("", &defaults, &mut expected);
        for (path, value) in &expected {
            let found = in_example.iter().find(|(p, _)| p == path);
            let Some((_, example_value)) = found else {
                panic!("secbus.example.toml lacks {path}");
            };
            assert_eq!(
                example_value, value,
                "{path} in the example is not its default"
            );
            // Each key has a comment right above it, saying what it does.
            let leaf = path.rsplit('.').next().unwrap();
            let lines: Vec<&str> = EXAMPLE.lines().collect();
            let at = lines
                .iter()
                .position(|l| l.starts_with(&format!("{leaf} = ")))
                .unwrap_or_else(|| panic!("no line for {path}"));
            assert!(
                at > 0 && lines[at - 1].starts_with('#'),
                "{path} has no comment above it"
            );
        }
        assert_eq!(
            in_example.len(),
            expected.len(),
            "no key in the example beyond the config's"
        );
    }

    #[test]
    fn environment_overrides_top_level_and_nested_keys() {
        let config = parse(
            "listen = \"127.0.0.1:1\"\n[limits]\nbatch_max_events = 10",
            &[
                ("SECBUS_BUS", "memory:"),
                ("SECBUS_LISTEN", "0.0.0.0:9000"),
                ("SECBUS_LIMITS__BATCH_MAX_EVENTS", "500"),
                ("SECBUS_RATE_LIMIT__EVENTS_PER_SECOND", "0"),
                ("SECBUS_STREAM__HEARTBEAT_SECS", "3"),
                ("SECBUS_METRICS__CONSUMER_GROUPS", r#"["detect", "audit"]"#),
                ("SECBUS_LOG", "debug"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(config.bus, "memory:");
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(
            config.limits.batch_max_events, 500,
            "the environment wins over the file"
        );
        assert_eq!(
            config.limits.max_body_bytes,
            1 << 20,
            "untouched keys keep their default"
        );
        assert_eq!(config.rate_limit.events_per_second, 0.0);
        assert_eq!(config.stream.heartbeat_secs, 3);
        assert_eq!(config.metrics.consumer_groups, ["detect", "audit"]);
    }

    /// A file, an environment, and how the refusal starts.
    type Refusal<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn unknown_and_bad_keys_are_refused_by_name() {
        let refused = |text: &str, env: &[(&str, &str)]| parse(text, env).unwrap_err().0;
        let cases: &[Refusal] = &[
            (
                "[limits]\nbatch_max_event = 3",
                &[],
                "limits.batch_max_event: unknown field",
            ),
            ("colour = \"red\"", &[], "colour: unknown field"),
            (
                "",
                &[("SECBUS_STREAM__BUFFER", "3")],
                "stream.buffer: unknown field",
            ),
            (
                "",
                &[("SECBUS_LIMITS__BATCH_MAX_EVENTS", "many")],
                "limits.batch_max_events: invalid type",
            ),
            (
                "[rate_limit]\nburst = \"lots\"",
                &[],
                "rate_limit.burst: invalid type",
            ),
            ("listen = \"nowhere\"", &[], "listen:"),
            ("bus = \" \"", &[], "bus:"),
            (
                "",
                &[("SECBUS_LIMITS__MAX_BODY_BYTES", "0")],
                "limits.max_body_bytes:",
            ),
            (
                "[stream]\nheartbeat_secs = 0",
                &[],
                "stream.heartbeat_secs:",
            ),
            ("[stream]\nbuffer_events = 0", &[], "stream.buffer_events:"),
            (
                "[rate_limit]\nevents_per_second = -1.0",
                &[],
                "rate_limit.events_per_second:",
            ),
            ("[rate_limit]\nburst = 10.0", &[], "rate_limit.burst:"),
            (
                "[metrics]\nconsumer_groups = [\"\"]",
                &[],
                "metrics.consumer_groups[0]:",
            ),
        ];
        for (text, env, expected) in cases {
            let e = refused(text, env);
            assert!(e.starts_with(expected), "{text:?} {env:?}: {e}");
        }
        let key = |name: &str, roles: &str, hash: &str| {
            format!(
                "[[keys]]\nname = \"{name}\"\ntenant = \"acme\"\nroles = {roles}\nhash = \"{hash}\"\n"
            )
        };
        let good_hash = super::super::api_key::hash_key("sbk_test");
        let one = key("a", "[\"read\"]", &good_hash);
        let e = refused(&format!("{one}{}", key("b", "[\"read\"]", "md5:x")), &[]);
        assert!(e.starts_with("keys[1].hash:"), "{e}");
        let e = refused(&format!("{one}{}", key("a", "[\"read\"]", &good_hash)), &[]);
        assert!(e.starts_with("keys[1].name:"), "{e}");
        let e = refused(&key("a", "[]", &good_hash), &[]);
        assert!(e.starts_with("keys[0].roles:"), "{e}");
        let e = refused(&key("a", "[\"root\"]", &good_hash), &[]);
        assert!(e.starts_with("keys[0].roles:") && e.contains("root"), "{e}");
        let e = refused(
            "[[keys]]\nname = \"a\"\ntenant = \"acme\"\nroles = [\"read\"]",
            &[],
        );
        assert!(e.starts_with("keys[0]:") && e.contains("hash"), "{e}");
        let e = refused(
            &key("a", "[\"read\"]", &good_hash).replace("acme", "Not A Tenant!"),
            &[],
        );
        assert!(e.starts_with("keys[0].tenant:"), "{e}");
        assert!(parse(&one, &[]).is_ok());
    }
}
