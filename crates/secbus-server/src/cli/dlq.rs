//! `secbus dlq`: a tenant's dead letters on any engine: list, redrive, delete.

use std::process::ExitCode;

use secbus::{Bus, DeadLetter, ErrorKind, TenantId};

use super::exit::{self, fail, fail_in};

/// Arguments of `secbus dlq`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus dlq list --tenant acme
  secbus dlq list --bus nats://127.0.0.1:4222 --tenant acme --json
  secbus dlq redrive --tenant acme 01939c3e-5a1b-7c2d-8e9f-0a1b2c3d4e5f
  secbus dlq redrive --tenant acme --all
  secbus dlq delete --tenant acme 01939c3e-5a1b-7c2d-8e9f-0a1b2c3d4e5f

A dead letter is an event a consumer group gave up on (its deliveries ran out,
or a consumer terminated it), with the group, the reason, the attempts and the
last error. Redrive publishes the event again to that one group; the dead
letter is removed once the event is stored.

Exit status: 0 done; 1 the engine failed; 2 bad arguments; 4 a named dead
letter does not exist (the others were handled).")]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

/// The engine and tenant every `dlq` subcommand works on.
#[derive(Debug, clap::Args)]
struct Target {
    #[command(flatten)]
    bus: super::bus_url::BusUrl,
    /// The tenant whose dead letters these are.
    #[arg(long, value_name = "TENANT")]
    tenant: String,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// The dead letters, oldest first.
    List {
        #[command(flatten)]
        target: Target,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// One JSON object per dead letter and line, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters' events again to the group that gave up on them.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// The dead letters' ids (from `dlq list`).
        #[arg(value_name = "ID", required_unless_present = "all")]
        ids: Vec<String>,
        /// Every dead letter of the tenant.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead letters for good.
    Delete {
        #[command(flatten)]
        target: Target,
        /// The dead letters' ids (from `dlq list`).
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
    },
}

/// Exit status when a named dead letter does not exist.
const NOT_FOUND: u8 = 4;
/// Most dead letters one `redrive --all` handles.
const ALL_LIMIT: usize = 100_000;

pub(crate) async fn run(args: DlqArgs) -> ExitCode {
    let target = match &args.command {
        DlqCommand::List { target, .. }
        | DlqCommand::Redrive { target, .. }
        | DlqCommand::Delete { target, .. } => target,
    };
    let tenant = match TenantId::new(target.tenant.as_str()) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let bus = match Bus::connect(&target.bus.url).await {
        Ok(bus) => bus,
        Err(e) => return fail_in(&format!("cannot open the bus {}", target.bus.url), &e),
    };
    let status = match &args.command {
        DlqCommand::List { limit, json, .. } => list(&bus, &tenant, *limit, *json).await,
        DlqCommand::Redrive { ids, all, .. } => redrive(&bus, &tenant, ids, *all).await,
        DlqCommand::Delete { ids, .. } => delete(&bus, &tenant, ids).await,
    };
    if let Err(e) = bus.close().await {
        eprintln!("warning: closing the bus: {e}");
    }
    status
}

async fn list(bus: &Bus, tenant: &TenantId, limit: usize, json: bool) -> ExitCode {
    if limit == 0 {
        eprintln!("error: invalid_options: --limit must be at least 1");
        return ExitCode::from(exit::INVALID_INPUT);
    }
    let dead = match bus.dead_letters(tenant, limit).await {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    if json {
        for d in &dead {
            println!("{}", serde_json::to_string(d).unwrap_or_default());
        }
    } else if dead.is_empty() {
        eprintln!("no dead letters for tenant {tenant}");
    } else {
        println!(
            "{:<36}  {:<20}  {:<24}  {:<14}  {:>8}  {:<22}  LAST ERROR",
            "ID", "DEAD AT", "TYPE", "GROUP", "ATTEMPTS", "REASON"
        );
        for d in &dead {
            println!("{}", row(d));
        }
    }
    ExitCode::SUCCESS
}

fn row(d: &DeadLetter) -> String {
    format!(
        "{:<36}  {:<20}  {:<24}  {:<14}  {:>8}  {:<22}  {}",
        d.id,
        d.dead_at.format("%Y-%m-%dT%H:%M:%SZ"),
        d.event.ty.as_str(),
        d.group,
        d.attempts,
        d.reason,
        d.last_error.as_deref().unwrap_or("-")
    )
}

async fn redrive(bus: &Bus, tenant: &TenantId, ids: &[String], all: bool) -> ExitCode {
    let ids = if all {
        match all_ids(bus, tenant).await {
            Ok(ids) => ids,
            Err(e) => return fail(&e),
        }
    } else {
        ids.to_vec()
    };
    let mut missing = 0;
    for id in &ids {
        match bus.redrive(tenant, id).await {
            Ok(receipt) => println!("redriven {id}: event {} stored again", receipt.id),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                eprintln!("error: not_found: no dead letter {id} for tenant {tenant}");
                missing += 1;
            }
            Err(e) => return fail_in(&format!("redriving {id}"), &e),
        }
    }
    if all {
        eprintln!("redrove {} dead letters", ids.len());
    }
    done(missing)
}

async fn all_ids(bus: &Bus, tenant: &TenantId) -> secbus::Result<Vec<String>> {
    // One snapshot: an event that a failing consumer dead-letters again after
    // its redrive waits for the next run instead of looping here.
    let dead = bus.dead_letters(tenant, ALL_LIMIT).await?;
    if dead.len() == ALL_LIMIT {
        eprintln!("warning: redriving the oldest {ALL_LIMIT} dead letters; run again for the rest");
    }
    Ok(dead.into_iter().map(|d| d.id).collect())
}

async fn delete(bus: &Bus, tenant: &TenantId, ids: &[String]) -> ExitCode {
    let mut missing = 0;
    for id in ids {
        match bus.delete_dead_letter(tenant, id).await {
            Ok(true) => println!("deleted {id}"),
            Ok(false) => {
                eprintln!("error: not_found: no dead letter {id} for tenant {tenant}");
                missing += 1;
            }
            Err(e) => return fail_in(&format!("deleting {id}"), &e),
        }
    }
    done(missing)
}

fn done(missing: usize) -> ExitCode {
    if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_FOUND)
    }
}
