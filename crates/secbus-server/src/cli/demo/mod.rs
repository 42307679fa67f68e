//! `secbus demo`: the embedded engine in a temp dir, a gateway on a free port,
//! an attack story played over HTTP, and what the bus saw.

mod enrichment;
mod story;
mod summary;
mod webhook;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use secbus::{Bus, TenantId};

use super::exit::{self, fail_in};
use super::gateway_client::GatewayClient;
use super::shutdown::Shutdown;
use crate::gateway::config::GatewayConfig;
use crate::gateway::in_process::InProcessGateway;
use enrichment::Enrichment;
use story::Story;

/// How long the demo's consumer, detection and alerting may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The HMAC key the demo's webhook output signs with.
const WEBHOOK_SECRET: &str = "demo-webhook-secret";
/// Findings the story raises: the spray (twice: each round of the spray
/// reaches five distinct users), the takeover, the encoded PowerShell.
const EXPECTED_FINDINGS: usize = 4;

/// Arguments of `secbus demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  secbus demo --once
  secbus demo --listen 127.0.0.1:7400

Starts the embedded engine in a temporary directory and a gateway on a free
port, plays an attack story over HTTP the way an SDK would (a password spray
from one address, one success, a new admin role, a suspicious process), and
prints what the bus saw: events by type, the correlation chains, the dead
letters. Without --once it keeps serving and prints the URL and an API key to
try the API with; Ctrl-C ends it and removes the directory.")]
pub(crate) struct DemoArgs {
    /// Exit after the summary instead of serving on.
    #[arg(long)]
    once: bool,
    /// Where the gateway listens (default: a free loopback port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
}

/// A running demo: what the summary sections read from.
pub(super) struct DemoRun {
    /// A client of the demo's gateway, with the demo tenant's admin key.
    pub(super) client: GatewayClient,
    /// The webhook receiver alerts go to.
    pub(super) webhook: webhook::WebhookReceiver,
    /// The HMAC key of the webhook's signatures.
    pub(super) webhook_secret: &'static str,
    /// Where the audit trail is written.
    pub(super) audit_dir: std::path::PathBuf,
    /// A scratch folder (the tampered copy of the trail goes there).
    pub(super) scratch: std::path::PathBuf,
}

/// The demo's server configuration: audit every event, detect with the
/// shipped rules, alert on high findings to the local webhook.
fn config(dir: &std::path::Path, tenant: &str, webhook: &str) -> Result<GatewayConfig, String> {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).map_err(|e| format!("cannot write the rules: {e}"))?;
    for (name, yaml) in secbus_detect::SHIPPED_RULES {
        std::fs::write(rules.join(name), yaml)
            .map_err(|e| format!("cannot write the rules: {e}"))?;
    }
    let toml = format!(
        r#"
[audit]
dir = "{audit}"
tenants = ["{tenant}"]

[detection]
rules = ["{rules}"]
tenants = ["{tenant}"]

[alerting]
tenants = ["{tenant}"]

[[alerting.outputs]]
name = "soc-webhook"
kind = "webhook"
url = "{webhook}"
secret = "{WEBHOOK_SECRET}"

[[alerting.rules]]
id = "high-findings-to-soc"
types = "detection.finding"
min_severity = "high"
outputs = ["soc-webhook"]
"#,
        audit = dir.join("audit").display(),
        rules = rules.display(),
    );
    GatewayConfig::parse(&toml, "the demo's configuration", std::iter::empty())
        .map_err(|e| e.to_string())
}

/// Waits until `tenant` has `n` events of `ty`.
async fn wait_for(client: &GatewayClient, ty: &str, n: usize) -> bool {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(page) = client
            .get(&format!("/v1/events?type={ty}&limit=1000"))
            .await
            && page["events"].as_array().map_or(0, Vec::len) >= n
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub(crate) async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(status) => status,
        Err(e) => {
            eprintln!("error: demo_failed: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

async fn demo(args: DemoArgs) -> Result<ExitCode, String> {
    let story = Story::shipped()?;
    let tenant = TenantId::new(story.tenant.as_str()).map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("secbus-demo-")
        .tempdir()
        .map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let url = format!("embedded:{}", dir.path().join("bus").display());
    let bus = match Bus::connect(&url).await {
        Ok(bus) => bus,
        Err(e) => return Ok(fail_in(&format!("cannot open the bus {url}"), &e)),
    };
    let receiver = webhook::WebhookReceiver::start().await?;
    let config = config(dir.path(), tenant.as_str(), &receiver.url)?;
    let gateway =
        InProcessGateway::start(bus.clone(), tenant.as_str(), &args.listen, config).await?;
    let (base, key) = (gateway.base(), gateway.key.clone());
    println!(
        "secbus demo: embedded engine in {}, gateway on {base}",
        dir.path().display()
    );

    let client = GatewayClient::new(&base, &key)?;
    let played = story.events()?;
    let give_up: HashMap<String, String> = played
        .iter()
        .filter_map(|p| Some((p.event.id.as_str().to_owned(), p.step.dead_letter.clone()?)))
        .collect();
    let mut enrichment = Enrichment::start(&bus, tenant.clone(), Arc::new(Mutex::new(give_up)))
        .await
        .map_err(|e| e.to_string())?;
    story::play(&client, &played).await?;
    println!(
        "\nplayed {} events of tenant {tenant} over HTTP (POST /v1/events, one request each)",
        played.len()
    );
    if !enrichment.wait_settled(played.len(), SETTLE_TIMEOUT).await {
        return Err(format!(
            "the enrichment group did not settle {} events in {SETTLE_TIMEOUT:?}",
            played.len()
        ));
    }

    if !wait_for(&client, "detection.finding", EXPECTED_FINDINGS).await
        || !wait_for(&client, "alert.sent", EXPECTED_FINDINGS).await
    {
        return Err(format!(
            "detection and alerting did not raise {EXPECTED_FINDINGS} findings and alerts in {SETTLE_TIMEOUT:?}"
        ));
    }
    let run = DemoRun {
        client,
        webhook: receiver,
        webhook_secret: WEBHOOK_SECRET,
        audit_dir: dir.path().join("audit"),
        scratch: dir.path().join("scratch"),
    };
    for section in summary::sections() {
        println!("\n== {}", section.title());
        for line in section.render(&run).await? {
            println!("  {line}");
        }
    }

    if !args.once {
        println!("\nthe gateway keeps serving on {base} (Ctrl-C to stop); try:");
        println!("  export SECBUS_API_KEY={key}");
        println!("  curl -s {base}/v1/events -H \"authorization: Bearer $SECBUS_API_KEY\"");
        println!("  curl -sN {base}/v1/stream -H \"authorization: Bearer $SECBUS_API_KEY\"");
        println!("  curl -s {base}/metrics");
        Shutdown::listen().requested().await;
    }
    drop(enrichment);
    gateway.stop().await?;
    drop(run);
    bus.close().await.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
