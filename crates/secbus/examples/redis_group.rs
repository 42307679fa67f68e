//! A consumer group on Redis Streams: two members share a tenant's events, one
//! event fails once and comes back with its attempt number, and a tail shows
//! the log in order.
//!
//! `cargo run -p secbus --features redis --example redis_group`
//! (REDIS_URL defaults to `redis://127.0.0.1:6379`; the example writes under
//! the key prefix `secbus-example`, e.g. `secbus-example:{acme}:log`).

use std::collections::HashMap;
use std::time::Duration;

use secbus::{Bus, Event, EventType, StartAt, SubscribeOptions, Subscriber, TenantId};
use serde_json::json;
use tokio::sync::mpsc;

const EVENTS: u64 = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let url = format!("{redis}?prefix=secbus-example&maxlen=10000");
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
                let n = delivery.event().data().and_then(|d| d["n"].as_u64());
                // Event 3 fails on its first attempt and is delivered again.
                if n == Some(3) && delivery.attempt() == 1 {
                    println!("{member}: event 3 failed (attempt 1), nacked");
                    let _ = delivery.nack(None, Some("downstream busy")).await;
                    continue;
                }
                println!(
                    "{member}: event {} (attempt {}, sequence {})",
                    n.unwrap_or_default(),
                    delivery.attempt(),
                    delivery.sequence()
                );
                let _ = delivery.ack().await;
                let _ = done.send(member);
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
    for _ in 0..EVENTS {
        let member = tokio::time::timeout(Duration::from_secs(30), finished.recv())
            .await?
            .ok_or("the members stopped")?;
        *per_member.entry(member).or_default() += 1;
    }
    println!("work shared: {per_member:?}");

    print!("the tail saw:");
    for _ in 0..EVENTS {
        let d = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await?
            .ok_or("the tail ended")??;
        print!(
            " {}",
            d.event()
                .data()
                .and_then(|d| d["n"].as_u64())
                .unwrap_or_default()
        );
    }
    println!();
    bus.close().await?;
    Ok(())
}
