//! A bus of one run on a shared server: the user's `nats://` or `redis://` URL
//! with a stream name and subject prefix (nats) or key prefix (redis) unique
//! to the run, and the cleanup that deletes what the run created there and
//! nothing else.

use anyhow::Context as _;
use secbus::Bus;

use super::raw;

/// A run's own corner of a shared server.
pub(crate) struct ScratchBus {
    /// The bus URL with the run's names in it.
    pub(crate) url: String,
    engine: Engine,
    base: String,
}

enum Engine {
    Nats { stream: String },
    Redis { prefix: String },
}

impl ScratchBus {
    /// The run's URL on the server of `url` (`nats://` or `redis://`).
    pub(crate) fn new(url: &str, engine: &str) -> anyhow::Result<ScratchBus> {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let sep = if url.contains('?') { '&' } else { '?' };
        let (engine, settings) = match engine {
            "nats" => {
                let stream = format!("SECBUS_BENCH_{unique}");
                let settings = format!("stream={stream}&prefix=secbus-bench-{unique}");
                (Engine::Nats { stream }, settings)
            }
            "redis" => {
                let prefix = format!("secbus-bench-{unique}");
                let settings = format!("prefix={prefix}");
                (Engine::Redis { prefix }, settings)
            }
            other => anyhow::bail!("this scenario runs on nats and redis, not {other}"),
        };
        Ok(ScratchBus {
            url: format!("{url}{sep}{settings}"),
            engine,
            base: url.to_owned(),
        })
    }

    /// Opens the bus.
    pub(crate) async fn connect(&self) -> anyhow::Result<Bus> {
        Bus::connect(&self.url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", self.url))
    }

    /// Deletes the run's streams (with their consumers) or keys.
    pub(crate) async fn remove(self) -> anyhow::Result<()> {
        match self.engine {
            Engine::Nats { stream } => {
                let servers = self.base.split('?').next().unwrap_or(&self.base);
                let client = async_nats::connect(servers)
                    .await
                    .with_context(|| format!("cannot connect to {servers}"))?;
                let js = async_nats::jetstream::new(client.clone());
                let mut failed = None;
                for name in [format!("{stream}_DLQ"), format!("{stream}_CONTENT"), stream] {
                    // A stream the run never created (content dedup off) is fine.
                    if js.get_stream(&name).await.is_ok()
                        && let Err(e) = js.delete_stream(&name).await
                    {
                        failed = Some(anyhow::anyhow!("cannot delete the stream {name}: {e}"));
                    }
                }
                let _ = client.flush().await;
                failed.map_or(Ok(()), Err)
            }
            Engine::Redis { prefix } => {
                let conn = raw::redis::connect(&self.base).await?;
                raw::redis::delete_prefixed(&conn, &prefix).await
            }
        }
    }
}
