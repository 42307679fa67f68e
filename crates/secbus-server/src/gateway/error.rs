//! The one error body of the API, `{code, message, field}`, and the one place
//! that maps a stable code to an HTTP status.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One problem of a refused batch, or one schema failure of an event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ItemError {
    /// The position in the batch (absent for the details of one event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<usize>,
    /// The stable code.
    pub(crate) code: String,
    /// What is wrong.
    pub(crate) message: String,
    /// The attribute or JSON pointer at fault.
    pub(crate) field: Option<String>,
}

/// An error answer of the gateway.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ApiError {
    /// The stable code: the library's and the gate's, or a gateway code.
    pub(crate) code: String,
    /// What went wrong, for people.
    pub(crate) message: String,
    /// The attribute, field or parameter at fault; null when none.
    pub(crate) field: Option<String>,
    /// Per-item errors of a batch, or the schema failures of an event.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<ItemError>,
    /// Seconds to wait, for `rate_limited`.
    #[serde(skip)]
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and a message.
    pub(crate) fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.to_owned(),
            message: message.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// Names the attribute or parameter at fault.
    pub(crate) fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// 401: no key, or a key that is not configured.
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key> or X-Api-Key)",
        )
    }

    /// 404 for anything the caller's tenant does not have.
    pub(crate) fn not_found(what: &str) -> ApiError {
        ApiError::new("not_found", format!("no {what} with that id"))
    }

    /// 400 for a query parameter that cannot be used.
    pub(crate) fn invalid_query(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new("invalid_query", message).with_field(field)
    }

    /// The HTTP status of this error's code.
    pub(crate) fn status(&self) -> StatusCode {
        status_of(&self.code)
    }
}

/// Every code the gateway answers with, and its status. The single mapping:
/// handlers name codes, never statuses.
pub(crate) fn status_of(code: &str) -> StatusCode {
    match code {
        "unauthorized" => StatusCode::UNAUTHORIZED,
        "forbidden" | "tenant_mismatch" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "payload_too_large" | "batch_too_large" | "event_too_large" => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "schema_violation" | "unknown_event_type" | "secret_detected" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        "malformed_json"
        | "missing_attribute"
        | "invalid_attribute"
        | "unsupported_specversion"
        | "invalid_options"
        | "invalid_query" => StatusCode::BAD_REQUEST,
        "engine_unavailable" | "closed" | "full" | "timeout" => StatusCode::SERVICE_UNAVAILABLE,
        "unsupported" => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Every code of [`status_of`], for the API description and its tests.
pub(crate) const CODES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "tenant_mismatch",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "batch_too_large",
    "event_too_large",
    "unsupported_media_type",
    "rate_limited",
    "schema_violation",
    "unknown_event_type",
    "secret_detected",
    "malformed_json",
    "missing_attribute",
    "invalid_attribute",
    "unsupported_specversion",
    "invalid_options",
    "invalid_query",
    "engine_unavailable",
    "closed",
    "full",
    "timeout",
    "unsupported",
    "engine_error",
    "io_error",
];

impl From<secbus::Error> for ApiError {
    fn from(e: secbus::Error) -> ApiError {
        ApiError {
            code: e.code().to_owned(),
            message: e.message().to_owned(),
            field: e.field().map(str::to_owned),
            errors: e
                .details()
                .iter()
                .map(|d| ItemError {
                    index: None,
                    code: e.code().to_owned(),
                    message: d.reason.clone(),
                    field: Some(d.field.clone()),
                })
                .collect(),
            retry_after: None,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::new("invalid_query", e.body_text())
    }
}

/// A path segment that does not decode (not UTF-8) names nothing that exists.
impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> ApiError {
        ApiError::new("not_found", "no such id: the path does not decode")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = %self.code, message = %self.message, "request failed");
        }
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// A handler's result.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
