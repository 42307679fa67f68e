//! Reading a tenant's stored events back, a page at a time, on every engine.
//!
//! Engines offer tails, not range reads, so a page is read with a tail from the
//! cursor: it ends at `limit` matches, at `scan_max` events looked at, or once
//! the tail has been quiet for `idle` (the end of what is stored so far).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::bus::{Bus, Subscriber};
use crate::error::{ErrorKind, Result};
use crate::event::{Event, TenantId};
use crate::subscription::{StartAt, SubscribeOptions, TypePattern};

/// The default wait for one more event before a page is taken to be complete.
pub const DEFAULT_HISTORY_IDLE: Duration = Duration::from_millis(200);

/// Which stored events to read; see [`Bus::history`].
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// The tenant whose log is read; no other tenant is ever seen.
    pub tenant: TenantId,
    /// Which types (default: all).
    pub types: TypePattern,
    /// Start at this log position (a previous page's `next`); overrides `since`.
    pub from_sequence: Option<u64>,
    /// Only events whose `time` is at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only events whose `time` is at or before this.
    pub until: Option<DateTime<Utc>>,
    /// Only events of this correlation.
    pub correlationid: Option<String>,
    /// Only events with this subject.
    pub subject: Option<String>,
    /// Matching events returned at most (default 100).
    pub limit: usize,
    /// Events looked at, matching or not, at most (default 100,000): bounds the
    /// work of one page when few events match.
    pub scan_max: usize,
    /// How long a quiet tail means "nothing more stored" (default 200 ms).
    pub idle: Duration,
}

impl HistoryQuery {
    /// Every event of `tenant`, from the beginning, 100 at a time.
    pub fn new(tenant: TenantId) -> Self {
        HistoryQuery {
            tenant,
            types: TypePattern::all(),
            from_sequence: None,
            since: None,
            until: None,
            correlationid: None,
            subject: None,
            limit: 100,
            scan_max: 100_000,
            idle: DEFAULT_HISTORY_IDLE,
        }
    }

    /// Whether `event` passes the filters a tail cannot apply itself.
    pub fn matches(&self, event: &Event) -> bool {
        let time_ok = match event.time {
            Some(t) => self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u),
            None => self.since.is_none() && self.until.is_none(),
        };
        time_ok
            && self
                .correlationid
                .as_ref()
                .is_none_or(|c| *c == event.correlationid)
            && self
                .subject
                .as_ref()
                .is_none_or(|s| event.subject.as_deref() == Some(s.as_str()))
    }
}

/// One page of history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The matching events with their log positions, in log order.
    pub events: Vec<(u64, Arc<Event>)>,
    /// Where the next page starts, when this one stopped at `limit` or
    /// `scan_max`; `None` when every stored event was looked at.
    pub next: Option<u64>,
}

impl Bus {
    /// Reads stored events of one tenant, in log order; see [`HistoryQuery`].
    pub async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage> {
        let start = match (query.from_sequence, query.since) {
            (Some(seq), _) => StartAt::Sequence(seq),
            (None, Some(since)) => StartAt::Time(since),
            (None, None) => StartAt::Beginning,
        };
        let options = SubscribeOptions::tail(query.tenant.clone())
            .types(query.types.clone())
            .start(start);
        let mut tail = self.subscribe(options).await?;
        let mut page = HistoryPage::default();
        let mut scanned = 0usize;
        loop {
            let next = match tokio::time::timeout(query.idle, tail.next()).await {
                Err(_) | Ok(None) => return Ok(page),
                Ok(Some(next)) => next,
            };
            let delivery = match next {
                Ok(d) => d,
                // Retention deleted part of the range: go on with what is left.
                Err(e) if e.kind() == ErrorKind::Lagged => continue,
                Err(e) => return Err(e),
            };
            let sequence = delivery.sequence();
            scanned += 1;
            if query.matches(delivery.event()) {
                page.events.push((sequence, delivery.event_arc()));
            }
            if page.events.len() >= query.limit || scanned >= query.scan_max {
                page.next = Some(sequence + 1);
                return Ok(page);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    async fn bus_with(events: usize) -> Bus {
        let bus = Bus::connect("memory:").await.unwrap();
        for i in 0..events {
            let ty = if i % 2 == 0 {
                "auth.login.failed"
            } else {
                "config.changed"
            };
            let event = Event::builder(EventType::new(ty).unwrap(), TenantId::new("acme").unwrap())
                .subject(format!("user{}", i % 3))
                .correlation_id(format!("c{}", i % 4))
                .build()
                .unwrap();
            bus.publish(event).await.unwrap();
        }
        let other = Event::builder(
            EventType::new("auth.login.failed").unwrap(),
            TenantId::new("globex").unwrap(),
        )
        .build()
        .unwrap();
        bus.publish(other).await.unwrap();
        bus
    }

    #[tokio::test]
    async fn pages_cover_every_event_once_in_order() {
        let bus = bus_with(25).await;
        let mut query = HistoryQuery::new(TenantId::new("acme").unwrap());
        query.limit = 10;
        let mut seen = Vec::new();
        loop {
            let page = bus.history(&query).await.unwrap();
            seen.extend(page.events.iter().map(|(s, _)| *s));
            match page.next {
                Some(next) => query.from_sequence = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }

    #[tokio::test]
    async fn filters_apply_and_other_tenants_stay_out() {
        let bus = bus_with(24).await;
        let mut query = HistoryQuery::new(TenantId::new("acme").unwrap());
        query.types = TypePattern::new("auth.>").unwrap();
        query.subject = Some("user0".into());
        let page = bus.history(&query).await.unwrap();
        // i even and i % 3 == 0: 0, 6, 12, 18.
        assert_eq!(page.events.len(), 4);
        assert!(page.next.is_none());
        for (_, e) in &page.events {
            assert_eq!(e.tenant.as_str(), "acme");
            assert_eq!(e.ty.as_str(), "auth.login.failed");
        }
        let mut query = HistoryQuery::new(TenantId::new("acme").unwrap());
        query.correlationid = Some("c1".into());
        let page = bus.history(&query).await.unwrap();
        assert_eq!(page.events.len(), 6);
        query.until = Some(Utc::now() - chrono::Duration::days(1));
        assert!(bus.history(&query).await.unwrap().events.is_empty());
    }
}
