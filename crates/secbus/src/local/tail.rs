//! Tails over a [`LocalLog`]: every matching event from a start position, live.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{LocalLog, LogRecord, Signal};
use crate::engine::{EngineDelivery, EngineStream};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::subscription::{StartAt, SubscribeOptions, TypePattern};

const READ_BATCH: usize = 512;

pub(super) struct TailStream {
    log: Arc<dyn LocalLog>,
    tenant: TenantId,
    pattern: TypePattern,
    cursor: u64,
    buffer: VecDeque<LogRecord>,
    head: Arc<Signal>,
    closed: watch::Receiver<bool>,
}

impl TailStream {
    pub(super) async fn open(
        log: Arc<dyn LocalLog>,
        options: &SubscribeOptions,
        closed: watch::Receiver<bool>,
    ) -> Result<Self> {
        let tenant = options.tenant.clone();
        let head = log.signal(&tenant);
        let cursor = match options.start {
            StartAt::New => log.head(&tenant).await?,
            StartAt::Beginning => log.first(&tenant).await?,
            StartAt::Sequence(n) => n.max(log.first(&tenant).await?),
            StartAt::Time(t) => log.seq_at(&tenant, t).await?,
        };
        Ok(TailStream {
            log,
            tenant,
            pattern: options.types.clone(),
            cursor,
            buffer: VecDeque::new(),
            head,
            closed,
        })
    }
}

#[async_trait]
impl EngineStream for TailStream {
    async fn next(&mut self) -> Option<Result<EngineDelivery>> {
        loop {
            while let Some(rec) = self.buffer.pop_front() {
                if rec.redrive_for.is_some() || !self.pattern.matches(&rec.event.ty) {
                    continue;
                }
                return Some(Ok(EngineDelivery {
                    event: rec.event,
                    sequence: rec.seq,
                    attempt: 1,
                    acker: None,
                    redrive_for: None,
                }));
            }
            if *self.closed.borrow() {
                return None;
            }
            let head_seen = self.head.version();
            let read = match self.log.read(&self.tenant, self.cursor, READ_BATCH).await {
                Ok(read) => read,
                Err(e) => return Some(Err(e)),
            };
            if let Some(last) = read.records.last() {
                self.cursor = last.seq + 1;
            }
            self.buffer.extend(read.records);
            if read.missed > 0 {
                return Some(Err(Error::new(
                    ErrorKind::Lagged,
                    format!(
                        "the tail fell behind and missed {} events; it goes on from the oldest retained",
                        read.missed
                    ),
                )
                .with_missed(read.missed)));
            }
            if self.buffer.is_empty() {
                let gone = tokio::select! {
                    _ = self.head.changed_since(head_seen) => false,
                    r = self.closed.changed() => r.is_err(),
                };
                if gone {
                    return None;
                }
            }
        }
    }
}
