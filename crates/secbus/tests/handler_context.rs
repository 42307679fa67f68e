//! What a handler's context carries, on the real `memory:` engine: the tenant of
//! the envelope, and follow-up events that keep the causal chain.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use secbus::handler::{HandlerContext, HandlerError, Worker, handler_fn};
use secbus::{
    Bus, Event, EventType, SubscribeOptions, Subscriber, Subscription, TenantId, TypePattern,
};
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(20);

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn ty(name: &str) -> EventType {
    EventType::new(name).unwrap()
}

fn login_failed(tenant_id: &str, user: &str) -> Event {
    Event::builder(ty("auth.login.failed"), tenant(tenant_id))
        // A payload naming another tenant must change nothing.
        .data(serde_json::json!({ "user": user, "tenantid": "globex" }))
        .build()
        .unwrap()
}

async fn next_event(sub: &mut Subscription) -> Event {
    let delivery = timeout(PATIENCE, sub.next())
        .await
        .expect("timed out waiting for an event")
        .expect("subscription ended")
        .unwrap();
    let event = delivery.event().clone();
    delivery.ack().await.unwrap();
    event
}

#[tokio::test]
async fn the_context_tenant_is_the_envelope_tenant_and_caused_events_link_to_their_cause() {
    let bus = Bus::connect("memory:").await.unwrap();
    let mut findings = bus
        .subscribe(
            SubscribeOptions::tail(tenant("acme")).types(TypePattern::new("detection.>").unwrap()),
        )
        .await
        .unwrap();
    let mut globex_findings = bus
        .subscribe(SubscribeOptions::tail(tenant("globex")))
        .await
        .unwrap();
    let contexts = Arc::new(Mutex::new(Vec::<HandlerContext>::new()));
    let seen = contexts.clone();
    let options = SubscribeOptions::group(tenant("acme"), "detect")
        .types(TypePattern::new("auth.>").unwrap());
    let worker = Worker::new(bus.clone(), options)
        .start(handler_fn(move |ctx, event| {
            seen.lock().push(ctx.clone());
            async move {
                let finding = ctx
                    .caused(ty("detection.finding"))
                    .data(serde_json::json!({ "about": event.id.as_str() }))
                    .build()?;
                ctx.publish(finding).await?;
                Ok(())
            }
        }))
        .await
        .unwrap();

    // An event of another tenant is published first; the acme group never sees it.
    bus.publish(login_failed("globex", "eve")).await.unwrap();
    let parent = login_failed("acme", "bob");
    let receipt = bus.publish(parent.clone()).await.unwrap();

    let finding = next_event(&mut findings).await;
    assert_eq!(finding.ty.as_str(), "detection.finding");
    assert_eq!(finding.tenant, parent.tenant);
    assert_eq!(finding.causationid.as_deref(), Some(parent.id.as_str()));
    assert_eq!(finding.correlationid, parent.correlationid);
    assert_eq!(finding.traceparent[..35], parent.traceparent[..35]);
    assert_ne!(finding.id, parent.id);

    let stats = worker.shutdown().await.unwrap();
    assert_eq!(stats.handled, 1);
    let contexts = contexts.lock().clone();
    assert_eq!(contexts.len(), 1);
    let ctx = &contexts[0];
    assert_eq!(ctx.tenant(), &tenant("acme"));
    assert_eq!(ctx.tenant(), &ctx.event().tenant);
    assert_eq!(ctx.event().id, parent.id);
    assert_eq!(ctx.group(), "detect");
    assert_eq!(ctx.attempt(), 1);
    assert_eq!(Some(ctx.sequence()), receipt.sequence);
    // globex saw its own login only: no finding crossed over.
    let only = next_event(&mut globex_findings).await;
    assert_eq!(only.ty.as_str(), "auth.login.failed");
    assert!(
        timeout(Duration::from_millis(200), globex_findings.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_handler_cannot_publish_for_another_tenant_through_its_context() {
    let bus = Bus::connect("memory:").await.unwrap();
    let options = SubscribeOptions::group(tenant("acme"), "leaky")
        .types(TypePattern::new("auth.>").unwrap())
        .max_deliveries(3);
    let worker = Worker::new(bus.clone(), options)
        .start(handler_fn(|ctx, _event| async move {
            let elsewhere = Event::builder(ty("detection.finding"), tenant("globex"))
                .caused_by(ctx.event())
                .build()?;
            ctx.publish(elsewhere).await?;
            Ok(())
        }))
        .await
        .unwrap();
    bus.publish(login_failed("acme", "bob")).await.unwrap();
    let dl = timeout(PATIENCE, async {
        loop {
            if let Some(dl) = bus.dead_letters(&tenant("acme"), 10).await.unwrap().pop() {
                return dl;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    // A tenant mismatch is permanent: dead-lettered on the first attempt.
    assert_eq!((dl.reason.as_str(), dl.attempts), ("terminated", 1));
    assert!(
        dl.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("tenant_mismatch:")),
        "{:?}",
        dl.last_error
    );
    worker.shutdown().await.unwrap();
    let mut globex = bus
        .subscribe(SubscribeOptions::tail(tenant("globex")).start(secbus::StartAt::Beginning))
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_millis(200), globex.next())
            .await
            .is_err(),
        "nothing was stored for globex"
    );
}

#[tokio::test]
async fn a_follow_up_published_again_on_redelivery_is_stored_once() {
    let bus = Bus::connect("memory:").await.unwrap();
    let mut findings = bus
        .subscribe(
            SubscribeOptions::tail(tenant("acme")).types(TypePattern::new("detection.>").unwrap()),
        )
        .await
        .unwrap();
    let options = SubscribeOptions::group(tenant("acme"), "flaky")
        .types(TypePattern::new("auth.>").unwrap())
        .backoff(vec![Duration::from_millis(10)]);
    let worker = Worker::new(bus.clone(), options)
        .start(handler_fn(|ctx, _event| async move {
            let first = ctx.caused(ty("detection.finding")).build()?;
            let second = ctx.caused(ty("detection.finding")).build()?;
            ctx.publish(first).await?;
            ctx.publish(second).await?;
            if ctx.attempt() == 1 {
                // Fails after publishing: the redelivery publishes both again.
                return Err(HandlerError::retry("alert sink unreachable"));
            }
            Ok(())
        }))
        .await
        .unwrap();
    let parent = login_failed("acme", "bob");
    bus.publish(parent.clone()).await.unwrap();
    timeout(PATIENCE, async {
        while worker.stats().handled == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let stats = worker.shutdown().await.unwrap();
    assert_eq!((stats.retried, stats.handled), (1, 1));

    let a = next_event(&mut findings).await;
    let b = next_event(&mut findings).await;
    assert_ne!(a.id, b.id);
    for finding in [&a, &b] {
        assert_eq!(finding.causationid.as_deref(), Some(parent.id.as_str()));
    }
    assert!(
        timeout(Duration::from_millis(200), findings.next())
            .await
            .is_err(),
        "the second attempt's copies were stored again"
    );
}
