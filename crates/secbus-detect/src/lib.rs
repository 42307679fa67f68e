//! Detection for secbus: Sigma detection and correlation rules (evaluated by
//! the rsigma crates) over a tenant's events, as a consumer group; each match
//! goes back on the bus as a `detection.finding` event, an OCSF 1.3 Detection
//! Finding caused by the event that triggered it.
//!
//! - [`RuleSet`] reads rule folders and says, per rule, why one does not load.
//! - [`Mapping`] says which secbus types and fields feed which Sigma
//!   logsources and field names ([`mapping::DEFAULT_MAPPING`] for the catalog).
//! - [`Detector`] evaluates events; correlation state is kept per tenant (every
//!   correlation is grouped by `tenantid` too) and bounded.
//! - [`DetectionWorker`] runs it on a bus, rebuilding correlation state at
//!   start by replaying the longest window from the log.

pub mod config;
pub mod detector;
pub mod error;
pub mod finding;
pub mod mapping;
pub mod rules;
pub mod worker;

pub use config::DetectionConfig;

/// The rules shipped with secbus, as (file name, YAML): correlations over the
/// catalog's authentication and IAM events, and process-start rules.
pub const SHIPPED_RULES: &[(&str, &str)] = &[
    (
        "credential_attacks.yml",
        include_str!("../rules/credential_attacks.yml"),
    ),
    (
        "endpoint_process.yml",
        include_str!("../rules/endpoint_process.yml"),
    ),
];
pub use detector::{CorrelationMatch, Detector, Finding, StateLimits};
pub use error::{DetectError, Result};
pub use finding::{FINDING_TYPE, finding_event, finding_id};
pub use mapping::Mapping;
pub use rules::{RuleFailure, RuleSet};
pub use worker::{DetectionStats, DetectionWorker};
