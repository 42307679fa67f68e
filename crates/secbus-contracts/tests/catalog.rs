//! The built-in catalog, loaded through the registry: every schema compiles,
//! every example passes the whole gate, and the catalog's conventions hold.

use std::sync::Arc;

use secbus::{Event, EventType, Gate, TenantId};
use secbus_contracts::{ContractsGate, Origin, Registry, SecretGuard};
use serde_json::Value;

fn event(ty: &str, data: &Value) -> Event {
    Event::builder(EventType::new(ty).unwrap(), TenantId::new("acme").unwrap())
        .source("catalog-test")
        .data(data)
        .build()
        .unwrap()
}

#[test]
fn the_builtin_catalog_loads_every_file() {
    let registry = Registry::builtin().unwrap();
    assert_eq!(registry.len(), Registry::builtin_files().len());
    assert!(registry.len() >= 47, "{} types", registry.len());
    for contract in registry.iter() {
        assert_eq!(contract.origin(), &Origin::Builtin);
        let id = contract.id();
        assert_eq!(
            id,
            format!(
                "https://secbus.dev/schemas/events/{}/v{}.json",
                contract.event_type(),
                contract.version()
            )
        );
        assert!(!contract.summary().is_empty());
    }
}

#[test]
fn every_catalog_schema_accepts_its_examples_through_the_gate() {
    let registry = Arc::new(Registry::builtin().unwrap());
    let gate = ContractsGate::new(registry.clone());
    let mut checked = 0;
    for contract in registry.iter() {
        let examples = contract.schema()["examples"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !examples.is_empty(),
            "{} has no example",
            contract.event_type()
        );
        for (i, example) in examples.iter().enumerate() {
            let ty = contract.event_type().as_str();
            assert!(
                contract.validator().is_valid(example),
                "{ty} example {i} fails its schema"
            );
            let mut e = event(ty, example);
            if let Err(err) = gate.check(&mut e) {
                panic!("{ty} example {i} is refused: {err} {:?}", err.details());
            }
            assert_eq!(e.dataschema.as_deref(), Some(contract.id()));
            // The gate stores the example unchanged.
            assert_eq!(e.data().as_ref(), Some(example));
            checked += 1;
        }
    }
    assert!(checked >= 47);
    assert_eq!(
        gate.refusals()
            .by_code()
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        0
    );
}

#[test]
fn an_example_with_an_unknown_property_is_refused() {
    let registry = Registry::builtin().unwrap();
    for contract in registry.iter() {
        let mut example = contract.schema()["examples"][0].clone();
        example["surely_not_a_field"] = Value::from(1);
        assert!(
            !contract.validator().is_valid(&example),
            "{} accepts an unknown property",
            contract.event_type()
        );
    }
}

#[test]
fn hash_fields_of_the_catalog_are_marked_and_exempt() {
    let registry = Registry::builtin().unwrap();
    let guard = SecretGuard::new();
    let marked: Vec<&str> = registry
        .iter()
        .filter(|c| !c.hash_marks().is_empty())
        .map(|c| c.event_type().as_str())
        .collect();
    for ty in [
        "auth.signature.verified",
        "evidence.collected",
        "endpoint.process.created",
    ] {
        assert!(marked.contains(&ty), "{ty} has no hash marks: {marked:?}");
    }
    for contract in registry.iter() {
        for example in contract.schema()["examples"].as_array().unwrap() {
            let found = guard.scan(example, contract.hash_marks());
            assert!(found.is_empty(), "{}: {found:?}", contract.event_type());
        }
    }
}
