//! The audit handler: every event of a group, appended to its tenant's trail,
//! synced as the policy says before the delivery is acknowledged.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use secbus::handler::{Handler, HandlerContext, HandlerError};
use secbus::{Event, TenantId};

use super::FsyncPolicy;
use super::trail::AuditTrail;
use crate::error::{Error, ErrorKind, Result};

/// Event ids remembered per tenant, so a redelivery of an event already in
/// the trail (its ack was lost) is not appended again.
const RECENT_IDS: usize = 4096;

/// Appends each event it handles to `<root>/<tenant>/`; see [`super`].
#[derive(Debug, Clone)]
pub struct AuditHandler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_file_bytes: u64,
    fsync: FsyncPolicy,
    trails: Mutex<HashMap<TenantId, Arc<TenantTrail>>>,
}

#[derive(Debug)]
struct TenantTrail {
    state: Mutex<TrailState>,
    /// The highest sequence known durable; held while a sync runs, so
    /// concurrent handlers share one fsync (group commit).
    synced: tokio::sync::Mutex<u64>,
    dirty: AtomicBool,
}

#[derive(Debug)]
struct TrailState {
    trail: AuditTrail,
    recent: HashMap<String, u64>,
    order: VecDeque<String>,
}

impl AuditHandler {
    /// A handler writing trails under `root`, rotating files past
    /// `max_file_bytes`, syncing by `fsync`.
    pub fn new(root: impl Into<PathBuf>, max_file_bytes: u64, fsync: FsyncPolicy) -> Self {
        AuditHandler {
            inner: Arc::new(Inner {
                root: root.into(),
                max_file_bytes,
                fsync,
                trails: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Appends `event` to its tenant's trail and makes it as durable as the
    /// policy says; returns its sequence in the trail.
    pub async fn record(&self, event: &Event) -> Result<u64> {
        let tenant = self.tenant_trail(&event.tenant)?;
        let (seq, file) = {
            let mut st = tenant.state.lock();
            let id = event.id.as_str();
            match st.recent.get(id) {
                Some(&seq) => (seq, st.trail.current_file()),
                None => {
                    let seq = st.trail.append(&event.to_json())?;
                    st.remember(id, seq);
                    (seq, st.trail.current_file())
                }
            }
        };
        tenant.dirty.store(true, Ordering::Release);
        match self.inner.fsync {
            FsyncPolicy::EveryRecord => sync_file(file).await?,
            FsyncPolicy::Batch => tenant.sync_through(seq).await?,
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {}
        }
        Ok(seq)
    }

    /// Syncs every trail written so far.
    pub async fn sync_all(&self) -> Result<()> {
        let trails: Vec<Arc<TenantTrail>> = self.inner.trails.lock().values().cloned().collect();
        for t in trails {
            let last = t.state.lock().trail.head().next_seq - 1;
            t.sync_through(last).await?;
        }
        Ok(())
    }

    fn tenant_trail(&self, tenant: &TenantId) -> Result<Arc<TenantTrail>> {
        let mut trails = self.inner.trails.lock();
        if let Some(t) = trails.get(tenant) {
            return Ok(t.clone());
        }
        let trail = AuditTrail::open(
            self.inner.root.join(tenant.as_str()),
            self.inner.max_file_bytes,
        )?;
        let t = Arc::new(TenantTrail {
            state: Mutex::new(TrailState {
                trail,
                recent: HashMap::new(),
                order: VecDeque::new(),
            }),
            synced: tokio::sync::Mutex::new(0),
            dirty: AtomicBool::new(false),
        });
        if let FsyncPolicy::Interval(every) = self.inner.fsync {
            tokio::spawn(sync_every(Arc::downgrade(&t), every));
        }
        trails.insert(tenant.clone(), t.clone());
        Ok(t)
    }
}

impl TrailState {
    fn remember(&mut self, id: &str, seq: u64) {
        if self.order.len() >= RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.recent.remove(&old);
        }
        self.recent.insert(id.to_owned(), seq);
        self.order.push_back(id.to_owned());
    }
}

impl TenantTrail {
    /// Returns once records up to `seq` are durable, syncing when no sync
    /// that covers them has run.
    async fn sync_through(&self, seq: u64) -> Result<()> {
        let mut synced = self.synced.lock().await;
        if *synced >= seq {
            return Ok(());
        }
        let (upto, file) = {
            let st = self.state.lock();
            (st.trail.head().next_seq - 1, st.trail.current_file())
        };
        self.dirty.store(false, Ordering::Release);
        if let Err(e) = sync_file(file).await {
            self.dirty.store(true, Ordering::Release);
            return Err(e);
        }
        *synced = upto;
        Ok(())
    }
}

async fn sync_file(file: Arc<File>) -> Result<()> {
    tokio::task::spawn_blocking(move || file.sync_data())
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "the sync task failed").with_source(e))?
        .map_err(|e| Error::io("cannot sync the audit trail", e))
}

async fn sync_every(trail: Weak<TenantTrail>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(t) = trail.upgrade() else { return };
        if t.dirty.load(Ordering::Acquire) {
            let last = t.state.lock().trail.head().next_seq - 1;
            if let Err(e) = t.sync_through(last).await {
                tracing::error!(code = e.code(), error = %e, "cannot sync the audit trail");
            }
        }
    }
}

#[async_trait]
impl Handler for AuditHandler {
    async fn handle(&self, _ctx: &HandlerContext, event: &Event) -> Result<(), HandlerError> {
        match self.record(event).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(
                    event_id = %event.id,
                    event_type = %event.ty,
                    tenant_id = %event.tenant,
                    correlation_id = %event.correlationid,
                    code = e.code(),
                    error = %e,
                    "cannot record the event in the audit trail"
                );
                Err(HandlerError::Retry(e.to_string()))
            }
        }
    }
}
