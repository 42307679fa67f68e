//! Content dedup: a stream of content keys that expire after the dedup window.
//!
//! `Nats-Msg-Id` dedups on one key, the event id, and content dedup must also
//! refuse the same content under a new id. So before an event with a content
//! key is published, a message is stored at `<prefix>-content.<tenant>.<sha-256
//! hex>` in the stream `<stream>_CONTENT` (one message per subject, `max_age` =
//! the dedup window), with `Nats-Expected-Last-Subject-Sequence: 0`: JetStream
//! stores it only if the subject is empty, atomically, which is the claim. The
//! message holds the claiming event's message id. A failed claim makes the
//! event a duplicate, unless the claim holds its own message id: then it is a
//! retry of a publish whose PubAck was lost, and it goes on to JetStream, which
//! drops it by message id if it was stored.
//!
//! (This is what a JetStream key-value bucket does; a plain stream is used
//! because it needs nothing newer than the 2.9 server API.)

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, LastRawMessageErrorKind, StorageType};
use bytes::Bytes;

use super::config::{NatsConfig, Storage};
use super::error;
use super::publish::msg_id;
use crate::engine::{Appended, Record};
use crate::error::{Error, ErrorKind, Result};

/// Claims of content keys.
pub(super) struct ContentDedup {
    js: async_nats::jetstream::Context,
    stream: stream::Stream<()>,
    prefix: String,
}

impl ContentDedup {
    /// Creates the stream, or updates it to the current window.
    pub(super) async fn open(
        js: &async_nats::jetstream::Context,
        config: &NatsConfig,
    ) -> Result<ContentDedup> {
        let name = config.content_stream();
        let prefix = config.content_prefix();
        js.create_or_update_stream(stream::Config {
            name: name.clone(),
            description: Some(
                "secbus content dedup claims: <prefix>-content.<tenant>.<sha-256>".into(),
            ),
            subjects: vec![format!("{prefix}.>")],
            max_messages_per_subject: 1,
            max_age: config.dedup_window.max(Duration::from_secs(1)),
            discard: DiscardPolicy::Old,
            storage: match config.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| error::unavailable(format!("cannot create the stream {name}"), e))?;
        let stream = js
            .get_stream_no_info(&name)
            .await
            .map_err(|e| error::unavailable(format!("cannot open the stream {name}"), e))?;
        Ok(ContentDedup {
            js: js.clone(),
            stream,
            prefix,
        })
    }

    /// Marks in `out` the records whose content another event published in the
    /// window; claims the content of the others. Records are claimed in order,
    /// so within a batch the first of two equal contents wins.
    pub(super) async fn claim(
        &self,
        records: &[Record],
        out: &mut [Option<Appended>],
    ) -> Result<()> {
        for (i, record) in records.iter().enumerate() {
            let (None, Some(content)) = (&record.redrive_for, record.content_key) else {
                continue;
            };
            let subject = format!(
                "{}.{}.{}",
                self.prefix,
                record.event.tenant,
                hex::encode(content)
            );
            if !self.claim_one(&subject, &msg_id(record)).await? {
                out[i] = Some(Appended::Duplicate);
            }
        }
        Ok(())
    }

    /// True when `subject` is now claimed by `id` (claimed now, or by it before).
    async fn claim_one(&self, subject: &str, id: &str) -> Result<bool> {
        // A claim may expire between a failed claim and the read: try again.
        for _ in 0..3 {
            let claim = PublishMessage::build()
                .payload(Bytes::copy_from_slice(id.as_bytes()))
                .expected_last_subject_sequence(0);
            let sent = self
                .js
                .send_publish(subject.to_owned(), claim)
                .await
                .map_err(|e| error::publish(subject, e))?;
            match sent.await {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {}
                Err(e) => return Err(error::publish(subject, e)),
            }
            match self.stream.get_last_raw_message_by_subject(subject).await {
                Ok(holder) => return Ok(holder.payload.as_ref() == id.as_bytes()),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => {
                    return Err(error::unavailable(
                        format!("cannot read the claim {subject}"),
                        e,
                    ));
                }
            }
        }
        Err(Error::new(
            ErrorKind::EngineUnavailable,
            format!("the content claim {subject} kept expiring while it was read; try again"),
        ))
    }
}
