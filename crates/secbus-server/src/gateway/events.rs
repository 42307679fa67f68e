//! `POST /v1/events` (one event) and `POST /v1/events/batch`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use secbus::{Event, Publisher, Receipt, Scope};
use serde::Serialize;

use super::api_key::{Caller, Role};
use super::decode::{self, Mode};
use super::error::{ApiError, ApiResult, ItemError};
use super::state::AppState;

/// The answer to a stored event.
#[derive(Debug, Serialize)]
pub(crate) struct Accepted {
    /// The event's id.
    id: String,
    /// Its position in the tenant's log; null for a duplicate.
    sequence: Option<u64>,
    /// True when the id was seen within the dedup window (nothing new stored).
    duplicate: bool,
}

impl From<&Receipt> for Accepted {
    fn from(r: &Receipt) -> Accepted {
        Accepted {
            id: r.id.as_str().to_owned(),
            sequence: r.sequence,
            duplicate: r.duplicate,
        }
    }
}

/// The answer to a stored batch.
#[derive(Debug, Serialize)]
pub(crate) struct BatchAccepted {
    /// One receipt per event, in the order of the batch.
    results: Vec<Accepted>,
}

fn max_event_bytes(state: &AppState) -> usize {
    state.bus.config().max_event_bytes
}

fn refused(state: &AppState, e: ApiError, n: u64) -> ApiError {
    state.metrics.refuse(&e.code, n);
    e
}

/// The caller of a publish route, with refusals of the key counted like any
/// other refused event.
fn publisher(state: &AppState, caller: Result<Caller, ApiError>) -> ApiResult<Caller> {
    caller
        .and_then(|c| c.require(Role::Publish).map(|()| c))
        .map_err(|e| refused(state, e, 1))
}

/// `POST /v1/events`.
pub(crate) async fn publish_one(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let started = Instant::now();
    let caller = publisher(&state, caller)?;
    let result = async {
        let mode = decode::mode(&headers)?;
        let bytes = decode::read_body(body, state.config.limits.max_body_bytes).await?;
        let max = max_event_bytes(&state);
        let event = match mode {
            Mode::Structured => decode::structured(&bytes, &caller.tenant, max)?,
            Mode::Binary => decode::binary(&headers, &bytes, &caller.tenant, max)?,
        };
        state.limiter.take(caller.tenant.as_str(), 1)?;
        let ty = event.ty.clone();
        let receipt = state
            .bus
            .publisher(Scope::Tenant(caller.tenant.clone()))
            .publish(event)
            .await
            .inspect_err(|e| {
                tracing::debug!(tenant_id = %caller.tenant, code = e.code(), "publish refused");
            })?;
        tracing::debug!(
            event_id = %receipt.id,
            event_type = %ty,
            tenant_id = %caller.tenant,
            key = %caller.name,
            "event stored"
        );
        state
            .metrics
            .accept(caller.tenant.as_str(), ty.as_str(), started.elapsed());
        Ok::<_, ApiError>(receipt)
    }
    .await;
    match result {
        Ok(receipt) => Ok((StatusCode::ACCEPTED, Json(Accepted::from(&receipt)))),
        Err(e) => Err(refused(&state, e, 1)),
    }
}

/// `POST /v1/events/batch`: all or nothing.
pub(crate) async fn publish_batch(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<BatchAccepted>)> {
    let started = Instant::now();
    let caller = publisher(&state, caller)?;
    let (per_type, result) = match decode_batch(&state, &caller, &headers, body).await {
        Ok(events) => {
            let n = events.len();
            let mut types: BTreeMap<String, u64> = BTreeMap::new();
            for e in &events {
                match types.get_mut(e.ty.as_str()) {
                    Some(count) => *count += 1,
                    None => {
                        types.insert(e.ty.as_str().to_owned(), 1);
                    }
                }
            }
            let result = match state.limiter.take(caller.tenant.as_str(), n) {
                Ok(()) => state
                    .gated_already
                    .publisher(Scope::Tenant(caller.tenant.clone()))
                    .publish_batch(events)
                    .await
                    .map_err(ApiError::from),
                Err(e) => Err(e),
            };
            (types, result)
        }
        Err((e, n)) => return Err(refused(&state, e, n)),
    };
    match result {
        Ok(receipts) => {
            let took = started.elapsed();
            for (ty, n) in &per_type {
                state
                    .metrics
                    .accept_many(caller.tenant.as_str(), ty, *n, took);
            }
            Ok((
                StatusCode::ACCEPTED,
                Json(BatchAccepted {
                    results: receipts.iter().map(Accepted::from).collect(),
                }),
            ))
        }
        Err(e) => Err(refused(&state, e, per_type.values().sum())),
    }
}

/// The events of a batch, each checked as the bus will check it (scope, size,
/// gate), so a refusal names every bad item, not only the first.
async fn decode_batch(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<Event>, (ApiError, u64)> {
    decode::check_batch_media(headers).map_err(|e| (e, 1))?;
    let limits = &state.config.limits;
    let bytes = decode::read_body(body, limits.batch_max_bytes)
        .await
        .map_err(|e| (e, 1))?;
    let max = max_event_bytes(state);
    let scope = Scope::Tenant(caller.tenant.clone());
    let check = |mut event: Event| {
        scope.admit(&event)?;
        state.gate.check(&mut event)?;
        Ok(event)
    };
    let Some(batch) = decode::batch(&bytes, &caller.tenant, max, limits.batch_max_events, check)
    else {
        let e = ApiError::new("malformed_json", "a batch is a JSON array of CloudEvents");
        return Err((e, 1));
    };
    let n = batch.len as u64;
    if batch.len > limits.batch_max_events {
        let e = ApiError::new(
            "batch_too_large",
            format!(
                "the batch has {} events; the limit is {}",
                batch.len, limits.batch_max_events
            ),
        );
        return Err((e, n));
    }
    if batch.len == 0 {
        return Err((ApiError::new("malformed_json", "the batch is empty"), 1));
    }
    let errors: Vec<ItemError> = batch
        .refused
        .iter()
        .map(|(index, e)| ItemError {
            index: Some(*index),
            code: e.code().to_owned(),
            message: e.message().to_owned(),
            field: e.field().map(str::to_owned),
        })
        .collect();
    if let Some(first) = errors.first() {
        let mut e = ApiError::new(
            &first.code,
            format!(
                "{} of {n} events are invalid; nothing was stored (see errors)",
                errors.len()
            ),
        );
        e.errors = errors;
        return Err((e, n));
    }
    Ok(batch.events)
}
