//! A gateway served from inside another command (`secbus demo`, the gateway
//! benchmarks): the same router as `secbus serve`, on a listener of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use secbus::Bus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api_key::{KeyEntry, Role, generate_key, hash_key};
use super::config::GatewayConfig;
use super::{AppState, app};
use crate::cli::schema::load_gate;
use crate::cli::serve_workers::ServeWorkers;

/// A running gateway and the admin key of its one tenant.
pub(crate) struct InProcessGateway {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// An API key of `tenant` with the admin role (every route).
    pub(crate) key: String,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    workers: ServeWorkers,
}

impl InProcessGateway {
    /// Serves `bus` (the contracts gate is put on it) on `listen` for `tenant`,
    /// with `config`'s limits and the workers it enables (audit, alerting,
    /// detection), as `secbus serve` would; its keys are replaced by one new
    /// admin key.
    pub(crate) async fn start(
        bus: Bus,
        tenant: &str,
        listen: &str,
        mut config: GatewayConfig,
    ) -> Result<InProcessGateway, String> {
        let key = generate_key();
        config.bus = bus.url().to_owned();
        config.listen = listen.to_owned();
        config.keys = vec![KeyEntry {
            name: format!("{tenant}-admin"),
            tenant: tenant.to_owned(),
            roles: vec![Role::Admin],
            hash: hash_key(&key),
        }];
        config.validate().map_err(|e| e.to_string())?;
        let gate = load_gate(&[]).map_err(|_| "the event catalog does not load".to_owned())?;
        let (state, stop) = AppState::new(bus, Arc::clone(&gate) as _, config)?;
        let workers = ServeWorkers::start(&state.bus, &state.config, &state.metrics).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut stopped = stop.subscribe();
        let server = tokio::spawn(async move {
            axum::serve(listener, app(state))
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        Ok(InProcessGateway {
            addr,
            key,
            stop,
            server,
            workers,
        })
    }

    /// `http://<addr>`.
    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server.
    pub(crate) async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        let failures = self.workers.stop().await;
        if let Some(first) = failures.first() {
            return Err(first.clone());
        }
        match self.server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the gateway failed: {e}")),
            Err(e) => Err(format!("the gateway task failed: {e}")),
        }
    }
}
