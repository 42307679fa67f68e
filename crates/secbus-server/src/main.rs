//! The `secbus` command: publish, tail and benchmark the event bus.

mod bench;
mod cli;
mod gateway;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The bus moves many small allocations between threads (an event is built by
// the publisher's thread and freed by the consumer's); mimalloc's per-thread
// heaps do that far cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// secbus: the event spine for security platforms.
#[derive(Debug, Parser)]
#[command(name = "secbus", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish CloudEvents from a JSON-lines file.
    Publish(cli::publish::PublishArgs),
    /// Print a tenant's events, from the start or live.
    Tail(cli::tail::TailArgs),
    /// Measure secbus against the raw engine on this machine.
    Bench(bench::BenchArgs),
    /// The event catalog: list, show, validate a file, check compatibility.
    Schema(cli::schema::SchemaArgs),
    /// Write the AsyncAPI 3.0 document of the event catalog.
    Asyncapi(cli::asyncapi::AsyncApiArgs),
    /// Run the HTTP + SSE gateway.
    Serve(cli::serve::ServeArgs),
    /// API keys for the gateway.
    Keys(cli::keys::KeysArgs),
    /// Dead letters: list, redrive, delete.
    Dlq(cli::dlq::DlqArgs),
    /// A tenant's stored events, filtered, to a file or stdout.
    Replay(cli::replay::ReplayArgs),
    /// Play an attack story through a gateway and show what the bus saw.
    Demo(cli::demo::DemoArgs),
    /// The audit trail: verify that it is intact.
    Audit(cli::audit::AuditArgs),
    /// Sigma detection: check rule folders, run the detection worker.
    Detect(cli::detect::DetectArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The demo dead-letters an event on purpose: its summary says so, a
    // warning line in the middle of it would only be noise.
    let default_filter = match args.command {
        Command::Demo(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SECBUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match args.command {
            Command::Publish(a) => cli::publish::run(a).await,
            Command::Tail(a) => cli::tail::run(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Schema(a) => cli::schema::run(a).await,
            Command::Asyncapi(a) => cli::asyncapi::run(a).await,
            Command::Serve(a) => cli::serve::run(a).await,
            Command::Keys(a) => cli::keys::run(a).await,
            Command::Dlq(a) => cli::dlq::run(a).await,
            Command::Replay(a) => cli::replay::run(a).await,
            Command::Demo(a) => cli::demo::run(a).await,
            Command::Audit(a) => cli::audit::run(a).await,
            Command::Detect(a) => cli::detect::run(a).await,
        }
    })
}
