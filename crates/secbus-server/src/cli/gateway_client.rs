//! A client of the gateway's HTTP API, as an SDK would use it: what
//! `secbus publish --server`, `secbus demo` and the gateway benchmarks call.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use secbus::Event;
use serde::Deserialize;
use serde_json::Value;

/// Most times one request is sent again after a 429, a 503 or no answer:
/// with the doubling wait, about 3 s of outage is ridden out.
const RETRIES: u32 = 5;
/// The longest wait between two tries of a request.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A gateway at `base` (`http://127.0.0.1:7400`), called with one API key.
#[derive(Debug, Clone)]
pub(crate) struct GatewayClient {
    http: Client,
    base: String,
    key: String,
}

/// One stored event, as the gateway answers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Accepted {
    /// The event's id.
    pub(crate) id: String,
    /// True when the id was seen within the dedup window.
    pub(crate) duplicate: bool,
}

#[derive(Debug, Deserialize)]
struct BatchAccepted {
    results: Vec<Accepted>,
}

/// One refused item of a batch.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ItemError {
    /// Its place in the batch.
    pub(crate) index: Option<usize>,
    /// The stable error code.
    pub(crate) code: String,
    /// What is wrong.
    pub(crate) message: String,
    /// The attribute or JSON pointer at fault.
    pub(crate) field: Option<String>,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The gateway refused the request (a 4xx): nothing was stored.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error code of the body.
        code: String,
        /// Its message.
        message: String,
        /// The refused items of a batch.
        errors: Vec<ItemError>,
    },
    /// No answer, or a 5xx after the retries: the request may or may not have
    /// been stored (sending it again stores each event once, by id).
    Unavailable(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Refused {
                status,
                code,
                message,
                ..
            } => write!(f, "{code}: {message} (HTTP {status})"),
            ClientError::Unavailable(why) => write!(f, "engine_unavailable: {why}"),
        }
    }
}

/// The body of a batch: the events' JSON in a JSON array.
pub(crate) fn batch_body(events: &[Event]) -> bytes::Bytes {
    let mut body = Vec::with_capacity(events.len() * 512);
    body.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event.to_json());
    }
    body.push(b']');
    body.into()
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    #[serde(default)]
    errors: Vec<ItemError>,
}

impl GatewayClient {
    /// A client of the gateway at `base` with `key`.
    pub(crate) fn new(base: &str, key: &str) -> Result<GatewayClient, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--server {base}: must be an http:// or https:// URL"
            ));
        }
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(GatewayClient {
            http,
            base,
            key: key.to_owned(),
        })
    }

    /// The gateway's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/events` of one event (structured mode).
    pub(crate) async fn publish(&self, event: &Event) -> Result<Accepted, ClientError> {
        let body = event.to_json();
        self.post("/v1/events", "application/cloudevents+json", body)
            .await
    }

    /// `POST /v1/events/batch`: all stored or none.
    pub(crate) async fn publish_batch(
        &self,
        events: &[Event],
    ) -> Result<Vec<Accepted>, ClientError> {
        self.publish_batch_body(batch_body(events)).await
    }

    /// `POST /v1/events/batch` of a body [`batch_body`] made.
    pub(crate) async fn publish_batch_body(
        &self,
        body: bytes::Bytes,
    ) -> Result<Vec<Accepted>, ClientError> {
        let answer: BatchAccepted = self
            .post(
                "/v1/events/batch",
                "application/cloudevents-batch+json",
                body,
            )
            .await?;
        Ok(answer.results)
    }

    /// `GET path` (with its query), the JSON answer.
    pub(crate) async fn get(&self, path_and_query: &str) -> Result<Value, ClientError> {
        self.send(|| self.http.get(format!("{}{path_and_query}", self.base)))
            .await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<bytes::Bytes>,
    ) -> Result<T, ClientError> {
        let body: bytes::Bytes = body.into();
        self.send(|| {
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body.clone())
        })
        .await
    }

    /// Sends the request `make` builds, again after a 429 (waiting its
    /// Retry-After) or a 503 or no answer (waiting longer each time): the
    /// event ids make a second send store nothing twice.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let mut wait = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..=RETRIES {
            let sent = make().bearer_auth(&self.key).send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{}: {e}", self.base);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_WAIT);
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return response
                    .json()
                    .await
                    .map_err(|e| ClientError::Unavailable(format!("unreadable answer: {e}")));
            }
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let body: Option<ErrorBody> = response.json().await.ok();
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                last = body.map_or(format!("HTTP {status}"), |b| {
                    format!("{}: {}", b.code, b.message)
                });
                tokio::time::sleep(retry_after.unwrap_or(wait).min(MAX_WAIT)).await;
                wait = (wait * 2).min(MAX_WAIT);
                continue;
            }
            let body = body.unwrap_or(ErrorBody {
                code: "http_error".to_owned(),
                message: format!("HTTP {status}"),
                errors: Vec::new(),
            });
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: body.code,
                message: body.message,
                errors: body.errors,
            });
        }
        Err(ClientError::Unavailable(format!(
            "no success after {} tries: {last}",
            RETRIES + 1
        )))
    }
}
