//! The registry: one compiled [`Contract`] per event type, from the catalog built
//! into the crate (`specs/events/`) and from schema folders a deployment adds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::{Draft, Validator};
use secbus::EventType;
use serde_json::Value;

use crate::error::LoadError;
use crate::hash_marks::HashMarks;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/catalog.rs"));
}

/// Where a contract was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The catalog built into secbus.
    Builtin,
    /// A file of a schema folder.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in catalog"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The contract of one event type: its JSON Schema, compiled.
pub struct Contract {
    ty: EventType,
    id: String,
    version: u32,
    summary: String,
    schema: Value,
    validator: Validator,
    hash_marks: HashMarks,
    origin: Origin,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("type", &self.ty.as_str())
            .field("id", &self.id)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Contract {
    /// Compiles one schema document; `source` names it in errors.
    ///
    /// The document must be a draft 2020-12 schema with `x-secbus-type` (a valid
    /// event type) and a `$id` ending in `/v<N>.json`. Formats are asserted, not
    /// only annotated, so `"format": "ipv4"` refuses a value that is not one.
    pub fn compile(schema: Value, origin: Origin) -> Result<Contract, LoadError> {
        let source = origin.to_string();
        let invalid = |reason: String| LoadError::InvalidSchema {
            origin: source.clone(),
            reason,
        };
        let object = schema
            .as_object()
            .ok_or_else(|| invalid("the schema is not a JSON object".into()))?;
        let text = |key: &str| -> Result<String, LoadError> {
            object
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("`{key}` is missing or not a string")))
        };
        let ty = text("x-secbus-type")?;
        let ty = EventType::new(ty).map_err(|e| invalid(format!("`x-secbus-type`: {e}")))?;
        let id = text("$id")?;
        let version = version_of(&id).ok_or_else(|| {
            invalid(format!(
                "`$id` {id:?} must end in /v<N>.json (the schema's version)"
            ))
        })?;
        let summary = match object.get("x-secbus-summary") {
            Some(Value::String(s)) => s.clone(),
            _ => text("title")?,
        };
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| invalid(format!("not a valid JSON Schema: {e}")))?;
        let hash_marks = HashMarks::of_schema(&schema);
        Ok(Contract {
            ty,
            id,
            version,
            summary,
            schema,
            validator,
            hash_marks,
            origin,
        })
    }

    /// The event type.
    pub fn event_type(&self) -> &EventType {
        &self.ty
    }

    /// The schema's `$id` (set as the event's `dataschema`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version, from the `$id`.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The one-line description (`x-secbus-summary`, else `title`).
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The schema document.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The compiled validator of `data`.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Where the schema marks hashes and fingerprints (`x-secbus-hash`).
    pub fn hash_marks(&self) -> &HashMarks {
        &self.hash_marks
    }

    /// Where the schema came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

/// `https://.../v3.json` -> 3.
fn version_of(id: &str) -> Option<u32> {
    let last = id.rsplit('/').next()?;
    let digits = last.strip_prefix('v')?.strip_suffix(".json")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every known event type's contract.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    contracts: BTreeMap<String, Arc<Contract>>,
}

impl Registry {
    /// A registry with no types: every event is of an unknown type.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The catalog shipped with secbus (`specs/events/`).
    pub fn builtin() -> Result<Registry, LoadError> {
        let mut registry = Registry::empty();
        for (name, text) in builtin::BUILTIN {
            let schema = parse(text, &format!("built-in {name}"))?;
            let contract = Contract::compile(schema, Origin::Builtin)?;
            check_file_name(&contract, name)?;
            registry.insert(contract);
        }
        Ok(registry)
    }

    /// The raw files of the built-in catalog: (file name, JSON text).
    pub fn builtin_files() -> &'static [(&'static str, &'static str)] {
        builtin::BUILTIN
    }

    /// A registry of exactly the schemas in `dir`.
    pub fn from_dir(dir: &Path) -> Result<Registry, LoadError> {
        let mut registry = Registry::empty();
        registry.load_dir(dir)?;
        Ok(registry)
    }

    /// Adds every `<type>.json` file of `dir` (other files are ignored); a type
    /// already known is replaced, so a deployment can ship a newer version of a
    /// built-in type. Returns how many schemas were loaded. Nothing is added
    /// when any file is invalid.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, LoadError> {
        let io = |e: std::io::Error| LoadError::Io {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|x| x == "json") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut loaded = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| LoadError::Io {
                path: path.clone(),
                source: e,
            })?;
            let schema = parse(&text, &path.display().to_string())?;
            let contract = Contract::compile(schema, Origin::File(path.clone()))?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            check_file_name(&contract, name)?;
            loaded.push(contract);
        }
        let n = loaded.len();
        for contract in loaded {
            self.insert(contract);
        }
        Ok(n)
    }

    /// Adds (or replaces) one contract.
    pub fn insert(&mut self, contract: Contract) {
        self.contracts
            .insert(contract.ty.as_str().to_owned(), Arc::new(contract));
    }

    /// The contract of `ty`, if the type is known.
    pub fn get(&self, ty: &str) -> Option<&Arc<Contract>> {
        self.contracts.get(ty)
    }

    /// Every contract, by type name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Contract>> {
        self.contracts.values()
    }

    /// How many types are known.
    pub fn len(&self) -> usize {
        self.contracts.len()
    }

    /// True when no type is known.
    pub fn is_empty(&self) -> bool {
        self.contracts.is_empty()
    }
}

fn parse(text: &str, source: &str) -> Result<Value, LoadError> {
    serde_json::from_str(text).map_err(|e| LoadError::InvalidSchema {
        origin: source.to_owned(),
        reason: format!("not JSON: {e}"),
    })
}

/// A file is named after its type, so a folder listing is the catalog's index.
fn check_file_name(contract: &Contract, name: &str) -> Result<(), LoadError> {
    let expected = format!("{}.json", contract.ty);
    if name == expected {
        Ok(())
    } else {
        Err(LoadError::InvalidSchema {
            origin: contract.origin.to_string(),
            reason: format!(
                "the file {name} holds type {}; it must be named {expected}",
                contract.ty
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_id() {
        assert_eq!(
            version_of("https://secbus.dev/schemas/events/a.b/v1.json"),
            Some(1)
        );
        assert_eq!(version_of("https://x/v12.json"), Some(12));
        for bad in [
            "https://x/v.json",
            "https://x/1.json",
            "https://x/v1",
            "v-1.json",
        ] {
            assert_eq!(version_of(bad), None, "{bad}");
        }
    }
}
