//! The mapping from secbus events to what Sigma rules read: a logsource per
//! event type and the field names rules use.

use std::collections::HashMap;
use std::path::Path;

use secbus::Event;
use serde::Deserialize;
use serde_json::{Map, Value};

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

    fn resolve(&self, data: &Value) -> Option<Value> {
        match self {
            Source::Literal(literal) => Some(Value::String(literal.clone())),
            Source::Pointer(tokens) => lookup(tokens, data).cloned(),
        }
    }
}

/// The value at `tokens` in `data`, as `Value::pointer` finds it.
fn lookup<'a>(tokens: &[String], data: &'a Value) -> Option<&'a Value> {
    tokens.iter().try_fold(data, |v, t| match v {
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
        // Parsed straight into a map whose fields are moved, not copied: this
        // runs once per event in front of every rule.
        let data: Map<String, Value> = event.data_as().ok().flatten().unwrap_or_default();
        let data = Value::Object(data);
        let mut out = Map::new();
        let m = self.types.get(event.ty.as_str());
        if let Some(m) = m {
            for (field, source) in &m.sources {
                if let Some(v) = source.resolve(&data) {
                    out.insert(field.clone(), v);
                }
            }
            for (name, source) in &m.logsource_sources {
                // Only a string names a logsource.
                if let Some(v) = source.resolve(&data).filter(Value::is_string) {
                    out.insert((*name).into(), v);
                }
            }
        } else {
            out.insert(PRODUCT_FIELD.into(), Value::String("secbus".into()));
            out.insert(
                SERVICE_FIELD.into(),
                Value::String(event.ty.as_str().to_owned()),
            );
        }
        if let Value::Object(fields) = data {
            for (k, v) in fields {
                out.entry(k).or_insert(v);
            }
        }
        out.insert("id".into(), Value::String(event.id.as_str().to_owned()));
        out.insert(
            "tenantid".into(),
            Value::String(event.tenant.as_str().to_owned()),
        );
        out.insert("type".into(), Value::String(event.ty.as_str().to_owned()));
        out.insert("source".into(), Value::String(event.source.clone()));
        if let Some(subject) = &event.subject {
            out.insert("subject".into(), Value::String(subject.clone()));
        }
        if let Some(time) = event.time {
            out.insert("time".into(), Value::String(time.to_rfc3339()));
        }
        Value::Object(out)
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
            assert_eq!(lookup(&tokens, &data), data.pointer(pointer), "{pointer}");
        }
        assert_eq!(
            lookup(
                &["a/b".into(), "m~n".into(), "1".into(), "deep".into()],
                &data
            ),
            Some(&json!("yes"))
        );
    }
}
