//! Dead letters in their own stream, one message per dead letter at
//! `<prefix>-dlq.<tenant>.<dead letter id>`, its body the JSON of [`DeadLetter`].
//!
//! The id in the subject makes "get by id" a last-message-by-subject lookup and
//! "delete" a delete by that message's sequence; listing a tenant reads its
//! subjects, oldest first, with a short-lived consumer.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures::StreamExt;

use super::engine::Shared;
use super::error;
use crate::delivery::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;

/// Dead letters read per pull while listing.
const LIST_BATCH: usize = 256;

/// Stores one dead letter and waits for its PubAck.
pub(super) async fn put(shared: &Shared, dead_letter: &DeadLetter) -> Result<()> {
    if !is_token(&dead_letter.id) {
        return Err(Error::new(
            ErrorKind::InvalidAttribute,
            format!(
                "dead letter id {:?} cannot be a NATS subject token",
                dead_letter.id
            ),
        )
        .with_field("id"));
    }
    let subject = subject(shared, &dead_letter.event.tenant, &dead_letter.id);
    let body = serde_json::to_vec(dead_letter).map_err(|e| {
        Error::new(ErrorKind::Engine, "cannot encode the dead letter").with_source(e)
    })?;
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    // Storing the same dead letter twice (a retry after a lost PubAck) keeps one.
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("dl:{}:{}", dead_letter.event.tenant, dead_letter.id),
    );
    let ack = shared
        .js
        .send_publish(
            subject.clone(),
            PublishMessage::build()
                .payload(Bytes::from(body))
                .headers(headers),
        )
        .await
        .map_err(|e| error::publish(&subject, e))?;
    ack.await.map_err(|e| error::publish(&subject, e))?;
    Ok(())
}

/// The dead letters of `tenant`, oldest first, at most `limit`.
pub(super) async fn list(
    shared: &Shared,
    tenant: &TenantId,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let stream = &shared.dead_letters;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{}.{tenant}.>", shared.config.dlq_prefix()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| error::unavailable("cannot read the dead letters", e))?;
    let name = consumer.cached_info().name.clone();
    let want = usize::try_from(consumer.cached_info().num_pending)
        .unwrap_or(usize::MAX)
        .min(limit);
    let mut found = Vec::with_capacity(want.min(LIST_BATCH));
    let mut read = 0;
    let result = async {
        while read < want {
            let mut batch = consumer
                .batch()
                .max_messages((want - read).min(LIST_BATCH))
                .expires(shared.config.timeout)
                .messages()
                .await
                .map_err(|e| error::unavailable("cannot read the dead letters", e))?;
            let before = read;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| {
                    Error::new(
                        ErrorKind::EngineUnavailable,
                        format!("cannot read the dead letters: {e}"),
                    )
                })?;
                read += 1;
                match serde_json::from_slice::<DeadLetter>(&message.payload) {
                    Ok(dl) if dl.event.tenant == *tenant => found.push(dl),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        subject = %message.subject,
                        error = %e,
                        "skipped a message of the dead-letter stream that is not a dead letter"
                    ),
                }
            }
            if read == before {
                return Err(Error::new(
                    ErrorKind::EngineUnavailable,
                    "the dead letters did not arrive in time",
                ));
            }
        }
        Ok(())
    }
    .await;
    // The consumer would go away after its inactive threshold anyway.
    let _ = stream.delete_consumer(&name).await;
    result.map(|()| found)
}

/// The dead letter `id` of `tenant`, with its stream sequence.
async fn find(shared: &Shared, tenant: &TenantId, id: &str) -> Result<Option<(u64, DeadLetter)>> {
    if !is_token(id) {
        // No dead letter can have this id: it could not be in a subject.
        return Ok(None);
    }
    let stream = &shared.dead_letters;
    let message = match stream
        .get_last_raw_message_by_subject(&subject(shared, tenant, id))
        .await
    {
        Ok(message) => message,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(error::unavailable("cannot read the dead letter", e)),
    };
    let dl: DeadLetter = serde_json::from_slice(&message.payload).map_err(|e| {
        Error::new(
            ErrorKind::Engine,
            format!("dead letter {id:?} is stored but cannot be decoded"),
        )
        .with_source(e)
    })?;
    Ok((dl.event.tenant == *tenant).then_some((message.sequence, dl)))
}

/// The dead letter `id` of `tenant`.
pub(super) async fn get(
    shared: &Shared,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<DeadLetter>> {
    Ok(find(shared, tenant, id).await?.map(|(_, dl)| dl))
}

/// Deletes the dead letter `id` of `tenant`; false when there was none.
pub(super) async fn delete(shared: &Shared, tenant: &TenantId, id: &str) -> Result<bool> {
    let Some((sequence, _)) = find(shared, tenant, id).await? else {
        return Ok(false);
    };
    let stream = &shared.dead_letters;
    match stream.delete_message(sequence).await {
        Ok(deleted) => Ok(deleted),
        // Deleted by someone else in between.
        Err(e) if e.to_string().contains("no message found") => Ok(false),
        Err(e) => Err(error::unavailable("cannot delete the dead letter", e)),
    }
}

fn subject(shared: &Shared, tenant: &TenantId, id: &str) -> String {
    format!("{}.{tenant}.{id}", shared.config.dlq_prefix())
}

/// Whether `s` can be one NATS subject token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
}
