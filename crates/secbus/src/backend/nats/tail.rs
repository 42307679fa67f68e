//! Tails and replays: ordered consumers (ephemeral, no acks, recreated by the
//! client on a gap or missed heartbeats) on `<prefix>.<tenant>.<type pattern>`,
//! with the deliver policy of the start position.
//!
//! When the ordered stream fails anyway (the server was gone longer than the
//! client's own recovery), the tail opens a new one from the sequence after
//! the last event it delivered, so it neither stops nor repeats.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use super::consumer::nats_time;
use super::engine::Shared;
use super::error;
use super::publish::REDRIVE_FOR;
use crate::engine::{EngineDelivery, EngineStream};
use crate::error::Result;
use crate::event::Event;
use crate::subscription::{StartAt, SubscribeOptions};

const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Opens a tail.
pub(super) async fn open(
    shared: Arc<Shared>,
    options: &SubscribeOptions,
) -> Result<Box<dyn EngineStream>> {
    let start = match options.start {
        // "New" is pinned to a sequence now, so a tail opened again after a
        // failure does not skip what was published in between.
        StartAt::New => {
            let info = shared
                .events
                .get_info()
                .await
                .map_err(|e| error::unavailable("cannot read the events stream", e))?;
            DeliverPolicy::ByStartSequence {
                start_sequence: info.state.last_sequence + 1,
            }
        }
        StartAt::Beginning => DeliverPolicy::All,
        StartAt::Sequence(n) => DeliverPolicy::ByStartSequence {
            start_sequence: n.max(1),
        },
        StartAt::Time(t) => DeliverPolicy::ByStartTime {
            start_time: nats_time(t),
        },
    };
    let mut tail = Tail {
        filter: shared
            .config
            .subject(options.tenant.as_str(), options.types.as_str()),
        closed: shared.closed.subscribe(),
        connections: shared.connections.subscribe(),
        shared,
        start,
        last: None,
        messages: None,
        failures: 0,
    };
    tail.connect().await?;
    Ok(Box::new(tail))
}

struct Tail {
    shared: Arc<Shared>,
    filter: String,
    start: DeliverPolicy,
    /// The stream sequence of the last event delivered.
    last: Option<u64>,
    messages: Option<pull::Ordered>,
    closed: watch::Receiver<bool>,
    connections: watch::Receiver<u64>,
    failures: u32,
}

impl Tail {
    async fn connect(&mut self) -> Result<()> {
        let deliver_policy = match self.last {
            Some(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
            None => self.start,
        };
        let consumer = self
            .shared
            .events
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.filter.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| error::unavailable("cannot open a tail", e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| error::unavailable("cannot open a tail", e))?;
        self.messages = Some(messages);
        self.connections.borrow_and_update();
        Ok(())
    }

    async fn back_off(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        let delay = Duration::from_millis(50u64 << self.failures.min(6)).min(MAX_RETRY_DELAY);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            r = self.closed.changed() => r.is_ok() && !*self.closed.borrow(),
        }
    }
}

#[async_trait]
impl EngineStream for Tail {
    async fn next(&mut self) -> Option<Result<EngineDelivery>> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            if self.messages.is_none()
                && let Err(e) = self.connect().await
            {
                tracing::warn!(filter = %self.filter, error = %e, "tail cannot read; retrying");
                if !self.back_off().await {
                    return None;
                }
                continue;
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            let item = tokio::select! {
                r = self.closed.changed() => {
                    if r.is_err() { return None }
                    continue;
                }
                _ = self.connections.changed() => {
                    // Reconnected: the server may have restarted without the
                    // ephemeral consumer; read on from after the last event.
                    self.messages = None;
                    continue;
                }
                item = messages.next() => item,
            };
            let message = match item {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::warn!(filter = %self.filter, error = %e, "tail stream failed; reading again");
                    self.messages = None;
                    if !self.back_off().await {
                        return None;
                    }
                    continue;
                }
                None => {
                    self.messages = None;
                    continue;
                }
            };
            self.failures = 0;
            let Ok(sequence) = message.info().map(|i| i.stream_sequence) else {
                continue;
            };
            self.last = Some(sequence);
            let redrive_for = message
                .headers
                .as_ref()
                .and_then(|h| h.get(REDRIVE_FOR))
                .map(|v| Arc::<str>::from(v.as_str()));
            match Event::from_json_limited(&message.payload, usize::MAX) {
                Ok(event) => {
                    return Some(Ok(EngineDelivery {
                        event: Arc::new(event),
                        sequence,
                        attempt: 1,
                        acker: None,
                        redrive_for,
                    }));
                }
                Err(e) => tracing::error!(
                    subject = %message.subject,
                    sequence,
                    error = %e,
                    "a message in the events stream is not a secbus event; the tail skips it"
                ),
            }
        }
    }
}
