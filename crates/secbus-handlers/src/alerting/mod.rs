//! Alerting: rules route matching events to outputs, with throttling, and
//! every delivery or failure is itself published as an event.
//!
//! - **Rules** ([`RuleConfig`]): a type pattern, a minimum severity (the
//!   event's `data.severity` word, or OCSF `data.severity_id` as
//!   `detection.finding` carries it), tenants, and conditions on fields
//!   (`equals`, `contains`, `in`, on JSON pointers into the event such as
//!   `/data/user`). Every condition given must hold.
//! - **Outputs** ([`OutputConfig`]): `webhook` (the alert as JSON, signed
//!   with `X-Secbus-Signature: sha256=<hex HMAC-SHA256 of the body>`, see
//!   [`verify_signature`]), `slack` (`{"text": ...}`) and `log`. Each attempt
//!   has a timeout; a timeout, a refused connection, HTTP 429 or 5xx is tried
//!   again after `backoff_ms`, doubling, up to `retries` more times.
//! - **Outcomes**: after a delivery, an `alert.sent`; after each failed
//!   attempt, an `alert.failed` with `will_retry` (false on the last). Both
//!   have `causationid` = the triggering event, so the story reads
//!   event -> (finding ->) alert. A rule never matches the `alert.*` events
//!   about itself.
//! - **Throttling**: with `throttle_window_ms`, after an alert of a rule and
//!   key (the tenant and the value at `throttle_key`), more within the window
//!   are suppressed and counted; the next one sent carries `suppressed_count`.
//!   Windows live in memory: a restart forgets them.
//! - **Delivery is at-least-once**: an event redelivered (its ack lost)
//!   alerts again unless its window throttles it.

mod config;
mod handler;
mod output;
mod rule;
mod severity;
mod signature;
mod throttle;

use secbus::handler::Worker;
use secbus::{Bus, SubscribeOptions, TenantId};

pub use config::{AlertingConfig, FieldCondition, OutputConfig, OutputKind, RuleConfig};
pub use handler::AlertingHandler;
pub use severity::Severity;
pub use signature::{SIGNATURE_HEADER, signature, verify_signature};

use crate::error::{Error, Result};
use crate::workers::Workers;

/// Whether `s` is a rule id or output name: `[a-z0-9][a-z0-9_.-]{0,63}`.
fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 64
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

impl AlertingConfig {
    /// Checks the settings once, at load, naming the first wrong one.
    pub fn validate(&self) -> Result<()> {
        AlertingHandler::new(self)?;
        self.subscriptions().map(drop)
    }

    fn subscriptions(&self) -> Result<Vec<SubscribeOptions>> {
        if self.tenants.is_empty() {
            return Err(Error::config("alerting.tenants names no tenant"));
        }
        if self.concurrency == 0 {
            return Err(Error::config("alerting.concurrency must be at least 1"));
        }
        self.tenants
            .iter()
            .map(|t| {
                let tenant = TenantId::new(t.clone())
                    .map_err(|e| Error::config(format!("alerting.tenants: {}", e.message())))?;
                let options = SubscribeOptions::group(tenant, self.group.clone())
                    .max_in_flight(self.concurrency);
                options
                    .validate()
                    .map_err(|e| Error::config(format!("alerting: {}", e.message())))?;
                Ok(options)
            })
            .collect()
    }
}

/// Starts the alerting handler on `bus`: a [`Worker`] per tenant on the
/// configured group. `bus` should carry the contracts gate, so the
/// `alert.sent` / `alert.failed` events it publishes are checked like any other.
pub async fn spawn(bus: &Bus, config: &AlertingConfig) -> Result<Workers> {
    let handler = AlertingHandler::new(config)?;
    let mut workers = Workers::default();
    for options in config.subscriptions()? {
        let handle = Worker::new(bus.clone(), options)
            .concurrency(config.concurrency)
            .start(handler.clone())
            .await?;
        workers.push(handle);
    }
    Ok(workers)
}
