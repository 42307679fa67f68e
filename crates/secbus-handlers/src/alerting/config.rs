//! The alerting settings: outputs, and rules that send matching events to them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::severity::Severity;

/// The alerting handler's settings (`[alerting]` in the server's config).
///
/// ```toml
/// [alerting]
/// tenants = ["acme"]
///
/// [[alerting.outputs]]
/// name = "soc-webhook"
/// kind = "webhook"
/// url = "https://soc.acme.example/hooks/secbus"
/// secret_env = "SECBUS_SOC_WEBHOOK_SECRET"
///
/// [[alerting.rules]]
/// id = "high-findings-to-soc"
/// types = "detection.>"
/// min_severity = "high"
/// outputs = ["soc-webhook"]
/// throttle_key = "/data/actor/user/name"
/// throttle_window_ms = 300000
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// The tenants whose events are matched: one consumer group each.
    pub tenants: Vec<String>,
    /// The consumer group the handler reads (default `alerting`).
    #[serde(default = "default_group")]
    pub group: String,
    /// Events handled at once per tenant (default 16).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Where alerts go.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// Which events alert, and where to.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_group() -> String {
    "alerting".to_owned()
}

fn default_concurrency() -> usize {
    16
}

/// The kind of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// An HTTP POST of the alert as JSON, signed with
    /// `X-Secbus-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    Webhook,
    /// An HTTP POST of `{"text": ...}`, as Slack's incoming webhooks take.
    Slack,
    /// A `warn` line in the server's log.
    Log,
}

impl OutputKind {
    /// The name in `alert.sent` / `alert.failed`: `webhook`, `slack`, `log`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Webhook => "webhook",
            OutputKind::Slack => "slack",
            OutputKind::Log => "log",
        }
    }
}

/// One output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Its name, which rules refer to (`[a-z0-9][a-z0-9_.-]{0,63}`), e.g. `soc-webhook`.
    pub name: String,
    /// `webhook`, `slack` or `log`.
    pub kind: OutputKind,
    /// Where to POST (webhook and slack), e.g. `https://hooks.slack.com/services/...`.
    #[serde(default)]
    pub url: Option<String>,
    /// The HMAC key of a webhook's signature, as text. Prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<String>,
    /// The environment variable holding the HMAC key of a webhook's signature.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// How long one attempt may take (default 5000 ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first one fails (default 3): a timeout, a refused
    /// connection, HTTP 429 or 5xx is tried again; another 4xx is not.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The wait before the first retry; it doubles for each next one (default 500 ms).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_retries() -> u32 {
    3
}

fn default_backoff_ms() -> u64 {
    500
}

impl OutputConfig {
    /// An output of `kind` named `name` with the default timeout and retries.
    pub fn new(name: impl Into<String>, kind: OutputKind, url: Option<String>) -> Self {
        OutputConfig {
            name: name.into(),
            kind,
            url,
            secret: None,
            secret_env: None,
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
        }
    }
}

/// One rule. Every condition given must hold for an event to alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Its id in `alert.sent` / `alert.failed` (`[a-z0-9][a-z0-9_.-]{0,63}`).
    pub id: String,
    /// Event types, as a type pattern (default `>`, every type), e.g. `auth.login.failed`.
    #[serde(default = "default_types")]
    pub types: String,
    /// The least severity that alerts (`informational`, `low`, `medium`,
    /// `high`, `critical`), read from the event's `data.severity` or
    /// `data.severity_id` (OCSF); an event without one does not match.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Only these tenants (default: every tenant of the handler).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Conditions on fields of the event (JSON pointers into its JSON form:
    /// `/data/user`, `/subject`, `/source`).
    #[serde(default)]
    pub when: Vec<FieldCondition>,
    /// The outputs to alert (names from `outputs`).
    pub outputs: Vec<String>,
    /// A JSON pointer whose value tells alerts of this rule apart for
    /// throttling, e.g. `/data/user` (default: one key for the whole rule).
    #[serde(default)]
    pub throttle_key: Option<String>,
    /// After an alert, more alerts of the same rule and key within this many
    /// milliseconds are suppressed and counted; the next alert sent carries
    /// the count (default 0: no throttling).
    #[serde(default)]
    pub throttle_window_ms: u64,
}

fn default_types() -> String {
    ">".to_owned()
}

/// A condition on one field; give exactly one of `equals`, `contains`, `in`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCondition {
    /// A JSON pointer into the event, e.g. `/data/reason`.
    pub field: String,
    /// The field is this value.
    #[serde(default)]
    pub equals: Option<Value>,
    /// The field is a string holding this text, or an array holding this value.
    #[serde(default)]
    pub contains: Option<Value>,
    /// The field is one of these values.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Value>>,
}
