//! The dead letters of the caller's tenant: list, redrive, delete (admin role).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use secbus::{DeadLetter, ErrorKind};
use serde::{Deserialize, Serialize};

use super::api_key::{Caller, Role};
use super::error::{ApiError, ApiResult};
use super::state::AppState;

/// Dead letters listed at most by default.
const DEFAULT_LIMIT: usize = 100;
/// Dead letters listed at most.
const MAX_LIMIT: usize = 10_000;

/// The query parameters of `GET /v1/dlq`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlqParams {
    /// At most this many, oldest first (default 100, at most 10,000).
    limit: Option<usize>,
}

/// The dead letters.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetters {
    /// Oldest first.
    dead_letters: Vec<DeadLetter>,
}

/// The answer to a redrive.
#[derive(Debug, Serialize)]
pub(crate) struct Redriven {
    /// The event's id.
    id: String,
    /// Where it was stored again.
    sequence: Option<u64>,
}

/// `GET /v1/dlq`.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<DlqParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<DeadLetters>> {
    caller.require(Role::Admin)?;
    let Query(params) = params?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid_query(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    let dead_letters = state.bus.dead_letters(&caller.tenant, limit).await?;
    Ok(Json(DeadLetters { dead_letters }))
}

/// `POST /v1/dlq/{id}/redrive`.
pub(crate) async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Redriven>)> {
    caller.require(Role::Admin)?;
    let Path(id) = path?;
    match state.bus.redrive(&caller.tenant, &id).await {
        Ok(receipt) => Ok((
            StatusCode::ACCEPTED,
            Json(Redriven {
                id: receipt.id.as_str().to_owned(),
                sequence: receipt.sequence,
            }),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(ApiError::not_found("dead letter")),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/dlq/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let Path(id) = path?;
    if state.bus.delete_dead_letter(&caller.tenant, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("dead letter"))
    }
}
