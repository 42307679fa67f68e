//! secbus on its embedded default, end to end: publish a small login story,
//! consume it with a consumer group, watch one event fail into the dead letters,
//! redrive it, and replay the tenant's history.
//!
//! `cargo run -p secbus --example quickstart` (state in ./secbus-data; set
//! SECBUS_URL to use another engine, e.g. `memory:`).

use std::time::Duration;

use secbus::{Bus, Event, EventType, Publisher, StartAt, SubscribeOptions, Subscriber, TenantId};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SECBUS_URL").unwrap_or_else(|_| "embedded:./secbus-data".into());
    let bus = Bus::connect(&url).await?;
    println!("secbus on {url} (engine: {})", bus.engine_name());

    let acme = TenantId::new("acme")?;
    // A fresh group per run, so a second run starts from its own new events.
    let group = format!(
        "quickstart-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let mut workers = bus
        .subscribe(
            SubscribeOptions::group(acme.clone(), group.as_str())
                .max_deliveries(2)
                .backoff(vec![Duration::from_millis(100)]),
        )
        .await?;

    // A password spray against one account, then a success: one story, one correlation.
    let failed = EventType::new("auth.login.failed")?;
    let first = Event::builder(failed.clone(), acme.clone())
        .source("idp/okta")
        .subject("user/bob")
        .data(json!({"user": "bob", "ip": "203.0.113.9", "reason": "bad_password"}))
        .build()?;
    let mut story = vec![first.clone()];
    for n in 1..4 {
        story.push(
            Event::builder(failed.clone(), acme.clone())
                .source("idp/okta")
                .subject("user/bob")
                .caused_by(&first)
                .data(json!({"user": "bob", "ip": format!("203.0.113.{}", 9 + n), "reason": "bad_password"}))
                .build()?,
        );
    }
    story.push(
        Event::builder(EventType::new("auth.login.succeeded")?, acme.clone())
            .source("idp/okta")
            .subject("user/bob")
            .caused_by(&first)
            .data(json!({"user": "bob", "ip": "203.0.113.13", "mfa": false}))
            .build()?,
    );
    let receipts = bus.publish_batch(story.clone()).await?;
    println!(
        "published {} events; the first at sequence {}",
        receipts.len(),
        receipts[0].sequence.unwrap_or_default()
    );

    // The worker cannot handle the successful login (say, an enrichment API is
    // down): it fails twice and lands in the dead letters.
    let mut settled = 0;
    while settled < story.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(10), workers.next())
            .await?
            .ok_or("subscription ended")??;
        let event = delivery.event();
        if event.ty.as_str() == "auth.login.succeeded" {
            println!(
                "  {} attempt {}: enrichment failed",
                event.ty,
                delivery.attempt()
            );
            let last = delivery.is_last_attempt();
            delivery
                .nack(None, Some("enrichment API unreachable"))
                .await?;
            settled += usize::from(last);
        } else {
            let ip = event.data().unwrap_or_default()["ip"].clone();
            println!("  {} from {ip} handled", event.ty);
            delivery.ack().await?;
            settled += 1;
        }
    }

    let dead: Vec<_> = bus
        .dead_letters(&acme, 1000)
        .await?
        .into_iter()
        .filter(|d| d.group == group)
        .collect();
    for d in &dead {
        println!(
            "dead letter {}: {} after {} attempts ({}; last error: {})",
            d.id,
            d.event.ty,
            d.attempts,
            d.reason,
            d.last_error.as_deref().unwrap_or("-")
        );
    }

    // The API is back: redrive, and this time the worker succeeds.
    for d in &dead {
        bus.redrive(&acme, &d.id).await?;
        let delivery = tokio::time::timeout(Duration::from_secs(10), workers.next())
            .await?
            .ok_or("subscription ended")??;
        println!(
            "redriven {} handled on attempt {}",
            delivery.event().ty,
            delivery.attempt()
        );
        delivery.ack().await?;
    }

    // Replay: what this run published, in order, with its causal links.
    let from = receipts[0].sequence.unwrap_or_default();
    let mut replay = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::Sequence(from)))
        .await?;
    println!("replay from sequence {from}:");
    for _ in 0..story.len() {
        let d = tokio::time::timeout(Duration::from_secs(10), replay.next())
            .await?
            .ok_or("subscription ended")??;
        let e = d.event();
        // UUIDv7 ids share their time prefix: the tail tells them apart.
        let short = |id: &str| id[id.len().saturating_sub(8)..].to_owned();
        println!(
            "  #{:<6} {:<22} id=..{} caused_by={}",
            d.sequence(),
            e.ty,
            short(e.id.as_str()),
            e.causationid
                .as_deref()
                .map_or("-".to_owned(), |c| format!("..{}", short(c)))
        );
    }
    bus.close().await?;
    Ok(())
}
