//! Appending records: one JetStream publish per event, with a bounded window of
//! PubAcks in flight, returning once every PubAck is in.

use async_nats::jetstream::message::PublishMessage;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use super::content_dedup::ContentDedup;
use super::engine::Shared;
use super::error;
use crate::engine::{Appended, Record};
use crate::error::Result;

/// The CloudEvents structured-mode content type, per the CloudEvents NATS binding.
pub(super) const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Names the one consumer group a redriven dead letter is for.
pub(super) const REDRIVE_FOR: &str = "Secbus-Redrive-For";

/// Publishes `records` in order and waits for all their PubAcks; at most
/// `publish_window` are awaited at once, so a batch costs about one round trip
/// per window rather than one per event.
pub(super) async fn append(
    shared: &Shared,
    content: Option<&ContentDedup>,
    records: &[Record],
) -> Result<Vec<Appended>> {
    let mut out: Vec<Option<Appended>> = vec![None; records.len()];
    if let Some(content) = content {
        content.claim(records, &mut out).await?;
    }
    let window = shared.config.publish_window;
    let mut acks = FuturesOrdered::new();
    for (i, record) in records.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let event = &record.event;
        // A `Subject` clones by reference count; the copy is kept for errors.
        let subject = Subject::from(
            shared
                .config
                .subject(event.tenant.as_str(), event.ty.as_str()),
        );
        let ack = shared
            .js
            .send_publish(subject.clone(), message(shared, record))
            .await
            .map_err(|e| error::publish(subject.as_str(), e))?;
        acks.push_back(async move { (i, subject, ack.await) });
        if acks.len() >= window
            && let Some(done) = acks.next().await
        {
            settle(done, &mut out)?;
        }
    }
    while let Some(done) = acks.next().await {
        settle(done, &mut out)?;
    }
    Ok(out
        .into_iter()
        .map(|a| a.unwrap_or(Appended::Duplicate))
        .collect())
}

type AckResult = std::result::Result<
    async_nats::jetstream::publish::PublishAck,
    async_nats::jetstream::context::PublishError,
>;

fn settle(
    (i, subject, ack): (usize, Subject, AckResult),
    out: &mut [Option<Appended>],
) -> Result<()> {
    let ack = ack.map_err(|e| error::publish(subject.as_str(), e))?;
    out[i] = Some(if ack.duplicate {
        Appended::Duplicate
    } else {
        Appended::Stored(ack.sequence)
    });
    Ok(())
}

/// The message of one record: the CloudEvent in structured mode, and the
/// headers JetStream and secbus need.
fn message(shared: &Shared, record: &Record) -> PublishMessage {
    let event = &record.event;
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", CLOUDEVENTS_JSON);
    match &record.redrive_for {
        Some(group) => {
            // A redrive is the same event id on purpose: a fresh message id keeps
            // the duplicate window from dropping it.
            headers.insert(REDRIVE_FOR, group.as_ref());
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!(
                    "{}:{}:redrive:{}",
                    event.tenant,
                    event.id,
                    uuid::Uuid::now_v7()
                )
                .as_str(),
            );
        }
        None if !shared.config.dedup_window.is_zero() => {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id(record).as_str());
        }
        None => {}
    }
    PublishMessage::build()
        .payload(Bytes::from(encode(event)))
        .headers(headers)
}

/// The structured-mode JSON of `event`, written into a buffer sized up front
/// (growing one from empty showed up in publish profiles).
fn encode(event: &crate::event::Event) -> Vec<u8> {
    let mut buf = Vec::with_capacity(event.encoded_len() + 64);
    match serde_json::to_writer(&mut buf, event) {
        Ok(()) => buf,
        Err(_) => event.to_json(),
    }
}

/// `<tenant>:<event id>`: scoped by tenant, so one tenant reusing another's
/// event ids cannot make JetStream drop the other's events as duplicates.
pub(super) fn msg_id(record: &Record) -> String {
    format!("{}:{}", record.event.tenant, record.event.id)
}
