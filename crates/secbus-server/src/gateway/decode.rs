//! CloudEvents over HTTP into [`Event`]s: structured mode, binary mode
//! (`ce-*` headers), and batches; `tenantid` defaults to the caller's tenant.

use std::fmt;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use secbus::{Event, EventSeed, TenantId};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::ApiError;

/// How a request carries its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The body is the whole event as JSON.
    Structured,
    /// Attributes in `ce-*` headers, the body is `data`.
    Binary,
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The mode of a single-event request, or 415.
pub(crate) fn mode(headers: &HeaderMap) -> Result<Mode, ApiError> {
    let media = media_type(&content_type(headers));
    if media == "application/cloudevents+json" {
        Ok(Mode::Structured)
    } else if headers.contains_key("ce-specversion") {
        Ok(Mode::Binary)
    } else if media == "application/json" {
        Ok(Mode::Structured)
    } else {
        Err(unsupported(
            "send application/cloudevents+json, application/json, or binary mode (ce-* headers)",
        ))
    }
}

/// Checks a batch request's media type, or 415.
pub(crate) fn check_batch_media(headers: &HeaderMap) -> Result<(), ApiError> {
    match media_type(&content_type(headers)).as_str() {
        "application/cloudevents-batch+json" | "application/json" => Ok(()),
        _ => Err(unsupported(
            "send application/cloudevents-batch+json (a JSON array)",
        )),
    }
}

fn unsupported(message: &str) -> ApiError {
    ApiError::new("unsupported_media_type", message).with_field("content-type")
}

/// The body, at most `limit` bytes, or 413 `payload_too_large`.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    })
}

/// One structured-mode event; `tenantid` defaults to the caller's tenant.
pub(crate) fn structured(bytes: &[u8], tenant: &TenantId, max: usize) -> secbus::Result<Event> {
    EventSeed::new(max).default_tenant(tenant).decode(bytes)
}

/// The events of a batch body, each decoded and checked or refused on its
/// own, in one pass over the bytes; `tenantid` defaults to the caller's tenant.
///
/// Splitting the array into its items first and decoding each one after read
/// every byte twice (about a tenth of the runtime's CPU in `gateway.batch`).
/// Items past `max_events` are skipped, not decoded, and counted in `len`.
pub(crate) struct Batch {
    /// The items that passed, in order.
    pub(crate) events: Vec<Event>,
    /// The items refused, by index.
    pub(crate) refused: Vec<(usize, secbus::Error)>,
    /// How many items the array has.
    pub(crate) len: usize,
}

/// Decodes a batch body and puts each event through `check`, or `None` when
/// the body is not a JSON array.
pub(crate) fn batch(
    bytes: &[u8],
    tenant: &TenantId,
    max: usize,
    max_events: usize,
    check: impl FnMut(Event) -> secbus::Result<Event>,
) -> Option<Batch> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut d = serde_json::Deserializer::from_str(text);
    let seed = EventSeed::new(max).default_tenant(tenant);
    let visitor = BatchVisitor {
        seed,
        max_events,
        check,
    };
    let batch = serde::Deserializer::deserialize_seq(&mut d, visitor).ok()?;
    d.end().ok()?;
    Some(batch)
}

struct BatchVisitor<'a, F> {
    seed: EventSeed<'a>,
    max_events: usize,
    check: F,
}

impl<'de, F: FnMut(Event) -> secbus::Result<Event>> Visitor<'de> for BatchVisitor<'_, F> {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of CloudEvents")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Batch, A::Error> {
        let mut batch = Batch {
            events: Vec::with_capacity(self.max_events.min(1024)),
            refused: Vec::new(),
            len: 0,
        };
        loop {
            let more = if batch.len < self.max_events {
                seq.next_element_seed(self.seed)?
                    .map(|item| match item.and_then(&mut self.check) {
                        Ok(event) => batch.events.push(event),
                        Err(e) => batch.refused.push((batch.len, e)),
                    })
                    .is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(batch);
            }
            batch.len += 1;
        }
    }
}

/// One event already parsed as JSON, given the caller's tenant when it names none.
fn from_value(value: Value, tenant: &TenantId, max: usize) -> secbus::Result<Event> {
    let Value::Object(mut map) = value else {
        return Err(secbus::Error::new(
            secbus::ErrorKind::MalformedJson,
            "an event must be a JSON object",
        ));
    };
    default_tenant(&mut map, tenant);
    let bytes = serde_json::to_vec(&map).unwrap_or_default();
    Event::from_json_limited(&bytes, max)
}

fn default_tenant(map: &mut Map<String, Value>, tenant: &TenantId) {
    if !map.contains_key("tenantid") {
        map.insert("tenantid".into(), Value::String(tenant.as_str().to_owned()));
    }
}

/// One binary-mode event: every `ce-` header is an attribute, the body is
/// `data`, and the Content-Type is `datacontenttype`.
pub(crate) fn binary(
    headers: &HeaderMap,
    body: &[u8],
    tenant: &TenantId,
    max: usize,
) -> secbus::Result<Event> {
    let mut map = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            secbus::Error::new(
                secbus::ErrorKind::InvalidAttribute,
                "a ce- header is not visible ASCII",
            )
            .with_field(attr.to_owned())
        })?;
        map.insert(attr.to_owned(), Value::String(percent_decode(value)));
    }
    let ct = content_type(headers);
    let media = media_type(&ct);
    if !body.is_empty() {
        let data = if media == "application/json" || media.ends_with("+json") {
            serde_json::from_slice(body).map_err(|e| {
                secbus::Error::new(
                    secbus::ErrorKind::MalformedJson,
                    "the body is not JSON, as its Content-Type says",
                )
                .with_field("data")
                .with_source(e)
            })?
        } else if let Ok(text) = std::str::from_utf8(body) {
            Value::String(text.to_owned())
        } else {
            return Err(secbus::Error::new(
                secbus::ErrorKind::InvalidAttribute,
                "binary data is not supported; send JSON or text",
            )
            .with_field("data"));
        };
        map.insert("data".into(), data);
    }
    if !ct.is_empty() {
        map.insert("datacontenttype".into(), Value::String(ct));
    }
    from_value(Value::Object(map), tenant, max)
}

/// CloudEvents' HTTP binding percent-encodes header values outside printable ASCII.
fn percent_decode(value: &str) -> String {
    if !value.contains('%') {
        return value.to_owned();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(Ok(b)) = hex.map(|h| u8::from_str_radix(h, 16))
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}
