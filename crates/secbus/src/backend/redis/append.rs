//! Appending events: a Lua script per run of up to 500 events of one tenant,
//! and an appender that gathers the appends of concurrent publishers into
//! those runs, a few round trips in flight at a time.
//!
//! The script checks each event's id (and content hash) against the dedup
//! hashes, adds the entry (`XADD`) and records the id as one atomic step: no
//! reader sees a dedup field without its event, and since Redis writes a
//! script's effects to the append-only file as one `MULTI`/`EXEC`, a crash
//! cannot keep one without the other either. If an `XADD` fails the script
//! records the events stored before it and returns the error. A redriven dead
//! letter skips dedup (its id was seen before, on purpose).
//!
//! Order: one append call's events go out in one pipeline, in order, on one
//! connection; a publisher waits for its call to finish before the next, so
//! the events of one task are stored in the order of its calls. Calls of
//! different tasks may share a run or go out in parallel pipelines.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::config::RedisConfig;
use super::entry::{FIELD_EVENT, FIELD_REDRIVE, FIELD_TYPE, bytes};
use super::error::from_redis;
use super::keys::TenantKeys;
use super::script::eval;
use super::sequence::StreamId;
use crate::engine::{Appended, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;

/// Events per script run, and per gathered pipeline: the pipeline depth
/// measured as the sweet spot for `XADD`.
const RUN_RECORDS: usize = 500;
/// Bytes of events per script run, so a run of large events stays a short stop
/// for the server (scripts block it while they run).
const RUN_BYTES: usize = 4 << 20;
/// Pipelines in flight at once: the next is gathered and encoded while the
/// server works on the previous ones.
const PIPELINES_IN_FLIGHT: usize = 4;
/// Append calls waiting for the appender before publishers wait.
const QUEUE: usize = 1024;
/// The longest dedup window sent to Redis (a century, in ms).
const MAX_WINDOW_MS: u128 = 100 * 365 * 24 * 3600 * 1000;
/// Arguments per event after the four shared ones.
const ARGS_PER_EVENT: usize = 5;

/// KEYS: 1 = the log.
/// ARGV: 1 = dedup window (ms), 2 = MAXLEN (0: none), 3 = MINID ("": none),
/// 4 = the tenant's dedup key prefix, then per event: its id field ("": no
/// dedup), its content field ("": none), type, redrive group ("": none),
/// CloudEvent JSON.
/// Returns per event its stream id, or "" for a duplicate. Trimming runs once
/// per run, so the log may pass MAXLEN by a run for a moment.
///
/// Dedup: the fields seen live in hashes, one per slice of a quarter window
/// (`<prefix><slice number>`, by the server's clock). A run unlinks the slice
/// that just fell out of the window; each also expires a quarter window after
/// that, for a tenant that stopped publishing. A field is seen if any of the last five
/// slices holds it, so it is remembered for at least the window and at most
/// a quarter window more. A run costs five `HMGET`s and one `HSET` for all its
/// events rather than a `SET NX PX` each: the server's one thread is the bound
/// of a pipelined publish, and a key per event was half its work.
const APPEND: &str = r#"
local log, window, prefix = KEYS[1], tonumber(ARGV[1]), ARGV[4]
local CHUNK = 500
local fields = {}
for i = 5, #ARGV, 5 do
  if ARGV[i] ~= '' then fields[#fields + 1] = ARGV[i] end
  if ARGV[i + 1] ~= '' then fields[#fields + 1] = ARGV[i + 1] end
end
local seen, current, slice = {}, nil, 0
if #fields > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  slice = math.ceil(window / @SLICES@)
  local k = math.floor(now / slice)
  current = k
  -- UNLINK frees a large hash off the server's main thread; an expiry
  -- would free it on it, blocking every client for a busy tenant's slice.
  redis.call('UNLINK', prefix .. (k - @SLICES@ - 1))
  for back = 0, @SLICES@ do
    local key = prefix .. (k - back)
    if redis.call('EXISTS', key) == 1 then
      for from = 1, #fields, CHUNK do
        local part = {unpack(fields, from, math.min(from + CHUNK - 1, #fields))}
        local got = redis.call('HMGET', key, unpack(part))
        for j = 1, #part do
          if got[j] then seen[part[j]] = true end
        end
      end
    end
  end
end
local out, fresh_fields = {}, {}
local function remember()
  if #fresh_fields == 0 then return end
  local key = prefix .. current
  for from = 1, #fresh_fields, CHUNK do
    local args = {}
    for j = from, math.min(from + CHUNK - 1, #fresh_fields) do
      args[#args + 1] = fresh_fields[j]
      args[#args + 1] = '1'
    end
    redis.call('HSET', key, unpack(args))
  end
  redis.call('PEXPIREAT', key, (current + @SLICES@ + 2) * slice)
end
local n = 0
for i = 5, #ARGV, 5 do
  local idf, cf = ARGV[i], ARGV[i + 1]
  local fresh = not ((idf ~= '' and seen[idf]) or (cf ~= '' and seen[cf]))
  n = n + 1
  if fresh then
    local id
    if ARGV[i + 3] == '' then
      id = redis.pcall('XADD', log, '*', '@TYPE@', ARGV[i + 2], '@EVENT@', ARGV[i + 4])
    else
      id = redis.pcall('XADD', log, '*', '@TYPE@', ARGV[i + 2], '@EVENT@', ARGV[i + 4],
        '@REDRIVE@', ARGV[i + 3])
    end
    if type(id) == 'table' then
      remember()
      return id
    end
    if idf ~= '' then seen[idf] = true; fresh_fields[#fresh_fields + 1] = idf end
    if cf ~= '' then seen[cf] = true; fresh_fields[#fresh_fields + 1] = cf end
    out[n] = id
  else
    out[n] = ''
  end
end
remember()
if ARGV[2] ~= '0' then redis.call('XTRIM', log, 'MAXLEN', '~', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('XTRIM', log, 'MINID', '~', ARGV[3]) end
return out
"#;

/// Dedup slices per window (see [`APPEND`]).
const SLICES: u32 = 4;

/// The append script with the field names filled in.
fn source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        APPEND
            .replace("@TYPE@", FIELD_TYPE)
            .replace("@EVENT@", FIELD_EVENT)
            .replace("@REDRIVE@", FIELD_REDRIVE)
            .replace("@SLICES@", &SLICES.to_string())
    })
}

/// A record as the script takes it, encoded by the publisher's own task.
struct Encoded {
    tenant: TenantId,
    id: String,
    ty: String,
    content_key: Option<[u8; 32]>,
    redrive_for: Option<Arc<str>>,
    json: Vec<u8>,
}

impl Encoded {
    fn new(record: &Record) -> Encoded {
        Encoded {
            tenant: record.event.tenant.clone(),
            id: record.event.id.as_str().to_owned(),
            ty: record.event.ty.as_str().to_owned(),
            content_key: record.content_key,
            redrive_for: record.redrive_for.clone(),
            json: record.event.to_json(),
        }
    }
}

/// One append call waiting for its outcome.
struct Request {
    records: Vec<Encoded>,
    reply: oneshot::Sender<Result<Vec<Appended>>>,
}

/// Gathers append calls into pipelined script runs.
pub(super) struct Appender {
    tx: mpsc::Sender<Request>,
}

impl Appender {
    pub(super) fn start(conn: ConnectionManager, config: Arc<RedisConfig>) -> Appender {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(gather(conn, config, rx));
        Appender { tx }
    }

    /// Appends `records` in order; returns once Redis answered for all of them.
    pub(super) async fn append(&self, records: &[Record]) -> Result<Vec<Appended>> {
        let records = records.iter().map(Encoded::new).collect();
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(Request { records, reply })
            .await
            .map_err(|_| Error::closed())?;
        outcome.await.map_err(|_| Error::closed())?
    }
}

async fn gather(
    conn: ConnectionManager,
    config: Arc<RedisConfig>,
    mut rx: mpsc::Receiver<Request>,
) {
    let in_flight = Arc::new(Semaphore::new(PIPELINES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut count = first.records.len();
        let mut batch = vec![first];
        while count < RUN_RECORDS {
            match rx.try_recv() {
                Ok(request) => {
                    count += request.records.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let pipe = pipeline(&config, &batch);
        let mut conn = conn.clone();
        tokio::spawn(async move {
            let outcome = send(&mut conn, &pipe, count).await;
            drop(permit);
            reply(batch, outcome);
        });
    }
}

/// Hands each request its part of the outcome.
fn reply(batch: Vec<Request>, outcome: Result<Vec<Appended>>) {
    match outcome {
        Ok(all) => {
            let mut all = all.into_iter();
            for request in batch {
                let mine = all.by_ref().take(request.records.len()).collect();
                let _ = request.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for request in batch {
                let copy = Error::new(e.kind(), e.to_string());
                let _ = request.reply.send(Err(copy));
            }
        }
    }
}

fn minid(config: &RedisConfig) -> String {
    config.max_age.map_or_else(String::new, |age| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        StreamId {
            ms: now.saturating_sub(age.as_millis() as u64),
            n: 0,
        }
        .to_string()
    })
}

/// The script runs for every record of `batch`, in order.
fn pipeline(config: &RedisConfig, batch: &[Request]) -> redis::Pipeline {
    // Redis refuses expiry times past about 292 million years; a century is plenty.
    let window_ms = config.dedup_window.as_millis().min(MAX_WINDOW_MS) as u64;
    let shared = [
        window_ms.to_string(),
        config.maxlen.unwrap_or(0).to_string(),
        minid(config),
    ];
    let records: Vec<&Encoded> = batch.iter().flat_map(|r| &r.records).collect();
    let mut pipe = redis::pipe();
    let mut start = 0;
    while start < records.len() {
        let (cmd, count) = run(config, &records[start..], window_ms, &shared);
        pipe.add_command(cmd);
        start += count;
    }
    pipe
}

/// The script call for the longest run at the start of `records`: one tenant,
/// at most [`RUN_RECORDS`] and (beyond its first event) [`RUN_BYTES`].
/// Returns it with the number of records it holds.
fn run(
    config: &RedisConfig,
    records: &[&Encoded],
    window_ms: u64,
    shared: &[String; 3],
) -> (redis::Cmd, usize) {
    let tenant = &records[0].tenant;
    let keys = TenantKeys::new(&config.prefix, tenant);
    let take = records.len().min(RUN_RECORDS);
    let mut fields: Vec<[String; 2]> = Vec::with_capacity(take);
    let mut bytes = 0;
    for record in records.iter().take(take) {
        if &record.tenant != tenant || (!fields.is_empty() && bytes >= RUN_BYTES) {
            break;
        }
        let dedup = window_ms > 0 && record.redrive_for.is_none();
        let id_field = if dedup {
            TenantKeys::id_field(&record.id)
        } else {
            String::new()
        };
        let content_field = match (dedup, &record.content_key) {
            (true, Some(k)) => TenantKeys::content_field(k),
            _ => String::new(),
        };
        fields.push([id_field, content_field]);
        bytes += record.json.len();
    }
    let mut cmd = eval(source(), &[keys.log()]);
    cmd.arg(shared.as_slice()).arg(keys.dedup_slices());
    for (record, [id_field, content_field]) in records.iter().zip(&fields) {
        cmd.arg(id_field)
            .arg(content_field)
            .arg(&record.ty)
            .arg(record.redrive_for.as_deref().unwrap_or(""))
            .arg(&record.json);
    }
    debug_assert_eq!(fields.len() * ARGS_PER_EVENT + 3 + 1 + 4, {
        // EVAL, source, numkeys, the log, the shared arguments, the records'.
        cmd.args_iter().count()
    });
    (cmd, fields.len())
}

async fn send(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
    expected: usize,
) -> Result<Vec<Appended>> {
    let replies: Vec<Value> = pipe
        .query_async(conn)
        .await
        .map_err(|e| from_redis("appending events", e))?;
    let mut out = Vec::with_capacity(expected);
    for reply in replies {
        let Value::Array(ids) = reply else {
            return Err(bad_reply());
        };
        for id in ids {
            let id = bytes(id)?;
            if id.is_empty() {
                out.push(Appended::Duplicate);
            } else {
                let id = StreamId::parse(std::str::from_utf8(&id).map_err(|_| bad_reply())?)?;
                out.push(Appended::Stored(id.sequence()?));
            }
        }
    }
    if out.len() != expected {
        return Err(bad_reply());
    }
    Ok(out)
}

fn bad_reply() -> Error {
    Error::new(
        ErrorKind::Engine,
        "redis: the append script returned something unexpected",
    )
}
