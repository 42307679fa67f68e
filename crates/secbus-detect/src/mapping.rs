//! The mapping from secbus events to what Sigma rules read: a logsource per
//! event type and the field names rules use.

use std::collections::HashMap;
use std::path::Path;

use secbus::Event;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{DetectError, Result};

/// The mapping shipped with secbus, for the event catalog.
pub const DEFAULT_MAPPING: &str = include_str!("../mapping/default.yaml");

/// Event fields the logsource is read from: names no Sigma rule uses.
pub(crate) const PRODUCT_FIELD: &str = "secbus.logsource.product";
pub(crate) const CATEGORY_FIELD: &str = "secbus.logsource.category";
pub(crate) const SERVICE_FIELD: &str = "secbus.logsource.service";

/// A mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Per event type.
    #[serde(default)]
    types: HashMap<String, TypeMapping>,
}

/// How one event type is seen by the rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeMapping {
    /// The Sigma logsource; each value a literal or a `/pointer` into data.
    #[serde(default)]
    logsource: LogsourceMapping,
    /// Extra fields: Sigma field name to `/pointer` into data or `=literal`.
    #[serde(default)]
    fields: HashMap<String, String>,
    /// `fields`, compiled once at load: the mapping runs per event.
    #[serde(skip)]
    sources: Vec<(String, Source)>,
    /// `logsource`, compiled the same way, under the fields rules match on.
    #[serde(skip)]
    logsource_sources: Vec<(&'static str, Source)>,
}

/// Where a mapped value comes from.
#[derive(Debug, Clone)]
enum Source {
    Literal(String),
    /// A JSON pointer split into its unescaped tokens: serde_json's
    /// `Value::pointer` unescapes (and allocates) each token on every lookup.
    Pointer(Vec<String>),
}

impl Source {
    fn compile(source: &str) -> Source {
        match source.strip_prefix('=') {
            Some(literal) => Source::Literal(literal.to_owned()),
            None => Source::Pointer(
                source
                    .split('/')
                    .skip(1)
                    .map(|t| t.replace("~1", "/").replace("~0", "~"))
                    .collect(),
            ),
        }
    }

    fn resolve(&self, data: &[(String, Value)]) -> Option<Value> {
        match self {
            Source::Literal(literal) => Some(Value::String(literal.clone())),
            Source::Pointer(tokens) => lookup(tokens, data).cloned(),
        }
    }
}

/// The value at `tokens` in the object of `members`, as `Value::pointer`
/// finds it. A compiled pointer has at least one token: it starts with `/`.
fn lookup<'a>(tokens: &[String], members: &'a [(String, Value)]) -> Option<&'a Value> {
    let (first, rest) = tokens.split_first()?;
    // The last of a repeated name, as in a parsed map.
    let (_, value) = members.iter().rev().find(|(name, _)| name == first)?;
    rest.iter().try_fold(value, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => array_index(t).and_then(|i| a.get(i)),
        _ => None,
    })
}

/// An array index as RFC 6901 writes it: no sign, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsourceMapping {
    category: Option<String>,
    product: Option<String>,
    service: Option<String>,
}

impl Mapping {
    /// The shipped mapping.
    pub fn shipped() -> Mapping {
        Mapping::parse(DEFAULT_MAPPING, "the shipped mapping").unwrap_or(Mapping {
            types: HashMap::new(),
        })
    }

    /// Parses mapping YAML; `origin` names it in errors.
    pub fn parse(yaml: &str, origin: &str) -> Result<Mapping> {
        let mut mapping: Mapping = serde_norway::from_str(yaml)
            .map_err(|e| DetectError::mapping(format!("{origin}: {e}")))?;
        for (ty, m) in mapping.types.iter_mut() {
            let mut sources = Vec::with_capacity(m.fields.len());
            for (field, source) in &m.fields {
                if !(source.starts_with('/') || source.starts_with('=')) {
                    return Err(DetectError::mapping(format!(
                        "{origin}: types.{ty}.fields.{field}: {source:?} must be a /pointer into data or =literal"
                    )));
                }
                sources.push((field.clone(), Source::compile(source)));
            }
            m.sources = sources;
            let ls = &m.logsource;
            m.logsource_sources = [
                (CATEGORY_FIELD, &ls.category),
                (PRODUCT_FIELD, &ls.product),
                (SERVICE_FIELD, &ls.service),
            ]
            .into_iter()
            .filter_map(|(name, value)| {
                // A logsource value is a literal unless it is a pointer.
                let value = value.as_deref()?;
                let source = if value.starts_with('/') {
                    Source::compile(value)
                } else {
                    Source::Literal(value.to_owned())
                };
                Some((name, source))
            })
            .collect();
        }
        Ok(mapping)
    }

    /// Reads a mapping file.
    pub fn load(path: &Path) -> Result<Mapping> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DetectError::mapping(format!("cannot read {}: {e}", path.display())))?;
        Mapping::parse(&text, &path.display().to_string())
    }

    /// The event as the rules see it: one flat JSON object.
    pub fn to_sigma(&self, event: &Event) -> Value {
        // This runs once per event in front of every rule, so the object is
        // built in one go: its members are gathered in a list and sorted
        // once, rather than inserted one by one into the map, and the data's
        // members are moved into it, not copied.
        let Members(data) = event.data_as().ok().flatten().unwrap_or_default();
        let mut out = Vec::with_capacity(data.len() + 24);
        // Where two members share a name, the first pushed is kept: the
        // envelope, then the logsource, then mapped fields, then the data.
        out.push(("id".into(), Value::String(event.id.as_str().to_owned())));
        out.push((
            "tenantid".into(),
            Value::String(event.tenant.as_str().to_owned()),
        ));
        out.push(("type".into(), Value::String(event.ty.as_str().to_owned())));
        out.push(("source".into(), Value::String(event.source.clone())));
        if let Some(subject) = &event.subject {
            out.push(("subject".into(), Value::String(subject.clone())));
        }
        if let Some(time) = event.time {
            out.push(("time".into(), Value::String(time.to_rfc3339())));
        }
        match self.types.get(event.ty.as_str()) {
            Some(m) => {
                for (name, source) in &m.logsource_sources {
                    // Only a string names a logsource.
                    if let Some(v) = source.resolve(&data).filter(Value::is_string) {
                        out.push(((*name).into(), v));
                    }
                }
                for (field, source) in &m.sources {
                    if let Some(v) = source.resolve(&data) {
                        out.push((field.clone(), v));
                    }
                }
            }
            None => {
                out.push((PRODUCT_FIELD.into(), Value::String("secbus".into())));
                out.push((
                    SERVICE_FIELD.into(),
                    Value::String(event.ty.as_str().to_owned()),
                ));
            }
        }
        // Of a name repeated in the data, the last counts, as when parsing
        // into a map.
        out.extend(data.into_iter().rev());
        // Stable: members of one name stay in the order pushed.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|later, first| later.0 == first.0);
        Value::Object(out.into_iter().collect())
    }
}

/// A JSON object's members in document order, repeats included.
#[derive(Default)]
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secbus::{EventType, TenantId};
    use serde_json::json;

    #[test]
    fn a_process_event_gets_sigma_names_and_its_logsource() {
        let e = Event::builder(
            EventType::new("endpoint.process.created").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .source("edr")
        .data(json!({"host": "ws1", "os": "windows", "image": "C:\\x.exe", "command_line": "x -y"}))
        .build()
        .unwrap();
        let v = Mapping::shipped().to_sigma(&e);
        assert_eq!(v["Image"], "C:\\x.exe");
        assert_eq!(v["CommandLine"], "x -y");
        assert_eq!(
            v["image"], "C:\\x.exe",
            "data fields keep their own names too"
        );
        assert_eq!(v[PRODUCT_FIELD], "windows");
        assert_eq!(v[CATEGORY_FIELD], "process_creation");
        assert_eq!(v["tenantid"], "acme");
        assert_eq!(v["id"], e.id.as_str());
    }

    #[test]
    fn the_envelope_beats_mapped_fields_which_beat_the_data() {
        let mapping = Mapping::parse(
            "types:\n  a.b:\n    logsource: { product: /os }\n    fields: { host: /name, User: /user }\n",
            "m.yaml",
        )
        .unwrap();
        // Raw JSON, so that a name can repeat as it may on the wire.
        let json = r#"{"specversion":"1.0","id":"0190b3f2-3c4d-7e5f-8a6b-7c8d9e0f1a2b",
            "source":"s","type":"a.b","tenantid":"acme",
            "data":{"id":"from-data","host":"h-data","name":"h-mapped","os":"linux",
                    "secbus.logsource.product":"forged","user":"first","user":"last"}}"#;
        let e = Event::from_json(json.as_bytes()).unwrap();
        let v = mapping.to_sigma(&e);
        assert_eq!(v["id"], e.id.as_str(), "the envelope's id, not the data's");
        assert_eq!(v["host"], "h-mapped", "a mapped field over the data's own");
        assert_eq!(
            v[PRODUCT_FIELD], "linux",
            "the logsource is not taken from data"
        );
        assert_eq!(v["User"], "last", "of a repeated name, the last");
        assert_eq!(v["user"], "last");
        assert_eq!(
            v["name"], "h-mapped",
            "data fields keep their own names too"
        );
        let unmapped = Mapping::parse("types: {}\n", "m.yaml")
            .unwrap()
            .to_sigma(&e);
        assert_eq!(unmapped[PRODUCT_FIELD], "secbus");
        assert_eq!(unmapped[SERVICE_FIELD], "a.b");
        assert_eq!(unmapped["host"], "h-data");
    }

    #[test]
    fn a_bad_source_is_refused_naming_the_key() {
        let e = Mapping::parse("types:\n  a.b:\n    fields: {X: image}\n", "m.yaml").unwrap_err();
        assert!(e.to_string().contains("types.a.b.fields.X"), "{e}");
        assert!(Mapping::parse("typos: {}\n", "m.yaml").is_err());
    }

    #[test]
    fn a_compiled_pointer_finds_what_value_pointer_finds() {
        let data = json!({
            "a/b": {"m~n": [10, {"deep": "yes"}]},
            "list": [1, 2, 3],
            "s": "text",
        });
        let members: Vec<(String, Value)> = data.as_object().unwrap().clone().into_iter().collect();
        for pointer in [
            "/a~1b/m~0n/1/deep",
            "/a~1b/m~0n/0",
            "/list/2",
            "/list/02",
            "/list/+1",
            "/list/9",
            "/s/0",
            "/missing",
            "/",
        ] {
            let Source::Pointer(tokens) = Source::compile(pointer) else {
                panic!("{pointer} compiles to a pointer");
            };
            assert_eq!(
                lookup(&tokens, &members),
                data.pointer(pointer),
                "{pointer}"
            );
        }
        assert_eq!(
            lookup(
                &["a/b".into(), "m~n".into(), "1".into(), "deep".into()],
                &members
            ),
            Some(&json!("yes"))
        );
    }
}
