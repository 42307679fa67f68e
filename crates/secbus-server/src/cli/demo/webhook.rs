//! A local webhook receiver standing in for a SOC's alert intake: it keeps
//! each alert it is sent, with its signature header.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

/// One alert received.
#[derive(Debug, Clone)]
pub(super) struct Received {
    /// The JSON body.
    pub(super) body: Bytes,
    /// `X-Secbus-Signature`, if sent.
    pub(super) signature: Option<String>,
}

/// A receiver on a free loopback port.
pub(crate) struct WebhookReceiver {
    /// Its URL.
    pub(super) url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub(super) async fn start() -> Result<WebhookReceiver, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot start the webhook receiver: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/alerts", post(keep))
            .with_state(received.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver {
            url: format!("http://{addr}/alerts"),
            received,
            task,
        })
    }

    /// What it has received so far.
    pub(super) fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(State(received): State<Arc<Mutex<Vec<Received>>>>, headers: HeaderMap, body: Bytes) {
    let signature = headers
        .get(secbus_handlers::alerting::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received { body, signature });
}
