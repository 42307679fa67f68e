//! The memory engine's raw baseline: a bounded tokio channel, one task to another.

use std::time::Instant;

use anyhow::Context as _;
use secbus::Event;

use super::RawRun;

/// The channel bound, as in the published baseline figures.
const BOUND: usize = 1024;

/// Sends `events` through `tokio::sync::mpsc::channel(1024)` from one task to
/// another that receives them all; timed until the last one is received.
pub(crate) async fn mpsc_transfer(events: Vec<Event>) -> anyhow::Result<RawRun> {
    let n = events.len();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(BOUND);
    let receiver = tokio::spawn(async move {
        let mut received = 0;
        while received < n {
            match rx.recv().await {
                Some(event) => {
                    std::hint::black_box(&event);
                    received += 1;
                }
                None => break,
            }
        }
        (received, Instant::now())
    });
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for event in events {
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    sender.await.context("the raw sender task failed")?;
    let (received, done) = receiver.await.context("the raw receiver task failed")?;
    anyhow::ensure!(
        received == n,
        "the raw receiver got {received} of {n} events"
    );
    Ok(RawRun {
        baseline: "tokio mpsc(1024), one task to another",
        events: n,
        wall: done - start,
    })
}
