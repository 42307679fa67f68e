//! What a subscriber asks for: [`SubscribeOptions`] with its [`Mode`], [`StartAt`]
//! and [`TypePattern`], and the [`Subscription`] stream it gets back.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::delivery::{DeadLetter, Delivery, GroupContext};
use crate::engine::{Engine, EngineDelivery, EngineStream};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{EventType, TenantId};

/// A filter on event types, in NATS subject syntax over the dot-separated tokens:
/// `auth.login.failed` (exact), `auth.*.failed` (`*` matches one token),
/// `auth.>` (`>` matches one or more trailing tokens), `>` (every type).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypePattern(String);

impl TypePattern {
    /// Validates a pattern.
    pub fn new(pattern: impl Into<String>) -> Result<Self> {
        let pattern = pattern.into();
        let tokens: Vec<&str> = pattern.split('.').collect();
        let ok = pattern.len() <= 255
            && tokens.iter().enumerate().all(|(i, t)| {
                *t == "*" || (*t == ">" && i == tokens.len() - 1) || EventType::new(*t).is_ok()
            });
        if ok {
            Ok(TypePattern(pattern))
        } else {
            Err(Error::new(
                ErrorKind::InvalidOptions,
                format!(
                    "type pattern {pattern:?} is not valid (e.g. auth.login.failed, auth.*, auth.>)"
                ),
            )
            .with_field("type"))
        }
    }

    /// The pattern matching every type.
    pub fn all() -> Self {
        TypePattern(">".to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `ty` matches.
    pub fn matches(&self, ty: &EventType) -> bool {
        if self.0 == ">" {
            return true;
        }
        let mut pat = self.0.split('.');
        let mut typ = ty.as_str().split('.');
        loop {
            match (pat.next(), typ.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl std::str::FromStr for TypePattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TypePattern::new(s)
    }
}

/// How a subscription shares events with others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A named consumer group: its members share the work, each event goes to one
    /// member, and the group remembers how far it got (acknowledged deliveries).
    Group(String),
    /// A live tail: every matching event, no acks, nothing remembered.
    Tail,
}

/// Where a subscription starts reading.
///
/// For a group, this applies only when the group is first created; an existing
/// group resumes after what it acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only events published from now on.
    New,
    /// The oldest retained event.
    Beginning,
    /// The event at this log position, or the next one after it.
    Sequence(u64),
    /// The first event stored at or after this time.
    Time(DateTime<Utc>),
}

/// The default number of deliveries before an event goes to the dead letters.
pub const DEFAULT_MAX_DELIVERIES: u32 = 3;

/// What to subscribe to and how.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// The tenant whose events to read. A subscription never sees another tenant.
    pub tenant: TenantId,
    /// Which types (default: all).
    pub types: TypePattern,
    /// Group or tail.
    pub mode: Mode,
    /// Where to start (default: [`StartAt::New`]).
    pub start: StartAt,
    /// Deliveries handed to this subscriber and not yet settled, at most (default 256).
    pub max_in_flight: usize,
    /// How long a delivery may stay unsettled before it is given to another member
    /// (default 30 s).
    pub ack_wait: Duration,
    /// Deliveries of one event before it goes to the dead letters (default 3).
    pub max_deliveries: u32,
    /// Redelivery delays after a nack without a delay, one per attempt; the last
    /// repeats (default 1 s, 5 s, 30 s).
    pub backoff: Vec<Duration>,
}

impl SubscribeOptions {
    /// A consumer group `name` of `tenant`, over every type, starting with new events.
    pub fn group(tenant: TenantId, name: impl Into<String>) -> Self {
        Self::with_mode(tenant, Mode::Group(name.into()))
    }

    /// A live tail of `tenant`, over every type, starting with new events.
    pub fn tail(tenant: TenantId) -> Self {
        Self::with_mode(tenant, Mode::Tail)
    }

    fn with_mode(tenant: TenantId, mode: Mode) -> Self {
        SubscribeOptions {
            tenant,
            types: TypePattern::all(),
            mode,
            start: StartAt::New,
            max_in_flight: 256,
            ack_wait: Duration::from_secs(30),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
        }
    }

    /// Restricts the types.
    pub fn types(mut self, pattern: TypePattern) -> Self {
        self.types = pattern;
        self
    }

    /// Sets where to start.
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Sets the in-flight bound.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Sets the delivery limit.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Sets the backoff schedule.
    pub fn backoff(mut self, delays: Vec<Duration>) -> Self {
        self.backoff = delays;
        self
    }

    /// The group name, for a group subscription.
    pub fn group_name(&self) -> Option<&str> {
        match &self.mode {
            Mode::Group(name) => Some(name),
            Mode::Tail => None,
        }
    }

    /// Checks the options are consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: &str| {
            Err(Error::new(ErrorKind::InvalidOptions, msg.to_owned()).with_field(field))
        };
        if let Mode::Group(name) = &self.mode {
            let ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return bad(
                    "group",
                    "a group name is 1 to 64 characters of A-Z a-z 0-9 - _",
                );
            }
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "max_in_flight must be at least 1");
        }
        if self.max_deliveries == 0 {
            return bad("max_deliveries", "max_deliveries must be at least 1");
        }
        if self.ack_wait < Duration::from_millis(10) {
            return bad("ack_wait", "ack_wait must be at least 10 ms");
        }
        Ok(())
    }

    /// The redelivery delay after a nack of delivery number `attempt` (1-based).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) - 1) as usize;
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }
}

/// A stream of deliveries; see [`crate::Subscriber::subscribe`].
///
/// Pull with [`Subscription::next`]. Dropping the subscription leaves its unsettled
/// deliveries to be redelivered after their ack wait.
pub struct Subscription {
    inner: Box<dyn EngineStream>,
    permits: Arc<Semaphore>,
    group: Option<Arc<GroupContext>>,
    options: Arc<SubscribeOptions>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        inner: Box<dyn EngineStream>,
        engine: Arc<dyn Engine>,
        options: SubscribeOptions,
    ) -> Self {
        let options = Arc::new(options);
        let group = options.group_name().map(|name| {
            Arc::new(GroupContext {
                engine,
                group: name.to_owned(),
                options: options.clone(),
            })
        });
        Subscription {
            inner,
            permits: Arc::new(Semaphore::new(options.max_in_flight)),
            group,
            options,
        }
    }

    /// The options this subscription was made with.
    pub fn options(&self) -> &SubscribeOptions {
        &self.options
    }

    /// The next delivery; `None` once the bus is closed.
    ///
    /// Waits while `max_in_flight` deliveries are unsettled. A tail that fell
    /// behind the retained history yields one `Err` of kind [`ErrorKind::Lagged`]
    /// naming how many events it missed, then goes on from the oldest retained one.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let permit = match self.permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return None,
            };
            let raw = match self.inner.next().await? {
                Ok(raw) => raw,
                Err(e) => return Some(Err(e)),
            };
            if raw.event.tenant != self.options.tenant {
                // Engines filter by tenant; this is the second lock on the door.
                tracing::error!(
                    event_id = %raw.event.id,
                    event_type = %raw.event.ty,
                    tenant_id = %raw.event.tenant,
                    expected_tenant = %self.options.tenant,
                    "engine returned an event of another tenant; skipped"
                );
                settle_in_background(raw, None);
                continue;
            }
            if let Some(target) = &raw.redrive_for {
                // A redriven dead letter is meant for one group; others and tails skip it.
                if self.group.as_ref().is_none_or(|g| g.group != **target) {
                    settle_in_background(raw, None);
                    continue;
                }
            }
            if let (Some(group), true) = (&self.group, raw.acker.is_some())
                && raw.attempt > self.options.max_deliveries
            {
                {
                    let dl = DeadLetter::new(
                        &raw.event,
                        &group.group,
                        "max_deliveries",
                        raw.attempt - 1,
                        Some(format!(
                            "not settled within the ack wait ({:?}) on the last delivery",
                            self.options.ack_wait
                        )),
                    );
                    settle_in_background(raw, Some((group.engine.clone(), dl)));
                    continue;
                }
            }
            return Some(Ok(Delivery::new(raw, self.group.clone(), permit)));
        }
    }
}

/// Acks a delivery the subscriber will never see, after storing its dead
/// letter when there is one. It runs as its own task so that a caller dropping
/// `next()` (a timeout, a `select!`) cannot cut it between the two steps, which
/// would dead-letter the event a second time. If the dead letter cannot be
/// stored, the delivery is left unacked and comes back after the ack wait.
fn settle_in_background(raw: EngineDelivery, dead_letter: Option<(Arc<dyn Engine>, DeadLetter)>) {
    let Some(acker) = raw.acker else { return };
    tokio::spawn(async move {
        if let Some((engine, dl)) = dead_letter
            && let Err(e) = engine.put_dead_letter(dl).await
        {
            {
                tracing::error!(
                    event_id = %raw.event.id,
                    event_type = %raw.event.ty,
                    tenant_id = %raw.event.tenant,
                    correlation_id = %raw.event.correlationid,
                    code = e.code(),
                    error = %e,
                    "cannot store a dead letter; the event comes back after the ack wait"
                );
                return;
            }
        }
        if let Err(e) = acker.ack(raw.sequence).await {
            tracing::warn!(event_id = %raw.event.id, code = e.code(), error = %e,
                "cannot ack a skipped delivery; it comes back after the ack wait");
        }
    });
}
