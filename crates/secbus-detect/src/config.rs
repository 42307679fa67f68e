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
    /// Threads the detection rules run on (default: one per core). The rules
    /// are stateless, so the events of a batch are split among them; the
    /// correlation rules then see the batch in delivery order, on one thread.
    #[serde(default)]
    pub threads: Option<usize>,
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
            threads: None,
        }
    }

    /// The detection threads to run: `threads`, or one per core.
    pub fn detection_threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The state bounds.
    pub fn limits(&self) -> StateLimits {
        StateLimits {
            max_state_entries: self.max_state_entries,
            max_contributing_events: self.max_contributing_events,
        }
    }
}
