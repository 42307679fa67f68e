//! How serious an event is, read the way the catalog writes it: a
//! `severity` word (`low` ... `critical`) or OCSF's `severity_id` (1-6).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Severities in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// OCSF 1; below what `alert.*` events name.
    Informational,
    /// `low`, OCSF 2.
    Low,
    /// `medium`, OCSF 3.
    Medium,
    /// `high`, OCSF 4.
    High,
    /// `critical`, OCSF 5 and 6 (fatal).
    Critical,
}

impl Severity {
    /// The word `alert.sent` / `alert.failed` carry; none for informational.
    pub fn alert_word(self) -> Option<&'static str> {
        match self {
            Severity::Informational => None,
            Severity::Low => Some("low"),
            Severity::Medium => Some("medium"),
            Severity::High => Some("high"),
            Severity::Critical => Some("critical"),
        }
    }

    /// The severity of an event's `data`: `severity_id` when it is a known
    /// OCSF level, else the `severity` word (any case).
    pub fn of(data: &Value) -> Option<Severity> {
        let by_id = data
            .get("severity_id")
            .and_then(Value::as_u64)
            .and_then(|id| match id {
                1 => Some(Severity::Informational),
                2 => Some(Severity::Low),
                3 => Some(Severity::Medium),
                4 => Some(Severity::High),
                5 | 6 => Some(Severity::Critical),
                _ => None,
            });
        by_id.or_else(|| {
            let word = data.get("severity")?.as_str()?.to_ascii_lowercase();
            match word.as_str() {
                "informational" | "info" => Some(Severity::Informational),
                "low" => Some(Severity::Low),
                "medium" => Some(Severity::Medium),
                "high" => Some(Severity::High),
                "critical" | "fatal" => Some(Severity::Critical),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_and_ocsf_ids_map_to_one_order() {
        assert_eq!(
            Severity::of(&json!({"severity": "high"})),
            Some(Severity::High)
        );
        assert_eq!(
            Severity::of(&json!({"severity": "Critical"})),
            Some(Severity::Critical)
        );
        assert_eq!(
            Severity::of(&json!({"severity_id": 3, "severity": "Medium"})),
            Some(Severity::Medium)
        );
        assert_eq!(
            Severity::of(&json!({"severity_id": 1})),
            Some(Severity::Informational)
        );
        assert_eq!(Severity::of(&json!({"severity_id": 99})), None);
        assert_eq!(Severity::of(&json!({"user": "bob"})), None);
        assert!(Severity::Informational < Severity::Low && Severity::High < Severity::Critical);
    }
}
