//! The detection worker's configuration (the `[detection]` section of the
//! server's config).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::detector::StateLimits;

/// How a detection worker runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Folders (or files) of Sigma rules, read recursively.
    pub rules: Vec<PathBuf>,
    /// The mapping file (default: the shipped mapping for the catalog).
    #[serde(default)]
    pub mapping: Option<PathBuf>,
    /// The tenants whose events are evaluated.
    pub tenants: Vec<String>,
    /// The consumer group the worker reads as.
    #[serde(default = "default_group")]
    pub group: String,
    /// Correlation windows kept at most (over every rule, group and tenant).
    #[serde(default = "default_max_state_entries")]
    pub max_state_entries: usize,
    /// Contributing event ids kept per correlation window.
    #[serde(default = "default_max_contributing_events")]
    pub max_contributing_events: usize,
    /// Rebuild correlation state at start by replaying the longest window
    /// from the log (default true).
    #[serde(default = "default_true")]
    pub replay_on_start: bool,
}

fn default_group() -> String {
    "detection".to_owned()
}

fn default_max_state_entries() -> usize {
    StateLimits::default().max_state_entries
}

fn default_max_contributing_events() -> usize {
    StateLimits::default().max_contributing_events
}

fn default_true() -> bool {
    true
}

impl DetectionConfig {
    /// A config for `rules` and `tenants`, every other setting at its default.
    pub fn new(rules: Vec<PathBuf>, tenants: Vec<String>) -> DetectionConfig {
        DetectionConfig {
            rules,
            mapping: None,
            tenants,
            group: default_group(),
            max_state_entries: default_max_state_entries(),
            max_contributing_events: default_max_contributing_events(),
            replay_on_start: true,
        }
    }

    /// The state bounds.
    pub fn limits(&self) -> StateLimits {
        StateLimits {
            max_state_entries: self.max_state_entries,
            max_contributing_events: self.max_contributing_events,
        }
    }
}
