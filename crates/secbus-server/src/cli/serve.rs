//! `secbus serve`: the HTTP + SSE gateway.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use secbus::{Bus, BusConfig};

use super::exit::{self, fail_in};
use super::schema::load_gate;
use super::serve_workers::ServeWorkers;
use super::shutdown::Shutdown;
use crate::gateway::config::GatewayConfig;
use crate::gateway::{AppState, app};

/// Arguments of `secbus serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus serve
  secbus serve --config secbus.toml
  secbus serve --bus nats://127.0.0.1:4222 --listen 0.0.0.0:7400

Settings come from the config file (see secbus.example.toml), then SECBUS_...
environment variables (SECBUS_BUS, SECBUS_LISTEN, SECBUS_LIMITS__BATCH_MAX_EVENTS,
...), then these flags. Make API keys with `secbus keys new`.")]
pub(crate) struct ServeArgs {
    /// The configuration file (default: none, every setting at its default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The bus: `memory:`, `embedded:<dir>`, `nats://host:port`, `redis://host:port`.
    #[arg(long, value_name = "URL")]
    bus: Option<String>,
    /// The address to listen on (default 127.0.0.1:7400; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

fn load(args: &ServeArgs) -> Result<GatewayConfig, String> {
    let mut config =
        GatewayConfig::load(args.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    if let Some(bus) = &args.bus {
        config.bus = bus.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

pub(crate) async fn run(args: ServeArgs) -> ExitCode {
    let mut shutdown = Shutdown::listen();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid_config: {e}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let gate = match load_gate(&config.contracts.schema_dirs) {
        Ok(gate) => gate,
        Err(status) => return status,
    };
    let bus = match Bus::connect_with(&config.bus, BusConfig::default()).await {
        Ok(bus) => bus,
        Err(e) => return fail_in(&format!("cannot open the bus {}", config.bus), &e),
    };
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: io_error: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or(config.listen.clone(), |a| a.to_string());
    let keys = config.keys.len();
    let (state, stop) = match AppState::new(bus.clone(), Arc::clone(&gate) as _, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: invalid_config: {e}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let workers = match ServeWorkers::start(&state.bus, &state.config, &state.metrics).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: invalid_config: {e}");
            let _ = bus.close().await;
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    eprintln!(
        "secbus gateway listening on http://{addr} (engine {}, bus {}, {keys} API keys)",
        bus.engine_name(),
        bus.url()
    );
    let names = workers.names();
    if !names.is_empty() {
        eprintln!("running: {}", names.join(", "));
    }
    if keys == 0 {
        eprintln!(
            "warning: no [[keys]] configured: every /v1 call answers 401 (see `secbus keys new`)"
        );
    }
    // Graceful: stop accepting, let in-flight requests (publishes) finish, end
    // open streams, then close the bus so acks and positions are flushed.
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.requested().await;
            let _ = stop.send(true);
        })
        .await;
    let failures = workers.stop().await;
    for f in &failures {
        eprintln!("error: {f}");
    }
    let closed = bus.close().await;
    if let Err(e) = served {
        eprintln!("error: io_error: the server failed: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = closed {
        return fail_in("closing the bus", &e);
    }
    if !failures.is_empty() {
        return ExitCode::FAILURE;
    }
    eprintln!("secbus gateway stopped");
    ExitCode::SUCCESS
}
