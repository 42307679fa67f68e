//! The worker: a consumer-group member that runs a handler for each delivery,
//! a bounded number at a time, and settles each from the handler's answer.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Handler, HandlerContext, HandlerError};
use crate::bus::{Bus, Subscriber};
use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::subscription::{Mode, SubscribeOptions, Subscription};

/// Handler calls a worker runs at once unless told otherwise.
const DEFAULT_CONCURRENCY: usize = 8;
/// The longest pause after the subscription reports an error, before asking again.
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(5);

/// Runs a [`Handler`] over a consumer group.
///
/// ```no_run
/// # use secbus::handler::{Worker, handler_fn};
/// # use secbus::{Bus, SubscribeOptions, TenantId};
/// # async fn run(bus: Bus, acme: TenantId) -> secbus::Result<()> {
/// let worker = Worker::new(bus, SubscribeOptions::group(acme, "audit"))
///     .concurrency(4)
///     .start(handler_fn(|_ctx, event| async move {
///         println!("{} {}", event.ty, event.id);
///         Ok(())
///     }))
///     .await?;
/// tokio::signal::ctrl_c().await?;
/// let stats = worker.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// Per delivery, the worker calls the handler, then acks on `Ok`, nacks on
/// [`HandlerError::Retry`] / [`HandlerError::RetryAfter`] with the error's
/// message as the last error (so a dead letter made after the last attempt says
/// why), and terms on [`HandlerError::Permanent`]. A panicking handler counts as
/// `Retry`. Every failure is logged (`tracing`, target `secbus::handler::worker`)
/// with `event_id`, `event_type`, `tenant_id`, `correlation_id`, `group`,
/// `attempt`, `sequence`, `outcome` and `error`; the handler itself runs in a
/// span carrying the same event fields, so its own log lines have them too.
#[derive(Debug, Clone)]
pub struct Worker {
    bus: Bus,
    options: SubscribeOptions,
    concurrency: usize,
}

impl Worker {
    /// A worker for the consumer group of `options` (which must be a group, not
    /// a tail), running up to 8 handler calls at once.
    pub fn new(bus: Bus, options: SubscribeOptions) -> Self {
        Worker {
            bus,
            options,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Runs up to `n` handler calls at once (at least 1). The subscription's
    /// `max_in_flight` bounds it too: the worker never holds more unsettled
    /// deliveries than that. Events with the same partition key are never handled
    /// at the same time whatever `n` is.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Subscribes and starts handling in a background task. Subscription errors
    /// (invalid options, a closed bus) are returned here; once this returns, the
    /// group member exists, so events published from then on reach it.
    pub async fn start<H: Handler>(self, handler: H) -> Result<WorkerHandle> {
        let Mode::Group(group) = &self.options.mode else {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                "a worker reads a consumer group; use SubscribeOptions::group",
            )
            .with_field("mode"));
        };
        if self.concurrency == 0 {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                "a worker's concurrency must be at least 1",
            )
            .with_field("concurrency"));
        }
        let group: Arc<str> = Arc::from(group.as_str());
        let subscription = self.bus.subscribe(self.options.clone()).await?;
        let (state, state_rx) = watch::channel(State::Running);
        let counters = Arc::new(Counters::default());
        let run = Run {
            bus: self.bus,
            group,
            handler: Arc::new(handler),
            concurrency: self.concurrency.min(self.options.max_in_flight),
            counters: counters.clone(),
            state: state_rx,
        };
        let task = tokio::spawn(run.run(subscription));
        Ok(WorkerHandle {
            state,
            task: Some(task),
            counters,
        })
    }

    /// Runs until `shutdown` completes (or the bus closes), then shuts down
    /// gracefully (see [`WorkerHandle::shutdown`]) and returns what was done.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerStats> {
        let mut handle = self.start(handler).await?;
        let ended = match handle.task.as_mut() {
            Some(task) => tokio::select! {
                () = shutdown => None,
                joined = task => Some(joined),
            },
            None => None,
        };
        if let Some(joined) = ended {
            handle.task = None;
            joined.map_err(task_failed)?;
        }
        handle.shutdown().await
    }
}

/// What a worker did. `failed` = `retried` + `dead_lettered` + failures whose
/// settling failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Handler calls that succeeded and were acked.
    pub handled: u64,
    /// Handler calls that failed (one per failed delivery; in-process retries
    /// inside a [`super::RetryLayer`] are not counted separately).
    pub failed: u64,
    /// Failed deliveries nacked to be delivered again.
    pub retried: u64,
    /// Deliveries this worker sent to the dead letters (`Permanent`, or a failure
    /// on the last attempt).
    pub dead_lettered: u64,
    /// Acks, nacks or terms the engine refused; those deliveries come back after
    /// the ack wait.
    pub settle_failures: u64,
    /// Handler calls cut off by [`WorkerHandle::shutdown_within`]; those deliveries
    /// come back after the ack wait.
    pub abandoned: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    settle_failures: AtomicU64,
    abandoned: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Acquire);
        WorkerStats {
            handled: get(&self.handled),
            failed: get(&self.failed),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            settle_failures: get(&self.settle_failures),
            abandoned: get(&self.abandoned),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Take no new deliveries; finish the calls under way.
    Draining,
    /// Take no new deliveries; cut off the calls under way.
    Abort,
}

/// Controls a started [`Worker`]. Dropping it asks the worker to stop taking
/// deliveries (as `shutdown` does) without waiting for it.
#[derive(Debug)]
pub struct WorkerHandle {
    state: watch::Sender<State>,
    task: Option<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl WorkerHandle {
    /// What the worker has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }

    /// Whether the worker has stopped (after a shutdown, or because the bus closed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops taking new deliveries, waits for the handler calls under way to
    /// finish and their acks, nacks and terms to complete, and returns what the
    /// worker did. Nothing acknowledged is lost; a delivery the engine was handing
    /// out at the moment of the call is left unsettled and comes back after its
    /// ack wait.
    pub async fn shutdown(mut self) -> Result<WorkerStats> {
        self.state.send_if_modified(|s| advance(s, State::Draining));
        self.join().await
    }

    /// Like [`WorkerHandle::shutdown`], but handler calls still running after
    /// `grace` are cut off; their deliveries are left unsettled and come back after
    /// the ack wait (counted in [`WorkerStats::abandoned`]).
    pub async fn shutdown_within(mut self, grace: Duration) -> Result<WorkerStats> {
        self.state.send_if_modified(|s| advance(s, State::Draining));
        let Some(task) = self.task.as_mut() else {
            return Ok(self.counters.snapshot());
        };
        match tokio::time::timeout(grace, &mut *task).await {
            Ok(joined) => {
                self.task = None;
                joined.map_err(task_failed)?;
                Ok(self.counters.snapshot())
            }
            Err(_) => {
                self.state.send_if_modified(|s| advance(s, State::Abort));
                self.join().await
            }
        }
    }

    async fn join(&mut self) -> Result<WorkerStats> {
        if let Some(task) = self.task.take() {
            task.await.map_err(task_failed)?;
        }
        Ok(self.counters.snapshot())
    }
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::new(ErrorKind::Engine, "the worker task ended abnormally").with_source(e)
}

fn advance(state: &mut State, to: State) -> bool {
    let rank = |s: State| match s {
        State::Running => 0,
        State::Draining => 1,
        State::Abort => 2,
    };
    if rank(to) > rank(*state) {
        *state = to;
        true
    } else {
        false
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.state.send_if_modified(|s| advance(s, State::Draining));
    }
}

/// Resolves once the worker is told to reach `at_least`. A handle that is gone
/// asked for a drain when it was dropped, never for an abort.
async fn reached(state: &mut watch::Receiver<State>, at_least: State) {
    let told = state
        .wait_for(|s| {
            let mut current = *s;
            !advance(&mut current, at_least)
        })
        .await
        .is_ok();
    if !told && at_least == State::Abort {
        std::future::pending::<()>().await;
    }
}

/// The worker's background task.
struct Run<H> {
    bus: Bus,
    group: Arc<str>,
    handler: Arc<H>,
    concurrency: usize,
    counters: Arc<Counters>,
    state: watch::Receiver<State>,
}

impl<H: Handler> Run<H> {
    async fn run(mut self, mut subscription: Subscription) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut calls = JoinSet::new();
        let mut pause = Duration::from_millis(50);
        loop {
            while calls.try_join_next().is_some() {}
            let slot = tokio::select! {
                biased;
                () = reached(&mut self.state, State::Draining) => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                biased;
                () = reached(&mut self.state, State::Draining) => break,
                next = subscription.next() => next,
            };
            let delivery = match next {
                None => break,
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => {
                    tracing::error!(
                        group = %self.group,
                        tenant_id = %subscription.options().tenant,
                        code = e.code(),
                        error = %e,
                        "the worker's subscription failed; asking again"
                    );
                    tokio::select! {
                        () = reached(&mut self.state, State::Draining) => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_ERROR_PAUSE);
                    continue;
                }
            };
            pause = Duration::from_millis(50);
            let ctx = HandlerContext::new(
                self.bus.clone(),
                delivery.event_arc(),
                self.group.clone(),
                delivery.sequence(),
                delivery.attempt(),
                subscription.options().max_deliveries,
                Instant::now() + subscription.options().ack_wait,
            );
            let handler = self.handler.clone();
            let counters = self.counters.clone();
            calls.spawn(async move {
                handle_one(&*handler, ctx, delivery, &counters).await;
                drop(slot);
            });
        }
        // Draining: the calls under way finish and settle, unless told to abort.
        loop {
            tokio::select! {
                biased;
                () = reached(&mut self.state, State::Abort) => {
                    calls.abort_all();
                    while let Some(joined) = calls.join_next().await {
                        if joined.is_err_and(|e| e.is_cancelled()) {
                            Counters::add(&self.counters.abandoned);
                        }
                    }
                    break;
                }
                joined = calls.join_next() => if joined.is_none() { break },
            }
        }
        // Dropped last: the deliveries settled above were handed out through it.
        drop(subscription);
    }
}

/// Calls the handler for one delivery and settles the delivery from its answer.
async fn handle_one<H: Handler + ?Sized>(
    handler: &H,
    ctx: HandlerContext,
    delivery: Delivery,
    counters: &Counters,
) {
    let event = ctx.event_arc();
    let span = tracing::info_span!(
        "secbus.handle",
        event_id = %event.id,
        event_type = %event.ty,
        tenant_id = %event.tenant,
        correlation_id = %event.correlationid,
        group = %ctx.group(),
        attempt = ctx.attempt(),
    );
    let result = AssertUnwindSafe(handler.handle(&ctx, &event).instrument(span))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            Err(HandlerError::Retry(format!("handler panicked: {what}")))
        });
    let error = match result {
        Ok(()) => {
            match delivery.ack().await {
                Ok(()) => Counters::add(&counters.handled),
                Err(e) => {
                    Counters::add(&counters.settle_failures);
                    log_settle_failure(&ctx, "ack", &e);
                }
            }
            return;
        }
        Err(error) => error,
    };
    Counters::add(&counters.failed);
    let last = delivery.is_last_attempt();
    let (outcome, settled) = match &error {
        HandlerError::Permanent(message) => ("dead_letter", delivery.term(message).await),
        HandlerError::RetryAfter(delay, message) => (
            if last { "dead_letter" } else { "retry" },
            delivery.nack(Some(*delay), Some(message)).await,
        ),
        other => (
            if last { "dead_letter" } else { "retry" },
            delivery.nack(None, Some(other.message())).await,
        ),
    };
    tracing::warn!(
        event_id = %event.id,
        event_type = %event.ty,
        tenant_id = %event.tenant,
        correlation_id = %event.correlationid,
        group = %ctx.group(),
        attempt = ctx.attempt(),
        sequence = ctx.sequence(),
        outcome,
        error = %error.message(),
        "handler failed"
    );
    match settled {
        Ok(()) if outcome == "dead_letter" => Counters::add(&counters.dead_lettered),
        Ok(()) => Counters::add(&counters.retried),
        Err(e) => {
            Counters::add(&counters.settle_failures);
            log_settle_failure(
                &ctx,
                if outcome == "retry" {
                    "nack"
                } else {
                    "dead letter"
                },
                &e,
            );
        }
    }
}

fn log_settle_failure(ctx: &HandlerContext, what: &str, error: &Error) {
    let event = ctx.event();
    tracing::error!(
        event_id = %event.id,
        event_type = %event.ty,
        tenant_id = %event.tenant,
        correlation_id = %event.correlationid,
        group = %ctx.group(),
        attempt = ctx.attempt(),
        code = error.code(),
        error = %error,
        "could not {what} the delivery; it comes back after the ack wait"
    );
}
