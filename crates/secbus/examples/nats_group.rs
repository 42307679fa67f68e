//! A consumer group on NATS JetStream: two members share a tenant's events,
//! one event fails once and comes back with its attempt number, another fails
//! every time and becomes a dead letter, which is then redriven to the group;
//! a tail shows the log in order.
//!
//! `cargo run -p secbus --features nats --example nats_group`
//! (NATS_URL defaults to `nats://127.0.0.1:4222`, a `nats-server -js`; the
//! example writes to the stream `SECBUS_EXAMPLE` over `secbus-example.>`, so
//! `nats sub 'secbus-example.acme.>'` shows its events as CloudEvents JSON).

use std::collections::HashMap;
use std::time::Duration;

use secbus::{Bus, Event, EventType, StartAt, SubscribeOptions, Subscriber, TenantId};
use serde_json::json;
use tokio::sync::mpsc;

const EVENTS: u64 = 10;
/// Fails once, then succeeds.
const FLAKY: u64 = 3;
/// Fails on every attempt.
const POISON: u64 = 7;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let url = format!("{nats}?stream=SECBUS_EXAMPLE&prefix=secbus-example&max_age=1h");
    let bus = Bus::connect(&url).await?;
    println!("secbus on {url} (engine: {})", bus.engine_name());

    let acme = TenantId::new("acme")?;
    // A fresh group per run, so a run sees only its own events.
    let group = format!(
        "example-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let options = SubscribeOptions::group(acme.clone(), group.as_str())
        .max_in_flight(4)
        .max_deliveries(2)
        .backoff(vec![Duration::from_millis(200)]);
    let mut tail = bus
        .subscribe(SubscribeOptions::tail(acme.clone()).start(StartAt::New))
        .await?;

    let (done, mut finished) = mpsc::unbounded_channel();
    for member in ["member-a", "member-b"] {
        let mut sub = bus.subscribe(options.clone()).await?;
        let done = done.clone();
        tokio::spawn(async move {
            while let Some(delivery) = sub.next().await {
                let Ok(delivery) = delivery else { continue };
                let n = delivery
                    .event()
                    .data()
                    .and_then(|d| d["n"].as_u64())
                    .unwrap_or_default();
                let fails = n == POISON || (n == FLAKY && delivery.attempt() == 1);
                if fails {
                    println!(
                        "{member}: event {n} failed (attempt {}), nacked",
                        delivery.attempt()
                    );
                    // On the last attempt the nack makes it a dead letter.
                    let _ = delivery.nack(None, Some("downstream busy")).await;
                    continue;
                }
                println!(
                    "{member}: event {n} (attempt {}, stream sequence {})",
                    delivery.attempt(),
                    delivery.sequence()
                );
                let _ = delivery.ack().await;
                let _ = done.send((member, n));
            }
        });
    }

    let ty = EventType::new("auth.login.failed")?;
    for n in 0..EVENTS {
        let event = Event::builder(ty.clone(), acme.clone())
            .source("idp/okta")
            .subject("user/bob")
            .data(json!({"n": n, "user": "bob", "ip": "203.0.113.9"}))
            .build()?;
        bus.publish(event).await?;
    }

    let mut per_member: HashMap<&str, u64> = HashMap::new();
    for _ in 0..EVENTS - 1 {
        let (member, _) = tokio::time::timeout(Duration::from_secs(30), finished.recv())
            .await?
            .ok_or("the members stopped")?;
        *per_member.entry(member).or_default() += 1;
    }
    println!("handled per member: {per_member:?}");

    // The poison event is a dead letter of the group, with its reason.
    let dead = loop {
        let dead = bus.dead_letters(&acme, 100).await?;
        if let Some(dl) = dead.into_iter().find(|d| d.group == group) {
            break dl;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "dead letter {}: event {} after {} attempts ({}, {:?})",
        dead.id, dead.event.id, dead.attempts, dead.reason, dead.last_error
    );
    // Redriven, it goes back to this group only (and fails again here: the
    // example's poison never heals, so it ends as a dead letter once more).
    let receipt = bus.redrive(&acme, &dead.id).await?;
    println!("redriven as stream sequence {:?}", receipt.sequence);

    println!("the log, as a tail saw it:");
    for _ in 0..EVENTS {
        let d = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await?
            .ok_or("the tail ended")??;
        println!("  {} {} {}", d.sequence(), d.event().ty, d.event().id);
    }
    bus.close().await?;
    Ok(())
}
