//! `secbus detect`: check Sigma rule folders, and run the detection worker.

use std::path::PathBuf;
use std::process::ExitCode;

use secbus::Bus;
use secbus_detect::{DetectionConfig, DetectionWorker, RuleSet};

use super::exit::{self, fail_in};
use super::schema::load_gate;
use super::shutdown::Shutdown;

/// Arguments of `secbus detect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus detect check-rules ./rules
  secbus detect check-rules ../sigma --min-loaded 0.99 --json
  secbus detect run --bus nats://127.0.0.1:4222 --rules ./rules --tenant acme --tenant globex

Rules are Sigma detection, correlation and filter rules (*.yml, *.yaml, read
recursively). A match is published back on the bus as a detection.finding
event (OCSF 1.3 Detection Finding) caused by the event that triggered it.
Correlations count per tenant: events of two tenants never meet in one.")]
pub(crate) struct DetectArgs {
    #[command(subcommand)]
    command: DetectCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DetectCommand {
    /// How many rules load, and for each one that does not, why.
    CheckRules {
        /// Rule folders or files.
        #[arg(value_name = "DIR", required = true)]
        dirs: Vec<PathBuf>,
        /// Exit 1 when less than this share of the rules loads (0 to 1).
        #[arg(long, value_name = "SHARE", default_value_t = 1.0)]
        min_loaded: f64,
        /// One JSON object: loaded, failed, share and every failure.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate tenants' events as a consumer group and publish findings.
    Run {
        #[command(flatten)]
        bus: super::bus_url::BusUrl,
        /// Rule folders or files (repeatable).
        #[arg(long = "rules", value_name = "DIR", required = true)]
        rules: Vec<PathBuf>,
        /// A tenant whose events to evaluate (repeatable).
        #[arg(long = "tenant", value_name = "TENANT", required = true)]
        tenants: Vec<String>,
        /// The mapping file (default: the shipped one for the catalog).
        #[arg(long, value_name = "FILE")]
        mapping: Option<PathBuf>,
        /// The consumer group.
        #[arg(long, value_name = "NAME", default_value = "detection")]
        group: String,
    },
}

pub(crate) async fn run(args: DetectArgs) -> ExitCode {
    match args.command {
        DetectCommand::CheckRules {
            dirs,
            min_loaded,
            json,
        } => check_rules(&dirs, min_loaded, json),
        DetectCommand::Run {
            bus,
            rules,
            tenants,
            mapping,
            group,
        } => {
            let mut config = DetectionConfig::new(rules, tenants);
            config.mapping = mapping;
            config.group = group;
            run_worker(&bus.url, &config).await
        }
    }
}

fn check_rules(dirs: &[PathBuf], min_loaded: f64, json: bool) -> ExitCode {
    let set = match RuleSet::load(dirs) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let total = set.loaded + set.failures.len();
    let share = set.loaded_share();
    if json {
        let report = serde_json::json!({
            "loaded": set.loaded,
            "failed": set.failures.len(),
            "share": share,
            "failures": set.failures,
        });
        println!("{report}");
    } else {
        for f in &set.failures {
            println!("{}: {}", f.path.display(), f.reason);
        }
        println!(
            "{} of {total} rules load ({:.2}%); {} do not{}",
            set.loaded,
            share * 100.0,
            set.failures.len(),
            if set.failures.is_empty() {
                ""
            } else {
                " (each listed above with its reason)"
            }
        );
    }
    if share + f64::EPSILON < min_loaded {
        eprintln!(
            "error: rules_not_loaded: {:.2}% load, less than --min-loaded {min_loaded}",
            share * 100.0
        );
        return ExitCode::from(exit::FAILURE);
    }
    ExitCode::SUCCESS
}

async fn run_worker(url: &str, config: &DetectionConfig) -> ExitCode {
    let bus = match Bus::connect(url).await {
        Ok(bus) => bus,
        Err(e) => return fail_in(&format!("cannot open the bus {url}"), &e),
    };
    // Findings pass the contracts gate like every other event.
    let gate = match load_gate(&[]) {
        Ok(g) => g,
        Err(status) => return status,
    };
    let bus = bus.with_gate(gate);
    let worker = match DetectionWorker::spawn(&bus, config).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    eprintln!(
        "secbus detect: group {} on {} for {}; Ctrl-C to stop",
        config.group,
        bus.url(),
        config.tenants.join(", ")
    );
    Shutdown::listen().requested().await;
    let stats = worker.stats();
    let stopped = worker.stop().await;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "secbus detect stopped: {} events evaluated ({} replayed), {} findings published, {} failed",
        load(&stats.events),
        load(&stats.replayed),
        load(&stats.findings),
        load(&stats.publish_failures)
    );
    let closed = bus.close().await;
    if let Err(e) = stopped {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = closed {
        return fail_in("closing the bus", &e);
    }
    ExitCode::SUCCESS
}
