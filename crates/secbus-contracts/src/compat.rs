//! Breaking changes between two catalogs (`secbus schema check-compat OLD NEW`).
//!
//! A change breaks consumers or producers of a type when data valid under one
//! schema is refused under the other in the direction that matters:
//! - a removed type or a removed property (consumers read it);
//! - a new required property, or an optional one made required (producers do
//!   not send it);
//! - a narrowed type (`["string", "null"]` to `"string"`, `number` to `integer`);
//! - a removed enum value, or an enum where there was none;
//! - a tighter limit (`maxLength`, `minimum`, ...), a new or changed `pattern`
//!   or `format`, or an object closed with `additionalProperties: false`.
//!
//! A breaking change is allowed with a new version (the `/v<N>.json` of `$id`
//! goes up): the report still lists it, but [`Report::is_compatible`] holds.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::registry::Registry;

/// What kind of breaking change.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A type of the old catalog is not in the new one.
    RemovedType,
    /// A property is gone.
    RemovedProperty,
    /// A property is required that was not.
    NewRequiredProperty,
    /// A value's type accepts less.
    NarrowedType,
    /// An enum lost a value (or an enum now restricts a free value).
    RemovedEnumValue,
    /// A limit, pattern or format accepts less.
    NarrowedLimit,
}

impl ChangeKind {
    /// A stable short name.
    pub fn code(self) -> &'static str {
        match self {
            ChangeKind::RemovedType => "removed_type",
            ChangeKind::RemovedProperty => "removed_property",
            ChangeKind::NewRequiredProperty => "new_required_property",
            ChangeKind::NarrowedType => "narrowed_type",
            ChangeKind::RemovedEnumValue => "removed_enum_value",
            ChangeKind::NarrowedLimit => "narrowed_limit",
        }
    }
}

/// One breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The event type.
    pub ty: String,
    /// Where in the schema: a JSON pointer of the data (`/actor/user`, `/items/0`
    /// written `/*` for array items).
    pub path: String,
    /// What changed.
    pub kind: ChangeKind,
    /// In words.
    pub detail: String,
    /// The type's version went up with the change, so it is allowed.
    pub versioned: bool,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(
            f,
            "{} {} at {path}: {}",
            self.ty,
            self.kind.code(),
            self.detail
        )?;
        if self.versioned {
            f.write_str(" (allowed: the version went up)")?;
        }
        Ok(())
    }
}

/// Every breaking change from an old catalog to a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The changes, by type then place.
    pub changes: Vec<Change>,
    /// Types compared (present in both).
    pub compared: usize,
    /// Types only in the new catalog.
    pub added: Vec<String>,
}

impl Report {
    /// True when no change breaks without a new version.
    pub fn is_compatible(&self) -> bool {
        self.changes.iter().all(|c| c.versioned)
    }
}

/// Compares two catalogs.
pub fn check(old: &Registry, new: &Registry) -> Report {
    let mut report = Report::default();
    for before in old.iter() {
        let ty = before.event_type().as_str();
        let Some(after) = new.get(ty) else {
            report.changes.push(Change {
                ty: ty.to_owned(),
                path: String::new(),
                kind: ChangeKind::RemovedType,
                detail: "the type is gone".to_owned(),
                versioned: false,
            });
            continue;
        };
        report.compared += 1;
        let versioned = after.version() > before.version();
        let mut found = Vec::new();
        compare(before.schema(), after.schema(), "", &mut found);
        report
            .changes
            .extend(found.into_iter().map(|(path, kind, detail)| Change {
                ty: ty.to_owned(),
                path,
                kind,
                detail,
                versioned,
            }));
    }
    report.added = new
        .iter()
        .map(|c| c.event_type().as_str())
        .filter(|ty| old.get(ty).is_none())
        .map(str::to_owned)
        .collect();
    report
}

type Found = Vec<(String, ChangeKind, String)>;

fn compare(old: &Value, new: &Value, path: &str, found: &mut Found) {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return;
    };
    compare_types(o.get("type"), n.get("type"), path, found);
    compare_enums(o.get("enum"), n.get("enum"), path, found);
    compare_limits(o, n, path, found);

    let empty = serde_json::Map::new();
    let old_props = o
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new_props = n
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new_closed = n.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, old_sub) in old_props {
        let at = format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"));
        match new_props.get(name) {
            Some(new_sub) => compare(old_sub, new_sub, &at, found),
            None => found.push((
                at,
                ChangeKind::RemovedProperty,
                format!(
                    "property {name} is gone{}",
                    if new_closed { " (and now refused)" } else { "" }
                ),
            )),
        }
    }
    let required = |m: &serde_json::Map<String, Value>| -> BTreeSet<String> {
        m.get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let old_required = required(o);
    for name in required(n).difference(&old_required) {
        let was = if old_props.contains_key(name) {
            "optional"
        } else {
            "new"
        };
        found.push((
            format!("{path}/{name}"),
            ChangeKind::NewRequiredProperty,
            format!("property {name} ({was}) is required"),
        ));
    }
    let old_open = o.get("additionalProperties") != Some(&Value::Bool(false));
    if old_open
        && new_closed
        && (o.contains_key("properties") || o.get("type") == Some(&"object".into()))
    {
        found.push((
            path.to_owned(),
            ChangeKind::NarrowedLimit,
            "the object is closed (additionalProperties: false)".to_owned(),
        ));
    }
    if let (Some(old_items), Some(new_items)) = (o.get("items"), n.get("items")) {
        compare(old_items, new_items, &format!("{path}/*"), found);
    }
    if let (Some(old_extra @ Value::Object(_)), Some(new_extra @ Value::Object(_))) =
        (o.get("additionalProperties"), n.get("additionalProperties"))
    {
        compare(old_extra, new_extra, &format!("{path}/*"), found);
    }
}

fn type_set(value: Option<&Value>) -> Option<BTreeSet<String>> {
    match value? {
        Value::String(s) => Some(BTreeSet::from([s.clone()])),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

fn compare_types(old: Option<&Value>, new: Option<&Value>, path: &str, found: &mut Found) {
    let Some(new_types) = type_set(new) else {
        return; // no type: anything goes
    };
    let lost: Vec<String> = match type_set(old) {
        None => vec!["any".to_owned()],
        Some(old_types) => old_types
            .into_iter()
            .filter(|t| {
                !(new_types.contains(t) || (t == "integer" && new_types.contains("number")))
            })
            .collect(),
    };
    if !lost.is_empty() {
        found.push((
            path.to_owned(),
            ChangeKind::NarrowedType,
            format!(
                "the type no longer accepts {} (now {})",
                lost.join(", "),
                new_types.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
}

fn compare_enums(old: Option<&Value>, new: Option<&Value>, path: &str, found: &mut Found) {
    let Some(Value::Array(new_values)) = new else {
        return;
    };
    match old {
        Some(Value::Array(old_values)) => {
            for value in old_values {
                if !new_values.contains(value) {
                    found.push((
                        path.to_owned(),
                        ChangeKind::RemovedEnumValue,
                        format!("enum value {value} is gone"),
                    ));
                }
            }
        }
        _ => found.push((
            path.to_owned(),
            ChangeKind::RemovedEnumValue,
            "an enum now restricts the value".to_owned(),
        )),
    }
}

fn compare_limits(
    o: &serde_json::Map<String, Value>,
    n: &serde_json::Map<String, Value>,
    path: &str,
    found: &mut Found,
) {
    // (keyword, true when a larger value accepts less)
    const LIMITS: [(&str, bool); 10] = [
        ("maxLength", false),
        ("maxItems", false),
        ("maxProperties", false),
        ("maximum", false),
        ("exclusiveMaximum", false),
        ("minLength", true),
        ("minItems", true),
        ("minProperties", true),
        ("minimum", true),
        ("exclusiveMinimum", true),
    ];
    for (keyword, larger_is_tighter) in LIMITS {
        let new = n.get(keyword).and_then(Value::as_f64);
        let old = o.get(keyword).and_then(Value::as_f64);
        let tighter = match (old, new) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) if larger_is_tighter => new > old,
            (Some(old), Some(new)) => new < old,
        };
        if tighter {
            found.push((
                path.to_owned(),
                ChangeKind::NarrowedLimit,
                format!(
                    "{keyword} is {} (was {})",
                    n[keyword],
                    o.get(keyword).map_or("none".to_owned(), Value::to_string)
                ),
            ));
        }
    }
    for keyword in ["pattern", "format", "const"] {
        if let Some(new) = n.get(keyword)
            && o.get(keyword) != Some(new)
        {
            found.push((
                path.to_owned(),
                ChangeKind::NarrowedLimit,
                format!(
                    "{keyword} is {new} (was {})",
                    o.get(keyword).map_or("none".to_owned(), Value::to_string)
                ),
            ));
        }
    }
}
