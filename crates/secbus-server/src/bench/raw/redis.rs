//! The redis engine's raw baselines: the redis crate used directly, on keys of
//! their own (`secbus-bench-raw-<uuid>:...`) that are deleted afterwards.
//!
//! - publish: `XADD <log> * type <type> event <json>` (JSON encoded before
//!   timing), pipelined by `depth`, one pipeline at a time; "with dedup" adds
//!   to each pipeline the dedup work secbus's script does per run: an `HMGET`
//!   of the pipeline's event ids in each of the five dedup slices a window
//!   spans, then after the `XADD`s one `HSET` of the ids into the current
//!   slice and its `PEXPIREAT` (not conditional and not atomic, unlike
//!   secbus's script: the least the same work can cost).
//! - consume: a consumer group reading a log filled before timing with
//!   `XREADGROUP COUNT depth`, each batch acked with one `XACK` sent in the
//!   same pipeline as the next read; "with decode" also decodes each entry into
//!   an `Event`, as secbus does for every delivery.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{AsyncCommands, Value};
use secbus::Event;

use super::RawRun;

/// secbus's default dedup window (`BusConfig::dedup_window`), in ms.
const DEDUP_WINDOW_MS: u64 = 300_000;
/// The dedup slices secbus keeps per window; a window spans one more.
const DEDUP_SLICES: u64 = 4;
/// Keys per `SCAN` step when cleaning up.
const SCAN_COUNT: usize = 1000;

/// A connection and the keys of this run, deleted by [`RawRedis::close`].
pub(crate) struct RawRedis {
    conn: MultiplexedConnection,
    /// Unique to this run: every key starts with it.
    prefix: String,
}

/// An event as the raw side sends it: encoded once, before timing.
pub(crate) struct Encoded {
    dedup_field: String,
    ty: String,
    json: Vec<u8>,
}

impl RawRedis {
    /// Connects to the server of a `redis://` bus URL (its settings are ignored).
    pub(crate) async fn connect(url: &str) -> anyhow::Result<RawRedis> {
        let conn = connect(url).await?;
        Ok(RawRedis {
            conn,
            prefix: format!("secbus-bench-raw-{}", uuid::Uuid::now_v7().simple()),
        })
    }

    /// The log named `name` of this run.
    pub(crate) fn log(&self, name: &str) -> String {
        format!("{}:{{bench}}:{name}", self.prefix)
    }

    /// `events` as the raw side sends them.
    pub(crate) fn encode(&self, events: &[Event]) -> Vec<Encoded> {
        events
            .iter()
            .map(|e| Encoded {
                dedup_field: format!("id:{}", e.id),
                ty: e.ty.to_string(),
                json: e.to_json(),
            })
            .collect()
    }

    /// Appends `events` to `log`, pipelined by `depth`; timed from the first
    /// pipeline sent to the last answered.
    pub(crate) async fn publish(
        &self,
        log: &str,
        events: &[Encoded],
        depth: usize,
        dedup: bool,
    ) -> anyhow::Result<RawRun> {
        let mut conn = self.conn.clone();
        let slice_ms = DEDUP_WINDOW_MS / DEDUP_SLICES;
        let start = Instant::now();
        for chunk in events.chunks(depth) {
            let mut pipe = redis::pipe();
            let slice = now_ms() / slice_ms;
            let current = format!("{log}:dedup:{slice}");
            if dedup {
                for back in 0..=DEDUP_SLICES {
                    pipe.cmd("HMGET")
                        .arg(format!("{log}:dedup:{}", slice - back))
                        .arg(chunk.iter().map(|e| &e.dedup_field).collect::<Vec<_>>())
                        .ignore();
                }
            }
            for e in chunk {
                pipe.cmd("XADD")
                    .arg(log)
                    .arg("*")
                    .arg("type")
                    .arg(&e.ty)
                    .arg("event")
                    .arg(&e.json);
            }
            if dedup {
                pipe.cmd("HSET").arg(&current);
                for e in chunk {
                    pipe.arg(&e.dedup_field).arg(1);
                }
                pipe.ignore()
                    .cmd("PEXPIREAT")
                    .arg(&current)
                    .arg((slice + DEDUP_SLICES + 1) * slice_ms)
                    .ignore();
            }
            let replies: Vec<Value> = pipe
                .query_async(&mut conn)
                .await
                .context("a raw XADD pipeline failed")?;
            anyhow::ensure!(
                replies.len() == chunk.len() && replies.iter().all(|v| !matches!(v, Value::Nil)),
                "a raw XADD was not stored"
            );
        }
        Ok(RawRun {
            baseline: if dedup {
                "redis XADD pipelined by depth, with an HMGET of the ids in each \
                 of 5 dedup hashes and an HSET + PEXPIREAT of them in the same pipeline"
            } else {
                "redis XADD pipelined by depth"
            },
            events: events.len(),
            wall: start.elapsed(),
        })
    }

    /// Reads all `n` entries of `log` with a new consumer group, `depth` at a
    /// time, acking each batch with the next read (decoding each entry when
    /// `decode`); timed from the group's creation to the last `XACK`.
    pub(crate) async fn consume(
        &self,
        log: &str,
        n: usize,
        depth: usize,
        decode: bool,
    ) -> anyhow::Result<RawRun> {
        let mut conn = self.conn.clone();
        let group = format!("g{}", uuid::Uuid::now_v7().simple());
        let start = Instant::now();
        let () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(log)
            .arg(&group)
            .arg("0")
            .query_async(&mut conn)
            .await
            .context("cannot create the raw consumer group")?;
        let mut count = 0;
        let mut to_ack: Vec<String> = Vec::with_capacity(depth);
        while count < n {
            let mut pipe = redis::pipe();
            if !to_ack.is_empty() {
                pipe.cmd("XACK").arg(log).arg(&group).arg(&to_ack).ignore();
            }
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&group)
                .arg("c")
                .arg("COUNT")
                .arg(depth.min(n - count))
                .arg("STREAMS")
                .arg(log)
                .arg(">");
            let (reply,): (Option<StreamReadReply>,) = pipe
                .query_async(&mut conn)
                .await
                .context("a raw XREADGROUP failed")?;
            to_ack.clear();
            let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
            for entry in entries {
                let Some(Value::BulkString(json)) = entry.map.get("event") else {
                    anyhow::bail!("the raw entry {} has no event field", entry.id);
                };
                if decode {
                    let event = Event::from_json(json)
                        .map_err(|e| anyhow::anyhow!("a raw entry is no event: {e}"))?;
                    std::hint::black_box(&event);
                } else {
                    std::hint::black_box(json);
                }
                to_ack.push(entry.id);
                count += 1;
            }
            anyhow::ensure!(
                !to_ack.is_empty(),
                "the raw group ran dry at {count} of {n}"
            );
        }
        let acked: usize = conn
            .xack(log, &group, &to_ack)
            .await
            .context("a raw XACK failed")?;
        anyhow::ensure!(acked == to_ack.len(), "a raw XACK missed entries");
        Ok(RawRun {
            baseline: if decode {
                "redis XREADGROUP by depth + XACK of each batch, \
                 each entry decoded with Event::from_json"
            } else {
                "redis XREADGROUP by depth + XACK of each batch"
            },
            events: n,
            wall: start.elapsed(),
        })
    }

    /// Deletes the keys of this run.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        delete_prefixed(&self.conn, &self.prefix).await
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A connection to the server of a `redis://` bus URL, without its settings.
pub(crate) async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let server = url.split('?').next().unwrap_or(url);
    let client = redis::Client::open(server).with_context(|| format!("bad URL {server}"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .with_context(|| format!("no answer from {server}"))?
    .with_context(|| format!("cannot connect to {server}"))
}

/// Deletes every key that starts with `prefix:` (a prefix unique to one run,
/// so nothing else is touched).
pub(crate) async fn delete_prefixed(
    conn: &MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        prefix.starts_with("secbus-bench-"),
        "refusing to delete keys outside a bench prefix: {prefix:?}"
    );
    let mut conn = conn.clone();
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut conn)
            .await
            .context("cannot list the bench keys")?;
        if !keys.is_empty() {
            let _: usize = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .context("cannot delete the bench keys")?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
