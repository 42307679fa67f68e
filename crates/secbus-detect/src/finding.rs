//! A finding as a `detection.finding` event: an OCSF 1.3 Detection Finding
//! (class_uid 2004), caused by the event that triggered it.

use secbus::{Event, EventId, EventType, TenantId};
use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::detector::Finding;

/// The type findings are published as.
pub const FINDING_TYPE: &str = "detection.finding";
/// The `source` of every finding.
pub const FINDING_SOURCE: &str = "secbus/detect";

/// The finding's id: the same rule on the same triggering event always gives
/// the same id, so a finding raised again after a restart is a duplicate the
/// bus drops, not a second alert.
pub fn finding_id(tenant: &TenantId, rule_id: &str, trigger: &EventId) -> EventId {
    let digest = Sha256::digest(format!("{tenant}\n{rule_id}\n{trigger}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A UUIDv8 (custom): version 8, RFC 4122 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    EventId::new(uuid::Uuid::from_bytes(bytes).to_string()).unwrap_or_else(|_| EventId::new_v7())
}

fn severity(level: &str) -> (u8, &'static str) {
    match level {
        "informational" => (1, "Informational"),
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

/// The `detection.finding` event of `finding` raised on `trigger`.
pub fn finding_event(finding: &Finding, trigger: &Event) -> secbus::Result<Event> {
    let id = finding_id(&trigger.tenant, &finding.rule_id, &trigger.id);
    let now = chrono::Utc::now().timestamp_millis();
    let seen = trigger.time.map_or(now, |t| t.timestamp_millis());
    let (severity_id, severity_name) = severity(finding.level);
    let correlation = finding.correlation.as_ref();
    let related = match correlation {
        Some(c) => c
            .event_ids
            .iter()
            .map(|id| Related {
                uid: id,
                ty: None,
                product_uid: None,
            })
            .collect(),
        None => vec![Related {
            uid: trigger.id.as_str(),
            ty: Some(trigger.ty.as_str()),
            product_uid: Some(&trigger.source),
        }],
    };
    let first_seen = correlation
        .and_then(|c| c.first_secs)
        .map_or(seen, |first| first * 1000);
    let data = DetectionFinding {
        activity_id: 1,
        activity_name: "Create",
        category_uid: 2,
        category_name: "Findings",
        class_uid: 2004,
        class_name: "Detection Finding",
        type_uid: 200401,
        type_name: "Detection Finding: Create",
        severity_id,
        severity: severity_name,
        time: now,
        start_time: first_seen,
        end_time: seen,
        count: correlation.map_or(1, |c| c.event_ids.len().max(1)),
        message: &finding.title,
        status_id: 1,
        status: "New",
        metadata: Metadata {
            version: "1.3.0",
            product: Product {
                name: "secbus-detect",
                vendor_name: "secbus",
                version: env!("CARGO_PKG_VERSION"),
                uid: "detect",
            },
            labels: &finding.tags,
            correlation_uid: &trigger.correlationid,
            tenant_uid: trigger.tenant.as_str(),
            uid: id.as_str(),
        },
        finding_info: FindingInfo {
            uid: id.as_str(),
            title: &finding.title,
            types: [if correlation.is_some() {
                "sigma_correlation"
            } else {
                "sigma_rule"
            }],
            analytic: Analytic {
                uid: &finding.rule_id,
                name: &finding.title,
                type_id: 1,
                ty: "Rule",
                category: finding.category.as_deref(),
            },
            related_events: related,
            first_seen_time: first_seen,
            last_seen_time: seen,
            created_time: now,
            data_sources: [trigger.ty.as_str()],
            desc: finding.description.as_deref(),
        },
        unmapped: Unmapped {
            rule_level: finding.level,
            correlation_type: correlation.map(|c| c.kind),
            // A map, so a name the rule groups by twice appears once.
            group_by: correlation.map(|c| {
                c.group_by
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            }),
            timespan_s: correlation.map(|c| c.timespan_secs),
        },
    };
    let mut builder = Event::builder(EventType::new(FINDING_TYPE)?, trigger.tenant.clone())
        .id(id.clone())
        .source(FINDING_SOURCE)
        .caused_by(trigger)
        .data(&data);
    if let Some(subject) = &trigger.subject {
        builder = builder.subject(subject.as_str());
    }
    builder.build()
}

// The finding's data, serialized straight from what it borrows: a finding is
// published for one event in several on a busy detection worker, and building
// it as a `serde_json::Value` first cost more than the publish itself.

/// An OCSF 1.3 Detection Finding.
#[derive(Serialize)]
struct DetectionFinding<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u8,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    severity_id: u8,
    severity: &'static str,
    time: i64,
    start_time: i64,
    end_time: i64,
    count: usize,
    message: &'a str,
    status_id: u8,
    status: &'static str,
    metadata: Metadata<'a>,
    finding_info: FindingInfo<'a>,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    product: Product,
    labels: &'a [String],
    correlation_uid: &'a str,
    tenant_uid: &'a str,
    uid: &'a str,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
    uid: &'static str,
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    uid: &'a str,
    title: &'a str,
    types: [&'static str; 1],
    analytic: Analytic<'a>,
    related_events: Vec<Related<'a>>,
    first_seen_time: i64,
    last_seen_time: i64,
    created_time: i64,
    data_sources: [&'a str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    desc: Option<&'a str>,
}

#[derive(Serialize)]
struct Analytic<'a> {
    uid: &'a str,
    name: &'a str,
    type_id: u8,
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
}

#[derive(Serialize)]
struct Related<'a> {
    uid: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    ty: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_uid: Option<&'a str>,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    rule_level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<BTreeMap<&'a str, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timespan_s: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::CorrelationMatch;
    use serde_json::{Value, json};

    fn trigger() -> Event {
        Event::builder(
            EventType::new("auth.login.failed").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .source("idp")
        .subject("u1")
        .time(chrono::DateTime::from_timestamp(1_700_000_600, 0).unwrap())
        .data(json!({"user": "u1"}))
        .build()
        .unwrap()
    }

    fn rule() -> Finding {
        Finding {
            rule_id: "r1".into(),
            title: "Brute force".into(),
            description: Some("Many failures".into()),
            level: "high",
            tags: vec!["attack.t1110".into()],
            category: Some("authentication".into()),
            correlation: None,
        }
    }

    /// The finding's data with the times of its creation set to 0.
    fn data_of(finding: &Finding, trigger: &Event) -> Value {
        let event = finding_event(finding, trigger).unwrap();
        assert_eq!(event.ty.as_str(), FINDING_TYPE);
        assert_eq!(event.causationid.as_deref(), Some(trigger.id.as_str()));
        let mut data = event.data().unwrap();
        data["time"] = json!(0);
        data["finding_info"]["created_time"] = json!(0);
        data
    }

    #[test]
    fn a_rule_finding_is_an_ocsf_detection_finding_on_its_trigger() {
        let trigger = trigger();
        let id = finding_id(&trigger.tenant, "r1", &trigger.id);
        let seen = 1_700_000_600_000i64;
        assert_eq!(
            data_of(&rule(), &trigger),
            json!({
                "activity_id": 1, "activity_name": "Create",
                "category_uid": 2, "category_name": "Findings",
                "class_uid": 2004, "class_name": "Detection Finding",
                "type_uid": 200401, "type_name": "Detection Finding: Create",
                "severity_id": 4, "severity": "High",
                "time": 0, "start_time": seen, "end_time": seen, "count": 1,
                "message": "Brute force", "status_id": 1, "status": "New",
                "metadata": {
                    "version": "1.3.0",
                    "product": {"name": "secbus-detect", "vendor_name": "secbus",
                                "version": env!("CARGO_PKG_VERSION"), "uid": "detect"},
                    "labels": ["attack.t1110"],
                    "correlation_uid": trigger.correlationid,
                    "tenant_uid": "acme",
                    "uid": id.as_str(),
                },
                "finding_info": {
                    "uid": id.as_str(), "title": "Brute force", "types": ["sigma_rule"],
                    "analytic": {"uid": "r1", "name": "Brute force", "type_id": 1, "type": "Rule",
                                 "category": "authentication"},
                    "related_events": [{"uid": trigger.id.as_str(), "type": "auth.login.failed",
                                        "product_uid": "idp"}],
                    "first_seen_time": seen, "last_seen_time": seen, "created_time": 0,
                    "data_sources": ["auth.login.failed"],
                    "desc": "Many failures",
                },
                "unmapped": {"rule_level": "high"},
            })
        );
    }

    #[test]
    fn a_correlation_finding_names_its_events_group_and_window() {
        let trigger = trigger();
        let mut finding = rule();
        (finding.description, finding.category) = (None, None);
        finding.correlation = Some(CorrelationMatch {
            kind: "event_count",
            group_by: vec![
                ("tenantid".into(), "acme".into()),
                ("user".into(), "u1".into()),
            ],
            timespan_secs: 600,
            value: 2.0,
            event_ids: vec!["e1".into(), "e2".into()],
            first_secs: Some(1_700_000_000),
        });
        let data = data_of(&finding, &trigger);
        assert_eq!(data["count"], 2);
        assert_eq!(data["start_time"], 1_700_000_000_000i64);
        assert_eq!(
            data["finding_info"]["first_seen_time"],
            1_700_000_000_000i64
        );
        assert_eq!(data["finding_info"]["types"], json!(["sigma_correlation"]));
        assert_eq!(
            data["finding_info"]["related_events"],
            json!([{"uid": "e1"}, {"uid": "e2"}])
        );
        assert_eq!(
            data["finding_info"]["analytic"],
            json!({"uid": "r1", "name": "Brute force", "type_id": 1, "type": "Rule"})
        );
        assert!(data["finding_info"].get("desc").is_none());
        assert_eq!(
            data["unmapped"],
            json!({"rule_level": "high", "correlation_type": "event_count",
                   "group_by": {"tenantid": "acme", "user": "u1"}, "timespan_s": 600})
        );
    }
}
