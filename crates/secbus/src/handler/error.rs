//! What a handler says when it fails: try again, or never.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// A handler's failure, and what the worker should do about it.
///
/// Any `std::error::Error` converts with `?`: [`crate::Error`]s by their kind
/// (transient kinds such as `engine_unavailable` or `timeout` retry; invalid
/// input such as `invalid_attribute` or `tenant_mismatch` is permanent), JSON
/// errors about the shape of data are permanent, everything else retries. When
/// in doubt `?` retries, because a wrong `Retry` costs a few deliveries and ends
/// in the dead letters anyway, while a wrong `Permanent` skips work that would
/// have succeeded.
///
/// The message (with the error's causes, joined by `: `) becomes the dead
/// letter's `last_error`, so write it for the person reading the dead letters.
///
/// `HandlerError` does not implement `std::error::Error` itself; that is what
/// lets the blanket `From` above exist (the same trade as `anyhow::Error`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// May work later: nack, redeliver after the subscription's backoff.
    Retry(String),
    /// May work later: nack, redeliver after this delay.
    RetryAfter(Duration, String),
    /// Will never work: send to the dead letters now.
    Permanent(String),
}

impl HandlerError {
    /// A failure worth retrying, described by `error`.
    pub fn retry(error: impl fmt::Display) -> Self {
        HandlerError::Retry(error.to_string())
    }

    /// A failure worth retrying after `delay`.
    pub fn retry_after(delay: Duration, error: impl fmt::Display) -> Self {
        HandlerError::RetryAfter(delay, error.to_string())
    }

    /// A failure no retry will fix.
    pub fn permanent(error: impl fmt::Display) -> Self {
        HandlerError::Permanent(error.to_string())
    }

    /// The message, as it will appear in the dead letter.
    pub fn message(&self) -> &str {
        match self {
            HandlerError::Retry(m)
            | HandlerError::RetryAfter(_, m)
            | HandlerError::Permanent(m) => m,
        }
    }

    /// Whether the worker will send the event to the dead letters at once.
    pub fn is_permanent(&self) -> bool {
        matches!(self, HandlerError::Permanent(_))
    }

    /// The same failure, made permanent (the message is kept).
    pub fn into_permanent(self) -> Self {
        match self {
            HandlerError::Retry(m) | HandlerError::RetryAfter(_, m) => HandlerError::Permanent(m),
            permanent => permanent,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Retry(m) => write!(f, "retry: {m}"),
            HandlerError::RetryAfter(d, m) => write!(f, "retry after {d:?}: {m}"),
            HandlerError::Permanent(m) => write!(f, "permanent: {m}"),
        }
    }
}

/// `error` and its causes, joined by `: ` (skipping a cause its parent already printed).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let message = chain(&error);
        let any: &dyn std::any::Any = &error;
        let permanent = if let Some(e) = any.downcast_ref::<Error>() {
            !e.kind().is_transient() && e.kind() != ErrorKind::Closed
        } else if let Some(e) = any.downcast_ref::<serde_json::Error>() {
            e.is_data() || e.is_syntax()
        } else {
            false
        };
        if permanent {
            HandlerError::Permanent(message)
        } else {
            HandlerError::Retry(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert<E: std::error::Error + Send + Sync + 'static>(e: E) -> HandlerError {
        e.into()
    }

    #[test]
    fn secbus_errors_convert_by_kind() {
        let transient = convert(Error::new(ErrorKind::EngineUnavailable, "down"));
        assert_eq!(
            transient,
            HandlerError::Retry("engine_unavailable: down".into())
        );
        let closed = convert(Error::new(ErrorKind::Closed, "closed"));
        assert!(!closed.is_permanent());
        let bad = convert(Error::new(ErrorKind::InvalidAttribute, "no user").with_field("data"));
        assert_eq!(
            bad,
            HandlerError::Permanent("invalid_attribute: no user (at `data`)".into())
        );
    }

    #[test]
    fn json_shape_errors_are_permanent_and_others_retry() {
        let json = serde_json::from_str::<u32>("\"x\"").unwrap_err();
        assert!(convert(json).is_permanent());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(convert(io), HandlerError::Retry("reset".into()));
    }

    #[test]
    fn causes_are_kept_in_the_message() {
        let e =
            Error::new(ErrorKind::Io, "i/o failed").with_source(std::io::Error::other("disk full"));
        assert_eq!(convert(e).message(), "io_error: i/o failed: disk full");
    }

    #[test]
    fn into_permanent_keeps_the_message() {
        let e = HandlerError::retry_after(Duration::from_secs(1), "busy").into_permanent();
        assert_eq!(e, HandlerError::Permanent("busy".into()));
    }
}
