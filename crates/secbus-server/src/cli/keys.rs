//! `secbus keys new`: a new API key and the config entry that admits it.

use std::process::ExitCode;

use crate::gateway::api_key::{Role, generate_key, hash_key};

use super::exit;

/// Arguments of `secbus keys`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Print a new random key once, and the [[keys]] entry to paste into the config.
    #[command(after_help = "Example:
  secbus keys new --tenant acme --roles publish,read --name acme-ingest

The key is printed once and stored nowhere: the config keeps only its hash.")]
    New {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// Comma-separated roles: publish, read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// The key's name in logs (default: <tenant>-<roles>).
        #[arg(long)]
        name: Option<String>,
        /// Print `{"key": ..., "config": ...}`.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(args: KeysArgs) -> ExitCode {
    let KeysCommand::New {
        tenant,
        roles,
        name,
        json,
    } = args.command;
    if let Err(e) = secbus::TenantId::new(tenant.as_str()) {
        eprintln!("error: {e}");
        return ExitCode::from(exit::INVALID_INPUT);
    }
    let mut parsed = Vec::new();
    for r in &roles {
        match Role::parse(r.trim()) {
            Some(role) if !parsed.contains(&role) => parsed.push(role),
            Some(_) => {}
            None => {
                eprintln!("error: invalid_options: unknown role {r:?} (publish, read, admin)");
                return ExitCode::from(exit::INVALID_INPUT);
            }
        }
    }
    let role_names: Vec<&str> = parsed.iter().map(|r| r.name()).collect();
    let name = name.unwrap_or_else(|| format!("{tenant}-{}", role_names.join("-")));
    let key = generate_key();
    let roles_value = toml::Value::Array(role_names.iter().map(|r| (*r).into()).collect());
    // Written by hand to keep the documented key order; values are TOML-quoted.
    let config = format!(
        "[[keys]]\nname = {}\ntenant = {}\nroles = {roles_value}\nhash = {}\n",
        toml::Value::from(name),
        toml::Value::from(tenant),
        toml::Value::from(hash_key(&key)),
    );
    if json {
        println!("{}", serde_json::json!({"key": key, "config": config}));
    } else {
        println!("key (shown once, keep it secret): {key}\n");
        println!("add to the config file:\n\n{config}");
    }
    ExitCode::SUCCESS
}
