//! `secbus publish`: a JSON-lines file of CloudEvents into the bus, all or nothing
//! at validation.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use secbus::{Bus, BusConfig, Error, ErrorKind, Event, FallbackOutcome, Gate, Publisher, Scope};

use super::duration::parse_duration;
use super::events_file::{BadLine, Check, read_events};
use super::exit::{self, fail, fail_in};
use super::gateway_client::{ClientError, GatewayClient};
use super::schema::load_gate;

/// Bad lines printed before the rest are only counted.
const MAX_BAD_LINES_SHOWN: usize = 100;
/// The gateway's default `limits.batch_max_events`.
const GATEWAY_BATCH_MAX: usize = 1000;

/// Arguments of `secbus publish`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus publish --file events.jsonl
  secbus publish --bus embedded:/var/lib/secbus --file events.jsonl
  secbus publish --bus nats://127.0.0.1:4222 --file events.jsonl \\
      --fallback-spool /var/spool/secbus --drain-timeout 2m
  producer | secbus publish --file -
  secbus publish --server http://127.0.0.1:7400 --api-key sbk_... --file events.jsonl

One CloudEvent JSON object per line, for example:
  {\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"idp\",\"type\":\"auth.login.failed\",\"tenantid\":\"acme\",\"data\":{\"user\":\"bob\",\"src_ip\":\"203.0.113.9\",\"reason\":\"bad_password\"}}

Every event passes the contracts gate first: its type must be in the catalog
(`secbus schema list`), its data must follow the type's schema, and it must
carry no credential (unknown_event_type, schema_violation, secret_detected).

With --server the events go through a secbus gateway (POST /v1/events/batch)
instead of straight to an engine; the tenant is the API key's, and --bus is
not used. A batch the gateway refuses is named event by event.

Exit status: 0 all stored; 1 the engine, the gateway or a file failed; 2 the
file has bad lines or the gateway refused events (each is named, nothing of
that batch is stored); 3 some events are still in the fallback spool after
--drain-timeout (they stay there for the next run).")]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    bus: super::bus_url::BusUrl,
    /// The events, one CloudEvent JSON object per line; blank lines are ignored.
    /// `-` reads standard input. The whole file is held in memory while it is checked.
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Publish through an on-disk spool in DIR: events the engine does not take
    /// now are written there and drained into it in order once it answers.
    #[arg(long, value_name = "DIR")]
    fallback_spool: Option<PathBuf>,
    /// With --fallback-spool: how long to wait for the spool to drain (e.g. 500ms, 60s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Events per engine call.
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
    /// Publish as this tenant only: a line of another tenant is refused with
    /// tenant_mismatch (default: any tenant).
    #[arg(long, value_name = "TENANT", value_parser = parse_tenant)]
    tenant: Option<secbus::TenantId>,
    /// A folder of `<type>.json` schemas to add to the built-in catalog (repeatable).
    #[arg(long = "schemas", value_name = "DIR")]
    schema_dirs: Vec<PathBuf>,
    /// Publish through the secbus gateway at URL (`http://127.0.0.1:7400`)
    /// instead of straight to an engine.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "fallback_spool",
        requires = "api_key"
    )]
    server: Option<String>,
    /// The gateway API key, with --server (made by `secbus keys new`).
    #[arg(
        long,
        value_name = "KEY",
        env = "SECBUS_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
}

fn parse_tenant(s: &str) -> Result<secbus::TenantId, String> {
    secbus::TenantId::new(s).map_err(|e| e.to_string())
}

pub(crate) async fn run(args: PublishArgs) -> ExitCode {
    let mut config = BusConfig::default();
    // The contracts gate runs on every line in the whole-file check below (so a
    // bad line refuses the file with its number and nothing is stored), and on
    // the bus itself, so no publish path can skip it.
    let gate = match load_gate(&args.schema_dirs) {
        Ok(gate) => gate,
        Err(status) => return status,
    };
    let scope = args.tenant.clone().map_or(Scope::Admin, Scope::Tenant);
    let check = |event: &mut Event| {
        scope.admit(event)?;
        gate.check(event)
    };
    let events = match read_file(&args.file, config.max_event_bytes, &check) {
        Ok(Ok(events)) => events,
        Ok(Err(bad)) => return refuse(&args.file, &bad),
        Err(e) => return fail(&e),
    };
    if let (Some(server), Some(key)) = (&args.server, &args.api_key) {
        let batch = (args.batch_size as usize).min(GATEWAY_BATCH_MAX);
        return publish_through_gateway(server, key, events, batch).await;
    }
    if let Some(dir) = &args.fallback_spool {
        config.spool_dir = dir.clone();
    }
    let bus = match Bus::connect_with(&args.bus.url, config).await {
        Ok(bus) => bus.with_gate(gate.clone()),
        Err(e) => {
            let context = format!(
                "cannot open the bus {}; nothing was published",
                args.bus.url
            );
            return fail_in(&context, &e);
        }
    };
    let started = Instant::now();
    let status = match &args.fallback_spool {
        None => publish_batches(&bus, events, args.batch_size as usize, started).await,
        Some(dir) => publish_spooled(&bus, events, dir, args.drain_timeout, started).await,
    };
    if let Err(e) = bus.close().await {
        eprintln!("warning: closing the bus: {e}");
    }
    status
}

fn read_file(
    path: &Path,
    max_event_bytes: usize,
    check: Check<'_>,
) -> secbus::Result<Result<Vec<Event>, Vec<BadLine>>> {
    let opened = |e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("cannot read {}", path.display())).with_source(e)
    };
    if path == Path::new("-") {
        read_events(std::io::stdin().lock(), max_event_bytes, Some(check)).map_err(opened)
    } else {
        let file = std::fs::File::open(path).map_err(opened)?;
        read_events(
            BufReader::with_capacity(1 << 16, file),
            max_event_bytes,
            Some(check),
        )
        .map_err(opened)
    }
}

fn refuse(path: &Path, bad: &[BadLine]) -> ExitCode {
    for line in bad.iter().take(MAX_BAD_LINES_SHOWN) {
        eprintln!("{line}");
    }
    if bad.len() > MAX_BAD_LINES_SHOWN {
        eprintln!("... and {} more bad lines", bad.len() - MAX_BAD_LINES_SHOWN);
    }
    let n = bad.len();
    eprintln!(
        "error: {}: {} has {n} invalid line{}; nothing was published",
        exit::INVALID_FILE_CODE,
        path.display(),
        if n == 1 { "" } else { "s" },
    );
    ExitCode::from(exit::INVALID_INPUT)
}

async fn publish_batches(
    bus: &Bus,
    events: Vec<Event>,
    batch: usize,
    started: Instant,
) -> ExitCode {
    let total = events.len();
    let (mut stored, mut duplicates) = (0usize, 0usize);
    let mut events = events.into_iter();
    loop {
        let chunk: Vec<Event> = events.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        let len = chunk.len();
        match bus.publish_batch(chunk).await {
            Ok(receipts) => {
                let dup = receipts.iter().filter(|r| r.duplicate).count();
                duplicates += dup;
                stored += len - dup;
            }
            Err(e) => {
                let done = stored + duplicates;
                eprintln!(
                    "published {done} of {total} events before the failure; events {} to {} \
                     may or may not be stored (publishing the file again within the \
                     dedup window stores each event once)",
                    done + 1,
                    done + len,
                );
                return fail(&e);
            }
        }
    }
    eprintln!(
        "published {stored} events ({duplicates} duplicates) to {} in {:.2} s",
        bus.url(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

async fn publish_spooled(
    bus: &Bus,
    events: Vec<Event>,
    dir: &Path,
    drain_timeout: Duration,
    started: Instant,
) -> ExitCode {
    let spool = match bus.spool().await {
        Ok(spool) => spool,
        Err(e) => {
            let context = format!("cannot open the fallback spool in {}", dir.display());
            return fail_in(&context, &e);
        }
    };
    let total = events.len();
    let (mut stored, mut duplicates, mut spooled) = (0usize, 0usize, 0usize);
    for (index, event) in events.into_iter().enumerate() {
        match bus.publish_with_fallback(event).await {
            FallbackOutcome::Published(receipt) if receipt.duplicate => duplicates += 1,
            FallbackOutcome::Published(_) => stored += 1,
            FallbackOutcome::Spooled => spooled += 1,
            FallbackOutcome::Refused(e) => {
                eprintln!(
                    "published {stored} and spooled {spooled} of {total} events; the events \
                     from number {} on were neither published nor spooled",
                    index + 1
                );
                return fail(&e);
            }
        }
    }
    let drained = spool.wait_drained(drain_timeout).await;
    let left = spool.depth();
    let skipped = spool.skipped_total();
    eprintln!(
        "published {stored} events ({duplicates} duplicates) to {}, {spooled} of them through \
         the spool, in {:.2} s",
        bus.url(),
        started.elapsed().as_secs_f64()
    );
    if skipped > 0 {
        // Set-aside lines are kept, not lost, each with its reason; they are
        // mostly torn lines an earlier run's crash left, which must not fail
        // every later run, so they are reported rather than made an exit code.
        eprintln!(
            "warning: {}: the spool set {skipped} unreadable lines aside in {} \
             (see the reason on each line)",
            exit::QUARANTINED_CODE,
            dir.join("quarantine.jsonl").display(),
        );
    }
    if drained || left == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{left} events are still in the spool {} after {drain_timeout:?}; they stay there \
         and go to the engine on the next run with --fallback-spool {}",
        dir.display(),
        dir.display(),
    );
    ExitCode::from(exit::STILL_SPOOLED)
}

async fn publish_through_gateway(
    server: &str,
    key: &str,
    events: Vec<Event>,
    batch: usize,
) -> ExitCode {
    let client = match GatewayClient::new(server, key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid_options: {e}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let started = Instant::now();
    let total = events.len();
    let (mut stored, mut duplicates) = (0usize, 0usize);
    for (n, chunk) in events.chunks(batch).enumerate() {
        let first = n * batch;
        match client.publish_batch(chunk).await {
            Ok(results) => {
                let dup = results.iter().filter(|r| r.duplicate).count();
                duplicates += dup;
                stored += results.len() - dup;
            }
            Err(ClientError::Refused {
                code,
                message,
                errors,
                ..
            }) => {
                for item in &errors {
                    let place = item.index.map_or(String::new(), |i| {
                        format!("event {} of the file: ", first + i + 1)
                    });
                    let field = item
                        .field
                        .as_deref()
                        .map_or(String::new(), |f| format!(" (at `{f}`)"));
                    eprintln!("{place}{}: {}{field}", item.code, item.message);
                }
                eprintln!(
                    "error: {code}: {message}; the gateway stored {} of {total} events before \
                     events {} to {}, which it refused",
                    stored + duplicates,
                    first + 1,
                    first + chunk.len()
                );
                return ExitCode::from(exit::INVALID_INPUT);
            }
            Err(e @ ClientError::Unavailable(_)) => {
                eprintln!(
                    "error: {e}; published {} of {total} events; events {} to {} may or may \
                     not be stored (publishing the file again stores each event once)",
                    stored + duplicates,
                    first + 1,
                    first + chunk.len()
                );
                return ExitCode::from(exit::FAILURE);
            }
        }
    }
    eprintln!(
        "published {stored} events ({duplicates} duplicates) through {} in {:.2} s",
        client.base(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
