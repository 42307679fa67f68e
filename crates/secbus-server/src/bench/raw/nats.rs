//! The nats engine's raw baselines: async-nats and JetStream used directly, on
//! streams of their own that are deleted afterwards.
//!
//! - publish: the events' JSON (encoded before timing) published to a file
//!   stream with up to `window` PubAcks in flight, returning once all are in;
//!   "with dedup" adds what secbus sends with every event (a `Nats-Msg-Id` and
//!   the CloudEvents content type), on a stream with secbus's duplicate window.
//! - consume: a pull consumer (explicit acks, batches of `window`) reading a
//!   stream filled before timing, acking each message; "with decode" also
//!   decodes each body into an `Event`, as secbus does for every delivery.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, StorageType};
use bytes::Bytes;
use futures::StreamExt;
use secbus::Event;

use super::RawRun;

/// secbus's default duplicate window (`BusConfig::dedup_window`).
const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// The consumer's `max_ack_pending`, as secbus sets it.
const MAX_ACK_PENDING: i64 = 20_000;

/// A connection and the streams created through it, deleted by [`RawNats::close`].
pub(crate) struct RawNats {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    /// Unique to this run: stream names and subjects start with it.
    run: String,
    streams: Vec<String>,
}

/// An event as the raw side sends it: encoded once, before timing.
pub(crate) struct Encoded {
    subject: String,
    msg_id: String,
    body: Bytes,
}

impl RawNats {
    /// Connects to the server of a `nats://` bus URL (its settings are ignored).
    pub(crate) async fn connect(url: &str) -> anyhow::Result<RawNats> {
        let servers = url.split('?').next().unwrap_or(url);
        let client = async_nats::connect(servers)
            .await
            .with_context(|| format!("cannot connect to {servers}"))?;
        let js = async_nats::jetstream::new(client.clone());
        Ok(RawNats {
            client,
            js,
            run: format!("secbus_bench_raw_{}", uuid::Uuid::now_v7().simple()),
            streams: Vec::new(),
        })
    }

    /// `events` as `subject`-addressed bodies of the stream `name` (see [`RawNats::stream`]).
    pub(crate) fn encode(&self, name: &str, events: &[Event]) -> Vec<Encoded> {
        events
            .iter()
            .map(|e| Encoded {
                subject: format!("{}_{name}.{}.{}", self.run, e.tenant, e.ty),
                msg_id: format!("{}:{}", e.tenant, e.id),
                body: Bytes::from(e.to_json()),
            })
            .collect()
    }

    /// Creates the file stream `name` of this run, over the subjects of [`RawNats::encode`].
    pub(crate) async fn stream(&mut self, name: &str) -> anyhow::Result<stream::Stream> {
        let full = format!("{}_{name}", self.run);
        let stream = self
            .js
            .create_stream(stream::Config {
                name: full.clone(),
                subjects: vec![format!("{full}.>")],
                storage: StorageType::File,
                duplicate_window: DEDUP_WINDOW,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the stream {full}"))?;
        self.streams.push(full);
        Ok(stream)
    }

    /// Publishes `events` in order with up to `window` PubAcks awaited at once;
    /// timed from the first publish to the last PubAck.
    pub(crate) async fn publish(
        &self,
        events: &[Encoded],
        window: usize,
        dedup: bool,
    ) -> anyhow::Result<RawRun> {
        let mut acks = VecDeque::with_capacity(window);
        let start = Instant::now();
        for e in events {
            let ack = if dedup {
                let mut headers = HeaderMap::new();
                headers.insert("Content-Type", "application/cloudevents+json");
                headers.insert(async_nats::header::NATS_MESSAGE_ID, e.msg_id.as_str());
                self.js
                    .publish_with_headers(e.subject.clone(), headers, e.body.clone())
                    .await
            } else {
                self.js.publish(e.subject.clone(), e.body.clone()).await
            }
            .context("a raw JetStream publish failed")?;
            acks.push_back(ack);
            if acks.len() >= window
                && let Some(ack) = acks.pop_front()
            {
                check(ack.await)?;
            }
        }
        for ack in acks {
            check(ack.await)?;
        }
        Ok(RawRun {
            baseline: if dedup {
                "async-nats JetStream publish, PubAcks in flight = window, \
                 with Nats-Msg-Id and Content-Type headers"
            } else {
                "async-nats JetStream publish, PubAcks in flight = window"
            },
            events: events.len(),
            wall: start.elapsed(),
        })
    }

    /// Reads all `n` messages of `stream` with a new pull consumer in batches of
    /// `window`, acking each (and decoding each when `decode`); timed from the
    /// consumer's creation to the last ack.
    pub(crate) async fn consume(
        &self,
        stream: &stream::Stream,
        n: usize,
        window: usize,
        decode: bool,
    ) -> anyhow::Result<RawRun> {
        let start = Instant::now();
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            })
            .await
            .context("cannot create the raw pull consumer")?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(window)
            // A pull lost under load is sent again within a second or two
            // rather than after the default 30 s expiry.
            .expires(Duration::from_secs(2))
            .heartbeat(Duration::from_millis(500))
            .messages()
            .await
            .context("cannot start pulling")?;
        let mut count = 0;
        while count < n {
            let next = tokio::time::timeout(super::super::watchdog::STALL, messages.next())
                .await
                .with_context(|| format!("the raw consumer stalled at {count} of {n}"))?;
            let Some(message) = next else {
                anyhow::bail!("the raw consumer ended at {count} of {n}");
            };
            let message = message.map_err(|e| anyhow::anyhow!("a raw pull failed: {e}"))?;
            if decode {
                let event = Event::from_json(&message.payload)
                    .map_err(|e| anyhow::anyhow!("a raw message is no event: {e}"))?;
                std::hint::black_box(&event);
            } else {
                std::hint::black_box(&message.payload);
            }
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("a raw ack failed: {e}"))?;
            count += 1;
        }
        let wall = start.elapsed();
        Ok(RawRun {
            baseline: if decode {
                "async-nats pull consumer, batches of window, an ack each, \
                 each body decoded with Event::from_json"
            } else {
                "async-nats pull consumer, batches of window, an ack each"
            },
            events: n,
            wall,
        })
    }

    /// Deletes the streams of this run (their consumers go with them).
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        let mut failed = None;
        for name in &self.streams {
            if let Err(e) = self.js.delete_stream(name).await {
                failed = Some(anyhow::anyhow!("cannot delete the stream {name}: {e}"));
            }
        }
        let _ = self.client.flush().await;
        failed.map_or(Ok(()), Err)
    }
}

fn check(
    ack: Result<
        async_nats::jetstream::publish::PublishAck,
        async_nats::jetstream::context::PublishError,
    >,
) -> anyhow::Result<()> {
    let ack = ack.context("a raw PubAck failed")?;
    anyhow::ensure!(!ack.duplicate, "a raw publish was taken for a duplicate");
    Ok(())
}
