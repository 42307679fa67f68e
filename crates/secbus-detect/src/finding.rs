//! A finding as a `detection.finding` event: an OCSF 1.3 Detection Finding
//! (class_uid 2004), caused by the event that triggered it.

use secbus::{Event, EventId, EventType, TenantId};
use serde_json::{Value, json};
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
    let related: Vec<Value> = match &finding.correlation {
        Some(c) => c.event_ids.iter().map(|id| json!({"uid": id})).collect(),
        None => vec![
            json!({"uid": trigger.id.as_str(), "type": trigger.ty.as_str(), "product_uid": trigger.source}),
        ],
    };
    let mut unmapped = json!({"rule_level": finding.level});
    let mut first_seen = seen;
    if let Some(c) = &finding.correlation {
        unmapped["correlation_type"] = json!(c.kind);
        unmapped["group_by"] = Value::Object(
            c.group_by
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
        );
        unmapped["timespan_s"] = json!(c.timespan_secs);
        if let Some(first) = c.first_secs {
            first_seen = first * 1000;
        }
    }
    let mut analytic = json!({
        "uid": finding.rule_id,
        "name": finding.title,
        "type_id": 1,
        "type": "Rule",
    });
    if let Some(category) = &finding.category {
        analytic["category"] = json!(category);
    }
    let mut info = json!({
        "uid": id.as_str(),
        "title": finding.title,
        "types": [if finding.correlation.is_some() { "sigma_correlation" } else { "sigma_rule" }],
        "analytic": analytic,
        "related_events": related,
        "first_seen_time": first_seen,
        "last_seen_time": seen,
        "created_time": now,
        "data_sources": [trigger.ty.as_str()],
    });
    if let Some(desc) = &finding.description {
        info["desc"] = json!(desc);
    }
    let count = finding
        .correlation
        .as_ref()
        .map_or(1, |c| c.event_ids.len().max(1));
    let data = json!({
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity_name,
        "time": now,
        "start_time": first_seen,
        "end_time": seen,
        "count": count,
        "message": finding.title,
        "status_id": 1,
        "status": "New",
        "metadata": {
            "version": "1.3.0",
            "product": {"name": "secbus-detect", "vendor_name": "secbus", "version": env!("CARGO_PKG_VERSION"), "uid": "detect"},
            "labels": finding.tags,
            "correlation_uid": trigger.correlationid,
            "tenant_uid": trigger.tenant.as_str(),
            "uid": id.as_str(),
        },
        "finding_info": info,
        "unmapped": unmapped,
    });
    let mut builder = Event::builder(EventType::new(FINDING_TYPE)?, trigger.tenant.clone())
        .id(id)
        .source(FINDING_SOURCE)
        .caused_by(trigger)
        .data(data);
    if let Some(subject) = &trigger.subject {
        builder = builder.subject(subject.as_str());
    }
    builder.build()
}
