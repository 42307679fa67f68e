//! Retries in-process, before a failure goes back to the group.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Handler, HandlerContext, HandlerError, Layer};
use crate::event::Event;

/// Calls the handler again, in the same delivery, when it fails with
/// [`HandlerError::Retry`] or [`HandlerError::RetryAfter`], up to `max_retries`
/// more times, waiting `initial`, then twice that, and so on up to `max` (a
/// `RetryAfter` waits its own delay). When retries run out, the last failure goes
/// to the worker, which nacks it, so the group's redelivery and dead letters
/// still apply. A [`HandlerError::Permanent`] is never retried.
///
/// Retrying in-process is for short blips (a dropped connection, a lock): it
/// costs no redelivery and keeps the event's place. Longer outages belong to the
/// group's backoff, so no retry starts if its wait would pass the delivery's ack
/// deadline ([`HandlerContext::ack_deadline`]): past it the group would already
/// have handed the event to another member.
///
/// Each retry sees [`HandlerContext::retries`] one higher, and follow-up events
/// it makes through [`HandlerContext::caused`] get the same ids as the earlier
/// try's, so the bus stores them once.
#[derive(Debug, Clone, Copy)]
pub struct RetryLayer {
    max_retries: u32,
    initial: Duration,
    max: Duration,
}

impl RetryLayer {
    /// Up to `max_retries` retries after the first call, waiting 100 ms, 200 ms,
    /// 400 ms... at most 2 s between them.
    pub fn new(max_retries: u32) -> Self {
        RetryLayer {
            max_retries,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }

    /// Waits `initial` before the first retry, doubling each time up to `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max.max(initial);
        self
    }
}

impl<H: Handler> Layer<H> for RetryLayer {
    type Handler = Retry<H>;

    fn layer(&self, inner: H) -> Retry<H> {
        Retry {
            inner,
            policy: *self,
        }
    }
}

/// A handler retried in-process; made by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<H> {
    inner: H,
    policy: RetryLayer,
}

#[async_trait]
impl<H: Handler> Handler for Retry<H> {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        let mut result = self.inner.handle(ctx, event).await;
        let mut wait = self.policy.initial;
        let mut current = ctx.clone();
        for _ in 0..self.policy.max_retries {
            let delay = match &result {
                Ok(()) | Err(HandlerError::Permanent(_)) => return result,
                Err(HandlerError::RetryAfter(delay, _)) => *delay,
                Err(_) => wait,
            };
            if Instant::now() + delay >= ctx.ack_deadline() {
                break;
            }
            tokio::time::sleep(delay).await;
            wait = (wait * 2).min(self.policy.max);
            current = current.next_try();
            result = self.inner.handle(&current, event).await;
        }
        result
    }
}
