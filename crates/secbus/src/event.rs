//! The envelope: a CloudEvents 1.0 event with the secbus extension attributes
//! (`tenantid`, `correlationid`, `causationid`, `traceparent`, `tracestate`,
//! `partitionkey`), its validated newtypes and its builder.
//!
//! On the wire an event is CloudEvents structured-mode JSON. `data` is kept as
//! the raw JSON text it arrived as (or was built from), so an event read back is
//! byte-for-byte the event that was stored, and routing an event never pays for
//! parsing its payload.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{Error, ErrorKind, Result};

mod charset;

/// The CloudEvents version secbus speaks.
pub const SPEC_VERSION: &str = "1.0";

/// The default limit on an encoded event: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

fn invalid(attribute: &str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidAttribute, message).with_field(attribute)
}

/// A tenant: lowercase `a-z`, `0-9` and `-`, 1 to 63 characters.
///
/// Tenants appear in subjects and keys of every engine, so the alphabet is the
/// one all of them accept without escaping.
///
/// Shared, not copied: every event of a tenant names it, and a clone of a
/// `String` was an allocation and a free on each event built and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates and wraps a tenant id.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let ok = (1..=63).contains(&value.len()) && charset::all(charset::TENANT, value.as_bytes());
        if ok {
            Ok(TenantId(value.into()))
        } else {
            Err(invalid(
                "tenantid",
                format!("tenant {value:?} must be 1 to 63 characters of a-z, 0-9 and -"),
            ))
        }
    }

    /// The tenant as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event type: dot-separated lowercase tokens of `a-z`, `0-9`, `_` and `-`,
/// such as `auth.login.failed`; at most 255 characters.
///
/// Each token is a valid NATS subject token, so a type maps to a subject as is.
///
/// Shared, not copied, as [`TenantId`] is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

fn is_type_token(token: &str) -> bool {
    !token.is_empty() && charset::all(charset::TYPE_TOKEN, token.as_bytes())
}

impl EventType {
    /// Validates and wraps an event type.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        if value.len() <= 255 && value.split('.').all(is_type_token) {
            Ok(EventType(value.into()))
        } else {
            Err(invalid(
                "type",
                format!(
                    "type {value:?} must be dot-separated tokens of a-z, 0-9, _ and - \
                     (e.g. auth.login.failed), at most 255 characters"
                ),
            ))
        }
    }

    /// The type as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event id: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`. New ids are UUIDv7,
/// so ids sort by creation time.
///
/// The alphabet keeps ids usable as `Nats-Msg-Id` headers and Redis keys.
///
/// Shared, not copied: the receipt of a publish holds the id of the event it
/// stored, and copying it was 7% of a publish on the memory engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Arc<str>);

impl EventId {
    /// A new UUIDv7 id.
    pub fn new_v7() -> Self {
        let mut buf = [0; uuid::fmt::Hyphenated::LENGTH];
        EventId(Arc::from(
            &*uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf),
        ))
    }

    /// Validates and wraps an id.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let ok = (1..=128).contains(&value.len()) && charset::all(charset::ID, value.as_bytes());
        if ok {
            Ok(EventId(value.into()))
        } else {
            Err(invalid(
                "id",
                format!("id {value:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"),
            ))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $ty::new(s)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                $ty::new(s)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::new(s).map_err(de::Error::custom)
            }
        }
    )*};
}
string_newtype_impls!(TenantId, EventType, EventId);

/// A CloudEvents extension attribute name: lowercase letters and digits.
fn is_attribute_name(name: &str) -> bool {
    !name.is_empty() && charset::all(charset::ATTRIBUTE_NAME, name.as_bytes())
}

/// A W3C `traceparent` value: `00-<trace id>-<parent id>-<flags>`.
fn is_traceparent(value: &str) -> bool {
    // `vv-<32 hex>-<16 hex>-ff`, checked in place: it runs on every decoded event.
    let b = value.as_bytes();
    if b.len() != 55 {
        return false;
    }
    let laid_out = b.iter().enumerate().fold(true, |ok, (i, &c)| {
        ok & if matches!(i, 2 | 35 | 52) {
            c == b'-'
        } else {
            charset::is(charset::HEX, c)
        }
    });
    let nonzero = |r: std::ops::Range<usize>| b[r].iter().any(|&c| c != b'0');
    laid_out && &b[0..2] != b"ff" && nonzero(3..35) && nonzero(36..52)
}

/// Writes `value` as lowercase hex into `out`, most significant digit first.
/// Every event gets a traceparent (48 hex digits): this is about ten times
/// quicker than `format!`'s `{:x}`.
fn write_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// A traceparent of `version`, `trace`, a new random span id, and `flags`
/// (all hex, of the lengths W3C sets; callers pass validated parts).
fn traceparent_with(version: &[u8], trace: Option<&[u8]>, flags: &[u8]) -> String {
    let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-00";
    tp[0..2].copy_from_slice(version);
    match trace {
        Some(trace) => tp[3..35].copy_from_slice(trace),
        None => write_hex(&mut tp[3..35], rand::random::<u128>() | 1),
    }
    write_hex(&mut tp[36..52], u128::from(rand::random::<u64>() | 1));
    tp[53..55].copy_from_slice(flags);
    // Only ASCII went in: the parts are checked hex, the rest literals.
    String::from_utf8(tp.to_vec()).unwrap_or_default()
}

fn new_traceparent() -> String {
    traceparent_with(b"00", None, b"01")
}

/// A child span of `parent`'s trace: same trace id, a new parent id.
fn child_traceparent(parent: &str) -> String {
    if !is_traceparent(parent) {
        return new_traceparent();
    }
    let p = parent.as_bytes();
    traceparent_with(&p[0..2], Some(&p[3..35]), &p[53..55])
}

/// A CloudEvents 1.0 event with the secbus extensions.
///
/// Construct one with [`Event::builder`] or decode one with [`Event::from_json`];
/// both validate every attribute, so an `Event` value is always well formed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `id`: unique per source; secbus deduplicates on it.
    pub id: EventId,
    /// `source`: a URI-reference naming the producer.
    pub source: String,
    /// `type`.
    pub ty: EventType,
    /// `tenantid`: the tenant the event belongs to.
    pub tenant: TenantId,
    /// `time`: set at publish when absent.
    pub time: Option<DateTime<Utc>>,
    /// `subject`: what the event is about within the source (a user, a host...).
    pub subject: Option<String>,
    /// `datacontenttype`.
    pub datacontenttype: Option<String>,
    /// `dataschema`: the `$id` of the schema `data` follows.
    pub dataschema: Option<String>,
    /// `correlationid`: shared by every event of one story; a root event's own id.
    pub correlationid: String,
    /// `causationid`: the id of the event that caused this one.
    pub causationid: Option<String>,
    /// `traceparent` (W3C trace context).
    pub traceparent: String,
    /// `tracestate` (W3C trace context).
    pub tracestate: Option<String>,
    /// `partitionkey`: events with the same key are consumed in publish order.
    pub partitionkey: Option<String>,
    /// Extension attributes secbus does not know; kept as they came.
    pub extensions: BTreeMap<String, Value>,
    data: Option<RawData>,
}

/// `data` as raw JSON text; equal when the text is equal.
#[derive(Debug, Clone)]
struct RawData(Box<RawValue>);

impl PartialEq for RawData {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Event {
    /// Starts building an event of `ty` for `tenant`, with a new UUIDv7 id.
    pub fn builder(ty: EventType, tenant: TenantId) -> EventBuilder {
        EventBuilder::new(ty, tenant)
    }

    /// `data` as raw JSON text, exactly as stored.
    pub fn data_raw(&self) -> Option<&str> {
        self.data.as_ref().map(|d| d.0.get())
    }

    /// `data` parsed into `T`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.data
            .as_ref()
            .map(|raw| {
                serde_json::from_str(raw.0.get()).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidAttribute,
                        "data does not have the expected shape",
                    )
                    .with_field("data")
                    .with_source(e)
                })
            })
            .transpose()
    }

    /// `data` parsed as a JSON value.
    pub fn data(&self) -> Option<Value> {
        self.data_as::<Value>().ok().flatten()
    }

    /// Replaces `data` with the JSON of `value`.
    pub fn set_data(&mut self, value: &impl Serialize) -> Result<()> {
        self.data = Some(RawData(to_raw(value)?));
        Ok(())
    }

    /// Decodes a structured-mode CloudEvent, rejecting events over `max_bytes`.
    pub fn from_json_limited(bytes: &[u8], max_bytes: usize) -> Result<Event> {
        if bytes.len() > max_bytes {
            return Err(Error::new(
                ErrorKind::EventTooLarge,
                format!("event is {} bytes; the limit is {max_bytes}", bytes.len()),
            ));
        }
        // The bytes were counted; the encoding's estimate may differ from them.
        EventSeed::new(usize::MAX).decode(bytes)
    }

    /// Decodes a structured-mode CloudEvent with the default 1 MiB limit.
    pub fn from_json(bytes: &[u8]) -> Result<Event> {
        Event::from_json_limited(bytes, DEFAULT_MAX_EVENT_BYTES)
    }

    /// Encodes the event as structured-mode JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing this type cannot fail: every field is a string, a map of
        // JSON values or raw JSON that was validated when it was set.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The size of the structured-mode encoding, not counting string escapes.
    ///
    /// Cheap enough for every publish; exact for the ASCII attributes secbus
    /// validates, and a lower bound only where free-text attributes need escaping.
    pub fn encoded_len(&self) -> usize {
        const PER_ATTRIBUTE: usize = 6; // two pairs of quotes, a colon and a comma
        let opt = |name: &str, v: &Option<String>| {
            v.as_ref()
                .map_or(0, |v| name.len() + v.len() + PER_ATTRIBUTE)
        };
        let mut n = 2 + "specversion".len() + SPEC_VERSION.len() + PER_ATTRIBUTE;
        n += "id".len() + self.id.0.len() + PER_ATTRIBUTE;
        n += "source".len() + self.source.len() + PER_ATTRIBUTE;
        n += "type".len() + self.ty.0.len() + PER_ATTRIBUTE;
        n += "tenantid".len() + self.tenant.0.len() + PER_ATTRIBUTE;
        n += self.time.map_or(0, |_| "time".len() + 30 + PER_ATTRIBUTE);
        n += opt("subject", &self.subject);
        n += opt("datacontenttype", &self.datacontenttype);
        n += opt("dataschema", &self.dataschema);
        n += "correlationid".len() + self.correlationid.len() + PER_ATTRIBUTE;
        n += opt("causationid", &self.causationid);
        n += "traceparent".len() + self.traceparent.len() + PER_ATTRIBUTE;
        n += opt("tracestate", &self.tracestate);
        n += opt("partitionkey", &self.partitionkey);
        for (k, v) in &self.extensions {
            n += k.len() + PER_ATTRIBUTE + value_len(v);
        }
        n += self
            .data
            .as_ref()
            .map_or(0, |d| "data".len() + d.0.get().len() + 4);
        n
    }

    /// Checks the size limit on an event built in code (decoding checks it on the bytes).
    pub fn check_size(&self, max_bytes: usize) -> Result<()> {
        let n = self.encoded_len();
        if n > max_bytes {
            return Err(Error::new(
                ErrorKind::EventTooLarge,
                format!("event is about {n} bytes; the limit is {max_bytes}"),
            ));
        }
        Ok(())
    }
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(n) => n.to_string().len(),
        other => serde_json::to_string(other).map_or(0, |s| s.len()),
    }
}

fn to_raw(value: &impl Serialize) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidAttribute,
            "data cannot be encoded as JSON",
        )
        .with_field("data")
        .with_source(e)
    })
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("specversion", SPEC_VERSION)?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("source", &self.source)?;
        m.serialize_entry("type", &self.ty)?;
        m.serialize_entry("tenantid", &self.tenant)?;
        if let Some(t) = &self.time {
            m.serialize_entry("time", &t.to_rfc3339_opts(SecondsFormat::AutoSi, true))?;
        }
        let opt = [
            ("subject", &self.subject),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("correlationid", &self.correlationid)?;
        if let Some(v) = &self.causationid {
            m.serialize_entry("causationid", v)?;
        }
        m.serialize_entry("traceparent", &self.traceparent)?;
        if let Some(v) = &self.tracestate {
            m.serialize_entry("tracestate", v)?;
        }
        if let Some(v) = &self.partitionkey {
            m.serialize_entry("partitionkey", v)?;
        }
        for (k, v) in &self.extensions {
            m.serialize_entry(k, v)?;
        }
        if let Some(d) = &self.data {
            m.serialize_entry("data", &d.0)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        RawEvent::deserialize(d)?
            .into_event(None)
            .map_err(de::Error::custom)
    }
}

/// The attributes an [`Event`] has a field for. Decoding puts them in slots
/// by position instead of a map keyed by their names: a `String` and a tree
/// node per attribute were a tenth of decoding an event.
const ATTRIBUTES: [&str; 14] = [
    "specversion",
    "id",
    "source",
    "type",
    "tenantid",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "correlationid",
    "causationid",
    "traceparent",
    "tracestate",
    "partitionkey",
];

/// The slot of attribute `name` in [`ATTRIBUTES`], if it has one.
const fn attribute_slot(name: &str) -> Option<usize> {
    let name = name.as_bytes();
    let mut i = 0;
    while i < ATTRIBUTES.len() {
        let a = ATTRIBUTES[i].as_bytes();
        if a.len() == name.len() {
            let mut j = 0;
            while j < a.len() && a[j] == name[j] {
                j += 1;
            }
            if j == a.len() {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// The slot of `name`, for validation to take by position. Called in `const`
/// blocks, so the lookup happens at compile time (at run time it cost 5% of
/// decoding: criterion `envelope/decode` 839 ns against 814 ns) and a name
/// without a slot does not compile.
const fn slot(name: &str) -> usize {
    match attribute_slot(name) {
        Some(i) => i,
        None => panic!("an attribute without a slot"),
    }
}

/// The attributes as they came, before validation, so that validation can
/// name the attribute at fault with a typed error.
#[derive(Default)]
struct RawEvent {
    /// The attributes of [`ATTRIBUTES`], by position.
    known: [Option<Value>; ATTRIBUTES.len()],
    /// Extension attributes.
    attributes: BTreeMap<String, Value>,
    data: Option<Box<RawValue>>,
    /// The first attribute given twice.
    repeated: Option<String>,
}

/// An attribute name, read without allocating unless it names an extension.
enum Key {
    Known(usize),
    Data,
    Extension(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Key, E> {
                Ok(match v {
                    "data" => Key::Data,
                    _ => attribute_slot(v).map_or_else(|| Key::Extension(v.to_owned()), Key::Known),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(RawVisitor)?
            .ok_or_else(|| de::Error::custom("a CloudEvents JSON object"))
    }
}

/// Reads an event's attributes; `None` for a JSON value that is not an object.
///
/// A repeated attribute is kept as an error of the event rather than of the
/// parse, and anything but an object is read to its end, so that one bad event
/// of an array does not stop the decoding of the others.
struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Option<RawEvent>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvents JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Option<RawEvent>, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(key) = map.next_key::<Key>()? {
            let repeated = match key {
                Key::Data if raw.data.is_some() => Some("data".to_owned()),
                Key::Data => {
                    raw.data = Some(map.next_value::<Box<RawValue>>()?);
                    None
                }
                Key::Known(slot) if raw.known[slot].is_some() => Some(ATTRIBUTES[slot].to_owned()),
                Key::Known(slot) => {
                    raw.known[slot] = Some(map.next_value::<Value>()?);
                    None
                }
                Key::Extension(name) if raw.attributes.contains_key(&name) => Some(name),
                Key::Extension(name) => {
                    let value = map.next_value::<Value>()?;
                    raw.attributes.insert(name, value);
                    None
                }
            };
            if let Some(name) = repeated {
                map.next_value::<de::IgnoredAny>()?;
                raw.repeated.get_or_insert(name);
            }
        }
        Ok(Some(raw))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Option<RawEvent>, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Option<RawEvent>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Option<RawEvent>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Option<RawEvent>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Option<RawEvent>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Option<RawEvent>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Option<RawEvent>, E> {
        Ok(None)
    }
}

/// Decodes one structured-mode event from any serde deserializer, as a
/// [`DeserializeSeed`](de::DeserializeSeed) whose value is the event or why it
/// is not one: a caller decoding a JSON array of events (a gateway's batch)
/// gets every event's own error in one pass over the bytes, and only a JSON
/// syntax error stops the whole array.
#[derive(Debug, Clone, Copy)]
pub struct EventSeed<'a> {
    default_tenant: Option<&'a TenantId>,
    max_bytes: usize,
}

impl<'a> EventSeed<'a> {
    /// Events of up to `max_bytes` (as [`Event::check_size`] counts them).
    pub fn new(max_bytes: usize) -> Self {
        EventSeed {
            default_tenant: None,
            max_bytes,
        }
    }

    /// The tenant of an event that names none (`tenantid` absent or null):
    /// a gateway's caller's, for events whose producers leave it out.
    pub fn default_tenant(mut self, tenant: &'a TenantId) -> Self {
        self.default_tenant = Some(tenant);
        self
    }

    /// Decodes one event from JSON bytes.
    pub fn decode(self, bytes: &[u8]) -> Result<Event> {
        // Checked as UTF-8 in one pass, then parsed as text: parsing bytes
        // checks every string on its own, which took 6% of decoding.
        let text = std::str::from_utf8(bytes).map_err(|e| not_an_event().with_source(e))?;
        let mut d = serde_json::Deserializer::from_str(text);
        let event = de::DeserializeSeed::deserialize(self, &mut d)
            .map_err(|e| not_an_event().with_source(e))?;
        d.end().map_err(|e| not_an_event().with_source(e))?;
        event
    }

    fn event(self, raw: Option<RawEvent>) -> Result<Event> {
        let raw = raw.ok_or_else(not_an_event)?;
        let event = raw.into_event(self.default_tenant)?;
        event.check_size(self.max_bytes)?;
        Ok(event)
    }
}

impl<'de> de::DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Result<Event>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Result<Event>, D::Error> {
        Ok(self.event(d.deserialize_any(RawVisitor)?))
    }
}

fn not_an_event() -> Error {
    Error::new(
        ErrorKind::MalformedJson,
        "not a JSON object of CloudEvents attributes",
    )
}

impl RawEvent {
    fn take_string(&mut self, slot: usize) -> Result<Option<String>> {
        let name = ATTRIBUTES[slot];
        match self.known[slot].take() {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(name, format!("`{name}` must be a string"))),
        }
    }

    fn require(&mut self, slot: usize) -> Result<String> {
        let name = ATTRIBUTES[slot];
        match self.take_string(slot)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(invalid(name, format!("`{name}` must not be empty"))),
            None => Err(Error::new(
                ErrorKind::MissingAttribute,
                format!("required attribute `{name}` is missing"),
            )
            .with_field(name)),
        }
    }

    /// The tenant: `default` when the event names none. A tenant equal to
    /// `default` shares it rather than holding a copy of its own.
    fn tenant(&mut self, default: Option<&TenantId>) -> Result<TenantId> {
        let slot = const { slot("tenantid") };
        if let Some(default) = default {
            match &self.known[slot] {
                None | Some(Value::Null) => return Ok(default.clone()),
                Some(Value::String(s)) if s == default.as_str() => return Ok(default.clone()),
                _ => {}
            }
        }
        TenantId::new(self.require(slot)?)
    }

    fn into_event(mut self, default_tenant: Option<&TenantId>) -> Result<Event> {
        if let Some(name) = self.repeated.take() {
            return Err(Error::new(
                ErrorKind::MalformedJson,
                format!("attribute `{name}` is given twice"),
            )
            .with_field(name));
        }
        let specversion = self.require(const { slot("specversion") })?;
        if specversion != SPEC_VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedSpecVersion,
                format!("specversion {specversion:?} is not supported; use \"1.0\""),
            )
            .with_field("specversion"));
        }
        let id = EventId::new(self.require(const { slot("id") })?)?;
        let source = self.require(const { slot("source") })?;
        let ty = EventType::new(self.require(const { slot("type") })?)?;
        let tenant = self.tenant(default_tenant)?;
        let time = self
            .take_string(const { slot("time") })?
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        invalid("time", "`time` must be an RFC 3339 timestamp").with_source(e)
                    })
            })
            .transpose()?;
        let subject = self.take_string(const { slot("subject") })?;
        let datacontenttype = self.take_string(const { slot("datacontenttype") })?;
        let dataschema = self.take_string(const { slot("dataschema") })?;
        let correlationid = self
            .take_string(const { slot("correlationid") })?
            .unwrap_or_else(|| id.0.to_string());
        if correlationid.is_empty() {
            return Err(invalid(
                "correlationid",
                "`correlationid` must not be empty",
            ));
        }
        let causationid = self.take_string(const { slot("causationid") })?;
        let traceparent = match self.take_string(const { slot("traceparent") })? {
            Some(tp) if is_traceparent(&tp) => tp,
            Some(tp) => {
                return Err(invalid(
                    "traceparent",
                    format!("traceparent {tp:?} is not a W3C trace context value"),
                ));
            }
            None => new_traceparent(),
        };
        let tracestate = self.take_string(const { slot("tracestate") })?;
        let partitionkey = self.take_string(const { slot("partitionkey") })?;
        for name in self.attributes.keys() {
            if !is_attribute_name(name) {
                return Err(invalid(
                    name,
                    format!("attribute name {name:?} must be lowercase letters and digits"),
                ));
            }
        }
        Ok(Event {
            id,
            source,
            ty,
            tenant,
            time,
            subject,
            datacontenttype,
            dataschema,
            correlationid,
            causationid,
            traceparent,
            tracestate,
            partitionkey,
            extensions: self.attributes,
            data: self.data.map(RawData),
        })
    }
}

/// Builds an [`Event`]; see [`Event::builder`].
#[derive(Debug)]
#[must_use]
pub struct EventBuilder {
    event: Event,
    /// Set when [`EventBuilder::source`] was called; `secbus` otherwise, made
    /// at build so that an event with its own source allocates no default.
    source_set: bool,
    error: Option<Error>,
}

impl EventBuilder {
    fn new(ty: EventType, tenant: TenantId) -> Self {
        let id = EventId::new_v7();
        EventBuilder {
            event: Event {
                correlationid: id.0.to_string(),
                id,
                source: String::new(),
                ty,
                tenant,
                time: None,
                subject: None,
                datacontenttype: None,
                dataschema: None,
                causationid: None,
                traceparent: new_traceparent(),
                tracestate: None,
                partitionkey: None,
                extensions: BTreeMap::new(),
                data: None,
            },
            source_set: false,
            error: None,
        }
    }

    /// Sets the id (by default a new UUIDv7). A root event's correlation id follows it.
    pub fn id(mut self, id: EventId) -> Self {
        if self.event.causationid.is_none() && *self.event.correlationid == *self.event.id.0 {
            self.event.correlationid = id.0.to_string();
        }
        self.event.id = id;
        self
    }

    /// Sets `source` (default `secbus`).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.event.source = source.into();
        self.source_set = true;
        self
    }

    /// Sets `data` to the JSON of `value` and `datacontenttype` to `application/json`.
    pub fn data(mut self, value: impl Serialize) -> Self {
        match to_raw(&value) {
            Ok(raw) => {
                self.event.data = Some(RawData(raw));
                self.event.datacontenttype = Some("application/json".to_owned());
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Sets `subject`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.event.subject = Some(subject.into());
        self
    }

    /// Sets `time` (by default the bus sets it at publish).
    pub fn time(mut self, time: DateTime<Utc>) -> Self {
        self.event.time = Some(time);
        self
    }

    /// Sets `dataschema`.
    pub fn dataschema(mut self, uri: impl Into<String>) -> Self {
        self.event.dataschema = Some(uri.into());
        self
    }

    /// Sets `partitionkey`: events with the same key are consumed in publish order.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.event.partitionkey = Some(key.into());
        self
    }

    /// Sets `correlationid` explicitly (by default the id, or the cause's correlation).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.event.correlationid = id.into();
        self
    }

    /// Sets `traceparent`; an invalid value makes [`EventBuilder::build`] fail.
    pub fn traceparent(mut self, value: impl Into<String>) -> Self {
        let value = value.into();
        if is_traceparent(&value) {
            self.event.traceparent = value;
        } else {
            self.error = Some(invalid(
                "traceparent",
                format!("{value:?} is not a W3C traceparent"),
            ));
        }
        self
    }

    /// Sets `tracestate`.
    pub fn tracestate(mut self, value: impl Into<String>) -> Self {
        self.event.tracestate = Some(value.into());
        self
    }

    /// Marks the event as caused by `parent`: `causationid` = the parent's id,
    /// `correlationid` = the parent's correlation id, and `traceparent` a new span
    /// in the parent's trace.
    pub fn caused_by(mut self, parent: &Event) -> Self {
        self.event.causationid = Some(parent.id.0.to_string());
        self.event.correlationid = parent.correlationid.clone();
        self.event.traceparent = child_traceparent(&parent.traceparent);
        if self.event.tracestate.is_none() {
            self.event.tracestate = parent.tracestate.clone();
        }
        self
    }

    /// Adds an extension attribute (name: lowercase letters and digits).
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if !is_attribute_name(&name) || name == "data" || attribute_slot(&name).is_some() {
            self.error = Some(invalid(
                &name,
                format!("{name:?} is not a free extension name"),
            ));
        } else {
            self.event.extensions.insert(name, value.into());
        }
        self
    }

    /// The event, or the first invalid value given to the builder.
    pub fn build(mut self) -> Result<Event> {
        match self.error {
            Some(e) => Err(e),
            None => {
                if !self.source_set {
                    self.event.source = "secbus".to_owned();
                }
                if self.event.source.is_empty() {
                    return Err(invalid("source", "`source` must not be empty"));
                }
                Ok(self.event)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        Event::builder(
            EventType::new("auth.login.failed").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .source("idp")
        .data(serde_json::json!({"user": "bob", "n": 1}))
        .build()
        .unwrap()
    }

    #[test]
    fn round_trip_keeps_every_attribute_and_unknown_extensions() {
        let mut e = ev();
        e.extensions.insert("vendorx".into(), Value::from(7));
        let bytes = e.to_json();
        let back = Event::from_json(&bytes).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.to_json(), bytes);
        assert_eq!(back.data_raw(), Some(r#"{"n":1,"user":"bob"}"#));
    }

    #[test]
    fn a_repeated_attribute_or_bytes_not_utf8_are_refused_and_a_null_attribute_is_absent() {
        let base = r#""specversion":"1.0","source":"s","type":"a.b","tenantid":"t""#;
        for repeated in [
            r#""id":"1","id":"2""#,
            r#""id":"1","vendorx":1,"vendorx":2"#,
            r#""id":"1","data":1,"data":2"#,
        ] {
            let json = format!("{{{base},{repeated}}}");
            let e = Event::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::MalformedJson, "{json}");
        }
        let mut not_utf8 = format!(r#"{{{base},"id":"1","subject":"x"}}"#).into_bytes();
        let at = not_utf8.len() - 3;
        not_utf8[at] = 0xff;
        let e = Event::from_json(&not_utf8).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MalformedJson);
        let json = format!(r#"{{{base},"id":"1","subject":null,"vendorx":"v"}}"#);
        let event = Event::from_json(json.as_bytes()).unwrap();
        assert_eq!(event.subject, None);
        assert_eq!(event.extensions.get("vendorx"), Some(&Value::from("v")));
        assert_eq!(event.extensions.len(), 1);
    }

    #[test]
    fn the_seed_decodes_each_event_of_an_array_on_its_own() {
        struct Each<'a>(EventSeed<'a>);
        impl<'de> Visitor<'de> for Each<'_> {
            type Value = Vec<Result<Event>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element_seed(self.0)? {
                    out.push(item);
                }
                Ok(out)
            }
        }
        let globex = TenantId::new("globex").unwrap();
        let good = String::from_utf8(ev().to_json()).unwrap();
        let no_tenant = r#"{"specversion":"1.0","id":"a1","source":"s","type":"a.b"}"#;
        let null_tenant = no_tenant.replace(r#""type""#, r#""tenantid":null,"type""#);
        let repeated = r#"{"specversion":"1.0","id":"a","id":"b","source":"s","type":"a.b"}"#;
        let big = String::from_utf8(
            Event::builder(EventType::new("a.b").unwrap(), TenantId::new("t").unwrap())
                .data("x".repeat(2000))
                .build()
                .unwrap()
                .to_json(),
        )
        .unwrap();
        let json = format!(
            "[{good},{no_tenant},{null_tenant},{repeated},[1,{{}}],7,\"e\",null,{big},{good}]"
        );
        let seed = EventSeed::new(1000).default_tenant(&globex);
        let mut d = serde_json::Deserializer::from_str(&json);
        let items = d.deserialize_seq(Each(seed)).unwrap();
        d.end().unwrap();
        assert_eq!(items.len(), 10);
        let tenant = |i: usize| items[i].as_ref().unwrap().tenant.as_str().to_owned();
        assert_eq!(tenant(0), "acme", "an event's own tenant is kept");
        assert_eq!((tenant(1), tenant(2)), ("globex".into(), "globex".into()));
        let refused = |i: usize| {
            let e = items[i].as_ref().unwrap_err();
            (e.kind(), e.field().map(str::to_owned))
        };
        assert_eq!(
            refused(3),
            (ErrorKind::MalformedJson, Some("id".to_owned()))
        );
        for i in 4..8 {
            assert_eq!(refused(i), (ErrorKind::MalformedJson, None), "item {i}");
        }
        assert_eq!(refused(8), (ErrorKind::EventTooLarge, None));
        assert_eq!(items[9].as_ref().unwrap().id, items[0].as_ref().unwrap().id);

        let broken = format!("[{good},{{\"id\":]");
        let mut d = serde_json::Deserializer::from_str(&broken);
        assert!(
            d.deserialize_seq(Each(seed)).is_err(),
            "a syntax error stops the array"
        );
        let e = EventSeed::new(1000)
            .decode(no_tenant.as_bytes())
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::MissingAttribute,
            "no default without one"
        );
        let trailing = format!("{good} {good}");
        let e = EventSeed::new(1000)
            .decode(trailing.as_bytes())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MalformedJson);
    }

    #[test]
    fn an_extension_may_not_take_an_attribute_name() {
        let build = |name: &str| {
            Event::builder(
                EventType::new("auth.login.failed").unwrap(),
                TenantId::new("acme").unwrap(),
            )
            .source("idp")
            .extension(name, 1)
            .build()
        };
        for taken in ["id", "tenantid", "partitionkey", "data", "", "Region"] {
            assert!(build(taken).is_err(), "{taken:?} was accepted");
        }
        let event = build("region").unwrap();
        assert_eq!(event.extensions.get("region"), Some(&Value::from(1)));
    }

    #[test]
    fn traceparent_is_checked_field_by_field() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_traceparent(good));
        assert!(is_traceparent(&new_traceparent()));
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "004-bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
        ];
        for value in bad {
            assert!(
                !is_traceparent(value),
                "{value:?} was taken for a traceparent"
            );
        }
    }

    #[test]
    fn decode_names_the_attribute_at_fault() {
        let cases: &[(&str, ErrorKind, Option<&str>)] = &[
            ("[]", ErrorKind::MalformedJson, None),
            (
                r#"{"specversion":"1.0","source":"s","type":"a.b","tenantid":"t"}"#,
                ErrorKind::MissingAttribute,
                Some("id"),
            ),
            (
                r#"{"specversion":"0.3","id":"1","source":"s","type":"a.b","tenantid":"t"}"#,
                ErrorKind::UnsupportedSpecVersion,
                Some("specversion"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"A.b","tenantid":"t"}"#,
                ErrorKind::InvalidAttribute,
                Some("type"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"a.b","tenantid":"T"}"#,
                ErrorKind::InvalidAttribute,
                Some("tenantid"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"a.b"}"#,
                ErrorKind::MissingAttribute,
                Some("tenantid"),
            ),
            (
                r#"{"specversion":"1.0","id":"a b","source":"s","type":"a.b","tenantid":"t"}"#,
                ErrorKind::InvalidAttribute,
                Some("id"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"a..b","tenantid":"t"}"#,
                ErrorKind::InvalidAttribute,
                Some("type"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"a.b","tenantid":"t","time":"yesterday"}"#,
                ErrorKind::InvalidAttribute,
                Some("time"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"a.b","tenantid":"t","traceparent":"00-x"}"#,
                ErrorKind::InvalidAttribute,
                Some("traceparent"),
            ),
            (
                r#"{"specversion":"1.0","id":1,"source":"s","type":"a.b","tenantid":"t"}"#,
                ErrorKind::InvalidAttribute,
                Some("id"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"a.b","tenantid":"t","Bad-Name":1}"#,
                ErrorKind::InvalidAttribute,
                Some("Bad-Name"),
            ),
        ];
        for (json, kind, field) in cases {
            let err = Event::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), *kind, "{json}: {err}");
            assert_eq!(err.field(), *field, "{json}: {err}");
        }
    }

    #[test]
    fn size_limit_is_enforced_on_bytes_and_on_built_events() {
        let bytes = ev().to_json();
        let err = Event::from_json_limited(&bytes, bytes.len() - 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::EventTooLarge);
        assert!(Event::from_json_limited(&bytes, bytes.len()).is_ok());
        let big = Event::builder(EventType::new("a.b").unwrap(), TenantId::new("t").unwrap())
            .data("x".repeat(2000))
            .build()
            .unwrap();
        assert_eq!(
            big.check_size(1000).unwrap_err().kind(),
            ErrorKind::EventTooLarge
        );
        let len = big.encoded_len();
        assert!(len >= big.to_json().len() - 40 && len <= big.to_json().len() + 40);
    }

    #[test]
    fn caused_by_links_the_story() {
        let root = ev();
        assert_eq!(root.correlationid, root.id.as_str());
        let child = Event::builder(
            EventType::new("detection.finding").unwrap(),
            root.tenant.clone(),
        )
        .caused_by(&root)
        .build()
        .unwrap();
        assert_eq!(child.causationid.as_deref(), Some(root.id.as_str()));
        assert_eq!(child.correlationid, root.correlationid);
        assert_eq!(child.traceparent[..35], root.traceparent[..35]);
        assert_ne!(child.traceparent, root.traceparent);
    }

    #[test]
    fn newtypes_validate() {
        assert!(TenantId::new("acme-1").is_ok());
        assert!(TenantId::new("").is_err());
        assert!(TenantId::new("a".repeat(64)).is_err());
        assert!(TenantId::new("Acme").is_err());
        assert!(EventType::new("auth.login.failed").is_ok());
        assert!(EventType::new("auth.*").is_err());
        assert!(EventType::new("auth.>").is_err());
        assert!(EventType::new(".auth").is_err());
        assert!(EventId::new("x".repeat(129)).is_err());
        assert!(EventId::new_v7().as_str().len() == 36);
    }
}
