//! The names of the keys secbus writes, per tenant.
//!
//! Every key of a tenant carries the tenant in a hash tag, `<prefix>:{<tenant>}:...`,
//! so Redis Cluster puts all of them in one slot: the Lua scripts that touch a
//! tenant's log, dedup keys and delayed set together stay on one node.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `secbus:{acme}:log` | stream | the events: fields `type`, `event` (the CloudEvent JSON), `redrive` (a redriven dead letter's group) |
//! | `secbus:{acme}:dedup:<event id>` | string, TTL = dedup window | the stream id the event was stored at |
//! | `secbus:{acme}:content:<sha-256 hex>` | string, TTL = dedup window | the same, for content dedup |
//! | `secbus:{acme}:groups` | hash | group name -> the type pattern it was created with |
//! | `secbus:{acme}:delayed:<group>` | sorted set | nacked entries of the group by due time (ms) |
//! | `secbus:{acme}:dlq` | stream | dead letters: fields `id`, `deadletter` (JSON) |
//! | `secbus:{acme}:dlq:index` | hash | dead letter id -> its stream id |

use crate::event::TenantId;

/// The keys of one tenant.
#[derive(Debug, Clone)]
pub(super) struct TenantKeys {
    /// `<prefix>:{<tenant>}`; every key starts with it.
    base: String,
}

impl TenantKeys {
    pub(super) fn new(prefix: &str, tenant: &TenantId) -> TenantKeys {
        // Tenant ids are `a-z 0-9 -`: no brace can end the tag early.
        TenantKeys {
            base: format!("{prefix}:{{{tenant}}}"),
        }
    }

    /// The tenant's event stream.
    pub(super) fn log(&self) -> String {
        format!("{}:log", self.base)
    }

    /// The dedup key of an event id.
    pub(super) fn dedup(&self, event_id: &str) -> String {
        format!("{}:dedup:{event_id}", self.base)
    }

    /// The dedup key of a content hash.
    pub(super) fn content(&self, key: &[u8; 32]) -> String {
        format!("{}:content:{}", self.base, hex::encode(key))
    }

    /// The hash of group name -> type pattern.
    pub(super) fn groups(&self) -> String {
        format!("{}:groups", self.base)
    }

    /// The sorted set of a group's nacked entries, by due time.
    pub(super) fn delayed(&self, group: &str) -> String {
        format!("{}:delayed:{group}", self.base)
    }

    /// The dead-letter stream.
    pub(super) fn dead_letters(&self) -> String {
        format!("{}:dlq", self.base)
    }

    /// The hash of dead letter id -> stream id.
    pub(super) fn dead_letter_index(&self) -> String {
        format!("{}:dlq:index", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: the first `{...}` with something inside.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_tenant_shares_its_hash_tag() {
        let keys = TenantKeys::new("secbus", &TenantId::new("acme").unwrap());
        let all = [
            keys.log(),
            keys.dedup("0190-abc"),
            keys.content(&[7; 32]),
            keys.groups(),
            keys.delayed("workers"),
            keys.dead_letters(),
            keys.dead_letter_index(),
        ];
        for key in &all {
            assert!(key.starts_with("secbus:{acme}:"), "{key}");
            assert_eq!(hash_tag(key), "acme", "{key}");
        }
        assert_eq!(keys.log(), "secbus:{acme}:log");
        assert_eq!(keys.dedup("e1"), "secbus:{acme}:dedup:e1");
        let other = TenantKeys::new("secbus", &TenantId::new("globex").unwrap());
        assert_ne!(other.log(), keys.log());
    }
}
