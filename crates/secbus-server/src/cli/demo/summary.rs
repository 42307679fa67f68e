//! What `secbus demo` prints after the story: one section per thing the bus
//! saw, each read back through the gateway's API as a dashboard would. A new
//! part of the story (findings, alerts, an audit check) is one more
//! [`Section`] in [`sections`].

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde_json::Value;

use super::DemoRun;

/// One part of the summary.
pub(super) trait Section: Send + Sync {
    /// The heading.
    fn title(&self) -> &'static str;
    /// The lines under it, read from the running demo.
    fn render<'a>(&'a self, demo: &'a DemoRun) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// The sections, in the order they print.
pub(super) fn sections() -> Vec<Box<dyn Section>> {
    vec![
        Box::new(EventsByType),
        Box::new(CorrelationChains),
        Box::new(DeadLetters),
        Box::new(Findings),
        Box::new(Alerts),
        Box::new(AuditTrail),
    ]
}

/// Every stored event of the demo's tenant, through `GET /v1/events`, all pages.
pub(super) async fn stored_events(demo: &DemoRun) -> Result<Vec<Value>, String> {
    let mut events = Vec::new();
    let mut path = "/v1/events?limit=1000".to_owned();
    loop {
        let page = demo.client.get(&path).await.map_err(|e| e.to_string())?;
        events.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/events?limit=1000&cursor={c}"),
            None => return Ok(events),
        }
    }
}

struct EventsByType;

impl Section for EventsByType {
    fn title(&self) -> &'static str {
        "events by type"
    }

    fn render<'a>(&'a self, demo: &'a DemoRun) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let events = stored_events(demo).await?;
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for e in &events {
                *counts
                    .entry(e["event"]["type"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            let mut lines: Vec<String> = counts
                .iter()
                .map(|(ty, n)| format!("{ty:<28} {n:>4}"))
                .collect();
            lines.push(format!("{:<28} {:>4}", "total", events.len()));
            Ok(lines)
        })
    }
}

struct CorrelationChains;

impl Section for CorrelationChains {
    fn title(&self) -> &'static str {
        "correlation chains (which event caused which)"
    }

    fn render<'a>(&'a self, demo: &'a DemoRun) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let events = stored_events(demo).await?;
            let mut sizes: BTreeMap<String, (u64, usize)> = BTreeMap::new();
            for e in &events {
                let id = e["event"]["correlationid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let seq = e["sequence"].as_u64().unwrap_or_default();
                let entry = sizes.entry(id).or_insert((seq, 0));
                entry.1 += 1;
            }
            let mut chains: Vec<(u64, String)> = sizes
                .into_iter()
                .filter(|(_, (_, n))| *n > 1)
                .map(|(id, (first, _))| (first, id))
                .collect();
            chains.sort();
            let mut lines = Vec::new();
            for (_, id) in &chains {
                let answer = demo
                    .client
                    .get(&format!("/v1/correlations/{id}"))
                    .await
                    .map_err(|e| e.to_string())?;
                let n = answer["events"].as_array().map_or(0, Vec::len);
                lines.push(format!("correlation {id} ({n} events)"));
                let subjects: BTreeMap<&str, &str> = answer["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some((e["event"]["id"].as_str()?, e["event"]["subject"].as_str()?))
                    })
                    .collect();
                for root in answer["tree"].as_array().into_iter().flatten() {
                    draw(root, &subjects, "", true, true, &mut lines);
                }
            }
            if chains.is_empty() {
                lines.push("(none)".to_owned());
            }
            Ok(lines)
        })
    }
}

/// One node of a causation tree and its children, drawn with box characters.
fn draw(
    node: &Value,
    subjects: &BTreeMap<&str, &str>,
    prefix: &str,
    last: bool,
    root: bool,
    lines: &mut Vec<String>,
) {
    let id = node["id"].as_str().unwrap_or_default();
    let branch = if root {
        ""
    } else if last {
        "└─ "
    } else {
        "├─ "
    };
    let subject = subjects.get(id).map_or(String::new(), |s| format!("  {s}"));
    lines.push(format!(
        "  {prefix}{branch}{} {id}{subject}",
        node["type"].as_str().unwrap_or_default()
    ));
    let children = node["children"].as_array().cloned().unwrap_or_default();
    let child_prefix = if root {
        prefix.to_owned()
    } else {
        format!("{prefix}{}", if last { "   " } else { "│  " })
    };
    for (i, child) in children.iter().enumerate() {
        draw(
            child,
            subjects,
            &child_prefix,
            i + 1 == children.len(),
            false,
            lines,
        );
    }
}

struct DeadLetters;

impl Section for DeadLetters {
    fn title(&self) -> &'static str {
        "dead letters"
    }

    fn render<'a>(&'a self, demo: &'a DemoRun) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let answer = demo
                .client
                .get("/v1/dlq")
                .await
                .map_err(|e| e.to_string())?;
            let dead = answer["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut lines: Vec<String> = dead
                .iter()
                .map(|d| {
                    format!(
                        "{} {}  group {}  {} after {} attempt(s): {}",
                        d["event"]["type"].as_str().unwrap_or_default(),
                        d["event"]["id"].as_str().unwrap_or_default(),
                        d["group"].as_str().unwrap_or_default(),
                        d["reason"].as_str().unwrap_or_default(),
                        d["attempts"],
                        d["last_error"].as_str().unwrap_or("-"),
                    )
                })
                .collect();
            if lines.is_empty() {
                lines.push("(none)".to_owned());
            }
            Ok(lines)
        })
    }
}

struct Findings;

impl Section for Findings {
    fn title(&self) -> &'static str {
        "detection findings (Sigma rules; each caused by the event that triggered it)"
    }

    fn render<'a>(&'a self, demo: &'a DemoRun) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let events = stored_events(demo).await?;
            let by_id: BTreeMap<&str, &Value> = events
                .iter()
                .filter_map(|e| Some((e["event"]["id"].as_str()?, &e["event"])))
                .collect();
            let mut lines = Vec::new();
            for e in events
                .iter()
                .filter(|e| e["event"]["type"] == "detection.finding")
            {
                let f = &e["event"];
                let data = &f["data"];
                let cause = f["causationid"].as_str().unwrap_or_default();
                let cause_type = by_id
                    .get(cause)
                    .and_then(|c| c["type"].as_str())
                    .unwrap_or("?");
                lines.push(format!(
                    "[{}] {}  (rule {})",
                    data["unmapped"]["rule_level"].as_str().unwrap_or_default(),
                    data["finding_info"]["title"].as_str().unwrap_or_default(),
                    data["finding_info"]["analytic"]["uid"]
                        .as_str()
                        .unwrap_or_default(),
                ));
                lines.push(format!("    caused by {cause_type} {cause}"));
                let related = data["finding_info"]["related_events"]
                    .as_array()
                    .map_or(0, Vec::len);
                if let Some(kind) = data["unmapped"]["correlation_type"].as_str() {
                    lines.push(format!("    {kind} over {related} contributing events"));
                }
                lines.push(format!(
                    "    correlation {}",
                    f["correlationid"].as_str().unwrap_or_default()
                ));
            }
            if lines.is_empty() {
                lines.push("(none)".to_owned());
            }
            Ok(lines)
        })
    }
}

struct Alerts;

impl Section for Alerts {
    fn title(&self) -> &'static str {
        "alerts (rule high-findings-to-soc to the local webhook)"
    }

    fn render<'a>(&'a self, demo: &'a DemoRun) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let received = demo.webhook.received();
            let signed = received
                .iter()
                .filter(|r| {
                    r.signature.as_deref().is_some_and(|sig| {
                        secbus_handlers::alerting::verify_signature(
                            demo.webhook_secret.as_bytes(),
                            &r.body,
                            sig,
                        )
                    })
                })
                .count();
            let events = stored_events(demo).await?;
            let count = |ty: &str| events.iter().filter(|e| e["event"]["type"] == ty).count();
            Ok(vec![
                format!(
                    "the webhook received {} alerts, {signed} with a valid HMAC-SHA256 signature",
                    received.len()
                ),
                format!(
                    "on the bus: {} alert.sent, {} alert.failed",
                    count("alert.sent"),
                    count("alert.failed")
                ),
            ])
        })
    }
}

struct AuditTrail;

impl Section for AuditTrail {
    fn title(&self) -> &'static str {
        "audit trail (secbus audit verify)"
    }

    fn render<'a>(&'a self, demo: &'a DemoRun) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let stored = stored_events(demo).await?.len() as u64;
            // The audit group runs behind the publishers: wait for it to hold
            // every stored event before checking.
            let mut checks = Vec::new();
            for _ in 0..100 {
                checks = secbus_handlers::audit::verify_path(&demo.audit_dir)
                    .map_err(|e| e.to_string())?;
                if checks.iter().map(|c| c.records).sum::<u64>() >= stored {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let mut lines = Vec::new();
            for c in &checks {
                lines.push(match &c.broken {
                    None => format!(
                        "{}: intact, {} records in {} file(s)",
                        c.path.display(),
                        c.records,
                        c.files
                    ),
                    Some(b) => format!("{}: BROKEN at {b}", c.path.display()),
                });
            }
            // One byte changed in a copy: verify names the record.
            let Some(trail) = checks.first().map(|c| c.path.clone()) else {
                return Ok(vec!["(no trail written)".to_owned()]);
            };
            let copy = demo.scratch.join("tampered");
            std::fs::create_dir_all(&copy).map_err(|e| e.to_string())?;
            let file = std::fs::read_dir(&trail)
                .map_err(|e| e.to_string())?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .min()
                .ok_or("the trail has no file")?;
            let mut bytes = std::fs::read(&file).map_err(|e| e.to_string())?;
            let tampered_line =
                tamper(&mut bytes).ok_or("the trail is too short to tamper with")?;
            let target = copy.join(file.file_name().unwrap_or_default());
            std::fs::write(&target, &bytes).map_err(|e| e.to_string())?;
            lines.push(format!(
                "changed one byte of line {tampered_line} in a copy ({}):",
                target.display()
            ));
            for c in secbus_handlers::audit::verify_path(&copy).map_err(|e| e.to_string())? {
                lines.push(match &c.broken {
                    None => format!("  {}: intact (the change was not found!)", c.path.display()),
                    Some(b) => format!("  verify fails at {b}"),
                });
            }
            Ok(lines)
        })
    }
}

/// Changes one digit inside the event of the middle line (its data, not the
/// chain fields): the record still parses, but its hash no longer matches.
/// The line number changed, from 1.
fn tamper(bytes: &mut [u8]) -> Option<usize> {
    let lines: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|&i| i < bytes.len())
        .collect();
    let middle = *lines.get(lines.len() / 2)?;
    let end = bytes[middle..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |p| middle + p);
    let data = bytes[middle..end]
        .windows(7)
        .position(|w| w == b"\"data\":")?
        + middle;
    let at = bytes[data..end].iter().position(|b| b.is_ascii_digit())? + data;
    bytes[at] = if bytes[at] == b'9' {
        b'8'
    } else {
        bytes[at] + 1
    };
    Some(lines.len() / 2 + 1)
}
