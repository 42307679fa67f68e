//! A handler of your own, registered from Rust: it counts failed logins per
//! user and, on the third, publishes a `security.anomaly.detected` caused by
//! that login. It runs next to the built-in audit handler, timed by the
//! metrics layer, behind the contracts gate.
//!
//! ```text
//! cargo run -p secbus-handlers --example custom_handler
//! SECBUS_URL=nats://127.0.0.1:4222 cargo run -p secbus-handlers --example custom_handler
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use secbus::handler::{Handler, HandlerContext, HandlerError, HandlerExt, TimeoutLayer, Worker};
use secbus::{Bus, Event, EventType, SubscribeOptions, Subscriber, TenantId, TypePattern};
use secbus_contracts::{ContractsGate, Registry as Schemas};
use secbus_handlers::audit::{self, AuditConfig};
use secbus_handlers::metrics::HandlerMetrics;
use serde_json::{Value, json};

/// Failed logins of one user that make an anomaly.
const THRESHOLD: u32 = 3;

/// The handler: state per (tenant, user), kept in memory.
#[derive(Default)]
struct BruteForce {
    failures: Mutex<HashMap<(TenantId, String), u32>>,
}

#[async_trait]
impl Handler for BruteForce {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        // The schema guarantees `user`; an event without it is not worth a retry.
        let data: Value = event
            .data_as()?
            .ok_or_else(|| HandlerError::permanent("a failed login without data"))?;
        let user = data["user"]
            .as_str()
            .ok_or_else(|| HandlerError::permanent("a failed login without a user"))?
            .to_owned();
        let count = {
            let mut failures = self.failures.lock();
            let n = failures
                .entry((ctx.tenant().clone(), user.clone()))
                .or_default();
            *n += 1;
            *n
        };
        if count == THRESHOLD {
            // Same tenant, causationid = this login, same correlation; the id is
            // derived from this delivery, so a redelivery publishes it once.
            let anomaly = ctx
                .caused(EventType::new("security.anomaly.detected")?)
                .source("examples/custom_handler")
                .data(json!({
                    "anomaly_type": "failed_login_burst",
                    "severity": "medium",
                    "detector": "custom-brute-force",
                    "entity": { "type": "user", "id": user },
                    "metric": "failed_logins",
                    "observed_value": count,
                }))
                .build()?;
            ctx.publish(anomaly).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SECBUS_URL").unwrap_or_else(|_| "memory:".to_owned());
    let gate = ContractsGate::new(Arc::new(Schemas::builtin()?));
    let bus = Bus::connect(&url).await?.with_gate(Arc::new(gate));
    let tenant = TenantId::new("example-tenant")?;

    let metrics = HandlerMetrics::new();
    let mut registry = Registry::with_prefix("secbus");
    metrics.register(&mut registry);

    // Your handler, on a consumer group of its own, with the library's layers.
    let handler = BruteForce::default()
        .with(TimeoutLayer::new(Duration::from_secs(5)))
        .with(metrics.layer("brute-force"));
    let options = SubscribeOptions::group(tenant.clone(), "brute-force")
        .types(TypePattern::new("auth.login.failed")?);
    let worker = Worker::new(bus.clone(), options)
        .concurrency(4)
        .start(handler)
        .await?;

    // The built-in audit handler beside it, on its own group.
    let trail = std::env::temp_dir().join(format!("secbus-example-audit-{}", std::process::id()));
    let audit = audit::spawn(&bus, &AuditConfig::new(&trail, vec![tenant.to_string()])).await?;

    let mut anomalies = bus
        .subscribe(
            SubscribeOptions::tail(tenant.clone())
                .types(TypePattern::new("security.anomaly.detected")?),
        )
        .await?;
    for _ in 0..THRESHOLD {
        let login = Event::builder(EventType::new("auth.login.failed")?, tenant.clone())
            .source("examples/idp")
            .data(json!({"user": "bob@example.test", "src_ip": "203.0.113.9", "reason": "bad_password"}))
            .build()?;
        bus.publish(login).await?;
    }
    let anomaly = tokio::time::timeout(Duration::from_secs(10), anomalies.next())
        .await?
        .ok_or("the bus closed")??;
    let anomaly = anomaly.event();
    println!(
        "{} caused by {} (correlation {}): {}",
        anomaly.ty,
        anomaly.causationid.as_deref().unwrap_or("-"),
        anomaly.correlationid,
        anomaly.data().unwrap_or_default()
    );

    let stats = worker.shutdown().await?;
    audit.shutdown().await?;
    println!("brute-force handled {} events", stats.handled);
    for check in audit::verify_path(trail.join(tenant.as_str()))? {
        println!(
            "audit trail: {} records, intact: {}",
            check.records,
            check.is_intact()
        );
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    for line in text
        .lines()
        .filter(|l| l.starts_with("secbus_handler_seconds_count"))
    {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&trail);
    bus.close().await?;
    Ok(())
}
