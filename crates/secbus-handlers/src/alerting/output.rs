//! The outputs: one attempt to deliver an alert to a webhook, a
//! Slack-compatible hook or the log. Retries are the handler's (it publishes
//! `alert.failed` after each failed attempt).

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;

use super::config::{OutputConfig, OutputKind};
use super::signature::{SIGNATURE_HEADER, signature};
use crate::error::{Error, Result};

/// A checked output.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) name: String,
    pub(crate) kind: OutputKind,
    url: Option<reqwest::Url>,
    secret: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
}

/// Why an attempt failed, in the words of `alert.failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// `timeout`, `connection`, `http_status`, `invalid_response`, `config`, `other`.
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    pub(crate) status: Option<u16>,
    /// Whether another attempt may work.
    pub(crate) retryable: bool,
}

impl Output {
    pub(crate) fn new(config: &OutputConfig) -> Result<Output> {
        let at = |what: &str| format!("alerting output {:?}: {what}", config.name);
        if !super::is_name(&config.name) {
            return Err(Error::config(at(
                "the name must match [a-z0-9][a-z0-9_.-]{0,63}",
            )));
        }
        let url = match (config.kind, &config.url) {
            (OutputKind::Log, None) => None,
            (OutputKind::Log, Some(_)) => return Err(Error::config(at("a log output has no url"))),
            (_, None) => return Err(Error::config(at("needs a url"))),
            (_, Some(u)) => {
                let url = reqwest::Url::parse(u)
                    .map_err(|e| Error::config(at(&format!("url {u:?}: {e}"))))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(Error::config(at("the url must be http(s)://host/...")));
                }
                Some(url)
            }
        };
        let secret = match (&config.secret, &config.secret_env) {
            (Some(_), Some(_)) => {
                return Err(Error::config(at("give secret or secret_env, not both")));
            }
            (Some(s), None) => Some(s.as_bytes().to_vec()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| Error::config(at(&format!("the variable {var} is not set"))))?
                    .into_bytes(),
            ),
            (None, None) => None,
        };
        match (config.kind, &secret) {
            (OutputKind::Webhook, None) => {
                return Err(Error::config(at(
                    "a webhook needs secret_env (or secret) for its signature",
                )));
            }
            (OutputKind::Webhook, Some(s)) if s.is_empty() => {
                return Err(Error::config(at("the webhook secret is empty")));
            }
            (OutputKind::Slack | OutputKind::Log, Some(_)) => {
                return Err(Error::config(at(
                    "only a webhook is signed; remove the secret",
                )));
            }
            _ => {}
        }
        if config.timeout_ms == 0 {
            return Err(Error::config(at("timeout_ms must be at least 1")));
        }
        Ok(Output {
            name: config.name.clone(),
            kind: config.kind,
            url,
            secret,
            timeout: Duration::from_millis(config.timeout_ms),
            retries: config.retries,
            backoff: Duration::from_millis(config.backoff_ms),
        })
    }

    /// The host alerts go to (never the path: it can hold a credential).
    pub(crate) fn host(&self) -> Option<&str> {
        self.url.as_ref().and_then(|u| u.host_str())
    }

    /// One attempt: POSTs `body` (webhook) or `{"text": text}` (slack), or
    /// logs. Returns the HTTP status of a success.
    pub(crate) async fn attempt(
        &self,
        client: &reqwest::Client,
        body: &[u8],
        text: &str,
    ) -> std::result::Result<Option<u16>, Failure> {
        let Some(url) = &self.url else {
            tracing::warn!(output = %self.name, alert = %text, "alert");
            return Ok(None);
        };
        let request = match self.kind {
            OutputKind::Webhook => {
                let sig = signature(self.secret.as_deref().unwrap_or_default(), body);
                client
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, sig)
                    .body(body.to_vec())
            }
            _ => client
                .post(url.clone())
                .json(&serde_json::json!({ "text": text })),
        };
        let response = request.timeout(self.timeout).send().await.map_err(|e| {
            let (kind, message) = if e.is_timeout() {
                ("timeout", format!("no response within {:?}", self.timeout))
            } else if e.is_connect() {
                ("connection", format!("cannot connect: {e}"))
            } else {
                ("other", e.to_string())
            };
            Failure {
                kind,
                message,
                status: None,
                retryable: true,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Some(status.as_u16()));
        }
        Err(Failure {
            kind: "http_status",
            message: format!("HTTP {status}"),
            status: Some(status.as_u16()),
            retryable: status.is_server_error() || status.as_u16() == 429,
        })
    }
}
