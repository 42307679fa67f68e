//! The timeout, retry and dead-letter layers around handlers run by a worker on
//! the real `memory:` engine.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use secbus::handler::{
    DeadLetterLayer, HandlerError, HandlerExt, RetryLayer, TimeoutLayer, Worker, WorkerHandle,
    handler_fn,
};
use secbus::{Bus, DeadLetter, Event, EventType, SubscribeOptions, TenantId};
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(20);

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn group(name: &str, max_deliveries: u32) -> SubscribeOptions {
    SubscribeOptions::group(acme(), name)
        .backoff(vec![Duration::from_millis(10)])
        .ack_wait(Duration::from_secs(10))
        .max_deliveries(max_deliveries)
}

async fn publish_one(bus: &Bus) -> Event {
    let event = Event::builder(EventType::new("edr.process.started").unwrap(), acme())
        .data(serde_json::json!({ "pid": 4242 }))
        .build()
        .unwrap();
    bus.publish(event.clone()).await.unwrap();
    event
}

async fn dead_letter(bus: &Bus) -> DeadLetter {
    timeout(PATIENCE, async {
        loop {
            if let Some(dl) = bus.dead_letters(&acme(), 10).await.unwrap().pop() {
                return dl;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("timed out waiting for a dead letter")
}

async fn settled(worker: &WorkerHandle, n: u64) {
    timeout(PATIENCE, async {
        loop {
            let s = worker.stats();
            if s.handled + s.failed >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("timed out waiting for the worker");
}

/// Records `(attempt, retries)` of every call.
type Calls = Arc<Mutex<Vec<(u32, u32)>>>;

#[tokio::test]
async fn timeout_layer_fails_a_slow_call_with_retry() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = handler_fn(move |ctx, _event| {
        seen.lock().push((ctx.attempt(), ctx.retries()));
        async move {
            if ctx.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(())
        }
    })
    .with(TimeoutLayer::new(Duration::from_millis(100)));
    let worker = Worker::new(bus.clone(), group("timeout", 3))
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    // Attempt 1 times out and is retried by redelivery; attempt 2 is quick.
    settled(&worker, 2).await;
    let stats = worker.shutdown().await.unwrap();
    assert_eq!((stats.failed, stats.retried, stats.handled), (1, 1, 1));
    assert_eq!(*calls.lock(), vec![(1, 0), (2, 0)]);
}

#[tokio::test]
async fn timeouts_on_every_attempt_end_in_the_dead_letters_saying_so() {
    let bus = Bus::connect("memory:").await.unwrap();
    let handler = handler_fn(|_ctx, _event| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    })
    .with(TimeoutLayer::new(Duration::from_millis(50)));
    let worker = Worker::new(bus.clone(), group("always-slow", 2))
        .start(handler)
        .await
        .unwrap();
    let event = publish_one(&bus).await;
    let dl = dead_letter(&bus).await;
    assert_eq!(dl.event.id, event.id);
    assert_eq!(dl.attempts, 2);
    assert_eq!(dl.last_error.as_deref(), Some("timed out after 50ms"));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_layer_retries_in_process_before_the_group_redelivers() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    // Fails three times, then works: three in-process retries absorb it.
    let handler = handler_fn(move |ctx, _event| {
        let mut seen = seen.lock();
        seen.push((ctx.attempt(), ctx.retries()));
        let result = if seen.len() <= 3 {
            Err(HandlerError::retry("connection reset"))
        } else {
            Ok(())
        };
        async move { result }
    })
    .with(RetryLayer::new(3).backoff(Duration::from_millis(1), Duration::from_millis(4)));
    let worker = Worker::new(bus.clone(), group("retry-ok", 1))
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    settled(&worker, 1).await;
    let stats = worker.shutdown().await.unwrap();
    assert_eq!((stats.handled, stats.failed), (1, 0));
    assert_eq!(*calls.lock(), vec![(1, 0), (1, 1), (1, 2), (1, 3)]);
    assert!(bus.dead_letters(&acme(), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_layer_gives_the_last_failure_back_and_never_retries_permanent() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = handler_fn(move |ctx, _event| {
        seen.lock().push((ctx.attempt(), ctx.retries()));
        async move { Err(HandlerError::retry(format!("try {}", ctx.retries()))) }
    })
    .with(RetryLayer::new(2).backoff(Duration::from_millis(1), Duration::from_millis(1)));
    let worker = Worker::new(bus.clone(), group("retry-out", 1))
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    let dl = dead_letter(&bus).await;
    assert_eq!(dl.last_error.as_deref(), Some("try 2"));
    assert_eq!((dl.attempts, dl.reason.as_str()), (1, "max_deliveries"));
    assert_eq!(*calls.lock(), vec![(1, 0), (1, 1), (1, 2)]);
    worker.shutdown().await.unwrap();

    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = handler_fn(move |ctx, _event| {
        seen.lock().push((ctx.attempt(), ctx.retries()));
        async { Err(HandlerError::permanent("unknown schema")) }
    })
    .with(RetryLayer::new(5).backoff(Duration::from_millis(1), Duration::from_millis(1)));
    let worker = Worker::new(bus.clone(), group("retry-perm", 3))
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    let dl = dead_letter(&bus).await;
    assert_eq!(dl.reason, "terminated");
    assert_eq!(*calls.lock(), vec![(1, 0)]);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_layer_stops_before_the_ack_deadline() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = handler_fn(move |ctx, _event| {
        seen.lock().push((ctx.attempt(), ctx.retries()));
        async { Err(HandlerError::retry("still down")) }
    })
    // The first wait (5 s) would pass the 1 s ack wait: no in-process retry at all.
    .with(RetryLayer::new(10).backoff(Duration::from_secs(5), Duration::from_secs(5)));
    let options = group("deadline", 1).ack_wait(Duration::from_secs(1));
    let worker = Worker::new(bus.clone(), options)
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    dead_letter(&bus).await;
    assert_eq!(*calls.lock(), vec![(1, 0)]);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn dead_letter_layer_makes_chosen_failures_permanent() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = handler_fn(move |ctx, _event| {
        seen.lock().push((ctx.attempt(), ctx.retries()));
        async { Err(HandlerError::retry("422 unprocessable entity")) }
    })
    .with(DeadLetterLayer::new().permanent_if(|e, _ctx| e.message().starts_with("422")));
    let worker = Worker::new(bus.clone(), group("poison", 5))
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    let dl = dead_letter(&bus).await;
    assert_eq!((dl.reason.as_str(), dl.attempts), ("terminated", 1));
    assert_eq!(dl.last_error.as_deref(), Some("422 unprocessable entity"));
    assert_eq!(calls.lock().len(), 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn dead_letter_layer_gives_up_at_its_own_attempt_limit() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = handler_fn(move |ctx, _event| {
        seen.lock().push((ctx.attempt(), ctx.retries()));
        async { Err(HandlerError::retry("upstream 503")) }
    })
    .with(DeadLetterLayer::new().max_attempts(2));
    let worker = Worker::new(bus.clone(), group("poison-cap", 10))
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    let dl = dead_letter(&bus).await;
    assert_eq!((dl.reason.as_str(), dl.attempts), ("terminated", 2));
    assert!(
        dl.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("upstream 503")),
        "{:?}",
        dl.last_error
    );
    assert_eq!(*calls.lock(), vec![(1, 0), (2, 0)]);
    let stats = worker.shutdown().await.unwrap();
    assert_eq!((stats.retried, stats.dead_lettered), (1, 1));
}

#[tokio::test]
async fn layers_compose_timeout_inside_retry() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Calls::default();
    let seen = calls.clone();
    // Each try is slow until the third; the timeout cuts each, the retry layer
    // tries again within the same delivery.
    let handler = handler_fn(move |ctx, _event| {
        seen.lock().push((ctx.attempt(), ctx.retries()));
        async move {
            if ctx.retries() < 2 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(())
        }
    })
    .with(TimeoutLayer::new(Duration::from_millis(50)))
    .with(RetryLayer::new(3).backoff(Duration::from_millis(1), Duration::from_millis(1)));
    let worker = Worker::new(bus.clone(), group("composed", 1))
        .start(handler)
        .await
        .unwrap();
    publish_one(&bus).await;
    settled(&worker, 1).await;
    let stats = worker.shutdown().await.unwrap();
    assert_eq!((stats.handled, stats.failed), (1, 0));
    assert_eq!(*calls.lock(), vec![(1, 0), (1, 1), (1, 2)]);
}
