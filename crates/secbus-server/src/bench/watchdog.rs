//! Waiting on a measured task without hanging forever: a task that makes no
//! progress for [`STALL`] is a bug to report, not a slow machine to wait for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// How long a task may go without moving its counter.
pub(crate) const STALL: Duration = Duration::from_secs(30);

/// A counter a measured task moves as it goes.
pub(crate) type Progress = Arc<AtomicU64>;

/// Awaits `task`, failing (and aborting it) once `progress` has not moved for [`STALL`].
pub(crate) async fn finish<T>(
    mut task: JoinHandle<anyhow::Result<T>>,
    progress: &Progress,
    what: &str,
) -> anyhow::Result<T> {
    let mut last = progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::select! {
            joined = &mut task => {
                return joined.map_err(|e| anyhow::anyhow!("the {what} task failed: {e}"))?;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let now = progress.load(Ordering::Relaxed);
                if now != last {
                    last = now;
                    since = Instant::now();
                } else if since.elapsed() >= STALL {
                    task.abort();
                    anyhow::bail!("the {what} made no progress for {STALL:?} (stuck at {now})");
                }
            }
        }
    }
}

/// Waits until `progress` reaches `target`, failing once it has not moved for [`STALL`].
pub(crate) async fn reach(progress: &Progress, target: u64, what: &str) -> anyhow::Result<()> {
    let mut last = progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while last < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= STALL {
            anyhow::bail!("the {what} made no progress for {STALL:?} (at {now} of {target})");
        }
    }
    Ok(())
}
