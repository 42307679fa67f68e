//! Errors of loading schemas and comparing catalogs. Refusals of events are
//! [`secbus::Error`]s with the library's stable codes; these are about the
//! contracts themselves.

use std::path::PathBuf;

/// A schema or a schema folder that cannot be used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A schema file is not a usable contract (not JSON, not a valid schema,
    /// no `x-secbus-type`, a `$id` without a version, a file named after another type).
    #[error("invalid_schema: {origin}: {reason}")]
    InvalidSchema {
        /// The file (or built-in entry) at fault.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration names a type no schema defines.
    #[error("unknown_event_type: no schema defines type {ty}")]
    UnknownType {
        /// The type named.
        ty: String,
    },
    /// A folder or file cannot be read.
    #[error("io_error: cannot read {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl LoadError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::InvalidSchema { .. } => "invalid_schema",
            LoadError::UnknownType { .. } => "unknown_event_type",
            LoadError::Io { .. } => "io_error",
        }
    }
}
