//! `secbus tail`: a tenant's events printed as they are stored, from the start or live.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use secbus::{Bus, ErrorKind, Event, StartAt, SubscribeOptions, Subscriber, TenantId, TypePattern};
use tokio::sync::mpsc;

use super::exit::{fail, fail_in};
use super::pretty;
use super::shutdown::Shutdown;

/// Events read ahead of the terminal; also the bound on what a slow stdout buffers.
const READ_AHEAD: usize = 1024;
/// Events printed between two looks for a stop signal while there is a backlog.
const SIGNAL_CHECK_EVERY: u64 = 256;
/// How long closing the bus may take before the command ends anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `secbus tail`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus tail --tenant acme
  secbus tail --bus embedded:/var/lib/secbus --tenant acme --type 'auth.>' --format pretty
  secbus tail --tenant acme --from-start --limit 2000 --format jsonl > acme.jsonl

Without --limit it follows new events until Ctrl-C, like `tail -f`. With
--from-start it prints the tenant's history first, in log order, then follows.")]
pub(crate) struct TailArgs {
    #[command(flatten)]
    bus: super::bus_url::BusUrl,
    /// The tenant whose events to print (only this tenant's are ever shown).
    #[arg(long, value_name = "TENANT")]
    tenant: String,
    /// Only these types: `auth.login.failed`, `auth.*.failed` (one token), `auth.>` (the rest).
    #[arg(long = "type", value_name = "PATTERN")]
    types: Option<String>,
    /// Start with the oldest retained event instead of new ones.
    #[arg(long)]
    from_start: bool,
    /// Exit after N events (waiting for more when fewer exist).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// `jsonl`: each event exactly as stored, one per line; `pretty`: a readable
    /// line per event. Default: pretty on a terminal, jsonl otherwise.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// How `tail` prints an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// The stored CloudEvent JSON, one per line.
    Jsonl,
    /// time, type, subject, id, correlation and causation on one line.
    Pretty,
}

/// What the reader task hands the printer.
enum Item {
    Event(Arc<Event>),
    Lagged(secbus::Error),
    Failed(secbus::Error),
}

pub(crate) async fn run(args: TailArgs) -> ExitCode {
    let options = match options(&args) {
        Ok(options) => options,
        Err(e) => return fail(&e),
    };
    if args.limit == Some(0) {
        return ExitCode::SUCCESS;
    }
    let format = args.format.unwrap_or(if io::stdout().is_terminal() {
        Format::Pretty
    } else {
        Format::Jsonl
    });
    let shutdown = Shutdown::listen();
    let bus = match Bus::connect(&args.bus.url).await {
        Ok(bus) => bus,
        Err(e) => return fail_in(&format!("cannot open the bus {}", args.bus.url), &e),
    };
    let subscription = match bus.subscribe(options).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(read(subscription, tx));
    let status = print(rx, shutdown, format, args.limit).await;
    reader.abort();
    if tokio::time::timeout(CLOSE_TIMEOUT, bus.close())
        .await
        .is_err()
    {
        eprintln!("warning: closing the bus took longer than {CLOSE_TIMEOUT:?}");
    }
    status
}

fn options(args: &TailArgs) -> secbus::Result<SubscribeOptions> {
    let tenant = TenantId::new(args.tenant.as_str())?;
    let mut options = SubscribeOptions::tail(tenant).start(if args.from_start {
        StartAt::Beginning
    } else {
        StartAt::New
    });
    if let Some(pattern) = &args.types {
        options = options.types(TypePattern::new(pattern.as_str())?);
    }
    Ok(options)
}

/// Pulls deliveries in a task of its own so the printer can tell "nothing more
/// right now" (flush stdout) from "more is coming" (keep buffering), and can stop
/// on a signal without cancelling a read halfway.
async fn read(mut subscription: secbus::Subscription, tx: mpsc::Sender<Item>) {
    while let Some(next) = subscription.next().await {
        let item = match next {
            // The event is shared; dropping the delivery frees its in-flight slot.
            Ok(delivery) => Item::Event(delivery.event_arc()),
            Err(e) if e.kind() == ErrorKind::Lagged => Item::Lagged(e),
            Err(e) => Item::Failed(e),
        };
        let stop = matches!(item, Item::Failed(_));
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

async fn print(
    mut rx: mpsc::Receiver<Item>,
    mut shutdown: Shutdown,
    format: Format,
    limit: Option<u64>,
) -> ExitCode {
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout());
    let mut printed = 0u64;
    loop {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Idle: what was printed reaches the reader before we wait.
                if let Err(e) = out.flush() {
                    return stdout_failed(e);
                }
                tokio::select! {
                    () = shutdown.requested() => break,
                    item = rx.recv() => match item {
                        Some(item) => item,
                        None => break,
                    },
                }
            }
        };
        let event = match item {
            Item::Event(event) => event,
            Item::Lagged(e) => {
                let missed = e
                    .missed()
                    .map_or_else(|| "some".to_owned(), |n| n.to_string());
                eprintln!(
                    "warning: lagged: the tail fell behind and missed {missed} events; going on"
                );
                continue;
            }
            Item::Failed(e) => {
                if let Err(io) = out.flush() {
                    return stdout_failed(io);
                }
                return fail(&e);
            }
        };
        let written = match format {
            Format::Jsonl => out
                .write_all(&event.to_json())
                .and_then(|()| out.write_all(b"\n")),
            Format::Pretty => pretty::write_line(&mut out, &event),
        };
        if let Err(e) = written {
            return stdout_failed(e);
        }
        printed += 1;
        if limit.is_some_and(|n| printed >= n) {
            break;
        }
        // A long backlog never waits idle, so look for Ctrl-C now and then too.
        if printed.is_multiple_of(SIGNAL_CHECK_EVERY)
            && shutdown.requested().now_or_never().is_some()
        {
            break;
        }
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => stdout_failed(e),
    }
}

fn stdout_failed(e: io::Error) -> ExitCode {
    if e.kind() == io::ErrorKind::BrokenPipe {
        // The reader went away (`| head`): that is an ending, not a failure.
        return ExitCode::SUCCESS;
    }
    fail(&secbus::Error::new(ErrorKind::Io, "cannot write to stdout").with_source(e))
}
