//! Bounded waits: every wait of a case ends, so a bug fails the case with what
//! it was waiting for instead of hanging it.

use std::future::Future;
use std::time::Duration;

use crate::delivery::Delivery;
use crate::error::Result;
use crate::event::Event;
use crate::subscription::Subscription;

/// The longest a case waits for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// How long a case watches for something that should not happen.
pub(crate) const QUIET: Duration = Duration::from_millis(400);

/// `fut`'s output, or a failure naming `what` after [`WAIT`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// The subscription's next item as it comes (a delivery, an error or the end).
pub(crate) async fn next_item(sub: &mut Subscription, what: &str) -> Option<Result<Delivery>> {
    within(what, sub.next()).await
}

/// The next delivery; fails on an error or the end of the subscription.
pub(crate) async fn next(sub: &mut Subscription, what: &str) -> Delivery {
    match next_item(sub, what).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("{what}: the subscription failed: {e}"),
        None => panic!("{what}: the subscription ended"),
    }
}

/// The next `n` deliveries, unsettled.
pub(crate) async fn take(sub: &mut Subscription, n: usize, what: &str) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(next(sub, &format!("{what} ({} of {n})", i + 1)).await);
    }
    out
}

/// The next `n` deliveries, each acked as it arrives; their events.
pub(crate) async fn take_acked(sub: &mut Subscription, n: usize, what: &str) -> Result<Vec<Event>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let d = next(sub, &format!("{what} ({} of {n})", i + 1)).await;
        out.push(d.event().clone());
        d.ack().await?;
    }
    Ok(out)
}

/// Fails if the subscription yields anything within `quiet`.
pub(crate) async fn nothing_within(sub: &mut Subscription, quiet: Duration, what: &str) {
    if let Ok(item) = tokio::time::timeout(quiet, sub.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "{what}: expected nothing more, got event {} (type {}, tenant {}, attempt {})",
                d.event().id,
                d.event().ty,
                d.event().tenant,
                d.attempt()
            ),
            Some(Err(e)) => panic!("{what}: expected nothing more, got the error {e}"),
            None => panic!("{what}: expected nothing more, but the subscription ended"),
        }
    }
}

/// Fails if any of the subscriptions yields anything within [`QUIET`]; they are
/// watched at the same time.
pub(crate) async fn nothing_more(subs: &mut [(&mut Subscription, &str)]) {
    futures::future::join_all(
        subs.iter_mut()
            .map(|(sub, what)| nothing_within(sub, QUIET, what)),
    )
    .await;
}
