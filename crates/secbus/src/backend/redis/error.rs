//! Redis errors as secbus errors: what retrying may fix is
//! [`ErrorKind::EngineUnavailable`], so `publish_with_fallback` spools and
//! subscriptions wait for the server instead of giving up.

use redis::{RedisError, ServerErrorKind};

use crate::error::{Error, ErrorKind};

/// Wraps a Redis error, saying what secbus was doing.
pub(super) fn from_redis(doing: &str, e: RedisError) -> Error {
    let kind = if is_unavailable(&e) {
        ErrorKind::EngineUnavailable
    } else {
        ErrorKind::Engine
    };
    Error::new(kind, format!("redis: {doing}")).with_source(e)
}

/// Whether the server could not be reached or cannot serve now (restarting,
/// loading its data, a cluster failing over).
pub(super) fn is_unavailable(e: &RedisError) -> bool {
    use redis::ErrorKind as K;
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            K::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | K::ClusterConnectionNotFound
        )
}

/// Whether the group a command named does not exist (`NOGROUP`), or its
/// stream was deleted under a blocked read (`UNBLOCKED`): after a server lost
/// its data, or someone deleted the stream or destroyed the group.
pub(super) fn is_no_group(e: &RedisError) -> bool {
    matches!(e.code(), Some("NOGROUP" | "UNBLOCKED"))
}

/// Whether `XGROUP CREATE` found the group already there.
pub(super) fn is_busy_group(e: &RedisError) -> bool {
    e.code() == Some("BUSYGROUP")
}
