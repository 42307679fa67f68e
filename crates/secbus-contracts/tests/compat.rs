//! `compat::check`: each kind of breaking change is flagged, compatible changes
//! are not, and a new version makes a breaking change allowed.

use std::path::Path;

use secbus_contracts::Registry;
use secbus_contracts::compat::{self, ChangeKind};
use serde_json::{Value, json};

/// Writes the built-in catalog into `dir`, with `edit` applied to the schema of `ty`.
fn catalog(dir: &Path, ty: &str, edit: impl FnOnce(&mut Value)) {
    let mut edit = Some(edit);
    for (name, text) in Registry::builtin_files() {
        let mut schema: Value = serde_json::from_str(text).unwrap();
        if *name == format!("{ty}.json")
            && let Some(edit) = edit.take()
        {
            edit(&mut schema);
        }
        std::fs::write(
            dir.join(name),
            serde_json::to_string_pretty(&schema).unwrap(),
        )
        .unwrap();
    }
}

fn compare(ty: &str, edit: impl FnOnce(&mut Value)) -> compat::Report {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    catalog(old.path(), ty, |_| {});
    catalog(new.path(), ty, edit);
    compat::check(
        &Registry::from_dir(old.path()).unwrap(),
        &Registry::from_dir(new.path()).unwrap(),
    )
}

fn kinds(report: &compat::Report) -> Vec<(String, ChangeKind)> {
    report
        .changes
        .iter()
        .map(|c| (c.path.clone(), c.kind))
        .collect()
}

const LOGIN: &str = "auth.login.failed";

/// A change made to a schema.
type Edit = Box<dyn FnOnce(&mut Value)>;

#[test]
fn the_same_catalog_is_compatible() {
    let report = compare(LOGIN, |_| {});
    assert!(report.changes.is_empty(), "{:?}", report.changes);
    assert!(report.is_compatible());
    assert_eq!(report.compared, Registry::builtin_files().len());
}

#[test]
fn breaking_changes_are_flagged_by_kind() {
    let cases: Vec<(&str, Edit, &str, ChangeKind)> = vec![
        (
            "removed property",
            Box::new(|s| {
                s["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("user_agent");
            }),
            "/user_agent",
            ChangeKind::RemovedProperty,
        ),
        (
            "new required property",
            Box::new(|s| s["required"].as_array_mut().unwrap().push(json!("method"))),
            "/method",
            ChangeKind::NewRequiredProperty,
        ),
        (
            "narrowed type",
            Box::new(|s| s["properties"]["mfa"]["type"] = json!("null")),
            "/mfa",
            ChangeKind::NarrowedType,
        ),
        (
            "integer to string",
            Box::new(|s| s["properties"]["consecutive_failures"]["type"] = json!("string")),
            "/consecutive_failures",
            ChangeKind::NarrowedType,
        ),
        (
            "removed enum value",
            Box::new(|s| {
                s["properties"]["reason"]["enum"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|v| v != "rate_limited");
            }),
            "/reason",
            ChangeKind::RemovedEnumValue,
        ),
        (
            "tighter limit",
            Box::new(|s| s["properties"]["user"]["maxLength"] = json!(64)),
            "/user",
            ChangeKind::NarrowedLimit,
        ),
        (
            "new pattern",
            Box::new(|s| s["properties"]["user"]["pattern"] = json!("^[a-z]+$")),
            "/user",
            ChangeKind::NarrowedLimit,
        ),
    ];
    for (name, edit, path, kind) in cases {
        let report = compare(LOGIN, edit);
        assert_eq!(
            kinds(&report),
            [(path.to_owned(), kind)],
            "{name}: {:?}",
            report.changes
        );
        assert!(!report.is_compatible(), "{name}");
        let text = report.changes[0].to_string();
        assert!(
            text.starts_with(&format!("{LOGIN} {}", kind.code())),
            "{text}"
        );
    }
}

#[test]
fn nested_and_array_changes_are_found() {
    let report = compare("incident.created", |s| {
        let entity = &mut s["properties"]["entities"]["items"];
        entity["properties"]["type"]["enum"]
            .as_array_mut()
            .unwrap()
            .retain(|v| v != "device");
        entity["required"]
            .as_array_mut()
            .unwrap()
            .push(json!("sha256"));
    });
    let found = kinds(&report);
    assert!(
        found.contains(&("/entities/*/type".to_owned(), ChangeKind::RemovedEnumValue)),
        "{found:?}"
    );
    assert!(
        found.contains(&(
            "/entities/*/sha256".to_owned(),
            ChangeKind::NewRequiredProperty
        )),
        "{found:?}"
    );
}

#[test]
fn compatible_changes_are_not_flagged() {
    let report = compare(LOGIN, |s| {
        s["properties"]["new_optional"] = json!({"type": "string", "description": "x"});
        s["properties"]["reason"]["enum"]
            .as_array_mut()
            .unwrap()
            .push(json!("new_reason"));
        s["properties"]["user"]["maxLength"] = json!(1024);
        s["properties"]["consecutive_failures"]["type"] = json!("number");
        s["required"]
            .as_array_mut()
            .unwrap()
            .retain(|r| r != "reason");
    });
    assert!(report.changes.is_empty(), "{:?}", report.changes);
}

#[test]
fn a_new_version_allows_a_breaking_change() {
    let report = compare(LOGIN, |s| {
        s["properties"].as_object_mut().unwrap().remove("mfa");
        s["$id"] = json!(format!("https://secbus.dev/schemas/events/{LOGIN}/v2.json"));
    });
    assert_eq!(report.changes.len(), 1);
    assert!(report.changes[0].versioned);
    assert!(report.is_compatible());
}

#[test]
fn a_removed_type_breaks_and_an_added_one_does_not() {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    catalog(old.path(), LOGIN, |_| {});
    catalog(new.path(), LOGIN, |_| {});
    std::fs::remove_file(new.path().join("alert.sent.json")).unwrap();
    std::fs::remove_file(old.path().join("alert.failed.json")).unwrap();
    let report = compat::check(
        &Registry::from_dir(old.path()).unwrap(),
        &Registry::from_dir(new.path()).unwrap(),
    );
    assert_eq!(report.added, ["alert.failed"]);
    assert_eq!(kinds(&report), [(String::new(), ChangeKind::RemovedType)]);
    assert_eq!(report.changes[0].ty, "alert.sent");
    assert!(!report.is_compatible());
}

#[test]
fn a_folder_with_a_bad_schema_is_refused_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.b.json"), "{not json").unwrap();
    let e = Registry::from_dir(dir.path()).unwrap_err();
    assert_eq!(e.code(), "invalid_schema");
    std::fs::write(
        dir.path().join("a.b.json"),
        r#"{"$id": "https://x/a.b/v1.json", "x-secbus-type": "c.d", "title": "t", "type": "object"}"#,
    )
    .unwrap();
    let e = Registry::from_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("must be named c.d.json"), "{e}");
    std::fs::write(
        dir.path().join("a.b.json"),
        r#"{"$id": "https://x/a.b/v1.json", "x-secbus-type": "a.b", "title": "t", "type": "object", "minLength": "x"}"#,
    )
    .unwrap();
    let e = Registry::from_dir(dir.path()).unwrap_err();
    assert_eq!(e.code(), "invalid_schema", "{e}");
    let e = Registry::from_dir(&dir.path().join("missing")).unwrap_err();
    assert_eq!(e.code(), "io_error");
}
