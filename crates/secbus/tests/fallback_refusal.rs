//! What `publish_with_fallback` refuses, and how loudly: a full spool, events the
//! bus would refuse anyway, a closed bus. Refusals are counted and logged as
//! errors with their code; nothing refused is spooled or dropped in silence.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use secbus::{BusConfig, Event, EventType, FallbackOutcome, Publisher, Subscription};
use tracing::field::{Field, Visit};
use tracing::span;

mod fallback_support;

use fallback_support::{WAIT, acme, config, consume, event, group, numbers, outage_bus};

/// One log event: its level and fields (`message` included).
type LogLine = (tracing::Level, HashMap<String, String>);

/// Log events this thread emitted.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<LogLine>>>);

impl Captured {
    fn errors_with_code(&self, code: &str) -> Vec<HashMap<String, String>> {
        self.0
            .lock()
            .iter()
            .filter(|(level, f)| {
                *level == tracing::Level::ERROR && f.get("code").map(String::as_str) == Some(code)
            })
            .map(|(_, f)| f.clone())
            .collect()
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().push((*event.metadata().level(), fields));
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

async fn consume_numbers(sub: &mut Subscription, count: usize) -> Vec<u64> {
    numbers(&consume(sub, count).await)
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("segment-"))
        })
        .count()
}

#[tokio::test]
async fn a_full_spool_refuses_loudly_and_keeps_what_it_took() {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig {
        spool_max_bytes: 4096,
        ..config(dir.path())
    };
    let (bus, engine) = outage_bus(config).await;
    let mut workers = group(&bus).await;
    engine.set_down(true);

    let mut spooled = Vec::new();
    let mut refused = Vec::new();
    for n in 0..40 {
        let e = event(n);
        let id = e.id.as_str().to_owned();
        match bus.publish_with_fallback(e).await {
            FallbackOutcome::Spooled => {
                assert!(refused.is_empty(), "event {n} spooled after a refusal");
                spooled.push(n);
            }
            FallbackOutcome::Refused(e) => refused.push((id, e)),
            FallbackOutcome::Published(r) => panic!("published while the engine is down: {r:?}"),
        }
    }
    let spool = bus.spool().await.unwrap();
    assert!(spooled.len() >= 4, "only {} events fit", spooled.len());
    assert!(!refused.is_empty(), "4 KiB took 40 events");
    assert!(refused.iter().all(|(_, e)| e.code() == "full"));
    assert_eq!(spool.refused_total(), refused.len() as u64);
    assert!(spool.bytes() <= 4096);
    assert_eq!(spool.depth(), spooled.len() as u64);

    let errors = logs.errors_with_code("full");
    assert_eq!(errors.len(), refused.len(), "one error line per refusal");
    let first = &errors[0];
    assert_eq!(first["refused_total"], "1");
    assert_eq!(first["event_id"], refused[0].0);
    assert!(first["message"].contains("refused"));

    // Nothing taken is lost: all of it reaches the engine, in order.
    engine.set_down(false);
    assert!(spool.wait_drained(WAIT).await, "the spool did not drain");
    assert_eq!(consume_numbers(&mut workers, spooled.len()).await, spooled);
    assert_eq!(segment_count(dir.path()), 0, "drained segments are deleted");
    assert!(matches!(
        bus.publish_with_fallback(event(100)).await,
        FallbackOutcome::Published(_)
    ));
    assert_eq!(consume_numbers(&mut workers, 1).await, vec![100]);
}

#[tokio::test]
async fn events_the_bus_would_refuse_are_refused_not_spooled() {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig {
        max_event_bytes: 1024,
        ..config(dir.path())
    };
    let (bus, engine) = outage_bus(config).await;
    let too_large = || {
        Event::builder(EventType::new("edr.process.started").unwrap(), acme())
            .data(serde_json::json!({"cmdline": "x".repeat(4096)}))
            .build()
            .unwrap()
    };

    // The engine is down, so a valid event would be spooled; this one is not.
    engine.set_down(true);
    match bus.publish_with_fallback(too_large()).await {
        FallbackOutcome::Refused(e) => assert_eq!(e.code(), "event_too_large"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let spool = bus.spool().await.unwrap();
    assert_eq!((spool.depth(), spool.bytes()), (0, 0));
    assert_eq!(segment_count(dir.path()), 0);

    // Nor while other events wait in the spool.
    assert!(matches!(
        bus.publish_with_fallback(event(0)).await,
        FallbackOutcome::Spooled
    ));
    let bytes = spool.bytes();
    assert!(matches!(
        bus.publish_with_fallback(too_large()).await,
        FallbackOutcome::Refused(_)
    ));
    assert_eq!((spool.depth(), spool.bytes()), (1, bytes));
    assert_eq!(spool.refused_total(), 2);
    assert_eq!(logs.errors_with_code("event_too_large").len(), 2);
}

#[tokio::test]
async fn a_closed_bus_refuses_instead_of_spooling() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, _engine) = outage_bus(config(dir.path())).await;
    assert!(matches!(
        bus.publish_with_fallback(event(0)).await,
        FallbackOutcome::Published(_)
    ));
    bus.close().await.unwrap();
    match bus.publish_with_fallback(event(1)).await {
        FallbackOutcome::Refused(e) => assert_eq!(e.code(), "closed"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let spool = bus.spool().await.unwrap();
    assert_eq!(spool.depth(), 0);
    assert_eq!(spool.refused_total(), 1);
}
