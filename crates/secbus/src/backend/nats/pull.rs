//! The pull requests of one consumer group in this process.
//!
//! Every request of the group goes out with the same reply inbox, one request
//! at a time: a new one when the last was filled, expired, or went silent (no
//! message and no idle heartbeat for a while, as after a server restart), or
//! after a reconnect. The inbox lives as long as the group, so the server never
//! holds a request of ours whose inbox is gone.
//!
//! That matters on nats-server 2.9: when the request at the head of a pull
//! consumer's waiting queue has lost its inbox and the message to deliver is a
//! *redelivery*, the server "redoes" it by stepping its stream sequence back
//! (`loopAndGatherMsgs`: `o.sseq--`), which delivers the last new message a
//! second time and leaves the redelivery waiting for another ack wait. The
//! client's own pull streams use an inbox per stream or batch; dropping one
//! with a request outstanding sets that up.

use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::{StatusCode, Subscriber};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};

/// A request lasts this long at most on the server.
const EXPIRES: Duration = Duration::from_secs(30);
/// The server's sign of life on an idle request.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a request counts as lost with its server.
const SILENCE: Duration = Duration::from_secs(3);

/// What came in on the inbox.
pub(super) enum Pulled {
    /// A message of the stream.
    Message(Box<Message>),
    /// A heartbeat or the end of a request: look again.
    Again,
    /// The server says the consumer is gone: create it again.
    ConsumerGone,
    /// The request failed; back off before the next.
    Failed(String),
}

#[derive(Serialize)]
struct NextRequest {
    batch: usize,
    /// Nanoseconds.
    expires: u64,
    /// Nanoseconds.
    idle_heartbeat: u64,
}

struct Outstanding {
    asked: usize,
    received: usize,
    last_seen: Instant,
}

/// The inbox and the request outstanding on it.
pub(super) struct Puller {
    context: async_nats::jetstream::Context,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    api_subject: String,
    batch: usize,
    inbox: Option<(String, Subscriber)>,
    request: Option<Outstanding>,
    /// The durable consumer is known to exist.
    pub(super) consumer_ready: bool,
    /// Consecutive failures, for the backoff.
    pub(super) failures: u32,
}

impl Puller {
    pub(super) fn new(
        context: async_nats::jetstream::Context,
        stream: &str,
        consumer: &str,
        batch: usize,
    ) -> Puller {
        Puller {
            context,
            api_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            batch,
            inbox: None,
            request: None,
            consumer_ready: true,
            failures: 0,
        }
    }

    /// Sends a request when none is outstanding.
    pub(super) async fn request(&mut self) -> Result<()> {
        if self.request.is_some() {
            return Ok(());
        }
        let client = self.context.client();
        if self.inbox.is_none() {
            let inbox = client.new_inbox();
            let subscriber = client.subscribe(inbox.clone()).await.map_err(|e| {
                Error::new(
                    ErrorKind::EngineUnavailable,
                    "cannot subscribe to a pull inbox",
                )
                .with_source(e)
            })?;
            self.inbox = Some((inbox, subscriber));
        }
        let Some((inbox, _)) = &self.inbox else {
            return Ok(());
        };
        let body = serde_json::to_vec(&NextRequest {
            batch: self.batch,
            expires: EXPIRES.as_nanos() as u64,
            idle_heartbeat: HEARTBEAT.as_nanos() as u64,
        })
        .unwrap_or_default();
        client
            .publish_with_reply(self.api_subject.clone(), inbox.clone(), body.into())
            .await
            .map_err(|e| {
                Error::new(ErrorKind::EngineUnavailable, "cannot send a pull request")
                    .with_source(e)
            })?;
        self.request = Some(Outstanding {
            asked: self.batch,
            received: 0,
            last_seen: Instant::now(),
        });
        Ok(())
    }

    /// When the outstanding request counts as lost, if there is one.
    pub(super) fn lost_at(&self) -> Option<Instant> {
        self.request.as_ref().map(|r| r.last_seen + SILENCE)
    }

    /// Forgets the outstanding request (lost, or the connection was renewed).
    pub(super) fn forget_request(&mut self) {
        self.request = None;
    }

    /// The next thing on the inbox. Cancel-safe.
    pub(super) async fn next(&mut self) -> Pulled {
        let Some((_, subscriber)) = self.inbox.as_mut() else {
            return Pulled::Again;
        };
        let Some(message) = subscriber.next().await else {
            self.inbox = None;
            self.request = None;
            return Pulled::Failed("the pull inbox was closed".to_owned());
        };
        let status = message.status;
        let description = message.description.clone().unwrap_or_default();
        if let Some(request) = &mut self.request {
            request.last_seen = Instant::now();
        }
        match status {
            None | Some(StatusCode::OK) => {
                if let Some(request) = &mut self.request {
                    request.received += 1;
                    if request.received >= request.asked {
                        self.request = None;
                    }
                }
                Pulled::Message(Box::new(Message {
                    message,
                    context: self.context.clone(),
                }))
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Pulled::Again,
            Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => {
                self.request = None;
                Pulled::Again
            }
            Some(StatusCode::REQUEST_TERMINATED) if description.contains("Consumer Deleted") => {
                self.request = None;
                Pulled::ConsumerGone
            }
            Some(StatusCode::NO_RESPONDERS) => {
                self.request = None;
                Pulled::ConsumerGone
            }
            Some(other) => {
                self.request = None;
                Pulled::Failed(format!("the server ended a pull: {other} {description}"))
            }
        }
    }

    /// Messages already in the inbox, taken without waiting; the inbox is
    /// closed after (the group is going away).
    pub(super) fn drain(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        if let Some((_, mut subscriber)) = self.inbox.take() {
            while let Some(Some(message)) = subscriber.next().now_or_never() {
                if message.status.is_none() || message.status == Some(StatusCode::OK) {
                    out.push(Message {
                        message,
                        context: self.context.clone(),
                    });
                }
            }
        }
        self.request = None;
        out
    }
}
