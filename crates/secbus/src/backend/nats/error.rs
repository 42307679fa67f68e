//! How failures of the NATS client become secbus errors: what a retry (or the
//! fallback spool) can fix is `engine_unavailable`; what the server refused for
//! a reason of its own is `engine_error`.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};

use crate::error::{Error, ErrorKind};

/// The server did not answer in time, is unreachable, or is (re)starting.
pub(super) fn unavailable(
    what: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::new(ErrorKind::EngineUnavailable, what).with_source(source)
}

/// The server answered with a refusal.
pub(super) fn refused(
    what: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::new(ErrorKind::Engine, what).with_source(source)
}

/// A failed publish or PubAck.
///
/// No PubAck in time, a broken connection and "no responders" (JetStream is
/// restarting, or a stream leader is being elected) are all transient, so the
/// fallback spool keeps the event and retries it; a retry is safe because the
/// `Nats-Msg-Id` makes JetStream drop a second copy.
pub(super) fn publish(subject: &str, e: PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::StreamNotFound => unavailable(
            format!("JetStream did not acknowledge the publish to {subject}"),
            e,
        ),
        PublishErrorKind::MaxPayloadExceeded => Error::new(
            ErrorKind::EventTooLarge,
            format!(
                "the event is larger than the NATS server's max_payload ({subject}); \
                 raise max_payload or lower BusConfig.max_event_bytes"
            ),
        )
        .with_source(e),
        _ => refused(format!("JetStream refused the publish to {subject}"), e),
    }
}
