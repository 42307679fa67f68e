//! Appending events: one Lua script per run of up to 500 events of one
//! tenant, the runs of one call pipelined in one round trip.
//!
//! The script claims each event's dedup key (`SET NX PX window`) and adds the
//! entry (`XADD`) as one atomic step: no reader sees a dedup key without its
//! event, and since Redis writes a script's effects to the append-only file as
//! one `MULTI`/`EXEC`, a crash cannot keep one without the other either. If
//! the `XADD` fails the script deletes the keys it set. A redriven dead letter
//! skips the dedup keys (its id was seen before, on purpose).

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;
use redis::aio::ConnectionManager;

use super::config::RedisConfig;
use super::entry::{FIELD_EVENT, FIELD_REDRIVE, FIELD_TYPE, bytes};
use super::error::from_redis;
use super::keys::TenantKeys;
use super::script::eval;
use super::sequence::StreamId;
use crate::engine::{Appended, Record};
use crate::error::{Error, ErrorKind, Result};

/// Events per script run: the pipeline depth measured as the sweet spot for XADD.
const RUN_RECORDS: usize = 500;
/// Bytes of events per script run, so a run of large events stays a short stop
/// for the server (scripts block it while they run).
const RUN_BYTES: usize = 4 << 20;
/// Bytes of events per round trip.
const PIPELINE_BYTES: usize = 16 << 20;
/// Arguments per event after the three shared ones.
const ARGS_PER_EVENT: usize = 5;

/// KEYS: 1 = the log, then the dedup keys the arguments point at.
/// ARGV: 1 = dedup window (ms), 2 = MAXLEN (0: none), 3 = MINID ("": none),
/// then per event: its dedup key's index in KEYS (0: none), its content key's
/// index (0: none), type, redrive group ("": none), CloudEvent JSON.
/// Returns per event its stream id, or "" for a duplicate.
const APPEND: &str = r#"
local window = ARGV[1]
local maxlen = tonumber(ARGV[2])
local out = {}
for i = 4, #ARGV, 5 do
  local idk = tonumber(ARGV[i])
  local ck = tonumber(ARGV[i + 1])
  local fresh = true
  if idk > 0 and not redis.call('SET', KEYS[idk], '1', 'NX', 'PX', window) then
    fresh = false
  end
  if fresh and ck > 0 and not redis.call('SET', KEYS[ck], '1', 'NX', 'PX', window) then
    if idk > 0 then redis.call('DEL', KEYS[idk]) end
    fresh = false
  end
  if fresh then
    local add = {'XADD', KEYS[1]}
    if maxlen > 0 then
      add[#add + 1] = 'MAXLEN'; add[#add + 1] = '~'; add[#add + 1] = maxlen
    end
    add[#add + 1] = '*'
    add[#add + 1] = '@TYPE@'; add[#add + 1] = ARGV[i + 2]
    add[#add + 1] = '@EVENT@'; add[#add + 1] = ARGV[i + 4]
    if ARGV[i + 3] ~= '' then
      add[#add + 1] = '@REDRIVE@'; add[#add + 1] = ARGV[i + 3]
    end
    local id = redis.pcall(unpack(add))
    if type(id) == 'table' and id.err then
      if idk > 0 then redis.call('DEL', KEYS[idk]) end
      if ck > 0 then redis.call('DEL', KEYS[ck]) end
      return id
    end
    out[#out + 1] = id
  else
    out[#out + 1] = ''
  end
end
if ARGV[3] ~= '' then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3])
end
return out
"#;

/// The append script with the field names filled in.
fn source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        APPEND
            .replace("@TYPE@", FIELD_TYPE)
            .replace("@EVENT@", FIELD_EVENT)
            .replace("@REDRIVE@", FIELD_REDRIVE)
    })
}

/// Appends `records` in order; one round trip per 16 MiB of events.
pub(super) async fn append(
    conn: &mut ConnectionManager,
    config: &RedisConfig,
    records: &[Record],
) -> Result<Vec<Appended>> {
    let window_ms = config.dedup_window.as_millis().min(u64::MAX as u128) as u64;
    let minid = config.max_age.map(|age| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        StreamId {
            ms: now.saturating_sub(age.as_millis() as u64),
            n: 0,
        }
        .to_string()
    });
    let mut out = Vec::with_capacity(records.len());
    let mut pipe = redis::pipe();
    let mut in_pipe = 0usize;
    let mut pipe_bytes = 0usize;
    let mut start = 0;
    while start < records.len() {
        let (cmd, end, run_bytes) = run(config, &records[start..], window_ms, minid.as_deref());
        pipe.add_command(cmd);
        in_pipe += end;
        pipe_bytes += run_bytes;
        start += end;
        if pipe_bytes >= PIPELINE_BYTES || start == records.len() {
            send(conn, &pipe, in_pipe, &mut out).await?;
            pipe = redis::pipe();
            in_pipe = 0;
            pipe_bytes = 0;
        }
    }
    Ok(out)
}

/// The script call for the longest run at the start of `records`: one tenant,
/// at most [`RUN_RECORDS`] and (beyond its first event) [`RUN_BYTES`].
/// Returns it with the number of records it holds and their size.
fn run(
    config: &RedisConfig,
    records: &[Record],
    window_ms: u64,
    minid: Option<&str>,
) -> (redis::Cmd, usize, usize) {
    let tenant = &records[0].event.tenant;
    let keys = TenantKeys::new(&config.prefix, tenant);
    let mut key_names = vec![keys.log()];
    let mut args: Vec<Vec<u8>> =
        Vec::with_capacity(3 + ARGS_PER_EVENT * RUN_RECORDS.min(records.len()));
    args.push(window_ms.to_string().into_bytes());
    args.push(config.maxlen.unwrap_or(0).to_string().into_bytes());
    args.push(minid.unwrap_or("").as_bytes().to_vec());
    let mut bytes = 0;
    let mut count = 0;
    for record in records.iter().take(RUN_RECORDS) {
        if &record.event.tenant != tenant || (count > 0 && bytes >= RUN_BYTES) {
            break;
        }
        let dedup = window_ms > 0 && record.redrive_for.is_none();
        let mut index_of = |key: String| {
            key_names.push(key);
            (key_names.len()).to_string().into_bytes()
        };
        let id_index = if dedup {
            index_of(keys.dedup(record.event.id.as_str()))
        } else {
            b"0".to_vec()
        };
        let content_index = match (dedup, &record.content_key) {
            (true, Some(k)) => index_of(keys.content(k)),
            _ => b"0".to_vec(),
        };
        let json = record.event.to_json();
        bytes += json.len();
        args.push(id_index);
        args.push(content_index);
        args.push(record.event.ty.as_str().as_bytes().to_vec());
        args.push(
            record
                .redrive_for
                .as_deref()
                .unwrap_or("")
                .as_bytes()
                .to_vec(),
        );
        args.push(json);
        count += 1;
    }
    let mut cmd = eval(source(), &key_names);
    cmd.arg(args);
    (cmd, count, bytes)
}

async fn send(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
    expected: usize,
    out: &mut Vec<Appended>,
) -> Result<()> {
    let replies: Vec<Value> = pipe
        .query_async(conn)
        .await
        .map_err(|e| from_redis("appending events", e))?;
    let before = out.len();
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
    if out.len() - before != expected {
        return Err(bad_reply());
    }
    Ok(())
}

fn bad_reply() -> Error {
    Error::new(
        ErrorKind::Engine,
        "redis: the append script returned something unexpected",
    )
}
