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
