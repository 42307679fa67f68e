//! A rule checked once at load and matched against each event.

use std::sync::Arc;
use std::time::Duration;

use secbus::{Event, TenantId, TypePattern};
use serde_json::Value;

use super::config::{FieldCondition, RuleConfig};
use super::output::Output;
use super::severity::Severity;
use crate::error::{Error, Result};

/// What a rule looks at in an event, worked out once per event.
pub(crate) struct Facts {
    /// The event in its JSON form, for field conditions and throttle keys.
    pub(crate) json: Value,
    pub(crate) severity: Option<Severity>,
}

impl Facts {
    pub(crate) fn of(event: &Event) -> Facts {
        let json = serde_json::from_slice(&event.to_json()).unwrap_or(Value::Null);
        let severity = json.get("data").and_then(Severity::of);
        Facts { json, severity }
    }
}

/// A checked rule.
pub(crate) struct Rule {
    pub(crate) id: String,
    types: TypePattern,
    min_severity: Option<Severity>,
    tenants: Vec<TenantId>,
    when: Vec<Condition>,
    pub(crate) outputs: Vec<Arc<Output>>,
    throttle_key: Option<String>,
    pub(crate) window: Duration,
}

enum Test {
    Equals(Value),
    Contains(Value),
    OneOf(Vec<Value>),
}

struct Condition {
    field: String,
    test: Test,
}

impl Rule {
    pub(crate) fn new(config: &RuleConfig, outputs: &[Arc<Output>]) -> Result<Rule> {
        let at = |what: &str| format!("alerting rule {:?}: {what}", config.id);
        if !super::is_name(&config.id) {
            return Err(Error::config(at(
                "the id must match [a-z0-9][a-z0-9_.-]{0,63}",
            )));
        }
        let types =
            TypePattern::new(config.types.clone()).map_err(|e| Error::config(at(e.message())))?;
        let tenants = config
            .tenants
            .iter()
            .map(|t| TenantId::new(t.clone()).map_err(|e| Error::config(at(e.message()))))
            .collect::<Result<Vec<_>>>()?;
        let when = config
            .when
            .iter()
            .map(|c| Condition::new(c).map_err(|e| Error::config(at(&e))))
            .collect::<Result<Vec<_>>>()?;
        if config.outputs.is_empty() {
            return Err(Error::config(at("names no output")));
        }
        let outputs = config
            .outputs
            .iter()
            .map(|name| {
                outputs
                    .iter()
                    .find(|o| &o.name == name)
                    .cloned()
                    .ok_or_else(|| Error::config(at(&format!("no output is named {name:?}"))))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(p) = &config.throttle_key
            && !is_pointer(p)
        {
            return Err(Error::config(at(&format!(
                "throttle_key {p:?} is not a JSON pointer (e.g. /data/user)"
            ))));
        }
        Ok(Rule {
            id: config.id.clone(),
            types,
            min_severity: config.min_severity,
            tenants,
            when,
            outputs,
            throttle_key: config.throttle_key.clone(),
            window: Duration::from_millis(config.throttle_window_ms),
        })
    }

    /// Whether `event` alerts by this rule.
    pub(crate) fn matches(&self, event: &Event, facts: &Facts) -> bool {
        if !self.types.matches(&event.ty) {
            return false;
        }
        if !self.tenants.is_empty() && !self.tenants.contains(&event.tenant) {
            return false;
        }
        // An alert about this rule's own alert would feed itself.
        if matches!(event.ty.as_str(), "alert.sent" | "alert.failed")
            && facts.json.pointer("/data/rule_id").and_then(Value::as_str) == Some(&self.id)
        {
            return false;
        }
        if let Some(min) = self.min_severity
            && facts.severity.is_none_or(|s| s < min)
        {
            return false;
        }
        self.when.iter().all(|c| c.holds(&facts.json))
    }

    /// The value alerts of this rule are throttled by, when it has a key.
    pub(crate) fn throttle_value(&self, facts: &Facts) -> Option<String> {
        let value = facts.json.pointer(self.throttle_key.as_deref()?)?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => return None,
            other => other.to_string(),
        };
        (!text.is_empty()).then(|| text.chars().take(512).collect())
    }
}

impl Condition {
    fn new(c: &FieldCondition) -> std::result::Result<Condition, String> {
        if !is_pointer(&c.field) {
            return Err(format!(
                "field {:?} is not a JSON pointer (e.g. /data/user)",
                c.field
            ));
        }
        let test = match (&c.equals, &c.contains, &c.one_of) {
            (Some(v), None, None) => Test::Equals(v.clone()),
            (None, Some(v), None) => Test::Contains(v.clone()),
            (None, None, Some(v)) => Test::OneOf(v.clone()),
            _ => {
                return Err(format!(
                    "the condition on {:?} needs exactly one of equals, contains, in",
                    c.field
                ));
            }
        };
        Ok(Condition {
            field: c.field.clone(),
            test,
        })
    }

    fn holds(&self, event: &Value) -> bool {
        let Some(value) = event.pointer(&self.field) else {
            return false;
        };
        match &self.test {
            Test::Equals(v) => value == v,
            Test::OneOf(vs) => vs.contains(value),
            Test::Contains(v) => match (value, v) {
                (Value::String(s), Value::String(part)) => s.contains(part.as_str()),
                (Value::Array(items), v) => items.contains(v),
                _ => false,
            },
        }
    }
}

fn is_pointer(p: &str) -> bool {
    p.starts_with('/')
}
