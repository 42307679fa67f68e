//! The names of the keys secbus writes, per tenant.
//!
//! Every key of a tenant carries the tenant in a hash tag, `<prefix>:{<tenant>}:...`,
//! so Redis Cluster puts all of them in one slot: the Lua scripts that touch a
//! tenant's log, dedup keys and delayed set together stay on one node.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `secbus:{acme}:log` | stream | the events: fields `type`, `event` (the CloudEvent JSON), `redrive` (a redriven dead letter's group) |
//! | `secbus:{acme}:dedup:<slice>` | hash, unlinked once a window past, and expires a quarter window later | fields `id:<event id>` and `content:<sha-256 hex>` of the events stored in one slice (a quarter of the dedup window, numbered from the epoch) |
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

    /// The start of the dedup hashes' names; the append script adds the slice number.
    pub(super) fn dedup_slices(&self) -> String {
        format!("{}:dedup:", self.base)
    }

    /// The dedup field of an event id.
    pub(super) fn id_field(event_id: &str) -> String {
        format!("id:{event_id}")
    }

    /// The dedup field of a content hash.
    pub(super) fn content_field(key: &[u8; 32]) -> String {
        format!("content:{}", hex::encode(key))
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
            format!("{}7", keys.dedup_slices()),
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
        assert_eq!(keys.dedup_slices(), "secbus:{acme}:dedup:");
        let other = TenantKeys::new("secbus", &TenantId::new("globex").unwrap());
        assert_ne!(other.log(), keys.log());
    }
}
