//! `nats://host:port`: NATS JetStream.
//!
//! # URL
//!
//! `nats://[user:password@]host:port[,host:port...][?setting=value&...]`; every
//! setting is optional:
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `stream` | `SECBUS` | the events stream |
//! | `prefix` | `secbus` | subjects are `<prefix>.<tenant>.<type>` |
//! | `dlq_stream` | `<stream>_DLQ` | the dead-letter stream, over `<prefix>-dlq.<tenant>.<id>` |
//! | `replicas` | `1` | stream replicas (1 to 5; 3 on a three-node cluster) |
//! | `storage` | `file` | `file` or `memory` (memory keeps nothing across a server restart; the engine makes the streams again after it) |
//! | `max_age` | `BusConfig::retention_max_age`, else forever | e.g. `7d`, `24h`, `30m` |
//! | `max_bytes` | none | e.g. `10GiB`, `500MB`; the oldest events go first |
//! | `timeout` | `5s` | PubAck, API request and double-ack wait |
//! | `publish_window` | `256` | PubAcks awaited at once per publish batch |
//! | `ack` | `plain` | `plain` or `double`; see "Acks" below |
//!
//! `BusConfig::retention_max_events` (a count per tenant) has no JetStream
//! equivalent and is refused with `invalid_options`; bound the stream by age
//! or bytes instead.
//!
//! # What is on the wire
//!
//! An event is one message on `<prefix>.<tenant>.<type>` (the type's dots are
//! subject tokens, so `nats sub 'secbus.acme.auth.>'` filters like a secbus
//! type pattern). Its body is the CloudEvent in **structured content mode** of
//! the CloudEvents NATS protocol binding: the JSON object with every attribute
//! and `data`, and the header `Content-Type: application/cloudevents+json`. No
//! `ce-` headers are written: the body is the one copy of the attributes, so
//! any NATS client, or a CloudEvents SDK's NATS binding, reads the event as is.
//! Other headers: `Nats-Msg-Id` (dedup, below) and, on a redriven dead letter,
//! `Secbus-Redrive-For: <group>`.
//!
//! # Dedup
//!
//! `Nats-Msg-Id` is `<tenant>:<event id>` and the stream's duplicate window is
//! `BusConfig::dedup_window`, so JetStream itself drops a second publish of an
//! id, across processes and restarts. The tenant in the id keeps one tenant
//! from suppressing another's events by reusing their ids. A redrive uses a
//! fresh message id: the id was seen before, on purpose.
//!
//! Content dedup (`BusConfig::content_dedup`) needs a second key, which JetStream
//! message ids cannot give: a claim per content, `<prefix>-content.<tenant>.<sha-256>`
//! in the stream `<stream>_CONTENT`, stored only if the subject is empty and
//! expiring after the dedup window. See `content_dedup.rs`.
//!
//! # Consumer groups
//!
//! A group is a durable pull consumer named `<tenant>__<group>` filtered on
//! `<prefix>.<tenant>.<type pattern>`; secbus type patterns (`*`, `>`) are NATS
//! wildcards. Its ack wait is the subscription's. The delivery limit is
//! enforced by secbus, not by the server (`max_deliver` is unlimited; the
//! consumer's description states the limit): the subscription dead-letters the
//! delivery that follows the last attempt's expired ack wait and acks it, and
//! when the dead letter cannot be stored the event simply comes back after the
//! ack wait to be tried again. With a server limit JetStream would drop it from
//! the group, raising only an advisory. A nack is a `-NAK` with the backoff
//! delay of the attempt. Dead letters go to the dead-letter stream, before the
//! original is acked.
//! Attempts are JetStream's delivery counts; sequences are stream sequences
//! (shared by every tenant of the stream, so a tenant's sequences have gaps).
//!
//! The members of a group on one bus (one process, usually) share one puller:
//! pull requests of up to `max_in_flight` messages (of the first member) on
//! one inbox, a second sent when half of the first has come. JetStream shares
//! the work between processes; the members of a process take turns. A pull
//! that fails, goes silent (no idle heartbeat; a server restart) or spans a
//! reconnect is sent again with backoff, and the durable consumer is created
//! again when it is gone: a group never stops quietly. Messages pulled and not
//! handed out go back (`-NAK`) when the last member leaves, and at `close()`
//! so do deliveries still in hand: another process gets them within seconds
//! rather than after their ack wait.
//!
//! # Partition-key order
//!
//! JetStream has no per-key order. The members of a group on one bus hand out
//! one delivery per `partitionkey` at a time, in stream order: a delivery whose
//! key is held by an unsettled earlier one waits until that one is acked (its
//! ack wait kept alive with `+WPI` meanwhile). Members in other processes do
//! not know each other's keys, so across processes two events of one key can
//! run at once. Where that must not happen, consume the group from one process
//! (any number of members there), or split the work by type or tenant so that
//! a key lives in one group.
//!
//! # Acks
//!
//! With `ack=plain` (the default) `ack()` returns once the `+ACK` is written to
//! the connection, not once the server has it: consuming is not one round trip
//! per event. If the connection breaks before the ack reaches the server, the
//! event is delivered again (delivery is at-least-once on every engine), and
//! `close()` flushes the connection so no ack made before a graceful shutdown
//! is lost. With `ack=double`, `ack()` waits for the server to confirm (a round
//! trip per ack) and an `Ok` means the group will not see the event again.
//!
//! # Publishing
//!
//! A batch is published with up to `publish_window` PubAcks awaited at once;
//! `publish` returns `Ok` only after the PubAck of every event in it. No PubAck
//! in time, a lost connection and "no responders" are `engine_unavailable`, so
//! `publish_with_fallback` spools the event and a retry is deduplicated.

mod ack_reply;
mod config;
mod consumer;
mod content_dedup;
mod dead_letter;
mod engine;
mod error;
mod key_order;
mod lag;
mod publish;
mod pull;
mod tail;

use std::sync::Arc;

use crate::bus::BusConfig;
use crate::engine::Engine;
use crate::error::Result;

/// Opens the `nats://` engine.
pub(crate) async fn connect(url: &str, config: &BusConfig) -> Result<Arc<dyn Engine>> {
    let nats = config::NatsConfig::parse(url, config)?;
    Ok(Arc::new(engine::NatsEngine::connect(nats).await?))
}
