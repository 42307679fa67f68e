//! Where a schema marks hashes and fingerprints (`"x-secbus-hash": true`): the
//! secret guard does not flag the values found there, because a SHA-256 or a key
//! fingerprint is high-entropy by design and names no credential.

use std::collections::HashMap;

use serde_json::Value;

/// A tree of the places in `data` that hold hashes, mirroring the schema's
/// `properties` and `items` (array positions are not distinguished).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HashMarks {
    hash: bool,
    properties: HashMap<String, HashMarks>,
    /// Members not named in `properties` (`additionalProperties`, `patternProperties`).
    other_properties: Option<Box<HashMarks>>,
    items: Option<Box<HashMarks>>,
}

impl HashMarks {
    /// The marks of a schema; subschemas of `allOf`, `anyOf`, `oneOf`,
    /// `then` and `else` add theirs to the same place.
    pub fn of_schema(schema: &Value) -> HashMarks {
        let mut marks = HashMarks::default();
        marks.add(schema);
        marks.prune();
        marks
    }

    fn add(&mut self, schema: &Value) {
        let Some(object) = schema.as_object() else {
            return;
        };
        if object.get("x-secbus-hash") == Some(&Value::Bool(true)) {
            self.hash = true;
        }
        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, sub) in properties {
                self.properties.entry(name.clone()).or_default().add(sub);
            }
        }
        if let Some(sub @ Value::Object(_)) = object.get("additionalProperties") {
            self.other_properties.get_or_insert_default().add(sub);
        }
        if let Some(Value::Object(patterns)) = object.get("patternProperties") {
            for sub in patterns.values() {
                self.other_properties.get_or_insert_default().add(sub);
            }
        }
        if let Some(sub) = object.get("items") {
            self.items.get_or_insert_default().add(sub);
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(subs)) = object.get(key) {
                for sub in subs {
                    self.add(sub);
                }
            }
        }
        for key in ["then", "else"] {
            if let Some(sub) = object.get(key) {
                self.add(sub);
            }
        }
    }

    /// Drops branches without a mark, so scanning unmarked data skips the tree.
    fn prune(&mut self) -> bool {
        self.properties.retain(|_, sub| sub.prune());
        if self
            .other_properties
            .as_mut()
            .is_some_and(|sub| !sub.prune())
        {
            self.other_properties = None;
        }
        if self.items.as_mut().is_some_and(|sub| !sub.prune()) {
            self.items = None;
        }
        self.hash
            || !self.properties.is_empty()
            || self.other_properties.is_some()
            || self.items.is_some()
    }

    /// True when the schema marks nothing.
    pub fn is_empty(&self) -> bool {
        !self.hash
            && self.properties.is_empty()
            && self.other_properties.is_none()
            && self.items.is_none()
    }

    /// Whether the value at this place is a hash.
    pub fn is_hash(&self) -> bool {
        self.hash
    }

    /// The marks of the member `name` of an object at this place.
    pub fn property(&self, name: &str) -> Option<&HashMarks> {
        self.properties
            .get(name)
            .or(self.other_properties.as_deref())
    }

    /// The marks of the items of an array at this place.
    pub fn items(&self) -> Option<&HashMarks> {
        self.items.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn marks_follow_properties_items_and_combinators() {
        let schema = json!({
            "type": "object",
            "properties": {
                "sha256": {"type": "string", "x-secbus-hash": true},
                "name": {"type": "string"},
                "files": {"type": "array", "items": {"type": "object", "properties": {
                    "md5": {"type": "string", "x-secbus-hash": true}
                }}}
            },
            "allOf": [{"properties": {"fp": {"x-secbus-hash": true}}}]
        });
        let marks = HashMarks::of_schema(&schema);
        assert!(marks.property("sha256").unwrap().is_hash());
        assert!(marks.property("fp").unwrap().is_hash());
        assert!(
            marks.property("name").is_none(),
            "unmarked branches are pruned"
        );
        let md5 = marks
            .property("files")
            .unwrap()
            .items()
            .unwrap()
            .property("md5");
        assert!(md5.unwrap().is_hash());
        assert!(HashMarks::of_schema(&json!({"properties": {"a": {}}})).is_empty());
    }
}
