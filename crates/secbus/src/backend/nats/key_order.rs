//! Partition-key order for a consumer group in this process: one delivery per
//! `partitionkey` handed out at a time, the others of the key held back in
//! stream order until it is acked.
//!
//! JetStream hands a pull consumer its messages in stream order but knows
//! nothing of keys, so the hold-back happens here, over every member of the
//! group in this process (they share one pull stream). A held-back message is
//! delivered as far as JetStream knows; its ack wait is kept alive with `+WPI`
//! (see `consumer.rs`) so it is not redelivered elsewhere meanwhile.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ack_reply::AckReply;
use crate::event::Event;

/// A delivered message, decoded, not handed out yet.
pub(super) struct Held {
    pub(super) event: Arc<Event>,
    pub(super) sequence: u64,
    pub(super) attempt: u32,
    pub(super) key: Option<Arc<str>>,
    pub(super) redrive_for: Option<Arc<str>>,
    pub(super) reply: AckReply,
}

/// The delivery of a key handed out last, and until when it keeps the key if it
/// is not settled: past the lease JetStream has redelivered it, maybe to
/// another process, and the key's next event may go.
struct Owner {
    sequence: u64,
    lease: Instant,
}

/// The keys of one group: who holds each, and who waits.
#[derive(Default)]
pub(super) struct KeyOrder {
    owners: HashMap<Arc<str>, Owner>,
    /// Deliveries waiting for their key, by key, in stream order.
    blocked: HashMap<Arc<str>, BTreeMap<u64, Held>>,
    blocked_len: usize,
    /// Deliveries whose key came free, handed out before anything new.
    ready: VecDeque<Held>,
    /// When to look for owners whose lease ran out.
    next_scan: Option<Instant>,
}

impl KeyOrder {
    /// Deliveries held back or ready.
    pub(super) fn held(&self) -> usize {
        self.blocked_len + self.ready.len()
    }

    /// The next delivery whose key came free.
    pub(super) fn pop_ready(&mut self) -> Option<Held> {
        self.ready.pop_front()
    }

    /// When [`KeyOrder::expire`] has work, if ever.
    pub(super) fn next_scan(&self) -> Option<Instant> {
        self.next_scan
    }

    /// Every message held, for keeping them alive or releasing them.
    pub(super) fn replies(&self) -> Vec<AckReply> {
        self.blocked
            .values()
            .flat_map(|q| q.values())
            .chain(self.ready.iter())
            .map(|h| h.reply.clone())
            .collect()
    }

    /// Forgets every held message, returning them (the group is going away).
    pub(super) fn drain(&mut self) -> Vec<Held> {
        let mut out: Vec<Held> = self.ready.drain(..).collect();
        for (_, queue) in self.blocked.drain() {
            out.extend(queue.into_values());
        }
        self.blocked_len = 0;
        self.owners.clear();
        out
    }

    /// Takes a delivered message in; returns it when it may be handed out now.
    pub(super) fn arrive(&mut self, held: Held, lease: Duration) -> Option<Held> {
        let Some(key) = held.key.clone() else {
            return Some(held);
        };
        let now = Instant::now();
        match self.owners.get_mut(&key) {
            Some(owner) if owner.sequence == held.sequence => {
                // The owner itself, redelivered.
                owner.lease = now + lease;
                return Some(held);
            }
            Some(owner) if owner.lease > now => {
                self.block(key, held);
                return None;
            }
            _ => {}
        }
        // The key is free: its oldest waiting delivery goes first.
        let sequence = held.sequence;
        self.block(key.clone(), held);
        let first = self.take_first(&key)?;
        self.own(key, first.sequence, now + lease);
        if first.sequence == sequence {
            Some(first)
        } else {
            self.ready.push_back(first);
            None
        }
    }

    /// The delivery at `sequence` was acked: its key goes to the next waiting one.
    pub(super) fn release(&mut self, key: &Arc<str>, sequence: u64, lease: Duration) {
        if self.owners.get(key).is_none_or(|o| o.sequence != sequence) {
            return;
        }
        self.owners.remove(key);
        if let Some(next) = self.take_first(key) {
            self.own(key.clone(), next.sequence, Instant::now() + lease);
            self.ready.push_back(next);
        }
    }

    /// The delivery at `sequence` was nacked: the key waits for its redelivery
    /// until `lease` from now.
    pub(super) fn extend(&mut self, key: &Arc<str>, sequence: u64, lease: Duration) {
        if let Some(owner) = self.owners.get_mut(key)
            && owner.sequence == sequence
        {
            owner.lease = Instant::now() + lease;
        }
    }

    /// Keys whose owner's lease ran out go to their next waiting delivery;
    /// true when one did.
    pub(super) fn expire(&mut self, scan_every: Duration, lease: Duration) -> bool {
        let now = Instant::now();
        if self.next_scan.is_none_or(|at| at > now) {
            return false;
        }
        let expired: Vec<Arc<str>> = self
            .owners
            .iter()
            .filter(|(_, o)| o.lease <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut promoted = false;
        for key in expired {
            self.owners.remove(&key);
            if let Some(next) = self.take_first(&key) {
                self.own(key, next.sequence, now + lease);
                self.ready.push_back(next);
                promoted = true;
            }
        }
        self.next_scan = (!self.owners.is_empty()).then_some(now + scan_every);
        promoted
    }

    fn own(&mut self, key: Arc<str>, sequence: u64, lease: Instant) {
        self.owners.insert(key, Owner { sequence, lease });
        // Owners never settled (dropped, or redelivered elsewhere) must not
        // pile up: the scan drops them once their lease ran out.
        if self.next_scan.is_none() {
            self.next_scan = Some(lease);
        }
    }

    fn block(&mut self, key: Arc<str>, held: Held) {
        let queue = self.blocked.entry(key).or_default();
        // A redelivery of a message already waiting replaces it: the newer
        // delivery is the one the server tracks.
        if queue.insert(held.sequence, held).is_none() {
            self.blocked_len += 1;
        }
    }

    fn take_first(&mut self, key: &Arc<str>) -> Option<Held> {
        let queue = self.blocked.get_mut(key)?;
        let (_, first) = queue.pop_first()?;
        self.blocked_len -= 1;
        if queue.is_empty() {
            self.blocked.remove(key);
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, TenantId};

    fn held(sequence: u64, key: Option<&str>) -> Held {
        let subject = async_nats::Subject::from(format!(
            "$JS.ACK.S.acme__g.1.{sequence}.{sequence}.1700000000000000000.0"
        ));
        let (reply, _, _) = AckReply::parse(&subject).unwrap();
        let ty = EventType::new("edr.process.started").unwrap();
        let mut builder = Event::builder(ty, TenantId::new("acme").unwrap());
        if let Some(key) = key {
            builder = builder.partition_key(key);
        }
        Held {
            event: Arc::new(builder.build().unwrap()),
            sequence,
            attempt: 1,
            key: key.map(Arc::from),
            redrive_for: None,
            reply,
        }
    }

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn one_delivery_per_key_in_stream_order() {
        let mut keys = KeyOrder::default();
        assert!(keys.arrive(held(1, None), LEASE).is_some());
        assert!(keys.arrive(held(2, Some("a")), LEASE).is_some());
        assert!(
            keys.arrive(held(3, Some("b")), LEASE).is_some(),
            "other keys run"
        );
        assert!(keys.arrive(held(5, Some("a")), LEASE).is_none());
        assert!(keys.arrive(held(4, Some("a")), LEASE).is_none());
        assert_eq!(keys.held(), 2);
        // A redelivery of the owner goes out again; of a waiting one, replaces it.
        assert!(keys.arrive(held(2, Some("a")), LEASE).is_some());
        assert!(keys.arrive(held(4, Some("a")), LEASE).is_none());
        assert_eq!(keys.held(), 2);

        keys.release(&Arc::from("a"), 3, LEASE);
        assert!(
            keys.pop_ready().is_none(),
            "only the owner's ack frees the key"
        );
        keys.release(&Arc::from("a"), 2, LEASE);
        assert_eq!(keys.pop_ready().map(|h| h.sequence), Some(4));
        assert!(keys.pop_ready().is_none());
        keys.release(&Arc::from("a"), 4, LEASE);
        assert_eq!(keys.pop_ready().map(|h| h.sequence), Some(5));
        assert_eq!(keys.held(), 0);
    }

    #[test]
    fn an_owner_that_is_never_settled_gives_the_key_up_after_its_lease() {
        let mut keys = KeyOrder::default();
        let lease = Duration::from_millis(20);
        assert!(keys.arrive(held(1, Some("a")), lease).is_some());
        assert!(keys.arrive(held(2, Some("a")), lease).is_none());
        assert!(!keys.expire(Duration::from_millis(1), lease));
        std::thread::sleep(Duration::from_millis(30));
        assert!(keys.expire(Duration::from_millis(1), lease));
        assert_eq!(keys.pop_ready().map(|h| h.sequence), Some(2));
        // A nack keeps the key for the redelivery.
        keys.extend(&Arc::from("a"), 2, Duration::from_secs(60));
        assert!(keys.arrive(held(3, Some("a")), lease).is_none());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!keys.expire(Duration::from_millis(1), lease));
        assert!(keys.arrive(held(2, Some("a")), lease).is_some());
        assert_eq!(keys.drain().len(), 1);
    }
}
