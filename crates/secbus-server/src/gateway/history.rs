//! `GET /v1/events`: the caller's tenant's history, filtered and paged.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use secbus::{Event, HistoryQuery, TypePattern};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::api_key::{Caller, Role};
use super::error::{ApiError, ApiResult};
use super::state::AppState;

/// Default page size.
const DEFAULT_LIMIT: usize = 100;

/// The query parameters of `GET /v1/events` (and the filters of the stream).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsParams {
    /// A type pattern: `auth.login.failed`, `auth.*.failed`, `auth.>`.
    #[serde(rename = "type")]
    pub(crate) ty: Option<String>,
    /// RFC 3339: only events whose time is at or after.
    pub(crate) since: Option<String>,
    /// RFC 3339: only events whose time is at or before.
    pub(crate) until: Option<String>,
    /// Only events of this correlation.
    pub(crate) correlationid: Option<String>,
    /// Only events with this subject.
    pub(crate) subject: Option<String>,
    /// Page size (default 100, at most `limits.history_max_limit`).
    pub(crate) limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

/// One stored event and its log position.
#[derive(Debug, Serialize)]
pub(crate) struct StoredEvent {
    /// The position in the tenant's log (the SSE id, the resume point).
    pub(crate) sequence: u64,
    /// The CloudEvent, structured mode.
    #[serde(serialize_with = "shared_event")]
    pub(crate) event: Arc<Event>,
}

fn shared_event<S: serde::Serializer>(event: &Arc<Event>, s: S) -> Result<S::Ok, S::Error> {
    event.as_ref().serialize(s)
}

/// A page of history.
#[derive(Debug, Serialize)]
pub(crate) struct EventsPage {
    /// Matching events in log order.
    events: Vec<StoredEvent>,
    /// Pass as `cursor` for the next page; null when every stored event was read.
    next_cursor: Option<String>,
}

/// A type pattern parameter.
pub(crate) fn type_pattern(ty: Option<&str>) -> Result<TypePattern, ApiError> {
    match ty {
        None => Ok(TypePattern::all()),
        Some(p) => TypePattern::new(p).map_err(|e| ApiError::invalid_query("type", e.message())),
    }
}

fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid_query(name, "not an RFC 3339 time"))
        })
        .transpose()
}

/// The cursor is a log position; clients treat it as opaque.
pub(crate) fn encode_cursor(sequence: u64) -> String {
    format!("s{sequence}")
}

fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    cursor
        .strip_prefix('s')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::invalid_query("cursor", "not a cursor this API returned"))
}

/// The library query of the parameters, for the caller's tenant.
pub(crate) fn query(
    state: &AppState,
    caller: &Caller,
    params: &EventsParams,
) -> Result<HistoryQuery, ApiError> {
    let mut q = HistoryQuery::new(caller.tenant.clone());
    q.types = type_pattern(params.ty.as_deref())?;
    q.since = time("since", params.since.as_deref())?;
    q.until = time("until", params.until.as_deref())?;
    q.correlationid = params.correlationid.clone();
    q.subject = params.subject.clone();
    let max = state.config.limits.history_max_limit;
    q.limit = match params.limit {
        Some(0) => return Err(ApiError::invalid_query("limit", "must be at least 1")),
        Some(n) if n > max => {
            return Err(ApiError::invalid_query(
                "limit",
                format!("must be at most {max}"),
            ));
        }
        Some(n) => n,
        None => DEFAULT_LIMIT.min(max),
    };
    q.from_sequence = params.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok(q)
}

/// `GET /v1/events`.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EventsPage>> {
    caller.require(Role::Read)?;
    let Query(params) = params?;
    let q = query(&state, &caller, &params)?;
    let page = state.bus.history(&q).await?;
    Ok(Json(EventsPage {
        events: page
            .events
            .into_iter()
            .map(|(sequence, event)| StoredEvent { sequence, event })
            .collect(),
        next_cursor: page.next.map(encode_cursor),
    }))
}
