//! `GET /healthz` (the process answers) and `GET /readyz` (the engine answers).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::state::AppState;

/// `GET /healthz`: no auth, no engine call.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 503 `engine_unavailable` when the engine does not answer.
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<Value>)> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), state.bus.ping()).await {
        Ok(Ok(())) => Ok((
            StatusCode::OK,
            Json(json!({"status": "ready", "engine": state.bus.engine_name()})),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            "engine_unavailable",
            format!("the engine does not answer: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            "engine_unavailable",
            "the engine did not answer within 5 s",
        )),
    }
}
