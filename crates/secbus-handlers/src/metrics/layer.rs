//! A layer that times each call of the handler it wraps.

use std::time::Instant;

use async_trait::async_trait;
use secbus::Event;
use secbus::handler::{Handler, HandlerContext, HandlerError, Layer};

use super::HandlerMetrics;

/// Records each call of the wrapped handler in `handler_seconds`, labelled
/// with the handler's name and the outcome (`ok`, `retry`, `permanent`).
#[derive(Debug, Clone)]
pub struct MeasuredLayer {
    metrics: HandlerMetrics,
    name: String,
}

impl MeasuredLayer {
    /// Times calls into `metrics` under `name`.
    pub fn new(metrics: HandlerMetrics, name: impl Into<String>) -> Self {
        MeasuredLayer {
            metrics,
            name: name.into(),
        }
    }
}

impl<H: Handler> Layer<H> for MeasuredLayer {
    type Handler = Measured<H>;

    fn layer(&self, inner: H) -> Measured<H> {
        Measured {
            inner,
            metrics: self.metrics.clone(),
            name: self.name.clone(),
        }
    }
}

/// A handler whose calls are timed; made by [`MeasuredLayer`].
#[derive(Debug, Clone)]
pub struct Measured<H> {
    inner: H,
    metrics: HandlerMetrics,
    name: String,
}

#[async_trait]
impl<H: Handler> Handler for Measured<H> {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        let started = Instant::now();
        let result = self.inner.handle(ctx, event).await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(HandlerError::Permanent(_)) => "permanent",
            Err(_) => "retry",
        };
        self.metrics.observe(&self.name, outcome, started.elapsed());
        result
    }
}
