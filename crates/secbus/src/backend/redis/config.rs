//! The settings of the `redis://` engine, read from the bus URL and [`BusConfig`].
//!
//! `redis://[user:password@]host[:port][/db][?prefix=secbus&maxlen=1000000&max_age=7d]`
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `prefix` | the first part of every key secbus writes (`A-Z a-z 0-9 _ - . :`, 1 to 64) | `secbus` |
//! | `maxlen` | keep about this many events per tenant (`XTRIM MAXLEN ~`) | `BusConfig::retention_max_events`, else unlimited |
//! | `max_age` | drop events older than this (`XTRIM MINID ~`), e.g. `90s`, `30m`, `12h`, `7d` | `BusConfig::retention_max_age`, else forever |
//!
//! Any other parameter is refused, so a misspelt one cannot be ignored silently.

use std::time::Duration;

use crate::bus::BusConfig;
use crate::error::{Error, ErrorKind, Result};

/// The key prefix when the URL names none.
pub(super) const DEFAULT_PREFIX: &str = "secbus";

/// What the engine was configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RedisConfig {
    /// The URL handed to the Redis client: the bus URL without secbus's parameters.
    pub(super) server_url: String,
    /// The first part of every key.
    pub(super) prefix: String,
    /// Approximate number of events kept per tenant.
    pub(super) maxlen: Option<u64>,
    /// Age after which events are trimmed.
    pub(super) max_age: Option<Duration>,
    /// How long an event id (and content key) keeps a second copy out.
    pub(super) dedup_window: Duration,
}

impl RedisConfig {
    /// Reads `url` (a `redis://` URL) and the bus settings.
    pub(super) fn parse(url: &str, bus: &BusConfig) -> Result<RedisConfig> {
        let (server_url, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut config = RedisConfig {
            server_url: server_url.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            maxlen: bus.retention_max_events,
            max_age: bus.retention_max_age,
            dedup_window: bus.dedup_window,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "prefix" => config.prefix = parse_prefix(value)?,
                "maxlen" => {
                    config.maxlen =
                        Some(value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            invalid(
                                "maxlen",
                                format!("maxlen={value:?} is not a positive count"),
                            )
                        })?)
                }
                "max_age" => config.max_age = Some(parse_duration(value)?),
                other => {
                    return Err(invalid(
                        other,
                        format!(
                            "unknown redis URL parameter {other:?} (known: prefix, maxlen, max_age)"
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }
}

fn invalid(field: &str, message: String) -> Error {
    Error::new(ErrorKind::InvalidUrl, message).with_field(field)
}

fn parse_prefix(value: &str) -> Result<String> {
    // Braces would open a hash tag of their own and split a tenant's keys
    // across cluster slots.
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "prefix",
            format!("prefix={value:?} must be 1 to 64 characters of A-Z a-z 0-9 _ - . :"),
        ))
    }
}

/// `500ms`, `90s`, `30m`, `12h`, `7d`.
fn parse_duration(value: &str) -> Result<Duration> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let number: u64 = number.parse().unwrap_or(0);
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match number.checked_mul(ms_per_unit) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(
            "max_age",
            format!("max_age={value:?} is not a duration like 500ms, 90s, 30m, 12h or 7d"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parameters_and_keeps_the_server_url() {
        let c = RedisConfig::parse(
            "redis://127.0.0.1:6379/2?prefix=app:bus&maxlen=1000000&max_age=7d",
            &BusConfig::default(),
        )
        .unwrap();
        assert_eq!(c.server_url, "redis://127.0.0.1:6379/2");
        assert_eq!(c.prefix, "app:bus");
        assert_eq!(c.maxlen, Some(1_000_000));
        assert_eq!(c.max_age, Some(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn defaults_come_from_the_bus_config() {
        let bus = BusConfig {
            retention_max_events: Some(10),
            retention_max_age: Some(Duration::from_secs(60)),
            ..BusConfig::default()
        };
        let c = RedisConfig::parse("redis://h:1", &bus).unwrap();
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert_eq!(c.maxlen, Some(10));
        assert_eq!(c.max_age, Some(Duration::from_secs(60)));
        assert_eq!(c.dedup_window, bus.dedup_window);
        let c = RedisConfig::parse("redis://h:1?max_age=90s", &bus).unwrap();
        assert_eq!(c.max_age, Some(Duration::from_secs(90)));
    }

    #[test]
    fn bad_parameters_are_refused_with_the_parameter_named() {
        for (url, field) in [
            ("redis://h?prefix={acme}", "prefix"),
            ("redis://h?prefix=", "prefix"),
            ("redis://h?maxlen=0", "maxlen"),
            ("redis://h?maxlen=many", "maxlen"),
            ("redis://h?max_age=7", "max_age"),
            ("redis://h?max_age=7w", "max_age"),
            ("redis://h?max-age=7d", "max-age"),
        ] {
            let e = RedisConfig::parse(url, &BusConfig::default()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{url}");
            assert_eq!(e.field(), Some(field), "{url}");
        }
    }
}
