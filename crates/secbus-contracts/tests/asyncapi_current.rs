//! specs/asyncapi.yaml is generated from the catalog and committed: this test
//! fails when it is stale. To refresh it:
//! `cargo run -p secbus-server -- asyncapi --output specs/asyncapi.yaml`
//! (or run this test with SECBUS_BLESS=1).

use std::path::PathBuf;

use secbus_contracts::Registry;
use secbus_contracts::asyncapi;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../specs/asyncapi.yaml")
}

#[test]
fn the_committed_asyncapi_document_is_current() {
    let registry = Registry::builtin().unwrap();
    let generated = asyncapi::to_yaml(&registry);
    let path = committed_path();
    if std::env::var_os("SECBUS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or(
                committed.lines().count().min(generated.lines().count()),
                |i| i,
            );
        panic!(
            "specs/asyncapi.yaml is stale (first difference at line {}); run \
             `cargo run -p secbus-server -- asyncapi --output specs/asyncapi.yaml`",
            line + 1
        );
    }
}

#[test]
fn the_document_has_a_channel_and_message_per_type() {
    let registry = Registry::builtin().unwrap();
    let doc: serde_json::Value = serde_norway::from_value(asyncapi::document(&registry)).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let channels = doc["channels"].as_object().unwrap();
    let messages = doc["components"]["messages"].as_object().unwrap();
    assert_eq!(channels.len(), registry.len());
    assert_eq!(messages.len(), registry.len());
    for contract in registry.iter() {
        let ty = contract.event_type().as_str();
        let channel = &channels[ty];
        assert_eq!(channel["address"], format!("secbus.{{tenant}}.{ty}"));
        assert_eq!(
            channel["parameters"]["tenant"]["$ref"],
            "#/components/parameters/tenant"
        );
        let message = &messages[ty];
        assert_eq!(message["name"], ty);
        assert_eq!(message["payload"]["$id"], contract.id());
        assert!(message["payload"].get("$schema").is_none());
        assert_eq!(
            message["traits"][0]["$ref"],
            "#/components/messageTraits/cloudevent"
        );
        assert_eq!(doc["operations"][format!("publish.{ty}")]["action"], "send");
    }
    let headers = &doc["components"]["schemas"]["CloudEventAttributes"];
    for attribute in [
        "specversion",
        "id",
        "source",
        "type",
        "tenantid",
        "correlationid",
        "traceparent",
    ] {
        assert!(
            headers["properties"].get(attribute).is_some(),
            "{attribute}"
        );
    }
}
