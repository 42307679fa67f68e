//! `redis://host:port`: Redis Streams.
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
//! - **Retention**: `maxlen` trims with `XADD MAXLEN ~`, `max_age` with
//!   `XTRIM MINID ~` on each append (see `config.rs`); without either the log
//!   keeps everything.
//! - **Sequences**: the stream id `<ms>-<n>` packed as `ms << 20 | n`; they grow
//!   with the log and turn back into stream ids (see `sequence.rs`).
//! - **Dedup**: a key per event id (and per content hash with content dedup)
//!   with a TTL of the dedup window, set in the same Lua script as the `XADD`
//!   (see `append.rs`). Appends run 500 events per script, pipelined.
//! - **Groups**: Redis consumer groups (`XREADGROUP`, `XACK`); the delivery
//!   count of `XPENDING` is the attempt; nacks wait in a per-group sorted set;
//!   deliveries unsettled past the ack wait (a member that died) are claimed by
//!   another member (see `group.rs` and `claim.rs`).
//! - **Partition keys**: kept in order within one member, not across members
//!   (see `group.rs`).
//! - **Tails**: `XREAD BLOCK` from a stream id; by time from `<ms>-0` of the
//!   server's clock at append.
//! - **Dead letters**: a stream per tenant, `<prefix>:{<tenant>}:dlq`.
//! - **Durability**: `publish` returns once Redis answered the script. Events
//!   survive a restart of the server as far as its persistence goes: with
//!   `appendonly yes` and `appendfsync always`, every acknowledged publish;
//!   with `everysec`, all but up to a second's worth on a crash of the machine.
//! - **Outages**: errors reaching the server are
//!   [`crate::ErrorKind::EngineUnavailable`] (so `publish_with_fallback`
//!   spools); subscriptions wait for the server and go on when it is back.

mod append;
mod claim;
mod config;
mod dead_letter;
mod engine;
mod entry;
mod error;
mod group;
mod keys;
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
