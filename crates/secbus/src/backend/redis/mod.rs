//! `redis://host:port`: Redis Streams (Redis 6.2 or later; tested on 7.0).
//!
//! ```text
//! redis://[user:password@]host[:port][/db][?prefix=secbus&maxlen=1000000&max_age=7d]
//! ```
//!
//! - **Log**: a stream per tenant, `<prefix>:{<tenant>}:log`, one entry per
//!   event with the fields `type` (to filter without decoding), `event` (the
//!   CloudEvent, structured-mode JSON) and, on a redriven dead letter,
//!   `redrive` (the one group it is for). The tenant in braces is a hash tag:
//!   Redis Cluster keeps all of a tenant's keys in one slot (see `keys.rs`).
//! - **Retention**: `maxlen` trims with `XTRIM MAXLEN ~`, `max_age` with
//!   `XTRIM MINID ~`, after each run of appends (see `config.rs`; the defaults
//!   come from `BusConfig::retention_max_events` / `retention_max_age`).
//!   Without either the log keeps everything. Trimming does not wait for
//!   consumer groups.
//! - **Sequences**: the stream id `<ms>-<n>` packed as `ms << 20 | n`; they grow
//!   with the log and turn back into stream ids for acks and for replay from a
//!   sequence (see `sequence.rs`).
//! - **Publishing** (see `append.rs`): a Lua script per run of up to 500 events
//!   of a tenant checks each event's id (and content hash, with content dedup)
//!   against the tenant's dedup hashes (one per quarter window, expiring a
//!   window after it ends), adds the entry and records the id, atomically: a
//!   crash cannot keep a dedup field without its event. Concurrent publishes are
//!   gathered into those runs, a few pipelines in flight. `publish` returns
//!   once Redis answered; what that is worth on a crash of Redis is its
//!   persistence: with `appendonly yes` and `appendfsync always`, every
//!   acknowledged event survives `kill -9` (the tests check it); with
//!   `everysec`, up to a second's worth may be lost.
//! - **Groups** (see `group.rs`, `claim.rs`, `settle.rs`): a Redis consumer
//!   group per secbus group, a Redis consumer per member. Members read with
//!   `XREADGROUP` on a connection of their own and skip (ack) the types the
//!   group does not want. The delivery count of `XPENDING` is the attempt.
//!   Acks are queued and sent in batches with `XACK` (`close` flushes them; a
//!   crash before they reach Redis means a redelivery). A nack keeps the entry
//!   pending and puts it in the group's delayed set; its member claims it back
//!   when due (another member does if it went away). Entries left unsettled
//!   past the ack wait, e.g. by a member that died, are claimed by another
//!   member with one more delivery counted, so attempts grow and the
//!   subscription's dead-letter rule applies. A member dropped or closed hands
//!   what it never delivered (and, on close, what it did) to the others at
//!   once; after an outage a member takes back entries whose replies were lost.
//! - **Partition keys**: Redis hands entries to members without regard to
//!   keys. Within one member, entries of a key go out one at a time, in log
//!   order; two members of a group may work on the same key at once.
//! - **Tails** (see `tail.rs`): `XREAD BLOCK` from a stream id; by time from
//!   the first entry added at or after that millisecond, by the server's clock.
//!   A tail behind trimmed history skips what was trimmed without a report.
//! - **Dead letters** (see `dead_letter.rs`): a stream per tenant,
//!   `<prefix>:{<tenant>}:dlq`, never trimmed, with an index by id.
//! - **Outages**: errors reaching the server are
//!   [`crate::ErrorKind::EngineUnavailable`] (so `publish_with_fallback`
//!   spools); subscriptions wait for the server, reconnect, and go on.

mod append;
mod claim;
mod config;
mod dead_letter;
mod engine;
mod entry;
mod error;
mod group;
mod keys;
mod lag;
mod script;
mod sequence;
mod settle;
mod tail;

use std::sync::Arc;

use crate::bus::BusConfig;
use crate::engine::Engine;
use crate::error::Result;

pub(crate) use engine::RedisEngine;

/// Opens the `redis://` engine.
pub(crate) async fn connect(url: &str, config: &BusConfig) -> Result<Arc<dyn Engine>> {
    let config = config::RedisConfig::parse(url, config)?;
    Ok(Arc::new(RedisEngine::connect(config).await?))
}
