//! The secret guard: finds credentials in an event's `data` (every key and every
//! string, plus values of fields named like a credential) and says where and
//! what shape, never the value.
//!
//! The shapes are the table in [`patterns`]. Values at places the schema marks
//! `"x-secbus-hash": true` are not scanned: hashes and fingerprints look random
//! by design and reveal no credential.

mod entropy;
mod patterns;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;
use serde_json::{Map, Value};

use crate::hash_marks::HashMarks;
use entropy::shannon_entropy;
use patterns::{
    CREDENTIAL_KEY_QUALIFIERS, CREDENTIAL_WORDS, DETECTORS, NUMERIC_CREDENTIAL_WORDS,
    QUANTITY_WORDS,
};

/// The detector name of the field-name rule.
pub const CREDENTIAL_FIELD: &str = "credential_field";

/// No detector's shape is shorter than this (`ab://u:p@h`), so shorter strings
/// skip the anchor search.
const SHORTEST_MATCH: usize = 10;

/// What to do with an event that carries a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretMode {
    /// Refuse it with `secret_detected` (the default).
    #[default]
    Refuse,
    /// Store it with each credential replaced by `[REDACTED:<detector>]`.
    Redact,
}

/// Where a credential was found and which detector found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A JSON pointer into `data`. For a credential in an object's *key*, the
    /// pointer of the object (the key itself is never shown).
    pub pointer: String,
    /// The detector's name (see the table in `patterns.rs`).
    pub detector: &'static str,
    /// True when the credential is a key of the object at `pointer`.
    pub in_key: bool,
    /// The exact place, for redaction; keys in it are not shown anywhere.
    location: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// What a field's name says about its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    Plain,
    /// Named like a credential: a non-empty string is one.
    Credential,
    /// Named like a password: a number is one too.
    Password,
}

/// The compiled detectors; build once and share (cheap to use from many threads).
#[derive(Debug)]
pub struct SecretGuard {
    anchors: AhoCorasick,
    /// Anchor pattern id -> detector index.
    anchor_detector: Vec<usize>,
    regexes: Vec<Regex>,
    field_wholes: Vec<Option<Regex>>,
}

impl Default for SecretGuard {
    fn default() -> Self {
        SecretGuard::new()
    }
}

impl SecretGuard {
    /// Compiles the detector table.
    pub fn new() -> SecretGuard {
        let mut anchor_words = Vec::new();
        let mut anchor_detector = Vec::new();
        for (index, detector) in DETECTORS.iter().enumerate() {
            for anchor in detector.anchors {
                anchor_words.push(*anchor);
                anchor_detector.push(index);
            }
        }
        // The table is constant and a unit test compiles it, so these cannot
        // fail at run time.
        let anchors = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            // A few KB of tables buy the fastest scan: every string of every event passes here.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&anchor_words)
            .expect("the anchors of the detector table compile");
        let regexes = DETECTORS
            .iter()
            .map(|d| Regex::new(d.pattern).expect("the detector table's patterns compile"))
            .collect();
        let field_wholes = DETECTORS
            .iter()
            .map(|d| {
                d.field
                    .as_ref()
                    .map(|f| Regex::new(f.whole).expect("the detector table's patterns compile"))
            })
            .collect();
        SecretGuard {
            anchors,
            anchor_detector,
            regexes,
            field_wholes,
        }
    }

    /// The names of every detector, in table order, without repeats.
    pub fn detector_names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for d in DETECTORS {
            if !names.contains(&d.name) {
                names.push(d.name);
            }
        }
        names.push(CREDENTIAL_FIELD);
        names
    }

    /// The detector whose shape `text` has, if any. `field` is the name of the
    /// field holding it (some shapes need a name to be told from random text).
    pub fn detect(&self, text: &str, field: Option<&str>) -> Option<&'static str> {
        if let Some(name) = field
            && let Some(found) = self.detect_by_field(text, name)
        {
            return Some(found);
        }
        if text.len() < SHORTEST_MATCH {
            return None;
        }
        // One pass over the text for every anchor; a bit per detector to run.
        let mut run: u64 = 0;
        for m in self.anchors.find_overlapping_iter(text) {
            run |= 1 << self.anchor_detector[m.pattern().as_usize()];
        }
        while run != 0 {
            let index = run.trailing_zeros() as usize;
            run &= run - 1;
            if self.matches(index, text) {
                return Some(DETECTORS[index].name);
            }
        }
        None
    }

    fn matches(&self, index: usize, text: &str) -> bool {
        let detector = &DETECTORS[index];
        let regex = &self.regexes[index];
        for caps in regex.captures_iter(text) {
            let secret = caps
                .name("secret")
                .or_else(|| caps.get(0))
                .map_or("", |m| m.as_str());
            if is_placeholder(secret) {
                continue;
            }
            if detector.min_entropy > 0.0 && shannon_entropy(secret) < detector.min_entropy {
                continue;
            }
            if character_classes(secret) < detector.min_classes {
                continue;
            }
            return true;
        }
        false
    }

    fn detect_by_field(&self, text: &str, name: &str) -> Option<&'static str> {
        for (index, detector) in DETECTORS.iter().enumerate() {
            let (Some(rule), Some(whole)) = (&detector.field, &self.field_wholes[index]) else {
                continue;
            };
            if text.len() == rule.length
                && rule.words.iter().any(|w| contains_ignore_case(name, w))
                && whole.is_match(text)
                && shannon_entropy(text) >= detector.min_entropy
                && character_classes(text) >= detector.min_classes
            {
                return Some(detector.name);
            }
        }
        None
    }

    /// Every credential in `data`, in document order. `marks` says where the
    /// schema holds hashes (not scanned).
    pub fn scan(&self, data: &Value, marks: &HashMarks) -> Vec<Finding> {
        let mut found = Vec::new();
        let mut path = Vec::new();
        let marks = (!marks.is_empty()).then_some(marks);
        self.walk(data, None, Naming::Plain, marks, &mut path, &mut found);
        found
    }

    /// Replaces each credential of `findings` (from [`SecretGuard::scan`] of the
    /// same `data`) with `[REDACTED:<detector>]`. A credential in a key replaces
    /// the whole member with `"[REDACTED:<detector>]": "[REDACTED:<detector>]"`.
    pub fn redact(data: &mut Value, findings: &[Finding]) {
        for finding in findings {
            let marker = Value::String(redaction(finding.detector));
            if finding.in_key {
                let Some((Step::Key(key), parent)) = finding.location.split_last() else {
                    continue;
                };
                if let Some(Value::Object(object)) = locate(data, parent) {
                    object.remove(key);
                    insert_unique(object, finding.detector, marker);
                }
            } else if let Some(slot) = locate(data, &finding.location) {
                *slot = marker;
            }
        }
    }

    fn walk<'a>(
        &self,
        value: &'a Value,
        name: Option<&'a str>,
        naming: Naming,
        marks: Option<&HashMarks>,
        path: &mut Vec<Seg<'a>>,
        found: &mut Vec<Finding>,
    ) {
        match value {
            Value::Object(object) => {
                for (key, child) in object {
                    if let Some(detector) = self.detect(key, None) {
                        let mut location = owned(path);
                        let pointer = pointer_of(&location);
                        location.push(Step::Key(key.clone()));
                        found.push(Finding {
                            pointer,
                            detector,
                            in_key: true,
                            location,
                        });
                        // The member goes whole: nothing under a secret key is shown.
                        continue;
                    }
                    path.push(Seg::Key(key));
                    let child_marks = marks.and_then(|m| m.property(key));
                    self.walk(child, Some(key), naming_of(key), child_marks, path, found);
                    path.pop();
                }
            }
            Value::Array(items) => {
                // Items carry their array's name: `"tokens": ["..."]`.
                let child_marks = marks.and_then(HashMarks::items);
                for (index, item) in items.iter().enumerate() {
                    path.push(Seg::Index(index));
                    self.walk(item, name, naming, child_marks, path, found);
                    path.pop();
                }
            }
            Value::String(text) => {
                if marks.is_some_and(HashMarks::is_hash) {
                    return;
                }
                let detector = self.detect(text, name).or_else(|| {
                    (naming != Naming::Plain && is_credential_value(text))
                        .then_some(CREDENTIAL_FIELD)
                });
                if let Some(detector) = detector {
                    let location = owned(path);
                    found.push(Finding {
                        pointer: pointer_of(&location),
                        detector,
                        in_key: false,
                        location,
                    });
                }
            }
            Value::Number(_) if naming == Naming::Password => {
                let location = owned(path);
                found.push(Finding {
                    pointer: pointer_of(&location),
                    detector: CREDENTIAL_FIELD,
                    in_key: false,
                    location,
                });
            }
            _ => {}
        }
    }
}

/// How many of lowercase, uppercase and digits occur in `text`.
fn character_classes(text: &str) -> u8 {
    let (mut lower, mut upper, mut digit) = (false, false, false);
    for b in text.bytes() {
        lower |= b.is_ascii_lowercase();
        upper |= b.is_ascii_uppercase();
        digit |= b.is_ascii_digit();
    }
    u8::from(lower) + u8::from(upper) + u8::from(digit)
}

/// The text a redacted value becomes.
pub fn redaction(detector: &str) -> String {
    format!("[REDACTED:{detector}]")
}

fn owned(path: &[Seg<'_>]) -> Vec<Step> {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => Step::Key((*k).to_owned()),
            Seg::Index(i) => Step::Index(*i),
        })
        .collect()
}

/// An RFC 6901 JSON pointer.
fn pointer_of(location: &[Step]) -> String {
    let mut pointer = String::new();
    for step in location {
        pointer.push('/');
        match step {
            Step::Key(k) => pointer.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => pointer.push_str(&i.to_string()),
        }
    }
    pointer
}

fn locate<'v>(mut value: &'v mut Value, location: &[Step]) -> Option<&'v mut Value> {
    for step in location {
        value = match (step, value) {
            (Step::Key(k), Value::Object(o)) => o.get_mut(k)?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

fn insert_unique(object: &mut Map<String, Value>, detector: &str, marker: Value) {
    let mut key = redaction(detector);
    let mut n = 2;
    while object.contains_key(&key) {
        key = format!("[REDACTED:{detector}:{n}]");
        n += 1;
    }
    object.insert(key, marker);
}

/// Splits a field name into lowercase words at `_ - . space` and at
/// lowercase-to-uppercase changes (`apiKey` -> `api`, `key`).
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// `needle` (lowercase ASCII) occurs in `hay`, ignoring ASCII case; no allocation.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay.windows(needle.len()).any(|w| {
            w.iter()
                .zip(needle)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        })
}

fn naming_of(name: &str) -> Naming {
    // Most names are short plain words: skip the split for names that cannot match.
    let hints = ["pass", "pwd", "secret", "token", "key", "credential"];
    if !hints.iter().any(|h| contains_ignore_case(name, h)) {
        return Naming::Plain;
    }
    let words = words(name);
    let Some(last) = words.last() else {
        return Naming::Plain;
    };
    if words
        .first()
        .is_some_and(|w| QUANTITY_WORDS.contains(&w.as_str()))
    {
        return Naming::Plain;
    }
    if NUMERIC_CREDENTIAL_WORDS.contains(&last.as_str()) {
        return Naming::Password;
    }
    if CREDENTIAL_WORDS.contains(&last.as_str()) {
        return Naming::Credential;
    }
    if last == "key"
        && words.len() >= 2
        && CREDENTIAL_KEY_QUALIFIERS.contains(&words[words.len() - 2].as_str())
    {
        return Naming::Credential;
    }
    Naming::Plain
}

/// A value of a credential-named field counts when it is not a placeholder, has
/// four characters or more, and is not one character repeated (entropy floor).
fn is_credential_value(text: &str) -> bool {
    let text = text.trim();
    text.chars().count() >= 4 && !is_placeholder(text) && shannon_entropy(text) >= 1.5
}

/// Masks, redactions and references to where a secret is kept (`${DB_PASSWORD}`,
/// `{{ vault "x" }}`) are not secrets.
fn is_placeholder(text: &str) -> bool {
    let text = text.trim();
    if text.is_empty() {
        return true;
    }
    if text
        .chars()
        .all(|c| matches!(c, '*' | 'x' | 'X' | '#' | '.' | '-' | '_' | '•' | ' '))
    {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("[redacted") || lower.starts_with("<redacted") {
        return true;
    }
    if matches!(
        lower.as_str(),
        "[masked]" | "<masked>" | "masked" | "redacted" | "hidden" | "none" | "null" | "n/a"
    ) {
        return true;
    }
    (text.starts_with("${") && text.ends_with('}'))
        || (text.starts_with("{{") && text.ends_with("}}"))
        || (text.starts_with('$')
            && text.len() > 1
            && text[1..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_compiles_and_fits_the_bitset() {
        assert!(DETECTORS.len() <= 64);
        let guard = SecretGuard::new();
        assert_eq!(guard.regexes.len(), DETECTORS.len());
    }

    #[test]
    fn field_names_split_into_words() {
        assert!(contains_ignore_case("AWS_Secret", "secret"));
        assert!(!contains_ignore_case("sec", "secret"));
        assert_eq!(words("apiKey"), ["api", "key"]);
        assert_eq!(
            words("AWS_SECRET_ACCESS_KEY"),
            ["aws", "secret", "access", "key"]
        );
        assert_eq!(words("client-secret.v2"), ["client", "secret", "v2"]);
        assert_eq!(naming_of("db_password"), Naming::Password);
        assert_eq!(naming_of("apiKey"), Naming::Credential);
        assert_eq!(naming_of("refresh_token"), Naming::Credential);
        for plain in [
            "key_id",
            "token_type",
            "max_tokens",
            "partition_key",
            "user",
            "secret_name",
        ] {
            assert_eq!(naming_of(plain), Naming::Plain, "{plain}");
        }
    }

    #[test]
    fn redaction_replaces_values_and_secret_keys() {
        let guard = SecretGuard::new();
        let mut data = json!({
            "note": "key AKIAIOSFODNN7EXAMPLE here",
            "list": [{"password": "S3cure-Passw0rd"}],
            "AKIAIOSFODNN7EXAMPLE": {"nested": "value"}
        });
        let found = guard.scan(&data, &HashMarks::default());
        let pointers: Vec<(&str, &str, bool)> = found
            .iter()
            .map(|f| (f.pointer.as_str(), f.detector, f.in_key))
            .collect();
        assert_eq!(
            pointers,
            [
                ("", "aws_access_key_id", true),
                ("/list/0/password", "credential_field", false),
                ("/note", "aws_access_key_id", false),
            ]
        );
        SecretGuard::redact(&mut data, &found);
        let text = data.to_string();
        assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "{text}");
        assert!(!text.contains("S3cure"), "{text}");
        assert_eq!(data["note"], "[REDACTED:aws_access_key_id]");
        assert_eq!(
            data["[REDACTED:aws_access_key_id]"],
            "[REDACTED:aws_access_key_id]"
        );
        assert!(guard.scan(&data, &HashMarks::default()).is_empty());
    }
}
