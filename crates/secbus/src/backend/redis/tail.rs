//! Tails: `XREAD BLOCK` from a position, on a connection of their own.
//!
//! The start is turned into a stream id once, when the tail opens (`New` is the
//! newest entry then, not `$` on every read, which would skip what arrives
//! between two reads). Replay by time starts after `<ms - 1>-<max>`: the first
//! entry stored at or after that millisecond, by the server's clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio::time::Instant;

use super::engine::Shared;
use super::entry::{LogEntry, entries, read_reply};
use super::error::{from_redis, is_unavailable};
use super::keys::TenantKeys;
use super::sequence::StreamId;
use crate::engine::{EngineDelivery, EngineStream};
use crate::error::Result;
use crate::subscription::{StartAt, SubscribeOptions, TypePattern};

/// Entries per read.
const READ_COUNT: usize = 512;
/// How long one `XREAD` blocks waiting for new entries.
const READ_BLOCK: Duration = Duration::from_secs(1);

pub(super) struct Tail {
    reader: ConnectionManager,
    log: String,
    pattern: TypePattern,
    /// The id of the last entry read.
    cursor: StreamId,
    buffer: VecDeque<LogEntry>,
    closed: watch::Receiver<bool>,
    outage: Option<(Instant, Duration)>,
}

impl Tail {
    pub(super) async fn open(shared: Arc<Shared>, options: &SubscribeOptions) -> Result<Tail> {
        let log = TenantKeys::new(&shared.config.prefix, &options.tenant).log();
        let cursor = match options.start {
            StartAt::New => newest(&mut shared.conn(), &log).await?,
            StartAt::Beginning => StreamId::ZERO,
            StartAt::Sequence(n) => StreamId::before_sequence(n),
            StartAt::Time(t) => StreamId::before_time(t.timestamp_millis().max(0) as u64),
        };
        Ok(Tail {
            reader: shared.blocking_conn(READ_BLOCK)?,
            log,
            pattern: options.types.clone(),
            cursor,
            buffer: VecDeque::new(),
            closed: shared.closed.subscribe(),
            outage: None,
        })
    }

    fn read_command(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.log)
            .arg(self.cursor.to_string());
        cmd
    }
}

/// The id of the newest entry, or zero for an empty (or absent) stream.
async fn newest(conn: &mut ConnectionManager, log: &str) -> Result<StreamId> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(log)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .map_err(|e| from_redis("finding the newest entry", e))?;
    Ok(entries(reply)?
        .first()
        .map_or(StreamId::ZERO, |entry| entry.id))
}

#[async_trait]
impl EngineStream for Tail {
    async fn next(&mut self) -> Option<Result<EngineDelivery>> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                return Some(Ok(EngineDelivery {
                    event: entry.event,
                    sequence: entry.sequence,
                    attempt: 1,
                    acker: None,
                    redrive_for: None,
                }));
            }
            if *self.closed.borrow() {
                return None;
            }
            let read = self.read_command();
            let reply = tokio::select! {
                reply = read.query_async::<Value>(&mut self.reader) => reply,
                changed = self.closed.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    continue;
                }
            };
            let raw = match reply {
                Ok(reply) => match read_reply(reply) {
                    Ok(raw) => raw,
                    Err(e) => return Some(Err(e)),
                },
                Err(e) if is_unavailable(&e) => {
                    self.pause().await;
                    continue;
                }
                Err(e) => return Some(Err(from_redis("reading the log", e))),
            };
            if let Some((since, _)) = self.outage.take() {
                tracing::info!(stream = %self.log, down_for = ?since.elapsed(), "redis: server back; the tail goes on");
            }
            for entry in raw {
                self.cursor = entry.id;
                // Redriven dead letters are for their group only.
                if entry.redrive_for().is_some() || !entry.matches(&self.pattern) {
                    continue;
                }
                match entry.decode() {
                    Ok(decoded) => self.buffer.push_back(decoded),
                    Err(e) => tracing::error!(
                        stream = %self.log,
                        stream_id = %entry.id,
                        error = %e,
                        "redis: an entry of the log does not decode; skipped"
                    ),
                }
            }
        }
    }
}

impl Tail {
    async fn pause(&mut self) {
        let delay = match self.outage {
            None => {
                tracing::warn!(stream = %self.log, "redis: server unavailable; the tail waits for it");
                Duration::from_millis(50)
            }
            Some((_, delay)) => (delay * 2).min(Duration::from_secs(1)),
        };
        self.outage = Some((self.outage.map_or_else(Instant::now, |o| o.0), delay));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.closed.changed() => {}
        }
    }
}
