//! `secbus schema`: the event catalog (list, show), checking a file of events
//! against it without publishing (validate), and breaking changes between two
//! catalogs (check-compat).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use secbus::{DEFAULT_MAX_EVENT_BYTES, Event, Gate};
use secbus_contracts::{ContractsConfig, ContractsGate, LoadError, Registry, compat};

use super::exit;

/// Arguments of `secbus schema`.
#[derive(Debug, clap::Args)]
pub(crate) struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SchemaCommand {
    /// List the event types: type, version and summary.
    #[command(after_help = "Examples:
  secbus schema list
  secbus schema list --schemas /etc/secbus/schemas")]
    List(CatalogArgs),
    /// Print the JSON Schema of one type.
    #[command(after_help = "Examples:
  secbus schema show auth.login.failed")]
    Show {
        /// The event type.
        #[arg(value_name = "TYPE")]
        ty: String,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Check a JSON-lines file of events against the catalog, publishing nothing.
    #[command(after_help = "Examples:
  secbus schema validate events.jsonl
  producer | secbus schema validate -

Each refused event prints `line N: <code> at <path>: <reason>` (one line per
problem, at most 10 per event). Exit status: 0 every event passes; 2 some are
refused; 1 the file cannot be read.")]
    Validate {
        /// The events, one CloudEvent JSON object per line; `-` reads standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Flag breaking changes from the catalog in OLD_DIR to the one in NEW_DIR.
    #[command(after_help = "Examples:
  secbus schema check-compat old/specs/events specs/events

Breaking: a removed type or property, a new required property, a narrowed type,
a removed enum value, a tighter limit. A breaking change whose type's version
(the /v<N>.json of $id) went up is listed but allowed. Exit status: 0
compatible; 2 some change breaks without a new version; 1 a catalog cannot be
loaded.")]
    CheckCompat {
        /// The earlier catalog: a folder of `<type>.json` schemas.
        #[arg(value_name = "OLD_DIR")]
        old: PathBuf,
        /// The later catalog.
        #[arg(value_name = "NEW_DIR")]
        new: PathBuf,
    },
}

/// Which catalog: the built-in one plus folders.
#[derive(Debug, clap::Args)]
pub(crate) struct CatalogArgs {
    /// A folder of `<type>.json` schemas to add to the built-in catalog (repeatable).
    #[arg(long = "schemas", value_name = "DIR")]
    schema_dirs: Vec<PathBuf>,
}

impl CatalogArgs {
    pub(crate) fn registry(&self) -> Result<Registry, ExitCode> {
        config(&self.schema_dirs)
            .registry()
            .map_err(|e| load_failed(&e))
    }
}

fn config(dirs: &[PathBuf]) -> ContractsConfig {
    ContractsConfig {
        schema_dirs: dirs.to_vec(),
        ..ContractsConfig::default()
    }
}

/// The contracts gate over the built-in catalog and `dirs`; on failure, the
/// error is printed and the status to exit with comes back.
pub(crate) fn load_gate(dirs: &[PathBuf]) -> Result<Arc<ContractsGate>, ExitCode> {
    ContractsGate::from_config(&config(dirs))
        .map(Arc::new)
        .map_err(|e| load_failed(&e))
}

fn load_failed(error: &LoadError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(exit::FAILURE)
}

pub(crate) async fn run(args: SchemaArgs) -> ExitCode {
    match args.command {
        SchemaCommand::List(catalog) => list(&catalog),
        SchemaCommand::Show { ty, catalog } => show(&ty, &catalog),
        SchemaCommand::Validate { file, catalog } => validate(&file, &catalog),
        SchemaCommand::CheckCompat { old, new } => check_compat(&old, &new),
    }
}

fn list(catalog: &CatalogArgs) -> ExitCode {
    let registry = match catalog.registry() {
        Ok(r) => r,
        Err(status) => return status,
    };
    let width = registry
        .iter()
        .map(|c| c.event_type().as_str().len())
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    out.push_str(&format!("{:width$}  VERSION  SUMMARY\n", "TYPE"));
    for contract in registry.iter() {
        out.push_str(&format!(
            "{:width$}  v{:<6}  {}\n",
            contract.event_type().as_str(),
            contract.version(),
            contract.summary()
        ));
    }
    print_out(&out)
}

fn show(ty: &str, catalog: &CatalogArgs) -> ExitCode {
    let registry = match catalog.registry() {
        Ok(r) => r,
        Err(status) => return status,
    };
    let Some(contract) = registry.get(ty) else {
        eprintln!(
            "error: unknown_event_type: no schema is registered for type {ty}; \
             `secbus schema list` shows the known types"
        );
        return ExitCode::from(exit::INVALID_INPUT);
    };
    // A Value always serializes.
    let text = serde_json::to_string_pretty(contract.schema()).unwrap_or_default();
    print_out(&(text + "\n"))
}

fn validate(file: &Path, catalog: &CatalogArgs) -> ExitCode {
    let gate = match load_gate(&catalog.schema_dirs) {
        Ok(g) => g,
        Err(status) => return status,
    };
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
            Err(e) => {
                eprintln!("error: io_error: cannot read {}: {e}", file.display());
                return ExitCode::from(exit::FAILURE);
            }
        }
    };
    let (mut checked, mut refused) = (0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: io_error: cannot read {}: {e}", file.display());
                return ExitCode::from(exit::FAILURE);
            }
        };
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        checked += 1;
        let verdict = Event::from_json_limited(line, DEFAULT_MAX_EVENT_BYTES)
            .and_then(|mut event| gate.check(&mut event));
        let Err(error) = verdict else {
            continue;
        };
        refused += 1;
        let number = index + 1;
        let written = if error.details().is_empty() {
            let at = error
                .field()
                .map(|f| format!(" at {f}"))
                .unwrap_or_default();
            writeln!(
                out,
                "line {number}: {}{at}: {}",
                error.code(),
                error.message()
            )
        } else {
            error.details().iter().try_for_each(|d| {
                writeln!(
                    out,
                    "line {number}: {} at {}: {}",
                    error.code(),
                    d.field,
                    d.reason
                )
            })
        };
        if written.is_err() {
            // stdout closed (e.g. piped into head): stop quietly.
            return ExitCode::from(exit::INVALID_INPUT);
        }
    }
    drop(out);
    eprintln!(
        "{checked} event{} checked, {refused} refused",
        if checked == 1 { "" } else { "s" }
    );
    if refused > 0 {
        ExitCode::from(exit::INVALID_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}

fn check_compat(old: &Path, new: &Path) -> ExitCode {
    let load = |dir: &Path| Registry::from_dir(dir).map_err(|e| load_failed(&e));
    let (old_registry, new_registry) = match (load(old), load(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(status), _) | (_, Err(status)) => return status,
    };
    let report = compat::check(&old_registry, &new_registry);
    let mut out = String::new();
    for change in &report.changes {
        out.push_str(&format!("{change}\n"));
    }
    let breaking = report.changes.iter().filter(|c| !c.versioned).count();
    out.push_str(&format!(
        "{} types compared, {} added, {} changes, {breaking} breaking without a new version\n",
        report.compared,
        report.added.len(),
        report.changes.len(),
    ));
    let status = print_out(&out);
    if !report.is_compatible() {
        eprintln!(
            "error: breaking_change: {breaking} breaking change{} without a new version \
             (raise the /v<N>.json of the type's $id)",
            if breaking == 1 { "" } else { "s" }
        );
        return ExitCode::from(exit::INVALID_INPUT);
    }
    status
}

fn print_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    // A closed stdout (piped into head) is not an error of the command.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    ExitCode::SUCCESS
}
