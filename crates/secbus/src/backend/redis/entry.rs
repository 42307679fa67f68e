//! Stream entries as Redis returns them, and the events they hold.

use std::sync::Arc;

use redis::Value;

use super::sequence::StreamId;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventType};
use crate::subscription::TypePattern;

/// The field holding the event type, so readers can filter without decoding.
pub(super) const FIELD_TYPE: &str = "type";
/// The field holding the CloudEvent, structured-mode JSON.
pub(super) const FIELD_EVENT: &str = "event";
/// The field naming the one group a redriven dead letter is for.
pub(super) const FIELD_REDRIVE: &str = "redrive";

/// One entry: its id and its fields, `None` when the entry was deleted
/// (trimmed) while it was still pending in a group.
#[derive(Debug)]
pub(super) struct RawEntry {
    pub(super) id: StreamId,
    pub(super) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl RawEntry {
    pub(super) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Parses `[id, [field, value, ...] | nil]`.
    pub(super) fn from_value(value: Value) -> Result<RawEntry> {
        let Value::Array(mut parts) = value else {
            return Err(unexpected("a stream entry"));
        };
        if parts.len() < 2 {
            return Err(unexpected("a stream entry"));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let id = StreamId::parse(&text(parts.pop().unwrap_or(Value::Nil))?)?;
        let fields = match fields {
            Value::Nil => None,
            Value::Array(flat) => {
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                    pairs.push((bytes(k)?, bytes(v)?));
                }
                Some(pairs)
            }
            _ => return Err(unexpected("the fields of a stream entry")),
        };
        Ok(RawEntry { id, fields })
    }

    /// Whether the entry's type matches `pattern` (false when it has no valid type).
    pub(super) fn matches(&self, pattern: &TypePattern) -> bool {
        self.field(FIELD_TYPE)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| EventType::new(t).ok())
            .is_some_and(|t| pattern.matches(&t))
    }

    /// The group a redriven dead letter is for.
    pub(super) fn redrive_for(&self) -> Option<&[u8]> {
        self.field(FIELD_REDRIVE)
    }

    /// Decodes the event the entry holds.
    pub(super) fn decode(&self) -> Result<LogEntry> {
        let json = self.field(FIELD_EVENT).ok_or_else(|| {
            Error::new(
                ErrorKind::Engine,
                format!("stream entry {} has no {FIELD_EVENT:?} field", self.id),
            )
        })?;
        // The size limit was applied when the event was published.
        let event = Event::from_json_limited(json, usize::MAX)?;
        let redrive_for = self
            .redrive_for()
            .map(|g| Arc::from(String::from_utf8_lossy(g).as_ref()));
        Ok(LogEntry {
            id: self.id,
            sequence: self.id.sequence()?,
            key: event.partitionkey.as_deref().map(Arc::from),
            event: Arc::new(event),
            redrive_for,
        })
    }
}

/// A decoded entry of a tenant's log.
#[derive(Debug, Clone)]
pub(super) struct LogEntry {
    pub(super) id: StreamId,
    pub(super) sequence: u64,
    /// The event's partition key.
    pub(super) key: Option<Arc<str>>,
    pub(super) event: Arc<Event>,
    pub(super) redrive_for: Option<Arc<str>>,
}

/// Parses the entries of `XRANGE` / `XREVRANGE` (or of one stream of `XREAD`).
pub(super) fn entries(value: Value) -> Result<Vec<RawEntry>> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(RawEntry::from_value).collect(),
        _ => Err(unexpected("a list of stream entries")),
    }
}

/// Parses the reply of `XREAD` / `XREADGROUP` over one stream (nil on timeout).
pub(super) fn read_reply(value: Value) -> Result<Vec<RawEntry>> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for stream in streams {
                let Value::Array(mut pair) = stream else {
                    return Err(unexpected("a stream of an XREAD reply"));
                };
                out.extend(entries(pair.pop().unwrap_or(Value::Nil))?);
            }
            Ok(out)
        }
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, items) in streams {
                out.extend(entries(items)?);
            }
            Ok(out)
        }
        _ => Err(unexpected("an XREAD reply")),
    }
}

pub(super) fn bytes(value: Value) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        _ => Err(unexpected("a string")),
    }
}

pub(super) fn text(value: Value) -> Result<String> {
    String::from_utf8(bytes(value)?).map_err(|_| unexpected("UTF-8 text"))
}

pub(super) fn unexpected(what: &str) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!("redis returned something other than {what}"),
    )
}
