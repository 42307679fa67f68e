//! `secbus audit verify PATH`: checks an audit trail and names the first
//! broken record and why.

use std::path::PathBuf;
use std::process::ExitCode;

use secbus_handlers::audit::{ChainCheck, verify_path};

use super::exit;

/// Arguments of `secbus audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Check a trail: each record's hash, its link to the one before, no gaps.
    #[command(
        after_help = "PATH is a trail file (audit-000001.jsonl), a tenant's folder \
(its files as one chain from seq 1) or the trail root (every tenant folder in it).

Exit status: 0 when every chain is intact, 1 when a record is broken or PATH
cannot be read, 2 when PATH holds no trail.

Keep the last seq and hash it prints elsewhere: the chain alone cannot show
records cut from its end."
    )]
    Verify {
        /// The trail file, tenant folder or trail root.
        path: PathBuf,
        /// Print one JSON object per chain.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(args: AuditArgs) -> ExitCode {
    let AuditCommand::Verify { path, json } = args.command;
    let checks = match verify_path(&path) {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(match e.kind() {
                secbus_handlers::ErrorKind::InvalidConfig => exit::INVALID_INPUT,
                _ => exit::FAILURE,
            });
        }
    };
    for check in &checks {
        if json {
            println!("{}", to_json(check));
        } else {
            println!("{}", to_text(check));
        }
    }
    if checks.iter().all(ChainCheck::is_intact) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FAILURE)
    }
}

fn to_text(check: &ChainCheck) -> String {
    let last = match &check.last {
        Some((seq, hash)) => format!("last seq {seq} hash {hash}"),
        None => "no record".to_owned(),
    };
    match &check.broken {
        None => format!(
            "intact: {}: {} records in {} files, {last}",
            check.path.display(),
            check.records,
            check.files
        ),
        Some(broken) => format!(
            "broken: {broken}\n  ({} records intact before it, {last})",
            check.records
        ),
    }
}

fn to_json(check: &ChainCheck) -> serde_json::Value {
    let broken = check.broken.as_ref().map(|b| {
        serde_json::json!({
            "file": b.file.display().to_string(),
            "line": b.line,
            "seq": b.seq,
            "code": b.why.code(),
            "reason": b.why.to_string(),
        })
    });
    serde_json::json!({
        "path": check.path.display().to_string(),
        "intact": check.is_intact(),
        "files": check.files,
        "records": check.records,
        "last_seq": check.last.as_ref().map(|(s, _)| *s),
        "last_hash": check.last.as_ref().map(|(_, h)| h.clone()),
        "broken": broken,
    })
}
