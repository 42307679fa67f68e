//! Which failures go to the dead letters at once (Watermill calls this the
//! poison queue).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Handler, HandlerContext, HandlerError, Layer};
use crate::event::Event;

type Predicate = dyn Fn(&HandlerError, &HandlerContext) -> bool + Send + Sync;

/// Turns failures into [`HandlerError::Permanent`], which the worker sends to the
/// dead letters at once instead of redelivering:
/// - those a predicate picks ([`DeadLetterLayer::permanent_if`]), e.g. a
///   downstream answer meaning "this input is bad", which a handler written for
///   the happy path reports as a plain error;
/// - every failure from a given attempt on ([`DeadLetterLayer::max_attempts`]),
///   for a handler that should give up sooner than the group's `max_deliveries`.
///
/// Both keep the failure's message, so the dead letter's `last_error` still says
/// what went wrong. Without this layer the worker already dead-letters a
/// `Permanent` failure and a failure on the group's last attempt; the layer only
/// moves that decision earlier.
#[derive(Clone, Default)]
pub struct DeadLetterLayer {
    permanent_if: Option<Arc<Predicate>>,
    max_attempts: Option<u32>,
}

impl std::fmt::Debug for DeadLetterLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterLayer")
            .field("permanent_if", &self.permanent_if.is_some())
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl DeadLetterLayer {
    /// A layer that changes nothing until configured.
    pub fn new() -> Self {
        Self::default()
    }

    /// Failures for which `predicate` is true are permanent.
    pub fn permanent_if(
        mut self,
        predicate: impl Fn(&HandlerError, &HandlerContext) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.permanent_if = Some(Arc::new(predicate));
        self
    }

    /// A failure on delivery attempt `attempts` or later is permanent (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }
}

impl<H: Handler> Layer<H> for DeadLetterLayer {
    type Handler = DeadLetterHandler<H>;

    fn layer(&self, inner: H) -> DeadLetterHandler<H> {
        DeadLetterHandler {
            inner,
            policy: self.clone(),
        }
    }
}

/// A handler whose failures are classified by a [`DeadLetterLayer`].
#[derive(Debug, Clone)]
pub struct DeadLetterHandler<H> {
    inner: H,
    policy: DeadLetterLayer,
}

#[async_trait]
impl<H: Handler> Handler for DeadLetterHandler<H> {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        let error = match self.inner.handle(ctx, event).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => e,
        };
        if let Some(limit) = self.policy.max_attempts
            && ctx.attempt() >= limit
        {
            return Err(HandlerError::Permanent(format!(
                "{} (gave up on attempt {}, the handler's limit)",
                error.message(),
                ctx.attempt()
            )));
        }
        match &self.policy.permanent_if {
            Some(predicate) if predicate(&error, ctx) => Err(error.into_permanent()),
            _ => Err(error),
        }
    }
}
