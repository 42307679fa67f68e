//! The cases of the suite, and how one runs.

use std::future::Future;
use std::time::Duration;

use super::cases;
use super::context::Cx;
use super::harness::Harness;
use crate::error::Result;

/// The longest one case may take in all, waits included.
const CASE_LIMIT: Duration = Duration::from_secs(90);

/// How a case ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check held.
    Passed,
    /// The engine declares it lacks this capability (a field of
    /// [`crate::Capabilities`]), so the case's promise does not apply.
    NotSupported(&'static str),
}

/// One promise of the bus contract, checked on an engine.
///
/// Variant names are the case names used in test names
/// (`conformance_<engine>_<case>`).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Case {
    /// Every attribute, unknown extensions included, and the data's exact bytes
    /// come back as published, to groups, tails and replays.
    round_trip,
    /// A subscriber of one tenant never sees another tenant's events, in groups,
    /// tails, replays, dead letters and redrives.
    tenant_isolation,
    /// Exact types, `*` (one token) and `>` (the rest) select the right events.
    type_filters,
    /// Members of a group share its events: each to exactly one, all delivered.
    group_work_sharing,
    /// Every group, and every tail, gets every event.
    fan_out_across_groups,
    /// A group keeps its place while it has no member: events published
    /// meanwhile reach the next member, acknowledged ones do not.
    group_keeps_position_without_members,
    /// A nacked event comes back with the next attempt number, after its delay
    /// or the backoff, without holding up other events.
    nack_redelivery,
    /// A delivery left unsettled past the ack wait goes to another member.
    ack_wait_redelivery,
    /// After `max_deliveries` attempts (nacked or left unsettled) the event is a
    /// dead letter with reason, attempts, last error and times.
    dead_letter_after_max_deliveries,
    /// `term` makes a dead letter at once, with no further delivery.
    term_dead_letters_immediately,
    /// A redriven dead letter goes back to its group only, and leaves the dead letters.
    redrive,
    /// A second publish of an id within the window is a duplicate, not delivered again.
    dedup_by_id,
    /// With content dedup on, the same (type, tenant, subject, data) is stored once.
    content_dedup,
    /// Within a group, one event per partition key at a time, in publish order
    /// (a retry included), while different keys run concurrently.
    order_per_partition_key,
    /// A stalled consumer bounds what is buffered: publishers wait (in-memory
    /// logs) or the log absorbs it on disk, and the member holds at most
    /// `max_in_flight` deliveries.
    backpressure,
    /// Tails and new groups can start at the oldest retained event.
    replay_from_beginning,
    /// Tails and new groups can start at a log position.
    replay_from_sequence,
    /// Tails and new groups can start at a time.
    replay_from_time,
    /// Events, group positions, dead letters and the dedup window survive a restart.
    persistence_across_restart,
    /// Concurrent publishers: every event stored once, each publisher's order kept.
    concurrent_publishers,
    /// Closing ends subscriptions and refuses publishes; acks made before the
    /// close hold after a restart.
    graceful_shutdown,
    /// An event over the size limit is refused with `event_too_large`; nothing is stored.
    size_limit,
    /// While the engine is down, `publish_with_fallback` spools; when it is back,
    /// the spool drains, in order.
    fallback_spool_drains_in_order,
    /// A tail that falls behind retained history is told how many events it
    /// missed, then goes on.
    tail_lag,
    /// A batch with one refused event stores none of its events.
    batch_publish_all_or_nothing,
}

/// Runs one case against the engine behind `harness`.
///
/// A failed check panics with what was expected; an error of the bus is returned.
pub async fn run_case(case: Case, harness: &dyn Harness) -> Result<Verdict> {
    let cx = Cx::new(harness);
    let cx = &cx;
    match case {
        Case::round_trip => cases::publishing::round_trip(cx).await,
        Case::tenant_isolation => cases::isolation::tenant_isolation(cx).await,
        Case::type_filters => cases::isolation::type_filters(cx).await,
        Case::group_work_sharing => cases::groups::group_work_sharing(cx).await,
        Case::fan_out_across_groups => cases::groups::fan_out_across_groups(cx).await,
        Case::group_keeps_position_without_members => {
            cases::groups::group_keeps_position_without_members(cx).await
        }
        Case::nack_redelivery => cases::redelivery::nack_redelivery(cx).await,
        Case::ack_wait_redelivery => cases::redelivery::ack_wait_redelivery(cx).await,
        Case::dead_letter_after_max_deliveries => {
            cases::dead_letters::dead_letter_after_max_deliveries(cx).await
        }
        Case::term_dead_letters_immediately => {
            cases::dead_letters::term_dead_letters_immediately(cx).await
        }
        Case::redrive => cases::dead_letters::redrive(cx).await,
        Case::dedup_by_id => cases::publishing::dedup_by_id(cx).await,
        Case::content_dedup => cases::publishing::content_dedup(cx).await,
        Case::order_per_partition_key => cases::groups::order_per_partition_key(cx).await,
        Case::backpressure => cases::backpressure::backpressure(cx).await,
        Case::replay_from_beginning => cases::replay::replay_from_beginning(cx).await,
        Case::replay_from_sequence => cases::replay::replay_from_sequence(cx).await,
        Case::replay_from_time => cases::replay::replay_from_time(cx).await,
        Case::persistence_across_restart => cases::durability::persistence_across_restart(cx).await,
        Case::concurrent_publishers => cases::publishing::concurrent_publishers(cx).await,
        Case::graceful_shutdown => cases::durability::graceful_shutdown(cx).await,
        Case::size_limit => cases::publishing::size_limit(cx).await,
        Case::fallback_spool_drains_in_order => {
            cases::fallback::fallback_spool_drains_in_order(cx).await
        }
        Case::tail_lag => cases::replay::tail_lag(cx).await,
        Case::batch_publish_all_or_nothing => {
            cases::publishing::batch_publish_all_or_nothing(cx).await
        }
    }
}

/// Runs one case as a test named `test`: on a fresh multi-threaded runtime with
/// two workers, within a time limit; panics when the case fails.
pub fn run<H, F>(test: &str, case: Case, harness: F)
where
    H: Harness,
    F: Future<Output = H>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{test}: cannot start a Tokio runtime: {e}"));
    let outcome = runtime.block_on(async {
        tokio::time::timeout(CASE_LIMIT, async {
            let harness = harness.await;
            run_case(case, &harness).await
        })
        .await
    });
    // Tasks a failed case left behind must not keep the test process waiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(Ok(Verdict::Passed)) => {}
        Ok(Ok(Verdict::NotSupported(capability))) => {
            println!("{test}: not supported: {capability}");
        }
        Ok(Err(e)) => panic!("{test}: the bus failed: {e}"),
        Err(_) => panic!("{test}: did not finish within {CASE_LIMIT:?}"),
    }
}
