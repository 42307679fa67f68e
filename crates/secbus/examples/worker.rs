//! A handler of your own, run by a worker over a consumer group: it counts
//! failed logins per user, and the fifth failure of a user causes a
//! `security.anomaly.detected` event, linked to it by `causationid`.
//!
//! ```text
//! cargo run -p secbus --example worker                        # on memory:
//! SECBUS_URL=embedded:./secbus-data cargo run -p secbus --example worker
//! ```

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use secbus::handler::{
    Handler, HandlerContext, HandlerError, HandlerExt, TimeoutLayer, Worker, WorkerHandle,
};
use secbus::{Bus, Event, EventId, EventType, SubscribeOptions, Subscriber, TenantId, TypePattern};
use serde::Deserialize;

const FAILURES_BEFORE_ANOMALY: usize = 5;

/// Counts failed logins per user. Counts are sets of event ids, so an event
/// delivered twice (delivery is at-least-once) is counted once.
#[derive(Default)]
struct FailedLogins {
    per_user: Mutex<HashMap<String, HashSet<EventId>>>,
}

#[derive(Deserialize)]
struct LoginFailed {
    user: String,
    ip: String,
}

#[async_trait]
impl Handler for FailedLogins {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        // Data of the wrong shape is a permanent failure: `?` sends it to the dead letters.
        let login: LoginFailed = event
            .data_as()?
            .ok_or_else(|| HandlerError::permanent("auth.login.failed without data"))?;
        let failures = {
            let mut per_user = self.per_user.lock();
            let seen = per_user.entry(login.user.clone()).or_default();
            // Only a new failure may be the one that crosses the threshold.
            if !seen.insert(event.id.clone()) {
                return Ok(());
            }
            seen.len()
        };
        println!(
            "  [{}] failed login {failures} for {} from {}",
            ctx.tenant(),
            login.user,
            login.ip
        );
        if failures == FAILURES_BEFORE_ANOMALY {
            let anomaly = ctx
                .caused(EventType::new("security.anomaly.detected")?)
                .subject(login.user.clone())
                .data(serde_json::json!({
                    "rule": "failed-logins",
                    "user": login.user,
                    "failures": failures,
                    "last_ip": login.ip,
                }))
                .build()?;
            ctx.publish(anomaly).await?;
        }
        Ok(())
    }
}

/// A failed login; the user is the partition key, so one user's failures are
/// handled one at a time, in order, while different users run concurrently.
fn login_failed(
    tenant: &TenantId,
    user: &str,
    data: serde_json::Value,
) -> Result<Event, secbus::Error> {
    Event::builder(EventType::new("auth.login.failed")?, tenant.clone())
        .source("https://idp.example.com")
        .partition_key(user)
        .data(data)
        .build()
}

async fn wait_until_settled(worker: &WorkerHandle, events: u64) -> Result<(), &'static str> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let stats = worker.stats();
            if stats.handled + stats.dead_lettered >= events {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .map_err(|_| "the worker did not settle every event within 30 s")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SECBUS_URL").unwrap_or_else(|_| "memory:".to_owned());
    let bus = Bus::connect(&url).await?;
    let acme = TenantId::new("acme")?;
    println!("bus: {url}");

    // Whoever consumes anomalies: here, a live tail.
    let mut anomalies = bus
        .subscribe(
            SubscribeOptions::tail(acme.clone())
                .types(TypePattern::new("security.anomaly.detected")?),
        )
        .await?;

    let handler = FailedLogins::default().with(TimeoutLayer::new(Duration::from_secs(5)));
    let options = SubscribeOptions::group(acme.clone(), "failed-logins")
        .types(TypePattern::new("auth.login.failed")?);
    let worker = Worker::new(bus.clone(), options)
        .concurrency(4)
        .start(handler)
        .await?;

    let mut events = Vec::new();
    for i in 0..6 {
        events.push(login_failed(
            &acme,
            "bob",
            serde_json::json!({"user": "bob", "ip": format!("203.0.113.{}", 10 + i)}),
        )?);
    }
    for _ in 0..2 {
        events.push(login_failed(
            &acme,
            "alice",
            serde_json::json!({"user": "alice", "ip": "198.51.100.7"}),
        )?);
    }
    let malformed = login_failed(&acme, "mallory", serde_json::json!({"username": "mallory"}))?;
    events.push(malformed.clone());
    println!("publishing {} auth.login.failed events", events.len());
    let published = events.len() as u64;
    for event in events {
        bus.publish(event).await?;
    }

    let delivery = tokio::time::timeout(Duration::from_secs(30), anomalies.next())
        .await
        .map_err(|_| "no anomaly within 30 s")?
        .ok_or("the bus closed")??;
    let anomaly = delivery.event();
    println!(
        "anomaly {} about {}: {}\n  caused by {} (correlation {})",
        anomaly.ty,
        anomaly.subject.as_deref().unwrap_or("?"),
        anomaly.data_raw().unwrap_or("{}"),
        anomaly.causationid.as_deref().unwrap_or("?"),
        anomaly.correlationid,
    );

    wait_until_settled(&worker, published).await?;
    let stats = worker.shutdown().await?;
    println!(
        "worker stopped: {} handled, {} failed, {} dead-lettered",
        stats.handled, stats.failed, stats.dead_lettered
    );

    for dl in bus.dead_letters(&acme, 1000).await? {
        if dl.event.id == malformed.id {
            println!(
                "dead letter {}: group {}, {} after {} attempt(s): {}",
                dl.id,
                dl.group,
                dl.reason,
                dl.attempts,
                dl.last_error.as_deref().unwrap_or("")
            );
        }
    }
    bus.close().await?;
    Ok(())
}
