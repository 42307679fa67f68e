//! The secbus contracts gate.
//!
//! A security platform's events are a contract between teams. This crate holds
//! that contract and enforces it on every publish:
//!
//! - [`Registry`]: one JSON Schema (draft 2020-12, formats asserted) per event
//!   type, from the catalog built in (`specs/events/`) and from schema folders
//!   a deployment adds ([`ContractsConfig`]).
//! - [`ContractsGate`]: a [`secbus::Gate`]; give it to [`secbus::Bus::with_gate`]
//!   and every publish path refuses unknown types (`unknown_event_type`), data
//!   that breaks its schema (`schema_violation`, with the JSON pointer and keyword
//!   of each failure) and credentials (`secret_detected`, naming the place and
//!   the detector, never the value), and sets `dataschema`.
//! - [`SecretGuard`]: the credential detectors (one table, `secrets/patterns.rs`).
//! - [`asyncapi`]: the AsyncAPI 3.0 document of the registry.
//! - [`compat`]: breaking changes between two catalogs.
//!
//! ```
//! use std::sync::Arc;
//! use secbus::{Event, EventType, Gate, TenantId};
//! use secbus_contracts::{ContractsGate, Registry};
//!
//! let gate = ContractsGate::new(Arc::new(Registry::builtin().unwrap()));
//! let mut event = Event::builder(
//!     EventType::new("auth.login.failed").unwrap(),
//!     TenantId::new("acme").unwrap(),
//! )
//! .source("idp")
//! .data(serde_json::json!({"user": "bob", "src_ip": "203.0.113.9", "reason": "bad_password"}))
//! .build()
//! .unwrap();
//! gate.check(&mut event).unwrap();
//! assert_eq!(
//!     event.dataschema.as_deref(),
//!     Some("https://secbus.dev/schemas/events/auth.login.failed/v1.json")
//! );
//! ```

pub mod asyncapi;
pub mod compat;
mod config;
mod error;
mod gate;
mod hash_marks;
mod registry;
mod secrets;

pub use config::ContractsConfig;
pub use error::LoadError;
pub use gate::{ContractsGate, MAX_DETAILS, Refusals};
pub use hash_marks::HashMarks;
pub use registry::{Contract, Origin, Registry};
pub use secrets::{CREDENTIAL_FIELD, Finding, SecretGuard, SecretMode, redaction};
