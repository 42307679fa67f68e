//! Taking over pending entries: this member's nacks when due, nacks of
//! members that went away, and deliveries left unsettled past the ack wait
//! (a member that died, or a consumer that sat on a delivery).
//!
//! Redis's `XAUTOCLAIM` cannot leave out entries that were nacked with a delay
//! longer than the ack wait, so the claim is a script that does what
//! `XAUTOCLAIM` does (`XPENDING ... IDLE <ack wait>`, then `XCLAIM` with the
//! same minimum idle time, which counts one more delivery) and skips the
//! entries in the group's delayed set. Being one script, two members can never
//! claim the same entry.

use redis::Value;
use redis::aio::ConnectionManager;

use super::entry::{RawEntry, unexpected};
use super::script::eval;
use super::settle::GroupMember;

/// KEYS: 1 = log, 2 = the group's delayed set.
/// ARGV: 1 = group, 2 = consumer, 3 = now (Unix ms), 4 = ack wait (ms),
/// 5 = grace after which another member's due nack is taken (ms), 6 = at most
/// this many entries, 7.. = this member's due nacks.
/// Returns `{id, deliveries, fields}` per claimed entry.
const CLAIM: &str = r#"
local log, delayed, group, me = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local now, wait, grace, count =
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
local function claim(id, min_idle)
  local got = redis.call('XCLAIM', log, group, me, min_idle, id)
  local entry = got[1]
  if entry then
    local p = redis.call('XPENDING', log, group, id, id, 1)
    local n = 1
    if p[1] then n = p[1][4] end
    out[#out + 1] = {entry[1], n, entry[2]}
  end
end
for i = 7, #ARGV do
  if redis.call('ZREM', delayed, ARGV[i]) == 1 then claim(ARGV[i], 0) end
end
local stale = redis.call('ZRANGEBYSCORE', delayed, '-inf', now - grace, 'LIMIT', 0, count)
for _, id in ipairs(stale) do
  if redis.call('ZREM', delayed, id) == 1 then claim(id, 0) end
end
local start, scanned = '-', 0
while #out < count and scanned < 10 * count do
  local pending = redis.call('XPENDING', log, group, 'IDLE', wait, start, '+', count)
  if #pending == 0 then break end
  for _, p in ipairs(pending) do
    if #out >= count then break end
    if not redis.call('ZSCORE', delayed, p[1]) then claim(p[1], wait) end
  end
  scanned = scanned + #pending
  start = '(' .. pending[#pending][1]
end
return out
"#;

/// KEYS: 1 = log. ARGV: 1 = group, 2 = consumer, 3.. = ids.
/// Resets the idle time of the ids still pending under this consumer, without
/// counting a delivery, and returns them.
const TOUCH: &str = r#"
local mine = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    mine[#mine + 1] = ARGV[i]
  end
end
return mine
"#;

/// KEYS: 1 = log. ARGV: 1 = group, 2 = idle (ms).
/// Deletes consumers idle that long that hold no pending entry (a consumer
/// holding entries is never deleted: that would drop them from the group).
const SWEEP: &str = r#"
local gone = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    gone = gone + 1
  end
end
return gone
"#;

/// KEYS: 1 = log, 2 = the group's delayed set.
/// ARGV: 1 = group, 2 = consumer, 3 = idle time to give (ms), 4 = "1" to
/// release handed-out entries too, 5.. = the entries handed out and unsettled.
/// Makes the consumer's pending entries look abandoned, so the next claim of
/// any member takes them at once. An entry that never left the member gets its
/// delivery count lowered by one, since that claim counts a delivery it never
/// had. Nacked entries stay as they are: the delayed set brings them back.
const RELEASE: &str = r#"
local log, delayed, group, me = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local out = {}
for i = 5, #ARGV do out[ARGV[i]] = true end
local released, start = 0, '-'
while true do
  local pending = redis.call('XPENDING', log, group, start, '+', 1000, me)
  if #pending == 0 then break end
  for _, p in ipairs(pending) do
    local id, count = p[1], p[4]
    if not redis.call('ZSCORE', delayed, id) then
      if out[id] then
        if ARGV[4] == '1' then
          redis.call('XCLAIM', log, group, me, 0, id, 'IDLE', ARGV[3], 'JUSTID')
          released = released + 1
        end
      else
        redis.call('XCLAIM', log, group, me, 0, id, 'IDLE', ARGV[3],
          'RETRYCOUNT', math.max(count - 1, 0), 'JUSTID')
        released = released + 1
      end
    end
  end
  start = '(' .. pending[#pending][1]
end
return released
"#;

/// KEYS: 1 = log, 2 = the group's delayed set.
/// ARGV: 1 = group, 2 = consumer, 3 = at most this many, 4.. = the entries the
/// member knows about (handed out, or waiting in it).
/// After an outage a member may own entries it never saw: a read or a claim
/// the server carried out but whose reply was lost with the connection. This
/// takes them back as they stand (same delivery count, idle time reset) and
/// returns `{id, deliveries, fields}` for each, like the claim.
const RECOVER: &str = r#"
local log, delayed, group, me = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local limit = tonumber(ARGV[3])
local known = {}
for i = 4, #ARGV do known[ARGV[i]] = true end
local out, start, scanned = {}, '-', 0
while #out < limit and scanned < 100 * limit do
  local pending = redis.call('XPENDING', log, group, start, '+', 1000, me)
  if #pending == 0 then break end
  for _, p in ipairs(pending) do
    local id, count = p[1], p[4]
    if #out < limit and not known[id] and not redis.call('ZSCORE', delayed, id) then
      local got = redis.call('XCLAIM', log, group, me, 0, id, 'RETRYCOUNT', count)
      if got[1] then out[#out + 1] = {got[1][1], count, got[1][2]} end
    end
  end
  scanned = scanned + #pending
  start = '(' .. pending[#pending][1]
end
return out
"#;

/// Takes back this member's pending entries that it does not know about
/// (`known`: handed out or waiting in it), as they stand.
pub(super) async fn recover(
    conn: &mut ConnectionManager,
    member: &GroupMember,
    limit: usize,
    known: &[String],
) -> redis::RedisResult<crate::error::Result<Vec<Claimed>>> {
    let reply: Value = eval(RECOVER, &[member.log.clone(), member.delayed.clone()])
        .arg(&member.group)
        .arg(&member.consumer)
        .arg(limit)
        .arg(known)
        .query_async(conn)
        .await?;
    Ok(parse_claimed(reply))
}

/// An idle time longer than any ack wait (a year), and still shorter than the
/// time since the epoch, which Redis requires of it.
const ABANDONED_MS: u64 = 365 * 24 * 3600 * 1000;

/// Gives up this member's pending entries: those it never handed out, and
/// with `all` those handed out and unsettled (`out`) as well.
pub(super) async fn release(
    conn: &mut ConnectionManager,
    member: &GroupMember,
    out: &[String],
    all: bool,
) -> redis::RedisResult<i64> {
    eval(RELEASE, &[member.log.clone(), member.delayed.clone()])
        .arg(&member.group)
        .arg(&member.consumer)
        .arg(ABANDONED_MS)
        .arg(if all { "1" } else { "0" })
        .arg(out)
        .query_async(conn)
        .await
}

/// An entry claimed by this member, with how many times the group delivered it.
pub(super) struct Claimed {
    pub(super) entry: RawEntry,
    pub(super) deliveries: u32,
}

/// What a claim asks for.
pub(super) struct ClaimRequest<'a> {
    pub(super) now_ms: u64,
    pub(super) ack_wait_ms: u64,
    pub(super) grace_ms: u64,
    pub(super) count: usize,
    pub(super) own_due: &'a [String],
}

pub(super) async fn claim(
    conn: &mut ConnectionManager,
    member: &GroupMember,
    request: ClaimRequest<'_>,
) -> redis::RedisResult<crate::error::Result<Vec<Claimed>>> {
    let reply: Value = eval(CLAIM, &[member.log.clone(), member.delayed.clone()])
        .arg(&member.group)
        .arg(&member.consumer)
        .arg(request.now_ms)
        .arg(request.ack_wait_ms)
        .arg(request.grace_ms)
        .arg(request.count)
        .arg(request.own_due)
        .query_async(conn)
        .await?;
    Ok(parse_claimed(reply))
}

fn parse_claimed(reply: Value) -> crate::error::Result<Vec<Claimed>> {
    let Value::Array(items) = reply else {
        return Err(unexpected("the claimed entries"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut parts) = item else {
            return Err(unexpected("a claimed entry"));
        };
        let fields = if parts.len() > 2 {
            parts.pop().unwrap_or(Value::Nil)
        } else {
            Value::Nil
        };
        let deliveries = match parts.pop() {
            Some(Value::Int(n)) => u32::try_from(n.max(1)).unwrap_or(u32::MAX),
            _ => return Err(unexpected("a delivery count")),
        };
        let id = parts.pop().unwrap_or(Value::Nil);
        let entry = RawEntry::from_value(Value::Array(vec![id, fields]))?;
        out.push(Claimed { entry, deliveries });
    }
    Ok(out)
}

/// Resets the idle time of `ids` still pending under this member; returns those.
pub(super) async fn touch(
    conn: &mut ConnectionManager,
    member: &GroupMember,
    ids: &[String],
) -> redis::RedisResult<Vec<String>> {
    eval(TOUCH, std::slice::from_ref(&member.log))
        .arg(&member.group)
        .arg(&member.consumer)
        .arg(ids)
        .query_async(conn)
        .await
}

/// Deletes the group's consumers idle longer than `idle_ms` with nothing pending.
pub(super) async fn sweep(
    conn: &mut ConnectionManager,
    log: &str,
    group: &str,
    idle_ms: u64,
) -> redis::RedisResult<i64> {
    eval(SWEEP, &[log.to_owned()])
        .arg(group)
        .arg(idle_ms)
        .query_async(conn)
        .await
}
