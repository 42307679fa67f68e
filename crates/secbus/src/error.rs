//! The one error type of the library: a kind you can match, a stable code you can
//! send over the wire, the attribute or field at fault, and the cause.

use std::fmt;

/// What went wrong, as a closed set of stable codes.
///
/// Codes are part of the public contract: the gateway, the CLI and the SDKs
/// print them, and users match on them. A code is never reused for another
/// meaning; a retired code leaves a gap.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes are not a JSON object.
    MalformedJson,
    /// A required CloudEvents or secbus attribute is absent.
    MissingAttribute,
    /// An attribute is present but its value is not valid.
    InvalidAttribute,
    /// `specversion` is not "1.0".
    UnsupportedSpecVersion,
    /// The encoded event is larger than the configured limit.
    EventTooLarge,
    /// A bounded buffer is full and the caller asked not to wait.
    Full,
    /// The bus or subscription was closed.
    Closed,
    /// The engine cannot be reached or refused the operation for now; retrying may work.
    EngineUnavailable,
    /// The engine failed in a way retrying will not fix.
    Engine,
    /// The bus URL is not one secbus understands.
    InvalidUrl,
    /// Subscription or bus options are inconsistent.
    InvalidOptions,
    /// The named object (dead letter, group, ...) does not exist.
    NotFound,
    /// An operation did not finish in time.
    Timeout,
    /// A file-system operation failed.
    Io,
    /// A tail fell behind the retained history; the missed count is in the message.
    Lagged,
    /// The event's tenant is not the tenant the caller is bound to.
    TenantMismatch,
    /// No schema is registered for the event's type.
    UnknownEventType,
    /// `data` does not follow the type's schema; [`Error::details`] lists where.
    SchemaViolation,
    /// `data` carries what looks like a credential; the value is never echoed.
    SecretDetected,
    /// The engine cannot do what was asked (e.g. report a group's lag).
    Unsupported,
}

impl ErrorKind {
    /// The stable, machine-readable code (`snake_case`).
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::MalformedJson => "malformed_json",
            ErrorKind::MissingAttribute => "missing_attribute",
            ErrorKind::InvalidAttribute => "invalid_attribute",
            ErrorKind::UnsupportedSpecVersion => "unsupported_specversion",
            ErrorKind::EventTooLarge => "event_too_large",
            ErrorKind::Full => "full",
            ErrorKind::Closed => "closed",
            ErrorKind::EngineUnavailable => "engine_unavailable",
            ErrorKind::Engine => "engine_error",
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::InvalidOptions => "invalid_options",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io_error",
            ErrorKind::Lagged => "lagged",
            ErrorKind::TenantMismatch => "tenant_mismatch",
            ErrorKind::UnknownEventType => "unknown_event_type",
            ErrorKind::SchemaViolation => "schema_violation",
            ErrorKind::SecretDetected => "secret_detected",
            ErrorKind::Unsupported => "unsupported",
        }
    }

    /// Whether the same call may succeed later without the caller changing anything.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Full | ErrorKind::EngineUnavailable | ErrorKind::Timeout | ErrorKind::Io
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error of the secbus library.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    field: Option<String>,
    missed: Option<u64>,
    details: Vec<ErrorDetail>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// One of several problems behind an error (e.g. each schema failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Where: a JSON pointer into the event or its `data`.
    pub field: String,
    /// What is wrong there (for a schema failure, the keyword and its message).
    pub reason: String,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            field: None,
            missed: None,
            details: Vec::new(),
            source: None,
        }
    }

    /// Names the attribute or field at fault (a CloudEvents attribute name or a JSON pointer).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Attaches the individual problems behind this error.
    pub fn with_details(mut self, details: Vec<ErrorDetail>) -> Self {
        self.details = details;
        self
    }

    /// The individual problems behind this error, when there are several.
    pub fn details(&self) -> &[ErrorDetail] {
        &self.details
    }

    /// Records how many events a lagging tail missed.
    pub fn with_missed(mut self, missed: u64) -> Self {
        self.missed = Some(missed);
        self
    }

    /// For [`ErrorKind::Lagged`]: how many events the tail missed.
    pub fn missed(&self) -> Option<u64> {
        self.missed
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind, to match on.
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

    /// The attribute or field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    pub(crate) fn closed() -> Self {
        Error::new(ErrorKind::Closed, "the bus is closed")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (at `{field}`)")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, "i/o failed").with_source(e)
    }
}
