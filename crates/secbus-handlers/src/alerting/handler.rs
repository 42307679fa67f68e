//! The alerting handler: matches each event against the rules, throttles,
//! delivers to the outputs with retries, and publishes each outcome.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secbus::handler::{Handler, HandlerContext, HandlerError};
use secbus::{Event, EventType};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::config::AlertingConfig;
use super::output::{Failure, Output};
use super::rule::{Facts, Rule};
use super::throttle::{Admit, Throttle};
use crate::error::{Error, Result};

/// The longest `error` text an `alert.failed` carries.
const MAX_ERROR_CHARS: usize = 1024;

/// Routes matching events to outputs; see [`super`].
#[derive(Debug, Clone)]
pub struct AlertingHandler {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Vec<Rule>,
    client: reqwest::Client,
    throttle: Throttle,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertingHandler")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// One alert on its way to one output.
struct Alert<'a> {
    event: &'a Event,
    rule: &'a Rule,
    output: &'a Output,
    facts: &'a Facts,
    throttle_value: Option<String>,
    suppressed: u64,
}

impl AlertingHandler {
    /// Checks `config` (outputs, rules, secrets) and builds the handler.
    pub fn new(config: &AlertingConfig) -> Result<Self> {
        let mut outputs: Vec<Arc<Output>> = Vec::new();
        for o in &config.outputs {
            if outputs.iter().any(|x| x.name == o.name) {
                return Err(Error::config(format!(
                    "alerting output {:?} is defined twice",
                    o.name
                )));
            }
            outputs.push(Arc::new(Output::new(o)?));
        }
        let mut rules: Vec<Rule> = Vec::new();
        for r in &config.rules {
            if rules.iter().any(|x| x.id == r.id) {
                return Err(Error::config(format!(
                    "alerting rule {:?} is defined twice",
                    r.id
                )));
            }
            rules.push(Rule::new(r, &outputs)?);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("secbus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("cannot set up the HTTP client").with_source(e))?;
        Ok(AlertingHandler {
            inner: Arc::new(Inner {
                rules,
                client,
                throttle: Throttle::default(),
            }),
        })
    }

    /// Alerts suppressed by throttling so far.
    pub fn suppressed(&self) -> u64 {
        self.inner.throttle.suppressed()
    }

    async fn deliver(&self, ctx: &HandlerContext, alert: Alert<'_>) {
        let output = alert.output;
        let body = serde_json::to_vec(&webhook_body(&alert)).unwrap_or_default();
        let text = slack_text(&alert);
        let started = Instant::now();
        let mut attempt = 1u32;
        loop {
            let result = output.attempt(&self.inner.client, &body, &text).await;
            let mut data = outcome_fields(&alert, attempt, started);
            match result {
                Ok(status) => {
                    if let Some(s) = status {
                        data.insert("http_status".into(), s.into());
                    }
                    publish(ctx, "alert.sent", data).await;
                    return;
                }
                Err(failure) => {
                    let will_retry = failure.retryable && attempt <= output.retries;
                    let wait = output.backoff.saturating_mul(1 << (attempt - 1).min(16));
                    log_failure(&alert, attempt, will_retry, &failure);
                    add_failure(&mut data, &failure, will_retry, wait);
                    publish(ctx, "alert.failed", data).await;
                    if !will_retry {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[async_trait]
impl Handler for AlertingHandler {
    async fn handle(&self, ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        let mut facts = None;
        for rule in &self.inner.rules {
            let facts = facts.get_or_insert_with(|| Facts::of(event));
            if !rule.matches(event, facts) {
                continue;
            }
            let throttle_value = rule.throttle_value(facts);
            let key = format!(
                "{}\u{0}{}\u{0}{}",
                rule.id,
                event.tenant,
                throttle_value.as_deref().unwrap_or_default()
            );
            let suppressed = match self.inner.throttle.admit(key, rule.window) {
                Admit::Send(n) => n,
                Admit::Suppressed => {
                    tracing::debug!(
                        event_id = %event.id,
                        event_type = %event.ty,
                        tenant_id = %event.tenant,
                        correlation_id = %event.correlationid,
                        rule = %rule.id,
                        "alert suppressed by throttling"
                    );
                    continue;
                }
            };
            for output in &rule.outputs {
                let alert = Alert {
                    event,
                    rule,
                    output,
                    facts,
                    throttle_value: throttle_value.clone(),
                    suppressed,
                };
                self.deliver(ctx, alert).await;
            }
        }
        Ok(())
    }
}

/// What a webhook receives.
fn webhook_body(alert: &Alert<'_>) -> Value {
    json!({
        "rule_id": alert.rule.id,
        "tenant": alert.event.tenant.as_str(),
        "severity": alert.facts.severity.and_then(|s| s.alert_word()),
        "throttle_key": alert.throttle_value,
        "suppressed_count": alert.suppressed,
        "event": alert.facts.json,
    })
}

/// What a Slack-compatible hook shows.
fn slack_text(alert: &Alert<'_>) -> String {
    let e = alert.event;
    let mut text = format!(
        "[secbus] {}: {} for tenant {}",
        alert.rule.id, e.ty, e.tenant
    );
    if let Some(s) = alert.facts.severity.and_then(|s| s.alert_word()) {
        text.push_str(&format!(", severity {s}"));
    }
    if let Some(subject) = &e.subject {
        text.push_str(&format!(", subject {subject}"));
    }
    if alert.suppressed > 0 {
        text.push_str(&format!(" ({} more suppressed)", alert.suppressed));
    }
    text.push_str(&format!(" (event {})", e.id));
    text
}

/// The fields `alert.sent` and `alert.failed` share.
fn outcome_fields(alert: &Alert<'_>, attempts: u32, started: Instant) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("rule_id".into(), alert.rule.id.clone().into());
    data.insert("output".into(), alert.output.kind.as_str().into());
    data.insert("output_name".into(), alert.output.name.clone().into());
    if let Some(host) = alert.output.host() {
        data.insert("destination_host".into(), host.into());
    }
    data.insert("trigger_event_id".into(), alert.event.id.as_str().into());
    data.insert("trigger_event_type".into(), alert.event.ty.as_str().into());
    if let Some(s) = alert.facts.severity.and_then(|s| s.alert_word()) {
        data.insert("severity".into(), s.into());
    }
    if let Some(k) = &alert.throttle_value {
        data.insert("throttle_key".into(), k.clone().into());
    }
    data.insert("suppressed_count".into(), alert.suppressed.into());
    data.insert("attempts".into(), attempts.into());
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    data.insert("duration_ms".into(), ms.into());
    data
}

fn add_failure(data: &mut Map<String, Value>, f: &Failure, will_retry: bool, wait: Duration) {
    if let Some(s) = f.status {
        data.insert("http_status".into(), s.into());
    }
    data.insert("error_kind".into(), f.kind.into());
    let error: String = f.message.chars().take(MAX_ERROR_CHARS).collect();
    data.insert("error".into(), error.into());
    data.insert("will_retry".into(), will_retry.into());
    if will_retry && let Ok(wait) = chrono::Duration::from_std(wait) {
        let at = (Utc::now() + wait).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        data.insert("next_attempt_at".into(), at.into());
    }
}

fn log_failure(alert: &Alert<'_>, attempt: u32, will_retry: bool, f: &Failure) {
    let e = alert.event;
    tracing::warn!(
        event_id = %e.id,
        event_type = %e.ty,
        tenant_id = %e.tenant,
        correlation_id = %e.correlationid,
        rule = %alert.rule.id,
        output = %alert.output.name,
        attempt,
        will_retry,
        error_kind = f.kind,
        error = %f.message,
        "alert delivery failed"
    );
}

/// Publishes an outcome caused by the triggering event. A refusal is logged:
/// retrying the triggering event would deliver its alerts again.
async fn publish(ctx: &HandlerContext, ty: &str, data: Map<String, Value>) {
    let event = EventType::new(ty)
        .and_then(|ty| ctx.caused(ty).source("secbus/alerting").data(data).build());
    let result = match event {
        Ok(event) => ctx.publish(event).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let t = ctx.event();
        tracing::error!(
            event_id = %t.id,
            event_type = %t.ty,
            tenant_id = %t.tenant,
            correlation_id = %t.correlationid,
            code = e.code(),
            error = %e,
            "cannot publish {ty}"
        );
    }
}
