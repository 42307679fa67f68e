//! What can go wrong in detection, each with a stable code.

/// A detection error.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A mapping file is unreadable or wrong.
    #[error("invalid_mapping: {0}")]
    Mapping(String),
    /// A rules folder is unreadable or no rule loads.
    #[error("invalid_rules: {0}")]
    Rules(String),
    /// The configuration is wrong.
    #[error("invalid_config: {0}")]
    Config(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] secbus::Error),
}

impl DetectError {
    pub(crate) fn mapping(message: impl Into<String>) -> DetectError {
        DetectError::Mapping(message.into())
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            DetectError::Mapping(_) => "invalid_mapping",
            DetectError::Rules(_) => "invalid_rules",
            DetectError::Config(_) => "invalid_config",
            DetectError::Bus(e) => e.code(),
        }
    }
}

/// Results of detection.
pub type Result<T> = std::result::Result<T, DetectError>;
