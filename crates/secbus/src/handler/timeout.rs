//! A time limit on each handler call.

use std::time::Duration;

use async_trait::async_trait;

use super::{Handler, HandlerContext, HandlerError, Layer};
use crate::event::Event;

/// Fails a handler call that runs longer than a limit with
/// [`HandlerError::Retry`] (`"timed out after ..."`), so the event is redelivered
/// and, if it keeps timing out, ends in the dead letters saying so.
///
/// The call's future is dropped at the limit: work at an await point stops
/// there. Keep the limit below the subscription's ack wait, or the group hands
/// the event to another member while this one is still at it.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A limit of `limit` per call.
    pub fn new(limit: Duration) -> Self {
        TimeoutLayer { limit }
    }
}

impl<H: Handler> Layer<H> for TimeoutLayer {
    type Handler = Timeout<H>;

    fn layer(&self, inner: H) -> Timeout<H> {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

/// A handler with a time limit; made by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<H> {
    inner: H,
    limit: Duration,
}

#[async_trait]
impl<H: Handler> Handler for Timeout<H> {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        match tokio::time::timeout(self.limit, self.inner.handle(ctx, event)).await {
            Ok(result) => result,
            Err(_) => Err(HandlerError::Retry(format!(
                "timed out after {:?}",
                self.limit
            ))),
        }
    }
}
