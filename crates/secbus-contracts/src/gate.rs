//! [`ContractsGate`]: the [`secbus::Gate`] that checks every published event
//! against its type's contract and the secret guard.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jsonschema::error::ValidationErrorKind;
use secbus::{Error, ErrorDetail, ErrorKind, Event, Gate, Result};
use serde_json::Value;

use crate::config::ContractsConfig;
use crate::error::LoadError;
use crate::registry::{Contract, Registry};
use crate::secrets::{Finding, SecretGuard, SecretMode};

/// At most this many problems are listed in a refusal's details.
pub const MAX_DETAILS: usize = 10;

/// Where `data` sits in the event: pointers in refusals start here.
const DATA: &str = "/data";

/// Checks each event before it is stored, in this order:
///
/// 1. its `type` has a contract, else `unknown_event_type` (at `type`);
/// 2. no credential in `data` (keys and strings; the schema's hash fields are
///    exempt), else `secret_detected` naming each place and detector, never the
///    value; or, for types in redact mode, each credential is replaced with
///    `[REDACTED:<detector>]`;
/// 3. `data` follows the schema (formats asserted), else `schema_violation`
///    with the JSON pointer and keyword of each failure (the first
///    [`MAX_DETAILS`]); messages never quote a value;
/// 4. `dataschema` is set to the schema's `$id`.
///
/// Refusals are counted by code ([`ContractsGate::refusals`]).
#[derive(Debug)]
pub struct ContractsGate {
    registry: Arc<Registry>,
    guard: SecretGuard,
    modes: HashMap<String, SecretMode>,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    unknown_event_type: AtomicU64,
    schema_violation: AtomicU64,
    secret_detected: AtomicU64,
    redacted: AtomicU64,
}

/// How many events the gate refused, by code, and how many it redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refusals {
    /// `unknown_event_type` refusals.
    pub unknown_event_type: u64,
    /// `schema_violation` refusals.
    pub schema_violation: u64,
    /// `secret_detected` refusals.
    pub secret_detected: u64,
    /// Events stored with credentials redacted (types in redact mode).
    pub redacted: u64,
}

impl Refusals {
    /// The counts as (code, count) pairs, for metrics.
    pub fn by_code(&self) -> [(&'static str, u64); 3] {
        [
            (ErrorKind::UnknownEventType.code(), self.unknown_event_type),
            (ErrorKind::SchemaViolation.code(), self.schema_violation),
            (ErrorKind::SecretDetected.code(), self.secret_detected),
        ]
    }
}

impl ContractsGate {
    /// A gate over `registry`; every type refuses credentials.
    pub fn new(registry: Arc<Registry>) -> ContractsGate {
        ContractsGate {
            registry,
            guard: SecretGuard::new(),
            modes: HashMap::new(),
            counts: Counts::default(),
        }
    }

    /// The built-in catalog plus the configured folders and secret modes.
    pub fn from_config(config: &ContractsConfig) -> Result<ContractsGate, LoadError> {
        let registry = config.registry()?;
        let mut gate = ContractsGate::new(Arc::new(registry));
        for ty in &config.redact {
            if gate.registry.get(ty).is_none() {
                return Err(LoadError::UnknownType { ty: ty.clone() });
            }
            gate = gate.with_secret_mode(ty, SecretMode::Redact);
        }
        Ok(gate)
    }

    /// Chooses what happens to events of `ty` that carry a credential.
    pub fn with_secret_mode(mut self, ty: &str, mode: SecretMode) -> ContractsGate {
        self.modes.insert(ty.to_owned(), mode);
        self
    }

    /// The registry the gate checks against.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// What the gate refused so far.
    pub fn refusals(&self) -> Refusals {
        let c = &self.counts;
        Refusals {
            unknown_event_type: c.unknown_event_type.load(Ordering::Relaxed),
            schema_violation: c.schema_violation.load(Ordering::Relaxed),
            secret_detected: c.secret_detected.load(Ordering::Relaxed),
            redacted: c.redacted.load(Ordering::Relaxed),
        }
    }

    fn judge(&self, event: &mut Event) -> Result<()> {
        let Some(contract) = self.registry.get(event.ty.as_str()) else {
            return Err(Error::new(
                ErrorKind::UnknownEventType,
                format!(
                    "no schema is registered for type {}; `secbus schema list` shows the \
                     known types",
                    event.ty
                ),
            )
            .with_field("type"));
        };
        let mut data = match event.data_raw() {
            None => Value::Null,
            Some(raw) => serde_json::from_str(raw).map_err(|e| {
                Error::new(ErrorKind::SchemaViolation, "data is not JSON")
                    .with_field(DATA)
                    .with_source(e)
            })?,
        };
        let findings = self.guard.scan(&data, contract.hash_marks());
        let redact =
            !findings.is_empty() && self.modes.get(event.ty.as_str()) == Some(&SecretMode::Redact);
        if !findings.is_empty() && !redact {
            self.counts.secret_detected.fetch_add(1, Ordering::Relaxed);
            return Err(secret_error(contract, &findings));
        }
        if redact {
            SecretGuard::redact(&mut data, &findings);
        }
        if !contract.validator().is_valid(&data) {
            self.counts.schema_violation.fetch_add(1, Ordering::Relaxed);
            return Err(schema_error(contract, &data));
        }
        if redact {
            event.set_data(&data)?;
            self.counts.redacted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                event_id = %event.id,
                event_type = %event.ty,
                tenant_id = %event.tenant,
                correlation_id = %event.correlationid,
                redacted = %findings
                    .iter()
                    .map(|f| format!("{DATA}{} ({})", f.pointer, f.detector))
                    .collect::<Vec<_>>()
                    .join(", "),
                "credentials redacted from an event before it was stored"
            );
        }
        if event.dataschema.as_deref() != Some(contract.id()) {
            event.dataschema = Some(contract.id().to_owned());
        }
        Ok(())
    }
}

impl Gate for ContractsGate {
    fn check(&self, event: &mut Event) -> Result<()> {
        let verdict = self.judge(event);
        if let Err(e) = &verdict
            && e.kind() == ErrorKind::UnknownEventType
        {
            self.counts
                .unknown_event_type
                .fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }
}

fn secret_error(contract: &Contract, findings: &[Finding]) -> Error {
    let details: Vec<ErrorDetail> = findings
        .iter()
        .take(MAX_DETAILS)
        .map(|f| ErrorDetail {
            field: format!("{DATA}{}", f.pointer),
            reason: if f.in_key {
                format!(
                    "a key of this object looks like a credential ({})",
                    f.detector
                )
            } else {
                format!("looks like a credential ({})", f.detector)
            },
        })
        .collect();
    let first = &findings[0];
    let more = match findings.len() {
        1 => String::new(),
        n => format!(" and {} more place{}", n - 1, if n == 2 { "" } else { "s" }),
    };
    Error::new(
        ErrorKind::SecretDetected,
        format!(
            "data of {} carries what looks like a credential ({}) at {DATA}{}{more}; the \
             value is not shown and nothing was stored: remove it, or send a hash or a key id",
            contract.event_type(),
            first.detector,
            first.pointer,
        ),
    )
    .with_field(details[0].field.clone())
    .with_details(details)
}

fn schema_error(contract: &Contract, data: &Value) -> Error {
    let mut details = Vec::new();
    let mut more = false;
    for error in contract.validator().iter_errors(data) {
        let at = format!("{DATA}{}", error.instance_path().as_str());
        let keyword = error.kind().keyword().to_owned();
        let new: Vec<ErrorDetail> = match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
                .iter()
                .map(|name| ErrorDetail {
                    field: format!("{at}/{}", escape(name)),
                    reason: format!("{keyword}: not a property of this schema"),
                })
                .collect(),
            ValidationErrorKind::Required { property } => vec![ErrorDetail {
                field: format!("{at}/{}", escape(property.as_str().unwrap_or_default())),
                reason: format!("{keyword}: missing"),
            }],
            _ => vec![ErrorDetail {
                field: at,
                // Masked: the message never quotes the value (it may be sensitive).
                reason: format!("{keyword}: {}", error.masked_with("the value")),
            }],
        };
        for detail in new {
            if details.len() == MAX_DETAILS {
                more = true;
                break;
            }
            details.push(detail);
        }
        if more {
            break;
        }
    }
    if details.is_empty() {
        // is_valid said no, so there is an error; keep the refusal meaningful anyway.
        details.push(ErrorDetail {
            field: DATA.to_owned(),
            reason: "does not follow the schema".to_owned(),
        });
    }
    let summary = details
        .iter()
        .map(|d| format!("{} ({})", d.field, d.reason))
        .collect::<Vec<_>>()
        .join("; ");
    Error::new(
        ErrorKind::SchemaViolation,
        format!(
            "data does not follow the schema of {} ({}): {summary}{}",
            contract.event_type(),
            contract.id(),
            if more { "; and more" } else { "" },
        ),
    )
    .with_field(details[0].field.clone())
    .with_details(details)
}

/// RFC 6901: `~` and `/` in a key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
