//! How a deployment configures the contracts gate.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::LoadError;
use crate::registry::Registry;

/// The contracts settings (the `[contracts]` table of a secbus config file).
///
/// ```toml
/// [contracts]
/// schema_dirs = ["/etc/secbus/schemas"]
/// redact = ["endpoint.process.created"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContractsConfig {
    /// Folders of `<type>.json` schemas added to the built-in catalog, in order;
    /// a type defined again replaces the earlier definition (default: none).
    /// Example: `["/etc/secbus/schemas"]`.
    pub schema_dirs: Vec<PathBuf>,
    /// Types whose credentials are redacted (`[REDACTED:<detector>]`) instead of
    /// the event being refused with `secret_detected` (default: none, refuse
    /// everywhere). Example: `["endpoint.process.created"]`.
    pub redact: Vec<String>,
}

impl ContractsConfig {
    /// The built-in catalog plus `schema_dirs`.
    pub fn registry(&self) -> Result<Registry, LoadError> {
        let mut registry = Registry::builtin()?;
        for dir in &self.schema_dirs {
            registry.load_dir(dir)?;
        }
        Ok(registry)
    }
}
