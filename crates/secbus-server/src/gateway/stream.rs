//! `GET /v1/stream`: the caller's tenant's events as Server-Sent Events.
//!
//! Each client has a tail of its own on the engine (so any gateway can serve a
//! resume, and nothing is promised from one gateway's memory) and a bounded
//! buffer. A client that does not read fast enough fills its buffer and is
//! closed with `event: lagged`, naming the last id sent, instead of the
//! server buffering for it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use secbus::{ErrorKind, StartAt, SubscribeOptions, Subscriber};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::api_key::{Caller, Role};
use super::error::{ApiError, ApiResult};
use super::history::type_pattern;
use super::state::AppState;

/// The query parameters of `GET /v1/stream`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamParams {
    /// A type pattern: `auth.login.failed`, `auth.*.failed`, `auth.>`.
    #[serde(rename = "type")]
    ty: Option<String>,
    /// Only events with this subject.
    subject: Option<String>,
    /// Only events of this correlation.
    correlationid: Option<String>,
    /// Resume after this id (as the `Last-Event-ID` header does).
    last_event_id: Option<String>,
    /// The API key, for browsers' EventSource, which cannot set headers.
    api_key: Option<String>,
}

/// Why a stream ended early, sent as its last event.
struct Lagged {
    last_sent: Option<u64>,
    reason: &'static str,
}

/// `GET /v1/stream`.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    caller.require(Role::Read)?;
    let Query(params) = params?;
    let _ = &params.api_key;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(params.last_event_id.clone());
    let last: Option<u64> =
        match last.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(v.parse().map_err(|_| {
                ApiError::invalid_query("last_event_id", "not an id this stream sent")
            })?),
        };
    let options = SubscribeOptions::tail(caller.tenant.clone())
        .types(type_pattern(params.ty.as_deref())?)
        .start(last.map_or(StartAt::New, |n| StartAt::Sequence(n + 1)));
    let mut tail = state.bus.subscribe(options).await?;
    let (tx, rx) = mpsc::channel::<SseEvent>(state.config.stream.buffer_events);
    let (lag_tx, lag_rx) = oneshot::channel::<Lagged>();
    let mut stopping = state.stopping.clone();
    let (subject, correlationid) = (params.subject, params.correlationid);
    tokio::spawn(async move {
        let mut last_sent = last;
        let lagged = loop {
            let next = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break None,
                () = tx.closed() => break None,
                next = tail.next() => next,
            };
            let delivery = match next {
                None => break None,
                Some(Ok(d)) => d,
                Some(Err(e)) if e.kind() == ErrorKind::Lagged => {
                    break Some("events after the last id sent are no longer retained");
                }
                Some(Err(e)) => {
                    tracing::warn!(code = e.code(), error = %e, "stream tail failed");
                    break None;
                }
            };
            let event = delivery.event();
            if subject
                .as_ref()
                .is_some_and(|s| event.subject.as_deref() != Some(s.as_str()))
                || correlationid
                    .as_ref()
                    .is_some_and(|c| *c != event.correlationid)
            {
                continue;
            }
            let sequence = delivery.sequence();
            let sse = SseEvent::default()
                .id(sequence.to_string())
                .data(String::from_utf8_lossy(&event.to_json()));
            match tx.try_send(sse) {
                Ok(()) => last_sent = Some(sequence),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    break Some("the client did not read fast enough");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break None,
            }
        };
        if let Some(reason) = lagged {
            let _ = lag_tx.send(Lagged { last_sent, reason });
        }
    });
    let heartbeat = Duration::from_secs(state.config.stream.heartbeat_secs);
    Ok(Sse::new(sse_stream(rx, lag_rx)).keep_alive(KeepAlive::new().interval(heartbeat)))
}

/// The buffered events, then the `lagged` notice when the stream was cut.
fn sse_stream(
    rx: mpsc::Receiver<SseEvent>,
    lag_rx: oneshot::Receiver<Lagged>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold((rx, Some(lag_rx)), |(mut rx, lag_rx)| async move {
        if let Some(event) = rx.recv().await {
            return Some((Ok(event), (rx, lag_rx)));
        }
        let lagged = lag_rx?.await.ok()?;
        let resume = lagged.last_sent.map(|n| n.to_string());
        let data = serde_json::json!({
            "last_event_id": resume,
            "message": format!(
                "{}; reconnect with Last-Event-ID: {} to resume",
                lagged.reason,
                resume.as_deref().unwrap_or("(none: from now)")
            ),
        });
        let event = SseEvent::default().event("lagged").data(data.to_string());
        Some((Ok(event), (rx, None)))
    })
}
