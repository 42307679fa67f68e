//! The pull requests of one consumer group in this process.
//!
//! Every request of the group goes out with the same reply inbox. A second
//! request is sent when half of the first has arrived, so messages keep coming
//! while the first half is worked on; never more than two are out. Requests
//! are forgotten when they end (filled, expired), go silent (no message and no
//! idle heartbeat for a while, as after a server restart), or a reconnect
//! happens. The inbox lives as long as the group, so the server never holds a
//! request of ours whose inbox is gone.
//!
//! That matters on nats-server 2.9: when a pull consumer has requests waiting
//! but all of them lost their inbox, and the message to deliver is a
//! *redelivery*, the server "redoes" it by stepping its stream sequence back
//! (`loopAndGatherMsgs`: `o.sseq--`), which delivers the last new message a
//! second time and leaves the redelivery waiting for another ack wait. The
//! client's own pull streams use an inbox per stream or batch; dropping one
//! with a request outstanding, then nacking, set that up in our tests. A dead
//! request is dropped by the server at its next heartbeat, which is why the
//! `-NAK`s of a group going away are delayed past it (`consumer.rs`).

use std::time::Duration;

use async_nats::{Client, Message, StatusCode, Subscriber};
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

/// Requests out at most at once.
const MAX_REQUESTS: usize = 2;

/// The inbox and the request outstanding on it.
pub(super) struct Puller {
    client: Client,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    api_subject: String,
    batch: usize,
    inbox: Option<(String, Subscriber)>,
    /// Messages still to come for each request out, oldest first (the server
    /// fills requests in the order they came).
    requests: std::collections::VecDeque<usize>,
    /// The last time anything came in while requests were out.
    last_seen: Instant,
    /// The durable consumer is known to exist.
    pub(super) consumer_ready: bool,
    /// Consecutive failures, for the backoff.
    pub(super) failures: u32,
}

impl Puller {
    pub(super) fn new(client: Client, stream: &str, consumer: &str, batch: usize) -> Puller {
        Puller {
            client,
            api_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            batch,
            inbox: None,
            requests: std::collections::VecDeque::new(),
            last_seen: Instant::now(),
            consumer_ready: true,
            failures: 0,
        }
    }

    /// Sends a request when what is out runs low.
    pub(super) async fn request(&mut self) -> Result<()> {
        let coming: usize = self.requests.iter().sum();
        if self.requests.len() >= MAX_REQUESTS || coming > self.batch / 2 {
            return Ok(());
        }
        let client = &self.client;
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
        if self.requests.is_empty() {
            self.last_seen = Instant::now();
        }
        self.requests.push_back(self.batch);
        Ok(())
    }

    /// When the requests out count as lost, if any are out.
    pub(super) fn lost_at(&self) -> Option<Instant> {
        (!self.requests.is_empty()).then_some(self.last_seen + SILENCE)
    }

    /// Forgets the requests out (lost, or the connection was renewed).
    pub(super) fn forget_requests(&mut self) {
        self.requests.clear();
    }

    /// The next thing on the inbox. Cancel-safe.
    pub(super) async fn next(&mut self) -> Pulled {
        let Some((_, subscriber)) = self.inbox.as_mut() else {
            return Pulled::Again;
        };
        let message = subscriber.next().await;
        self.take(message)
    }

    /// The next thing already on the inbox, without waiting.
    pub(super) fn try_next(&mut self) -> Option<Pulled> {
        let (_, subscriber) = self.inbox.as_mut()?;
        let message = subscriber.next().now_or_never()?;
        Some(self.take(message))
    }

    fn take(&mut self, message: Option<async_nats::Message>) -> Pulled {
        let Some(message) = message else {
            self.inbox = None;
            self.requests.clear();
            return Pulled::Failed("the pull inbox was closed".to_owned());
        };
        self.last_seen = Instant::now();
        match message.status {
            None | Some(StatusCode::OK) => {
                if let Some(coming) = self.requests.front_mut() {
                    *coming = coming.saturating_sub(1);
                    if *coming == 0 {
                        self.requests.pop_front();
                    }
                }
                Pulled::Message(Box::new(message))
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Pulled::Again,
            // The oldest request expired (or, with no_wait, found nothing).
            Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => {
                self.requests.pop_front();
                Pulled::Again
            }
            Some(StatusCode::REQUEST_TERMINATED)
                if message
                    .description
                    .as_deref()
                    .is_some_and(|d| d.contains("Consumer Deleted")) =>
            {
                self.requests.clear();
                Pulled::ConsumerGone
            }
            Some(StatusCode::NO_RESPONDERS) => {
                self.requests.clear();
                Pulled::ConsumerGone
            }
            Some(other) => {
                self.requests.clear();
                let description = message.description.unwrap_or_default();
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
                    out.push(message);
                }
            }
        }
        self.requests.clear();
        out
    }
}
