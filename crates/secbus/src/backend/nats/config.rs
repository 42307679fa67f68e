//! The settings of the `nats://` engine, read from the bus URL and [`BusConfig`].

use std::time::Duration;

use crate::bus::BusConfig;
use crate::error::{Error, ErrorKind, Result};

/// Publishes whose PubAck is awaited at once, per `append` call, by default.
const DEFAULT_PUBLISH_WINDOW: usize = 256;
/// The default bound on JetStream API requests, PubAcks and double acks.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a group member's ack reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckMode {
    /// `+ACK` written to the connection; `ack()` returns once it is handed to it.
    Plain,
    /// `+ACK` as a request: `ack()` returns once the server confirmed it.
    Double,
}

/// Where JetStream keeps the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Storage {
    File,
    Memory,
}

/// The engine's settings; see the module documentation for the URL form.
#[derive(Debug, Clone)]
pub(super) struct NatsConfig {
    /// `nats://host:port` of every server given, credentials included.
    pub(super) servers: Vec<String>,
    /// The events stream.
    pub(super) stream: String,
    /// The events' subject prefix: `<prefix>.<tenant>.<type>`.
    pub(super) prefix: String,
    /// The dead-letter stream, over `<prefix>-dlq.<tenant>.<dead letter id>`.
    pub(super) dlq_stream: String,
    pub(super) replicas: usize,
    pub(super) storage: Storage,
    /// `None`: keep events forever.
    pub(super) max_age: Option<Duration>,
    /// `None`: no bound.
    pub(super) max_bytes: Option<i64>,
    /// The stream's duplicate window (`Nats-Msg-Id` dedup); zero turns dedup off.
    pub(super) dedup_window: Duration,
    pub(super) content_dedup: bool,
    pub(super) timeout: Duration,
    pub(super) publish_window: usize,
    pub(super) ack: AckMode,
}

impl NatsConfig {
    /// Reads `nats://host:port[,host:port...][?key=value&...]`.
    pub(super) fn parse(url: &str, bus: &BusConfig) -> Result<NatsConfig> {
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| bad_url(url, "a NATS bus URL starts with nats://"))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() {
            return Err(bad_url(url, "no server given (nats://host:port)"));
        }
        let servers: Vec<String> = hosts
            .split(',')
            .map(|h| h.trim().trim_start_matches("nats://"))
            .filter(|h| !h.is_empty())
            .map(|h| format!("nats://{h}"))
            .collect();

        if bus.retention_max_events.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                "the nats engine retains events by age and size (BusConfig.retention_max_age, \
                 or max_age= and max_bytes= in the URL); a per-tenant event count \
                 (retention_max_events) is not something a JetStream stream can keep",
            )
            .with_field("retention_max_events"));
        }

        let mut config = NatsConfig {
            servers,
            stream: "SECBUS".to_owned(),
            prefix: "secbus".to_owned(),
            dlq_stream: String::new(),
            replicas: 1,
            storage: Storage::File,
            max_age: bus.retention_max_age,
            max_bytes: None,
            dedup_window: bus.dedup_window,
            content_dedup: bus.content_dedup,
            timeout: DEFAULT_TIMEOUT,
            publish_window: DEFAULT_PUBLISH_WINDOW,
            ack: AckMode::Plain,
        };
        let mut dlq_stream = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let invalid = |what: &str| bad_url(url, &format!("{key}={value:?}: {what}"));
            match key {
                "stream" => {
                    if !is_stream_name(value) {
                        return Err(invalid("a stream name is 1 to 64 of A-Z a-z 0-9 _ -"));
                    }
                    config.stream = value.to_owned();
                }
                "dlq_stream" => {
                    if !is_stream_name(value) {
                        return Err(invalid("a stream name is 1 to 64 of A-Z a-z 0-9 _ -"));
                    }
                    dlq_stream = Some(value.to_owned());
                }
                "prefix" => {
                    let ok = value.len() <= 128
                        && value.split('.').all(|t| {
                            !t.is_empty()
                                && t.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        });
                    if !ok {
                        return Err(invalid(
                            "a prefix is dot-separated subject tokens of A-Z a-z 0-9 _ -",
                        ));
                    }
                    config.prefix = value.to_owned();
                }
                "replicas" => {
                    config.replicas = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or_else(|| invalid("replicas is 1 to 5"))?;
                }
                "storage" => {
                    config.storage = match value {
                        "file" => Storage::File,
                        "memory" => Storage::Memory,
                        _ => return Err(invalid("storage is file or memory")),
                    };
                }
                "max_age" => {
                    let age = parse_duration(value)
                        .ok_or_else(|| invalid("a duration such as 90s, 30m, 24h or 7d"))?;
                    config.max_age = (!age.is_zero()).then_some(age);
                }
                "max_bytes" => {
                    let bytes = parse_bytes(value)
                        .ok_or_else(|| invalid("a size such as 512MiB, 10GiB or 1000000"))?;
                    config.max_bytes = (bytes > 0).then_some(bytes);
                }
                "timeout" => {
                    config.timeout = parse_duration(value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| invalid("a duration such as 5s or 500ms"))?;
                }
                "publish_window" => {
                    config.publish_window = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=65_536).contains(n))
                        .ok_or_else(|| invalid("publish_window is 1 to 65536"))?;
                }
                "ack" => {
                    config.ack = match value {
                        "plain" => AckMode::Plain,
                        "double" => AckMode::Double,
                        _ => return Err(invalid("ack is plain or double")),
                    };
                }
                _ => {
                    return Err(bad_url(
                        url,
                        &format!(
                            "unknown setting {key:?} (known: stream, prefix, dlq_stream, \
                             replicas, storage, max_age, max_bytes, timeout, publish_window, ack)"
                        ),
                    ));
                }
            }
        }
        config.dlq_stream = dlq_stream.unwrap_or_else(|| format!("{}_DLQ", config.stream));
        if config.dlq_stream == config.stream {
            return Err(bad_url(url, "dlq_stream must differ from stream"));
        }
        Ok(config)
    }

    /// `<prefix>.<tenant>.<type>` for an event, or a filter with a type pattern.
    pub(super) fn subject(&self, tenant: &str, ty: &str) -> String {
        format!("{}.{tenant}.{ty}", self.prefix)
    }

    /// The dead letters' subject prefix.
    pub(super) fn dlq_prefix(&self) -> String {
        format!("{}-dlq", self.prefix)
    }

    /// The stream of content claims, for content dedup.
    pub(super) fn content_stream(&self) -> String {
        format!("{}_CONTENT", self.stream)
    }

    /// The content claims' subject prefix.
    pub(super) fn content_prefix(&self) -> String {
        format!("{}-content", self.prefix)
    }
}

fn bad_url(url: &str, why: &str) -> Error {
    Error::new(ErrorKind::InvalidUrl, format!("{url:?}: {why}"))
}

fn is_stream_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `500ms`, `90s`, `30m`, `24h`, `7d`; a bare number is seconds.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).map(Duration::from_millis)
}

/// `1000000`, `512KB`, `512KiB`, `100MB`, `10GiB`, `1TB`.
pub(super) fn parse_bytes(s: &str) -> Option<i64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: i64 = n.parse().ok()?;
    let factor: i64 = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_bus_config() {
        let bus = BusConfig {
            retention_max_age: Some(Duration::from_secs(3600)),
            ..BusConfig::default()
        };
        let c = NatsConfig::parse("nats://127.0.0.1:4222", &bus).unwrap();
        assert_eq!(c.servers, vec!["nats://127.0.0.1:4222"]);
        assert_eq!(c.stream, "SECBUS");
        assert_eq!(c.dlq_stream, "SECBUS_DLQ");
        assert_eq!(c.prefix, "secbus");
        assert_eq!(c.subject("acme", "auth.login"), "secbus.acme.auth.login");
        assert_eq!(c.dlq_prefix(), "secbus-dlq");
        assert_eq!(c.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(c.max_bytes, None);
        assert_eq!(c.dedup_window, bus.dedup_window);
        assert_eq!(c.ack, AckMode::Plain);
        assert_eq!(c.publish_window, 256);
    }

    #[test]
    fn url_settings_override() {
        let c = NatsConfig::parse(
            "nats://a:4222,nats://b:4223,c:4224?stream=EV&prefix=prod.ev&replicas=3&max_age=7d\
             &max_bytes=10GiB&storage=memory&timeout=2s&publish_window=64&ack=double",
            &BusConfig::default(),
        )
        .unwrap();
        assert_eq!(
            c.servers,
            vec!["nats://a:4222", "nats://b:4223", "nats://c:4224"]
        );
        assert_eq!(c.stream, "EV");
        assert_eq!(c.dlq_stream, "EV_DLQ");
        assert_eq!(c.prefix, "prod.ev");
        assert_eq!(c.replicas, 3);
        assert_eq!(c.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.max_bytes, Some(10 << 30));
        assert_eq!(c.storage, Storage::Memory);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.publish_window, 64);
        assert_eq!(c.ack, AckMode::Double);
    }

    #[test]
    fn bad_settings_are_refused_with_a_code() {
        for url in [
            "nats://",
            "redis://x",
            "nats://h?replicas=9",
            "nats://h?stream=a.b",
            "nats://h?prefix=a.*",
            "nats://h?max_age=soon",
            "nats://h?max_bytes=lots",
            "nats://h?colour=blue",
            "nats://h?stream=X&dlq_stream=X",
        ] {
            let e = NatsConfig::parse(url, &BusConfig::default()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{url}");
        }
        let bus = BusConfig {
            retention_max_events: Some(10),
            ..BusConfig::default()
        };
        let e = NatsConfig::parse("nats://h", &bus).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOptions);
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_bytes("1KiB"), Some(1024));
        assert_eq!(parse_bytes("1MB"), Some(1_000_000));
        assert_eq!(parse_bytes("-1"), None);
    }
}
