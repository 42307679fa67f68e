//! `secbus tail`.

use std::process::ExitCode;

/// Arguments of `secbus tail`.
#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {}

pub(crate) async fn run(_args: TailArgs) -> ExitCode {
    ExitCode::FAILURE
}
