//! The attack story of `secbus demo`, read from `story.json`, and its playing
//! over HTTP, one `POST /v1/events` per step as an SDK would send them.

use std::collections::HashMap;

use secbus::{Event, EventType, TenantId};
use serde::Deserialize;
use serde_json::Value;

use crate::cli::gateway_client::{ClientError, GatewayClient};

/// The story, as data: more steps are more lines in the file.
const STORY: &str = include_str!("story.json");

/// The whole story.
#[derive(Debug, Deserialize)]
pub(super) struct Story {
    /// The tenant it happens to.
    pub(super) tenant: String,
    /// The events, in the order they happen.
    pub(super) steps: Vec<Step>,
}

/// One event of the story.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Step {
    /// A name other steps refer to in `caused_by`.
    pub(super) name: String,
    /// The catalog type.
    #[serde(rename = "type")]
    pub(super) ty: String,
    /// The CloudEvents source.
    pub(super) source: String,
    /// The subject.
    pub(super) subject: Option<String>,
    /// The earlier step this one is an effect of.
    pub(super) caused_by: Option<String>,
    /// Why the demo's enrichment consumer gives up on it (then it is a dead letter).
    pub(super) dead_letter: Option<String>,
    /// The event's data.
    pub(super) data: Value,
}

/// A step and the event made of it.
#[derive(Debug, Clone)]
pub(super) struct Played {
    /// The step.
    pub(super) step: Step,
    /// The event sent.
    pub(super) event: Event,
}

impl Story {
    /// The story shipped with secbus.
    pub(super) fn shipped() -> Result<Story, String> {
        let story: Story =
            serde_json::from_str(STORY).map_err(|e| format!("story.json does not parse: {e}"))?;
        let mut seen = std::collections::HashSet::new();
        for step in &story.steps {
            if let Some(parent) = &step.caused_by
                && !seen.contains(parent.as_str())
            {
                return Err(format!(
                    "step {}: caused_by {parent} is not an earlier step",
                    step.name
                ));
            }
            seen.insert(step.name.as_str());
        }
        Ok(story)
    }

    /// Each step's event, linked to its cause (same correlation,
    /// causationid = the cause's id), in story order.
    pub(super) fn events(&self) -> Result<Vec<Played>, String> {
        let tenant = TenantId::new(self.tenant.as_str()).map_err(|e| e.to_string())?;
        let mut by_name: HashMap<&str, Event> = HashMap::new();
        let mut played = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let ty =
                EventType::new(step.ty.as_str()).map_err(|e| format!("step {}: {e}", step.name))?;
            let mut builder = Event::builder(ty, tenant.clone())
                .source(step.source.as_str())
                .data(step.data.clone());
            if let Some(subject) = &step.subject {
                builder = builder.subject(subject.as_str());
            }
            if let Some(parent) = step.caused_by.as_deref().and_then(|p| by_name.get(p)) {
                builder = builder.caused_by(parent);
            }
            let event = builder
                .build()
                .map_err(|e| format!("step {}: {e}", step.name))?;
            by_name.insert(step.name.as_str(), event.clone());
            played.push(Played {
                step: step.clone(),
                event,
            });
        }
        Ok(played)
    }
}

/// Publishes each event through `client`, in order, one request each.
pub(super) async fn play(client: &GatewayClient, played: &[Played]) -> Result<(), String> {
    for p in played {
        let accepted = client.publish(&p.event).await.map_err(|e: ClientError| {
            format!("step {}: the gateway refused it: {e}", p.step.name)
        })?;
        if accepted.id != p.event.id.as_str() {
            return Err(format!(
                "step {}: the gateway stored id {}",
                p.step.name, accepted.id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_story_parses_and_every_cause_comes_first() {
        let story = Story::shipped().unwrap();
        assert!(story.steps.iter().any(|s| s.dead_letter.is_some()));
        assert!(story.steps.iter().filter(|s| s.caused_by.is_some()).count() >= 3);
    }
}
