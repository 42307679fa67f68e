//! The ack subject JetStream gives each delivery (`$JS.ACK.<stream>.<consumer>.
//! <delivered>.<stream seq>.<consumer seq>.<time>.<pending>`): what it says
//! about the delivery, and the acks sent to it.
//!
//! Acks go out on the engine's one client: the client's own acker carries a
//! clone of the JetStream context per message, whose cost showed up in
//! consuming profiles.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject};
use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};

/// Where to send the acks of one delivery.
#[derive(Debug, Clone)]
pub(super) struct AckReply(Subject);

impl AckReply {
    /// The reply subject of a delivered message, with its stream sequence and
    /// delivery count; `None` when it is not a JetStream ack subject.
    pub(super) fn parse(reply: &Subject) -> Option<(AckReply, u64, u64)> {
        let rest = reply.as_str().strip_prefix("$JS.ACK.")?;
        let tokens: Vec<&str> = rest.split('.').collect();
        // v1: stream, consumer, delivered, sequence...; v2 (ADR-15) puts a
        // domain and an account hash first.
        let at = match tokens.len() {
            7 | 8 => 2,
            n if n >= 9 => 4,
            _ => return None,
        };
        let delivered = tokens[at].parse().ok()?;
        let sequence = tokens[at + 1].parse().ok()?;
        Some((AckReply(reply.clone()), sequence, delivered))
    }

    /// Sends `kind` without waiting for the server.
    pub(super) async fn send(&self, client: &Client, kind: AckKind) -> Result<()> {
        client
            .publish(self.0.clone(), Bytes::from(kind))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::EngineUnavailable,
                    format!("the ack did not reach the connection: {e}"),
                )
            })
    }

    /// Sends `kind` and waits until the server confirms it.
    pub(super) async fn send_confirmed(
        &self,
        client: &Client,
        kind: AckKind,
        timeout: Duration,
    ) -> Result<()> {
        match tokio::time::timeout(timeout, client.request(self.0.clone(), Bytes::from(kind))).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::new(
                ErrorKind::EngineUnavailable,
                format!("the server did not confirm the ack: {e}"),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::EngineUnavailable,
                format!("the server did not confirm the ack within {timeout:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_ack_subject_forms() {
        let v1 = Subject::from("$JS.ACK.SECBUS.acme__g.3.42.17.1700000000000000000.5");
        let (_, seq, delivered) = AckReply::parse(&v1).unwrap();
        assert_eq!((seq, delivered), (42, 3));
        let v2 = Subject::from("$JS.ACK._.ACCHASH.SECBUS.acme__g.1.7.7.1700000000000000000.0.tok");
        let (_, seq, delivered) = AckReply::parse(&v2).unwrap();
        assert_eq!((seq, delivered), (7, 1));
        assert!(AckReply::parse(&Subject::from("_INBOX.abc")).is_none());
        assert!(AckReply::parse(&Subject::from("$JS.ACK.S.c.x.7.7.1.0")).is_none());
    }
}
