//! secbus: the event spine for security platforms.
//!
//! Application code publishes and consumes [`Event`]s (CloudEvents 1.0 with
//! `tenantid`, `correlationid`, `causationid` and W3C trace context) through two
//! traits, [`Publisher`] and [`Subscriber`]. The engine behind them is a URL:
//!
//! | URL | engine |
//! |---|---|
//! | `memory:` | in-process, nothing kept (tests) |
//! | `embedded:./secbus-data` | the default: one node, durable (SQLite) |
//!
//! ```no_run
//! use secbus::{Bus, Event, EventType, Publisher, Subscriber, SubscribeOptions, TenantId};
//! # async fn run() -> secbus::Result<()> {
//! let bus = Bus::connect("embedded:./secbus-data").await?;
//! let acme = TenantId::new("acme")?;
//! let mut workers = bus.subscribe(SubscribeOptions::group(acme.clone(), "workers")).await?;
//! let event = Event::builder(EventType::new("auth.login.failed")?, acme)
//!     .data(serde_json::json!({"user": "bob", "ip": "203.0.113.9"}))
//!     .build()?;
//! bus.publish(event).await?;
//! if let Some(delivery) = workers.next().await {
//!     let delivery = delivery?;
//!     println!("{}", delivery.event().ty);
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod bus;
pub mod delivery;
mod engine;
mod error;
mod event;
mod fallback;
mod gate;
pub mod handler;
mod history;
mod local;
mod subscription;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use bus::{Bus, BusConfig, Publisher, Receipt, ScopedPublisher, Subscriber};
pub use delivery::{DeadLetter, Delivery};
pub use engine::{
    Acker, Appended, Capabilities, Engine, EngineDelivery, EngineStream, GroupLag, Record,
};
pub use error::{Error, ErrorDetail, ErrorKind, Result};
pub use event::{
    DEFAULT_MAX_EVENT_BYTES, Event, EventBuilder, EventId, EventSeed, EventType, SPEC_VERSION,
    TenantId,
};
pub use fallback::{DEFAULT_SPOOL_MAX_BYTES, FallbackOutcome, Spool};
pub use gate::{Gate, Scope};
pub use handler::{Handler, HandlerContext, HandlerError, Worker};
pub use history::{DEFAULT_HISTORY_IDLE, HistoryPage, HistoryQuery};
pub use subscription::{
    DEFAULT_MAX_DELIVERIES, Mode, StartAt, SubscribeOptions, Subscription, TypePattern,
};
