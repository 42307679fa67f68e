//! What a case works with: its harness, its buses, and the events it publishes.

use serde_json::{Value, json};
use tempfile::TempDir;

use super::harness::{Harness, Outage};
use crate::bus::{Bus, BusConfig};
use crate::error::Result;
use crate::event::{Event, EventType, TenantId};
use crate::subscription::TypePattern;

/// One case's view of the engine under test.
pub(crate) struct Cx<'a> {
    harness: &'a dyn Harness,
    /// Spool directories of the case's buses, removed when the case ends.
    dirs: parking_lot::Mutex<Vec<TempDir>>,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(harness: &'a dyn Harness) -> Self {
        Cx {
            harness,
            dirs: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// The default settings, with a spool of the case's own.
    fn config(&self, adjust: impl FnOnce(&mut BusConfig)) -> Result<BusConfig> {
        let dir = tempfile::Builder::new().prefix("secbus-spool-").tempdir()?;
        let mut config = BusConfig {
            spool_dir: dir.path().to_path_buf(),
            ..BusConfig::default()
        };
        self.dirs.lock().push(dir);
        adjust(&mut config);
        Ok(config)
    }

    /// A fresh bus with default settings.
    pub(crate) async fn open(&self) -> Result<Bus> {
        self.open_with(|_| {}).await
    }

    /// A fresh bus with settings changed by `adjust`.
    pub(crate) async fn open_with(&self, adjust: impl FnOnce(&mut BusConfig)) -> Result<Bus> {
        self.harness.open_with(self.config(adjust)?).await
    }

    /// A fresh bus whose engine can be made unreachable.
    pub(crate) async fn open_with_outage(
        &self,
        adjust: impl FnOnce(&mut BusConfig),
    ) -> Result<(Bus, Box<dyn Outage>)> {
        self.harness.open_with_outage(self.config(adjust)?).await
    }

    /// `bus` closed and its store opened again.
    pub(crate) async fn reopen(&self, bus: Bus) -> Result<Bus> {
        self.harness.reopen(bus).await
    }
}

/// The tenant most cases publish to.
pub(crate) fn acme() -> TenantId {
    TenantId::new("acme").expect("a valid tenant")
}

/// A second tenant, which must never see `acme`'s events (nor the reverse).
pub(crate) fn globex() -> TenantId {
    TenantId::new("globex").expect("a valid tenant")
}

pub(crate) fn ty(ty: &str) -> EventType {
    EventType::new(ty).expect("a valid event type")
}

pub(crate) fn pattern(pattern: &str) -> TypePattern {
    TypePattern::new(pattern).expect("a valid type pattern")
}

/// An event of `tenant` and `ty` whose data is `{"n": n}`.
pub(crate) fn event(tenant: &TenantId, ty: &str, n: u64) -> Event {
    event_with(tenant, ty, json!({ "n": n }))
}

/// An event of `tenant` and `ty` with `data`.
pub(crate) fn event_with(tenant: &TenantId, ty: &str, data: Value) -> Event {
    Event::builder(self::ty(ty), tenant.clone())
        .source("secbus-conformance")
        .data(data)
        .build()
        .expect("a valid event")
}

/// An event with partition key `key` whose data is `{"key": key, "n": n}`.
pub(crate) fn keyed(tenant: &TenantId, key: &str, n: u64) -> Event {
    Event::builder(ty("edr.process.started"), tenant.clone())
        .source("secbus-conformance")
        .partition_key(key)
        .data(json!({ "key": key, "n": n }))
        .build()
        .expect("a valid event")
}

/// The `n` in an event's data.
pub(crate) fn n_of(event: &Event) -> u64 {
    event
        .data()
        .and_then(|d| d.get("n").and_then(Value::as_u64))
        .unwrap_or_else(|| panic!("event {} has no data.n", event.id))
}

/// The ids of events, as strings, in order.
pub(crate) fn ids<'e>(events: impl IntoIterator<Item = &'e Event>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| e.id.as_str().to_owned())
        .collect()
}

/// The same ids, sorted: for comparing what a group received, in any order.
pub(crate) fn sorted_ids<'e>(events: impl IntoIterator<Item = &'e Event>) -> Vec<String> {
    let mut v = ids(events);
    v.sort();
    v
}
