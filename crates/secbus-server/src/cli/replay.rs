//! `secbus replay`: a tenant's stored events, filtered, to a file or stdout.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use secbus::{Bus, HistoryQuery, TenantId, TypePattern};

use super::duration::parse_duration;
use super::exit::{self, fail, fail_in};

/// Events read from the engine per page.
const PAGE: usize = 1000;
/// A run shorter than this shows no progress bar.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// Arguments of `secbus replay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus replay --tenant acme --out acme.jsonl
  secbus replay --bus nats://127.0.0.1:4222 --tenant acme --type 'auth.>' --since 24h
  secbus replay --tenant acme --since 2026-03-01T00:00:00Z --until 2026-03-02T00:00:00Z
  secbus replay --tenant acme --correlation 01939c3e-5a1b-7c2d-8e9f-0a1b2c3d4e5f

Writes each event exactly as stored, one JSON object per line, in log order,
and ends at the last stored event (`secbus tail` follows new ones). The output
is what `secbus publish --file` reads, so a replay moves a tenant's history to
another engine. --since and --until take an RFC 3339 time or an age (90s, 15m,
24h). A progress bar shows on a terminal when the run is long.")]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    bus: super::bus_url::BusUrl,
    /// The tenant whose events to read (only this tenant's are ever read).
    #[arg(long, value_name = "TENANT")]
    tenant: String,
    /// Only these types: `auth.login.failed`, `auth.*.failed`, `auth.>`.
    #[arg(long = "type", value_name = "PATTERN")]
    types: Option<String>,
    /// Only events at or after this time (RFC 3339, or an age such as 24h).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only events at or before this time (RFC 3339, or an age such as 1h).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Only events of this correlation.
    #[arg(long, value_name = "ID")]
    correlation: Option<String>,
    /// Only events with this subject.
    #[arg(long, value_name = "SUBJECT")]
    subject: Option<String>,
    /// Write to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = parse_duration(text)
        .map_err(|_| format!("{text}: not an RFC 3339 time or an age such as 24h"))?;
    let age = chrono::Duration::from_std(age).map_err(|e| e.to_string())?;
    Ok(Utc::now() - age)
}

fn query(args: &ReplayArgs) -> secbus::Result<HistoryQuery> {
    let mut q = HistoryQuery::new(TenantId::new(args.tenant.as_str())?);
    if let Some(p) = &args.types {
        q.types = TypePattern::new(p.as_str())?;
    }
    q.since = args.since;
    q.until = args.until;
    q.correlationid = args.correlation.clone();
    q.subject = args.subject.clone();
    q.limit = PAGE;
    Ok(q)
}

pub(crate) async fn run(args: ReplayArgs) -> ExitCode {
    let mut q = match query(&args) {
        Ok(q) => q,
        Err(e) => return fail(&e),
    };
    let mut out: Box<dyn Write> = match &args.out {
        None => Box::new(BufWriter::new(io::stdout().lock())),
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(BufWriter::new(f)),
            Err(e) => {
                eprintln!("error: io_error: cannot create {}: {e}", path.display());
                return ExitCode::from(exit::FAILURE);
            }
        },
    };
    let bus = match Bus::connect(&args.bus.url).await {
        Ok(bus) => bus,
        Err(e) => return fail_in(&format!("cannot open the bus {}", args.bus.url), &e),
    };
    let started = Instant::now();
    let progress = Progress::new(!args.quiet && io::stderr().is_terminal());
    let mut written = 0u64;
    let status = loop {
        let page = match bus.history(&q).await {
            Ok(p) => p,
            Err(e) => break fail_in("reading the history", &e),
        };
        let mut failed = None;
        for (_, event) in &page.events {
            let line = event.to_json();
            if let Err(e) = out.write_all(&line).and_then(|()| out.write_all(b"\n")) {
                failed = Some(e);
                break;
            }
            written += 1;
        }
        if let Some(e) = failed {
            break write_failed(&e);
        }
        progress.update(written, started);
        match page.next {
            Some(next) => q.from_sequence = Some(next),
            None => break ExitCode::SUCCESS,
        }
    };
    progress.finish();
    let status = match out.flush() {
        Err(e) if status == ExitCode::SUCCESS => write_failed(&e),
        _ => status,
    };
    if let Err(e) = bus.close().await {
        eprintln!("warning: closing the bus: {e}");
    }
    if status == ExitCode::SUCCESS && !args.quiet {
        eprintln!(
            "replayed {written} events of tenant {} in {:.2} s",
            args.tenant,
            started.elapsed().as_secs_f64()
        );
    }
    status
}

fn write_failed(e: &io::Error) -> ExitCode {
    if e.kind() == io::ErrorKind::BrokenPipe {
        // `secbus replay | head` is a normal way to stop.
        return ExitCode::SUCCESS;
    }
    eprintln!("error: io_error: cannot write the events: {e}");
    ExitCode::from(exit::FAILURE)
}

/// A spinner with the count and the rate, shown once a run has lasted a while.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::hidden();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Progress { bar }
    }

    fn update(&self, written: u64, started: Instant) {
        let Some(bar) = &self.bar else { return };
        let elapsed = started.elapsed();
        if elapsed < PROGRESS_AFTER {
            return;
        }
        if bar.is_hidden() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        let rate = written as f64 / elapsed.as_secs_f64().max(1e-3);
        bar.set_message(format!("{written} events ({rate:.0}/s)"));
        bar.tick();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
