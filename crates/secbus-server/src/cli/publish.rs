//! `secbus publish`.

use std::process::ExitCode;

/// Arguments of `secbus publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {}

pub(crate) async fn run(_args: PublishArgs) -> ExitCode {
    ExitCode::FAILURE
}
