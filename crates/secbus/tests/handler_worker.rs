//! The worker over the real `memory:` engine: how it settles each answer of a
//! handler, how many calls it runs at once, and how it shuts down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use secbus::handler::{HandlerError, Worker, handler_fn};
use secbus::{Bus, DeadLetter, Event, EventType, Receipt, SubscribeOptions, TenantId};
use tokio::time::{Instant, timeout};

const PATIENCE: Duration = Duration::from_secs(20);

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

/// A group with quick redelivery and an ack wait far longer than any handler here.
fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions::group(acme(), name)
        .backoff(vec![Duration::from_millis(10)])
        .ack_wait(Duration::from_secs(10))
}

async fn publish(bus: &Bus, n: usize) -> Vec<Receipt> {
    let mut receipts = Vec::new();
    for i in 0..n {
        let event = Event::builder(EventType::new("auth.login.failed").unwrap(), acme())
            .data(serde_json::json!({ "n": i }))
            .build()
            .unwrap();
        receipts.push(bus.publish(event).await.unwrap());
    }
    receipts
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    timeout(PATIENCE, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

async fn dead_letters(bus: &Bus, n: usize) -> Vec<DeadLetter> {
    timeout(PATIENCE, async {
        loop {
            let found = bus.dead_letters(&acme(), 100).await.unwrap();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("timed out waiting for dead letters")
}

#[tokio::test]
async fn ok_is_acked_and_not_redelivered() {
    let bus = Bus::connect("memory:").await.unwrap();
    let seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let calls = seen.clone();
    // A short ack wait: an event left unacked would come back well within the wait
    // below (yet long enough for a trivial handler on a busy machine).
    let options = group("ok").ack_wait(Duration::from_millis(300));
    let worker = Worker::new(bus.clone(), options)
        .concurrency(4)
        .start(handler_fn(move |_ctx, event| {
            let calls = calls.clone();
            async move {
                *calls.lock().entry(event.id.to_string()).or_default() += 1;
                Ok(())
            }
        }))
        .await
        .unwrap();
    let receipts = publish(&bus, 20).await;
    wait_until("20 events handled", || worker.stats().handled == 20).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 20);
    for r in &receipts {
        assert_eq!(
            seen.get(r.id.as_str()),
            Some(&1),
            "event {} seen once",
            r.id
        );
    }
    let stats = worker.shutdown().await.unwrap();
    assert_eq!(
        (stats.handled, stats.failed, stats.dead_lettered),
        (20, 0, 0)
    );
    assert!(bus.dead_letters(&acme(), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_redelivers_with_rising_attempt_then_dead_letters_with_last_error() {
    let bus = Bus::connect("memory:").await.unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let worker = Worker::new(bus.clone(), group("retry").max_deliveries(3))
        .start(handler_fn(move |ctx, _event| {
            let seen = seen.clone();
            async move {
                seen.lock().push(ctx.attempt());
                Err(HandlerError::retry(format!(
                    "database unreachable on attempt {}",
                    ctx.attempt()
                )))
            }
        }))
        .await
        .unwrap();
    let receipt = publish(&bus, 1).await.remove(0);

    let dl = dead_letters(&bus, 1).await.remove(0);
    assert_eq!(dl.event.id, receipt.id);
    assert_eq!(dl.group, "retry");
    assert_eq!(dl.reason, "max_deliveries");
    assert_eq!(dl.attempts, 3);
    assert_eq!(
        dl.last_error.as_deref(),
        Some("database unreachable on attempt 3")
    );
    assert_eq!(*attempts.lock(), vec![1, 2, 3]);
    let stats = worker.shutdown().await.unwrap();
    assert_eq!(
        (
            stats.failed,
            stats.retried,
            stats.dead_lettered,
            stats.handled
        ),
        (3, 2, 1, 0)
    );
}

#[tokio::test]
async fn permanent_goes_to_the_dead_letters_at_once() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let worker = Worker::new(bus.clone(), group("permanent").max_deliveries(5))
        .start(handler_fn(move |_ctx, _event| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(HandlerError::permanent("payload has no user")) }
        }))
        .await
        .unwrap();
    let receipt = publish(&bus, 1).await.remove(0);

    let dl = dead_letters(&bus, 1).await.remove(0);
    assert_eq!(dl.event.id, receipt.id);
    assert_eq!(dl.reason, "terminated");
    assert_eq!(dl.attempts, 1);
    assert_eq!(dl.last_error.as_deref(), Some("payload has no user"));
    // The dead letter is written before the ack, so a redelivery would already be due.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = worker.shutdown().await.unwrap();
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn retry_after_waits_the_given_delay_and_errors_convert_with_question_mark() {
    let bus = Bus::connect("memory:").await.unwrap();
    let calls = Arc::new(Mutex::new(Vec::<(u32, Instant)>::new()));
    let seen = calls.clone();
    let worker = Worker::new(bus.clone(), group("retry-after"))
        .start(handler_fn(move |ctx, _event| {
            let seen = seen.clone();
            async move {
                seen.lock().push((ctx.attempt(), Instant::now()));
                if ctx.attempt() == 1 {
                    return Err(HandlerError::retry_after(
                        Duration::from_millis(300),
                        "rate limited",
                    ));
                }
                // A secbus error of a permanent kind, through `?`.
                TenantId::new("Not A Tenant")?;
                Ok(())
            }
        }))
        .await
        .unwrap();
    publish(&bus, 1).await;

    let dl = dead_letters(&bus, 1).await.remove(0);
    let calls = calls.lock().clone();
    assert_eq!(calls.len(), 2);
    assert!(calls[1].1 - calls[0].1 >= Duration::from_millis(300));
    assert_eq!(dl.reason, "terminated");
    assert_eq!(dl.attempts, 2);
    assert!(
        dl.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("invalid_attribute:")),
        "{:?}",
        dl.last_error
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_handler_is_retried_then_dead_lettered() {
    let bus = Bus::connect("memory:").await.unwrap();
    let worker = Worker::new(bus.clone(), group("panics").max_deliveries(2))
        .start(handler_fn(|_ctx, _event| async {
            panic!("index out of range");
        }))
        .await
        .unwrap();
    publish(&bus, 1).await;
    let dl = dead_letters(&bus, 1).await.remove(0);
    assert_eq!(dl.attempts, 2);
    assert_eq!(
        dl.last_error.as_deref(),
        Some("handler panicked: index out of range")
    );
    let stats = worker.shutdown().await.unwrap();
    assert_eq!((stats.failed, stats.dead_lettered), (2, 1));
}

/// Counts calls under way and remembers the most seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    done: AtomicUsize,
}

async fn run_gauged(concurrency: usize, max_in_flight: usize) -> usize {
    let bus = Bus::connect("memory:").await.unwrap();
    let gauge = Arc::new(Gauge::default());
    let g = gauge.clone();
    let options = group("bounded").max_in_flight(max_in_flight);
    let worker = Worker::new(bus.clone(), options)
        .concurrency(concurrency)
        .start(handler_fn(move |_ctx, _event| {
            let g = g.clone();
            async move {
                let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                g.max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                g.now.fetch_sub(1, Ordering::SeqCst);
                g.done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }))
        .await
        .unwrap();
    publish(&bus, 40).await;
    wait_until("40 events handled", || worker.stats().handled == 40).await;
    worker.shutdown().await.unwrap();
    assert_eq!(gauge.done.load(Ordering::SeqCst), 40);
    gauge.max.load(Ordering::SeqCst)
}

#[tokio::test]
async fn concurrency_is_bounded_and_used() {
    let max = run_gauged(4, 256).await;
    assert!(max <= 4, "{max} calls at once with concurrency 4");
    assert!(max > 1, "calls never overlapped");
}

#[tokio::test]
async fn max_in_flight_bounds_concurrency_too() {
    let max = run_gauged(16, 2).await;
    assert!(max <= 2, "{max} calls at once with max_in_flight 2");
    assert!(max > 1, "calls never overlapped");
}

#[tokio::test]
async fn shutdown_waits_for_calls_under_way_and_their_acks() {
    let bus = Bus::connect("memory:").await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, f) = (started.clone(), finished.clone());
    // The calls take 200 ms, well within the ack wait; the ack wait is short so
    // that an event whose ack was lost would come back during the wait below.
    let options = group("drain").ack_wait(Duration::from_millis(500));
    let worker = Worker::new(bus.clone(), options.clone())
        .concurrency(3)
        .start(handler_fn(move |_ctx, _event| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }))
        .await
        .unwrap();
    publish(&bus, 3).await;
    wait_until("3 calls started", || started.load(Ordering::SeqCst) == 3).await;

    let stats = worker.shutdown().await.unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 3);
    assert_eq!(stats.handled, 3);

    // A new member of the same group gets only what was published after the
    // shutdown: the three acks were complete, so none of those comes back, even
    // after several ack waits.
    let later = publish(&bus, 2).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let second = Worker::new(bus.clone(), options)
        .start(handler_fn(move |_ctx, event| {
            record.lock().push(event.id.to_string());
            async { Ok(()) }
        }))
        .await
        .unwrap();
    wait_until("2 later events handled", || second.stats().handled >= 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats = second.shutdown().await.unwrap();
    assert_eq!(stats.handled, 2);
    let mut seen = seen.lock().clone();
    seen.sort();
    let mut expected: Vec<String> = later.iter().map(|r| r.id.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn shutdown_within_cuts_off_stuck_calls_and_they_come_back() {
    let bus = Bus::connect("memory:").await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let options = group("stuck").ack_wait(Duration::from_millis(200));
    let worker = Worker::new(bus.clone(), options.clone())
        .start(handler_fn(move |_ctx, _event| {
            s.fetch_add(1, Ordering::SeqCst);
            std::future::pending()
        }))
        .await
        .unwrap();
    let receipt = publish(&bus, 1).await.remove(0);
    wait_until("the call started", || started.load(Ordering::SeqCst) == 1).await;
    let stats = worker
        .shutdown_within(Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!((stats.abandoned, stats.handled, stats.failed), (1, 0, 0));

    let again = Arc::new(Mutex::new(Vec::new()));
    let record = again.clone();
    let second = Worker::new(bus.clone(), options)
        .start(handler_fn(move |ctx, event| {
            record.lock().push((event.id.to_string(), ctx.attempt()));
            async { Ok(()) }
        }))
        .await
        .unwrap();
    wait_until("the abandoned event back", || second.stats().handled == 1).await;
    second.shutdown().await.unwrap();
    assert_eq!(*again.lock(), vec![(receipt.id.to_string(), 2)]);
}

#[tokio::test]
async fn a_worker_refuses_a_tail_and_zero_concurrency() {
    let bus = Bus::connect("memory:").await.unwrap();
    let noop = || handler_fn(|_ctx, _event| async { Ok(()) });
    let err = Worker::new(bus.clone(), SubscribeOptions::tail(acme()))
        .start(noop())
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.field()), ("invalid_options", Some("mode")));
    let err = Worker::new(bus.clone(), group("zero"))
        .concurrency(0)
        .start(noop())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.field()),
        ("invalid_options", Some("concurrency"))
    );
}

#[tokio::test]
async fn run_returns_stats_when_told_to_stop() {
    let bus = Bus::connect("memory:").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let worker = Worker::new(bus.clone(), group("run"));
    let running = tokio::spawn(worker.run(
        handler_fn(move |_ctx, _event| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }),
        async {
            let _ = stopped.await;
        },
    ));
    // `run` subscribes inside the task; publish until the group member has seen one.
    timeout(PATIENCE, async {
        while handled.load(Ordering::SeqCst) == 0 {
            publish(&bus, 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("timed out waiting for the worker");
    stop.send(()).unwrap();
    let stats = timeout(PATIENCE, running).await.unwrap().unwrap().unwrap();
    assert!(stats.handled >= 1);
    assert_eq!(stats.handled as usize, handled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn dropping_the_handle_stops_taking_deliveries_but_lets_calls_finish() {
    let bus = Bus::connect("memory:").await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, f) = (started.clone(), finished.clone());
    let options = group("dropped").ack_wait(Duration::from_millis(500));
    let worker = Worker::new(bus.clone(), options.clone())
        .start(handler_fn(move |_ctx, _event| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }))
        .await
        .unwrap();
    publish(&bus, 1).await;
    wait_until("the call started", || started.load(Ordering::SeqCst) == 1).await;
    drop(worker);
    wait_until("the call finished", || finished.load(Ordering::SeqCst) == 1).await;

    // It was acked: a new member sees the next event only, even after the ack wait.
    let later = publish(&bus, 1).await.remove(0);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let second = Worker::new(bus.clone(), options)
        .start(handler_fn(move |_ctx, event| {
            record.lock().push(event.id.to_string());
            async { Ok(()) }
        }))
        .await
        .unwrap();
    wait_until("the later event handled", || second.stats().handled >= 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    second.shutdown().await.unwrap();
    assert_eq!(*seen.lock(), vec![later.id.to_string()]);
    assert_eq!(started.load(Ordering::SeqCst), 1);
}
