//! `secbus bench`: secbus against the raw engine, measured in the same run.
//!
//! Each scenario measures a path through secbus ("ours") and the same work done
//! by the engine used directly on the same payload ("raw"), and prints one
//! report. Adding a scenario is one module with a `run` function and one entry
//! in [`SCENARIOS`].

mod audit;
mod consume;
mod consumer;
mod contracts;
mod detect_sigma;
mod gateway_batch;
mod gateway_single;
mod hot_path;
mod output;
mod payload;
mod publish;
mod publish_consume;
mod raw;
mod scenario;
mod scratch_bus;
mod watchdog;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use output::Output;
use scenario::{Context, Scenario};

/// Every scenario, in the order they run.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: publish_consume::NAME,
        about: "publish N events one call at a time while a consumer group acks them all",
        applies: publish_consume::applies,
        run: publish_consume::run,
    },
    Scenario {
        name: hot_path::NAME,
        about: "ed25519 verification with and without one publish per verification",
        applies: hot_path::applies,
        run: hot_path::run,
    },
    Scenario {
        name: publish::NAME,
        about: "publish N events with publish_batch against the engine's own windowed publish",
        applies: publish::applies,
        run: publish::run,
    },
    Scenario {
        name: consume::NAME,
        about: "a consumer group member acks N stored events against the engine's own group read",
        applies: consume::applies,
        run: consume::run,
    },
    Scenario {
        name: contracts::VALIDATE,
        about: "the contracts gate on an auth event, one thread, against its schema check alone",
        applies: contracts::applies,
        run: contracts::run_validate,
    },
    Scenario {
        name: contracts::SECRETS,
        about: "the secret scan of a 1 KB event's data, one thread",
        applies: contracts::applies,
        run: contracts::run_secrets,
    },
    Scenario {
        name: gateway_batch::NAME,
        about: "POST /v1/events/batch of 1,000 events from 4 clients against the engine's raw publish",
        applies: gateway_batch::applies,
        run: gateway_batch::run,
    },
    Scenario {
        name: gateway_single::NAME,
        about: "latency POST /v1/events adds over a library publish, at 1,000 requests/s",
        applies: gateway_single::applies,
        run: gateway_single::run,
    },
    Scenario {
        name: audit::NAME,
        about: "the audit handler (fsync per batch) reading N stored events, against a handler doing nothing",
        applies: audit::applies,
        run: audit::run,
    },
    Scenario {
        name: detect_sigma::NAME,
        about: "process starts through the detection worker with --rules loaded, against rsigma alone",
        applies: detect_sigma::applies,
        run: detect_sigma::run,
    },
];

/// Arguments of `secbus bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus bench --bus memory: --events 1000000 --json
  secbus bench --bus embedded: --events 200000 --scenario publish_consume
  secbus bench --bus embedded:./bench-data --scenario hot_path --verifies 5000
  secbus bench --bus nats://127.0.0.1:4222 --events 100000 --json
  secbus bench --bus redis://127.0.0.1:6379 --events 100000 --scenario publish

Scenarios: publish_consume, hot_path, and on nats and redis publish, consume;
contracts.validate and contracts.secrets on every bus (one thread, no engine).
Targets on a 2-core machine: memory >= 1,000,000 events/s and ratio >= 0.5;
embedded >= 100,000 events/s and ratio >= 0.5; hot_path overhead_pct <= 2;
publish and consume ratio >= 0.9; contracts.validate and contracts.secrets
>= 200,000 per second. On nats and redis every run uses a stream
or key prefix of its own and deletes it afterwards.")]
pub(crate) struct BenchArgs {
    /// The bus to measure: `memory:`, `embedded:DIR` (`embedded:` alone uses a
    /// temporary directory, removed afterwards), `nats://...`, `redis://...`.
    #[arg(long, value_name = "URL", default_value = "memory:")]
    bus: String,
    /// Events per measured run.
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    events: u64,
    /// Print one JSON object per line per scenario instead of a table.
    #[arg(long)]
    json: bool,
    /// A scenario to run (repeat for several); default: every scenario that
    /// applies to the engine (publish_consume, hot_path; publish and consume on
    /// nats and redis; contracts.validate and contracts.secrets everywhere).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Publishing tasks of publish_consume, each publishing its share of the
    /// events one call at a time.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    publishers: u64,
    /// Events per `publish_batch` call of publish (default: 2,560 on nats, ten
    /// PubAck windows; 500 on redis, one pipeline).
    #[arg(long, value_name = "B",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: Option<u64>,
    /// Verifications per loop of hot_path (default: events / 100, between 10 and
    /// 5,000; at most 50,000, so the memory engine's history never fills mid-loop).
    #[arg(long, value_name = "M",
          value_parser = clap::value_parser!(u64).range(1..=50_000))]
    verifies: Option<u64>,
    /// Measured rounds of hot_path; medians over rounds are reported.
    #[arg(long, value_name = "R", default_value_t = 9,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    rounds: u64,
    /// Exit 1 when a scenario misses one of its targets.
    #[arg(long)]
    check: bool,
    /// Sigma rule folders for detect.sigma (repeatable; it runs only when given),
    /// e.g. a checkout of the SigmaHQ rules.
    #[arg(long = "rules", value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Detection threads of detect.sigma's worker (default: one per core, as
    /// `detection.threads`).
    #[arg(long, value_name = "T",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    detection_threads: Option<u64>,
}

pub(crate) async fn run(args: BenchArgs) -> ExitCode {
    let selected: Vec<&Scenario> = if args.scenarios.is_empty() {
        let engine = engine_of(&args.bus).unwrap_or_default();
        // detect.sigma needs rules to load: by default it runs only with --rules.
        SCENARIOS
            .iter()
            .filter(|s| {
                (s.applies)(engine) && (s.name != detect_sigma::NAME || !args.rules.is_empty())
            })
            .collect()
    } else {
        let mut selected = Vec::new();
        for name in &args.scenarios {
            match SCENARIOS.iter().find(|s| s.name == name) {
                Some(s) if !(s.applies)(engine_of(&args.bus).unwrap_or_default()) => {
                    eprintln!("error: scenario {name:?} does not run on {}", args.bus);
                    return ExitCode::from(2);
                }
                Some(s) => selected.push(s),
                None => {
                    let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    eprintln!("error: no scenario {name:?}; known: {}", known.join(", "));
                    return ExitCode::from(2);
                }
            }
        }
        selected
    };
    let place = match Place::resolve(&args.bus) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let events = args.events as usize;
    let ctx = Context {
        url: place.url.clone(),
        engine: place.engine.clone(),
        events,
        publishers: args.publishers as usize,
        batch: args.batch.map(|b| b as usize),
        verifies: args
            .verifies
            .map_or((events / 100).clamp(10, 5000), |m| m as usize),
        rounds: args.rounds as usize,
        scratch: place.scratch.clone(),
        rules: args.rules.clone(),
        detection_threads: args.detection_threads.map(|t| t as usize),
    };
    let mut output = Output::new(args.json);
    let mut failed = false;
    for scenario in selected {
        if output.chatty() {
            eprintln!(
                "running {} on {} ({})",
                scenario.name, ctx.engine, scenario.about
            );
        }
        match (scenario.run)(&ctx).await {
            Ok(report) => {
                failed |= args.check && !report.meets_targets;
                if let Err(e) = output.emit(&report) {
                    eprintln!("error: cannot write the report: {e}");
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("error: {} on {}: {e:#}", scenario.name, place.url);
                failed = true;
            }
        }
    }
    drop(place);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The engine's short name: the URL's scheme.
fn engine_of(url: &str) -> Option<&str> {
    url.split_once(':').map(|(scheme, _)| scheme)
}

/// Where a run happens: the bus URL, and a scratch directory removed on drop
/// (holding the bus itself for `embedded:` without a directory).
struct Place {
    url: String,
    engine: String,
    scratch: PathBuf,
}

impl Place {
    fn resolve(bus: &str) -> anyhow::Result<Place> {
        let Some((engine, rest)) = bus.split_once(':') else {
            anyhow::bail!(
                "{bus:?} is not a bus URL (memory:, embedded:DIR, nats://..., redis://...)"
            );
        };
        let unique = format!(".secbus-bench-{}", uuid::Uuid::now_v7().simple());
        let dir = rest.strip_prefix("//").unwrap_or(rest);
        let (url, scratch) = match engine {
            "embedded" if dir.is_empty() => {
                let scratch = std::env::temp_dir().join(&unique[1..]);
                let url = format!("embedded:{}", scratch.join("bus").display());
                (url, scratch)
            }
            // Beside the bus's directory, so the raw baseline writes to the same disk.
            "embedded" => {
                let parent = Path::new(dir).parent().unwrap_or(Path::new("."));
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                (bus.to_owned(), parent.join(&unique))
            }
            _ => (bus.to_owned(), std::env::temp_dir().join(&unique[1..])),
        };
        std::fs::create_dir_all(&scratch)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", scratch.display()))?;
        Ok(Place {
            url,
            engine: engine.to_owned(),
            scratch,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.scratch) {
            eprintln!(
                "warning: cannot remove the scratch directory {}: {e}",
                self.scratch.display()
            );
        }
    }
}
