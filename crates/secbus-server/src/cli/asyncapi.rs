//! `secbus asyncapi`: the AsyncAPI 3.0 document of the event catalog.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::exit;
use super::schema::CatalogArgs;

/// Arguments of `secbus asyncapi`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus asyncapi
  secbus asyncapi --output specs/asyncapi.yaml

One channel per event type at secbus.{tenant}.{type}, one message per type
(payload: the type's schema; headers: the CloudEvents attributes).")]
pub(crate) struct AsyncApiArgs {
    /// Write the YAML document to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    catalog: CatalogArgs,
}

pub(crate) async fn run(args: AsyncApiArgs) -> ExitCode {
    let registry = match args.catalog.registry() {
        Ok(r) => r,
        Err(status) => return status,
    };
    let yaml = secbus_contracts::asyncapi::to_yaml(&registry);
    match &args.output {
        None => {
            let mut out = std::io::stdout().lock();
            // A closed stdout (piped into head) is not an error of the command.
            let _ = out.write_all(yaml.as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, yaml) {
            Ok(()) => {
                eprintln!(
                    "wrote the AsyncAPI document of {} event types to {}",
                    registry.len(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: io_error: cannot write {}: {e}", path.display());
                ExitCode::from(exit::FAILURE)
            }
        },
    }
}
