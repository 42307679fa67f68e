//! The handlers security teams run on secbus, each a [`secbus::Handler`] run by
//! a [`secbus::Worker`] on a consumer group:
//!
//! - [`audit`]: a tamper-evident audit trail per tenant, checked by
//!   [`audit::verify_path`] (`secbus audit verify`).
//! - [`alerting`]: rules that route matching events to webhooks, Slack-compatible
//!   hooks and the log, throttled, each delivery published back as
//!   `alert.sent` / `alert.failed`.
//! - [`metrics`]: counters per tenant and type, handler latency, consumer lag
//!   and dead-letter depth, in a prometheus-client `Registry`.
//!
//! Each has a serde config (`deny_unknown_fields`) and a `spawn` that starts
//! its workers on a bus; a handler of your own is any [`secbus::Handler`]
//! (see `examples/custom_handler.rs`).

pub mod alerting;
pub mod audit;
mod error;
pub mod metrics;
mod workers;

pub use error::{Error, ErrorKind, Result};
pub use workers::Workers;
