//! Handlers and the [`Worker`] that runs them over a consumer group.
//!
//! A [`Handler`] is the application's code for one event. A [`Worker`] subscribes
//! to a consumer group, calls the handler for each delivery (several at once, up
//! to a bound), and settles the delivery from the handler's answer:
//!
//! | the handler returns | the worker | the event |
//! |---|---|---|
//! | `Ok(())` | acks | is done for this group |
//! | [`HandlerError::Retry`] | nacks with the subscription's backoff | comes back, up to `max_deliveries`, then goes to the dead letters with the error as its last error |
//! | [`HandlerError::RetryAfter`] | nacks with the given delay | as above |
//! | [`HandlerError::Permanent`] | terms | goes to the dead letters now |
//!
//! Cross-cutting policies wrap a handler as [`Layer`]s, one file each, the way
//! tower wraps a service and Watermill's router middleware wraps a handler:
//! [`TimeoutLayer`] (a call running too long fails with `Retry`), [`RetryLayer`]
//! (retries in-process before the failure reaches the worker) and
//! [`DeadLetterLayer`] (decides which failures are permanent). Chain them with
//! [`HandlerExt::with`]; the last layer added is the outermost:
//!
//! ```no_run
//! use std::time::Duration;
//! use secbus::handler::{
//!     DeadLetterLayer, HandlerError, HandlerExt, RetryLayer, TimeoutLayer, Worker, handler_fn,
//! };
//! use secbus::{Bus, SubscribeOptions, TenantId};
//! # async fn run() -> secbus::Result<()> {
//! let bus = Bus::connect("memory:").await?;
//! let acme = TenantId::new("acme")?;
//! let handler = handler_fn(|ctx, event| async move {
//!     let user: serde_json::Value = event.data_as()?.ok_or_else(|| {
//!         HandlerError::permanent("login event without data")
//!     })?;
//!     let finding = ctx
//!         .caused(secbus::EventType::new("detection.finding")?)
//!         .data(serde_json::json!({"user": user}))
//!         .build()?;
//!     ctx.publish(finding).await?;
//!     Ok(())
//! })
//! // Each try gets 5 s; up to 2 quick retries in-process; then the worker's
//! // redelivery takes over.
//! .with(TimeoutLayer::new(Duration::from_secs(5)))
//! .with(RetryLayer::new(2))
//! .with(DeadLetterLayer::new().max_attempts(5));
//! let worker = Worker::new(bus, SubscribeOptions::group(acme, "findings"))
//!     .concurrency(16)
//!     .start(handler)
//!     .await?;
//! // ... later, on shutdown:
//! let stats = worker.shutdown().await?;
//! println!("{} handled, {} dead-lettered", stats.handled, stats.dead_lettered);
//! # Ok(()) }
//! ```

mod context;
mod dead_letter;
mod error;
mod retry;
mod timeout;
mod worker;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::event::Event;

pub use context::HandlerContext;
pub use dead_letter::{DeadLetterHandler, DeadLetterLayer};
pub use error::HandlerError;
pub use retry::{Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
pub use worker::{Worker, WorkerHandle, WorkerStats};

/// Application code for one event.
///
/// Contract:
/// - Delivery is at-least-once: `handle` may see the same event again (after a
///   failure, a timeout, a crash, or an ack wait that ran out). Make the effect
///   idempotent; events published through [`HandlerContext::caused`] already are
///   within the dedup window.
/// - The tenant is [`HandlerContext::tenant`], which is the event's own
///   `tenantid` (and, checked by the subscription, the group's tenant). Never take
///   it from the payload.
/// - `Ok(())` means done; an error says whether to try again (see [`HandlerError`]).
///   A panic counts as [`HandlerError::Retry`].
/// - Calls run concurrently, up to the worker's concurrency; events with the same
///   `partitionkey` are never handled at the same time.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery of `event`.
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError>;
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        (**self).handle(ctx, event).await
    }
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Box<H> {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        (**self).handle(ctx, event).await
    }
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerFn").finish_non_exhaustive()
    }
}

/// Makes a [`Handler`] from an async closure.
///
/// The closure gets the context and the event by value (both are cheap clones
/// of shared data) so its future may hold them across awaits.
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(HandlerContext, Arc<Event>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    HandlerFn { f }
}

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(HandlerContext, Arc<Event>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, ctx: &HandlerContext, _event: &Event) -> Result<(), HandlerError> {
        // The context holds the same event, shared, which the closure can keep.
        (self.f)(ctx.clone(), ctx.event_arc()).await
    }
}

/// Wraps a handler in another, as tower's `Layer` wraps a service.
///
/// A layer is a policy (timeout, retry, dead letter...) written once and applied
/// to any handler; it holds the policy's settings and builds the wrapping handler.
pub trait Layer<H> {
    /// The wrapping handler.
    type Handler;

    /// Wraps `inner`.
    fn layer(&self, inner: H) -> Self::Handler;
}

/// Adds [`HandlerExt::with`] to every handler.
pub trait HandlerExt: Handler + Sized {
    /// Wraps this handler in `layer`. In `h.with(a).with(b)`, `b` is the outermost:
    /// it sees each call first and the result last.
    fn with<L: Layer<Self>>(self, layer: L) -> L::Handler {
        layer.layer(self)
    }
}

impl<H: Handler> HandlerExt for H {}
