//! How the subcommands end: their exit statuses and the one way they print an error.

use std::process::ExitCode;

/// Something failed (the engine, a file); the message says what.
pub(super) const FAILURE: u8 = 1;
/// The input was refused (a bad line, a bad argument); nothing was stored.
pub(super) const INVALID_INPUT: u8 = 2;
/// `publish --fallback-spool`: some events are still in the spool after the drain timeout.
pub(super) const STILL_SPOOLED: u8 = 3;

/// The code printed when a whole events file is refused (each bad line has its own).
pub(super) const INVALID_FILE_CODE: &str = "invalid_file";

/// The code printed when the fallback spool set events aside instead of delivering them.
pub(super) const QUARANTINED_CODE: &str = "quarantined";

/// Prints `error: <code>: <message>` to stderr and gives the status for it.
pub(super) fn fail(error: &secbus::Error) -> ExitCode {
    eprintln!("error: {error}");
    status(error)
}

/// Like [`fail`], with what the command was doing before the message:
/// `error: <code>: <context>: <message>`.
pub(super) fn fail_in(context: &str, error: &secbus::Error) -> ExitCode {
    let mut line = format!("error: {}: {context}: {}", error.code(), error.message());
    if let Some(field) = error.field() {
        line.push_str(&format!(" (at `{field}`)"));
    }
    if let Some(source) = std::error::Error::source(error) {
        line.push_str(&format!(": {source}"));
    }
    eprintln!("{line}");
    status(error)
}

fn status(error: &secbus::Error) -> ExitCode {
    let status = match error.kind() {
        secbus::ErrorKind::InvalidAttribute
        | secbus::ErrorKind::InvalidOptions
        | secbus::ErrorKind::InvalidUrl
        | secbus::ErrorKind::MissingAttribute
        | secbus::ErrorKind::MalformedJson
        | secbus::ErrorKind::UnsupportedSpecVersion
        | secbus::ErrorKind::EventTooLarge
        | secbus::ErrorKind::UnknownEventType
        | secbus::ErrorKind::SchemaViolation
        | secbus::ErrorKind::SecretDetected
        | secbus::ErrorKind::TenantMismatch => INVALID_INPUT,
        _ => FAILURE,
    };
    ExitCode::from(status)
}
