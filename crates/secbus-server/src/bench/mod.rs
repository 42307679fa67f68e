//! `secbus bench`: secbus against the raw engine, measured in the same run.

use std::process::ExitCode;

/// Arguments of `secbus bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

pub(crate) async fn run(_args: BenchArgs) -> ExitCode {
    ExitCode::FAILURE
}
