//! Consumer-group state kept in the file: one row per (tenant, group) holding
//! the group's snapshot as JSON, saved through the writer about every 100 ms.
//!
//! Acknowledgements reach the file with the next save, so after a crash a
//! group resumes from its last save: deliveries acknowledged in the last
//! ~100 ms before the crash may be delivered again (at-least-once), and no
//! acknowledged-and-saved delivery is ever delivered again.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};

use super::readers::Readers;
use super::schema::{now_ns, sql_error};
use super::writer::Writer;
use crate::error::{Error, ErrorKind, Result};
use crate::event::TenantId;
use crate::local::{GroupSnapshot, GroupStore};

pub(super) struct EmbeddedGroups {
    pub(super) readers: Arc<Readers>,
    pub(super) writer: Arc<Writer>,
}

#[async_trait]
impl GroupStore for EmbeddedGroups {
    async fn load(&self, tenant: &TenantId, group: &str) -> Result<Option<GroupSnapshot>> {
        let (tenant, group) = (tenant.clone(), group.to_owned());
        let json = self
            .readers
            .run(move |conn| {
                conn.prepare_cached("SELECT snapshot FROM groups WHERE tenant = ?1 AND name = ?2")
                    .and_then(|mut s| {
                        s.query_row([tenant.as_str(), &group], |r| r.get::<_, String>(0))
                            .optional()
                    })
                    .map(|json| json.map(|j| (j, tenant, group)))
                    .map_err(|e| sql_error("loading a consumer group", e))
            })
            .await?;
        let Some((json, tenant, group)) = json else {
            return Ok(None);
        };
        let snapshot: GroupSnapshot = serde_json::from_str(&json).map_err(|e| {
            Error::new(
                ErrorKind::Engine,
                format!("the stored state of group {group:?} of tenant {tenant} cannot be decoded"),
            )
            .with_source(e)
        })?;
        if snapshot.tenant != tenant || snapshot.group != group {
            return Err(Error::new(
                ErrorKind::Engine,
                format!(
                    "the stored state of group {group:?} of tenant {tenant} names another group"
                ),
            ));
        }
        Ok(Some(snapshot))
    }

    async fn save(&self, snapshot: &GroupSnapshot) -> Result<()> {
        let json = serde_json::to_string(snapshot).map_err(|e| {
            Error::new(ErrorKind::Engine, "cannot encode a group's state").with_source(e)
        })?;
        let tenant = snapshot.tenant.as_str().to_owned();
        let group = snapshot.group.clone();
        self.writer
            .write("saving a consumer group", move |conn| {
                save(conn, &tenant, &group, &json)
            })
            .await
            .map(drop)
    }
}

fn save(conn: &Connection, tenant: &str, group: &str, json: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO groups (tenant, name, snapshot, saved_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tenant, name) DO UPDATE SET snapshot = excluded.snapshot,
                                                  saved_at = excluded.saved_at",
    )?
    .execute(rusqlite::params![tenant, group, json, now_ns()])
}
