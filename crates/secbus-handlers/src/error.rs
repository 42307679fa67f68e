//! The one error type of the handlers: a kind with a stable code, a message,
//! and the cause.

use std::fmt;

/// What went wrong, as stable codes.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A configuration value is not valid; the message names it.
    InvalidConfig,
    /// A file of the audit trail could not be read or written.
    Io,
    /// An existing audit trail is damaged, so the chain cannot be continued.
    BrokenTrail,
    /// The bus refused or failed an operation.
    Bus,
}

impl ErrorKind {
    /// The stable, machine-readable code.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Io => "io_error",
            ErrorKind::BrokenTrail => "broken_trail",
            ErrorKind::Bus => "bus_error",
        }
    }
}

/// An error of the handlers.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, with its cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code of the kind.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The message, without the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, message)
    }

    pub(crate) fn io(what: impl fmt::Display, e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, what.to_string()).with_source(e)
    }
}

impl From<secbus::Error> for Error {
    fn from(e: secbus::Error) -> Self {
        Error::new(ErrorKind::Bus, e.to_string()).with_source(e)
    }
}
