//! Dead letters: a stream per tenant (`<prefix>:{tenant}:dlq`, oldest first)
//! and a hash from dead letter id to stream id, so one can be found and
//! deleted by its id. Dead letters are never trimmed: they stay until redriven
//! or deleted.

use redis::Value;
use redis::aio::ConnectionManager;

use super::entry::{RawEntry, entries, unexpected};
use super::error::from_redis;
use super::keys::TenantKeys;
use super::script::eval;
use crate::delivery::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;

const FIELD_DEAD_LETTER: &str = "deadletter";

/// KEYS: the dlq stream, its index. ARGV: id, JSON.
const PUT: &str = r#"
local sid = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'deadletter', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], sid)
return sid
"#;

/// KEYS: the dlq stream, its index. ARGV: id. Returns 1 when one was deleted.
const DELETE: &str = r#"
local sid = redis.call('HGET', KEYS[2], ARGV[1])
if not sid then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('XDEL', KEYS[1], sid)
"#;

/// Where one engine keeps dead letters.
pub(super) struct DeadLetters {
    pub(super) prefix: String,
}

impl DeadLetters {
    fn keys(&self, tenant: &TenantId) -> [String; 2] {
        let keys = TenantKeys::new(&self.prefix, tenant);
        [keys.dead_letters(), keys.dead_letter_index()]
    }

    pub(super) async fn put(&self, conn: &mut ConnectionManager, dl: &DeadLetter) -> Result<()> {
        let json = serde_json::to_vec(dl).map_err(|e| {
            Error::new(ErrorKind::Engine, "cannot encode a dead letter").with_source(e)
        })?;
        let _: Value = eval(PUT, &self.keys(&dl.event.tenant))
            .arg(&dl.id)
            .arg(json)
            .query_async(conn)
            .await
            .map_err(|e| from_redis("storing a dead letter", e))?;
        Ok(())
    }

    pub(super) async fn list(
        &self,
        conn: &mut ConnectionManager,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let [stream, _] = self.keys(tenant);
        let reply: Value = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(conn)
            .await
            .map_err(|e| from_redis("listing dead letters", e))?;
        entries(reply)?.iter().map(decode).collect()
    }

    pub(super) async fn get(
        &self,
        conn: &mut ConnectionManager,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<DeadLetter>> {
        let [stream, index] = self.keys(tenant);
        let sid: Option<String> = redis::cmd("HGET")
            .arg(&index)
            .arg(id)
            .query_async(conn)
            .await
            .map_err(|e| from_redis("finding a dead letter", e))?;
        let Some(sid) = sid else { return Ok(None) };
        let reply: Value = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&sid)
            .arg(&sid)
            .query_async(conn)
            .await
            .map_err(|e| from_redis("reading a dead letter", e))?;
        entries(reply)?.first().map(decode).transpose()
    }

    pub(super) async fn delete(
        &self,
        conn: &mut ConnectionManager,
        tenant: &TenantId,
        id: &str,
    ) -> Result<bool> {
        let deleted: i64 = eval(DELETE, &self.keys(tenant))
            .arg(id)
            .query_async(conn)
            .await
            .map_err(|e| from_redis("deleting a dead letter", e))?;
        Ok(deleted > 0)
    }
}

fn decode(entry: &RawEntry) -> Result<DeadLetter> {
    let json = entry
        .field(FIELD_DEAD_LETTER)
        .ok_or_else(|| unexpected("a dead letter entry"))?;
    let dl: DeadLetter = serde_json::from_slice(json).map_err(|e| {
        Error::new(
            ErrorKind::Engine,
            format!("dead letter entry {} does not decode", entry.id),
        )
        .with_source(e)
    })?;
    Ok(dl)
}
