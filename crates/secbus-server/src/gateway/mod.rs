//! The HTTP + SSE gateway: producers that are not Rust services and dashboards
//! reach the bus through it. [`app`] is the whole API as a router; the route
//! table [`ROUTES`] is also what the OpenAPI document is generated from.

pub(crate) mod api_key;
mod auth;
pub(crate) mod config;
mod correlations;
mod decode;
mod dlq;
pub(crate) mod error;
mod events;
mod health;
mod history;
pub(crate) mod in_process;
pub(crate) mod metrics;
mod openapi;
mod rate_limit;
pub(crate) mod state;
mod stream;
#[cfg(test)]
mod tests;

use axum::Router;
use axum::routing::{MethodRouter, delete, get, post};
use tower_http::trace::TraceLayer;

use api_key::Role;
use error::ApiError;
pub(crate) use state::AppState;

/// One route of the API: what the router serves and the API description says.
#[derive(Debug)]
pub(crate) struct RouteSpec {
    /// `get`, `post` or `delete`.
    pub(crate) method: &'static str,
    /// The path, with `{name}` for path parameters.
    pub(crate) path: &'static str,
    /// A unique name of the operation.
    pub(crate) operation_id: &'static str,
    /// One line on what it does.
    pub(crate) summary: &'static str,
    /// The role it needs; `None` for routes without auth.
    pub(crate) role: Option<Role>,
    /// Query parameters: name and description.
    pub(crate) query: &'static [(&'static str, &'static str)],
    /// Media types of the request body, when it has one.
    pub(crate) request: &'static [&'static str],
    /// The success status and what it returns.
    pub(crate) success: (u16, &'static str),
    /// The schema (in the document's components) of the success body, when JSON.
    pub(crate) response: Option<&'static str>,
    /// Error codes this route can answer with, besides auth.
    pub(crate) errors: &'static [&'static str],
    /// The handler.
    pub(crate) handler: fn() -> MethodRouter<AppState>,
}

const HISTORY_QUERY: &[(&str, &str)] = &[
    (
        "type",
        "type pattern: auth.login.failed, auth.*.failed, auth.>",
    ),
    ("since", "RFC 3339: events at or after this time"),
    ("until", "RFC 3339: events at or before this time"),
    ("correlationid", "only this correlation"),
    ("subject", "only this subject"),
    (
        "limit",
        "page size (default 100, max limits.history_max_limit)",
    ),
    ("cursor", "next_cursor of the previous page"),
];

const EVENT_ERRORS: &[&str] = &[
    "malformed_json",
    "missing_attribute",
    "invalid_attribute",
    "unsupported_specversion",
    "event_too_large",
    "payload_too_large",
    "unsupported_media_type",
    "tenant_mismatch",
    "unknown_event_type",
    "schema_violation",
    "secret_detected",
    "rate_limited",
    "engine_unavailable",
];

/// Every route of the API.
pub(crate) const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: "post",
        path: "/v1/events",
        operation_id: "publishEvent",
        summary: "Publish one CloudEvent (structured or binary mode); 202 once durable",
        role: Some(Role::Publish),
        query: &[],
        request: &["application/cloudevents+json", "application/json"],
        success: (202, "stored: id and sequence"),
        response: Some("Accepted"),
        errors: EVENT_ERRORS,
        handler: || post(events::publish_one),
    },
    RouteSpec {
        method: "get",
        path: "/v1/events",
        operation_id: "listEvents",
        summary: "History of the caller's tenant, filtered, paged by cursor",
        role: Some(Role::Read),
        query: HISTORY_QUERY,
        request: &[],
        success: (200, "events with their sequences, and next_cursor"),
        response: Some("EventsPage"),
        errors: &["invalid_query", "engine_unavailable"],
        handler: || get(history::list),
    },
    RouteSpec {
        method: "post",
        path: "/v1/events/batch",
        operation_id: "publishBatch",
        summary: "Publish a batch of CloudEvents, all or nothing",
        role: Some(Role::Publish),
        query: &[],
        request: &["application/cloudevents-batch+json", "application/json"],
        success: (202, "stored: one receipt per event"),
        response: Some("BatchAccepted"),
        errors: &[
            "malformed_json",
            "batch_too_large",
            "payload_too_large",
            "unsupported_media_type",
            "tenant_mismatch",
            "schema_violation",
            "rate_limited",
            "engine_unavailable",
        ],
        handler: || post(events::publish_batch),
    },
    RouteSpec {
        method: "get",
        path: "/v1/correlations/{correlationid}",
        operation_id: "getCorrelation",
        summary: "Every event of one correlation in log order, and the causation tree",
        role: Some(Role::Read),
        query: &[],
        request: &[],
        success: (200, "events and tree"),
        response: Some("Correlation"),
        errors: &["not_found", "engine_unavailable"],
        handler: || get(correlations::get),
    },
    RouteSpec {
        method: "get",
        path: "/v1/stream",
        operation_id: "streamEvents",
        summary: "Live events as Server-Sent Events; resume with Last-Event-ID",
        role: Some(Role::Read),
        query: &[
            ("type", "type pattern"),
            ("subject", "only this subject"),
            ("correlationid", "only this correlation"),
            (
                "last_event_id",
                "resume after this id (or the Last-Event-ID header)",
            ),
            ("api_key", "the API key, for EventSource (this route only)"),
        ],
        request: &[],
        success: (
            200,
            "text/event-stream; id is the sequence; event: lagged ends a slow client",
        ),
        response: None,
        errors: &["invalid_query", "engine_unavailable"],
        handler: || get(stream::get),
    },
    RouteSpec {
        method: "get",
        path: "/v1/dlq",
        operation_id: "listDeadLetters",
        summary: "Dead letters of the caller's tenant, oldest first",
        role: Some(Role::Admin),
        query: &[("limit", "at most this many (default 100)")],
        request: &[],
        success: (200, "dead letters"),
        response: Some("DeadLetters"),
        errors: &["invalid_query", "engine_unavailable"],
        handler: || get(dlq::list),
    },
    RouteSpec {
        method: "post",
        path: "/v1/dlq/{id}/redrive",
        operation_id: "redriveDeadLetter",
        summary: "Publish a dead letter's event again to the group that gave up on it",
        role: Some(Role::Admin),
        query: &[],
        request: &[],
        success: (202, "stored again: id and sequence"),
        response: Some("Redriven"),
        errors: &["not_found", "engine_unavailable"],
        handler: || post(dlq::redrive),
    },
    RouteSpec {
        method: "delete",
        path: "/v1/dlq/{id}",
        operation_id: "deleteDeadLetter",
        summary: "Delete a dead letter",
        role: Some(Role::Admin),
        query: &[],
        request: &[],
        success: (204, "deleted"),
        response: None,
        errors: &["not_found", "engine_unavailable"],
        handler: || delete(dlq::delete),
    },
    RouteSpec {
        method: "get",
        path: "/healthz",
        operation_id: "healthz",
        summary: "The process answers",
        role: None,
        query: &[],
        request: &[],
        success: (200, "ok"),
        response: Some("Health"),
        errors: &[],
        handler: || get(health::healthz),
    },
    RouteSpec {
        method: "get",
        path: "/readyz",
        operation_id: "readyz",
        summary: "The engine answers",
        role: None,
        query: &[],
        request: &[],
        success: (200, "ready"),
        response: Some("Health"),
        errors: &["engine_unavailable"],
        handler: || get(health::readyz),
    },
    RouteSpec {
        method: "get",
        path: "/metrics",
        operation_id: "metrics",
        summary: "Prometheus metrics (OpenMetrics text)",
        role: None,
        query: &[],
        request: &[],
        success: (200, "metrics text"),
        response: None,
        errors: &[],
        handler: || get(metrics::get),
    },
    RouteSpec {
        method: "get",
        path: "/v1/openapi.json",
        operation_id: "openapi",
        summary: "This API's OpenAPI 3.1 document",
        role: None,
        query: &[],
        request: &[],
        success: (200, "the document"),
        response: None,
        errors: &[],
        handler: || get(openapi::get),
    },
];

/// The whole API over `state`.
pub(crate) fn app(state: AppState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, (route.handler)())
        })
        .fallback(|| async { ApiError::new("not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new("method_not_allowed", "the route does not take this method")
        })
        // The span names the path only: a query may carry `api_key`.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path()
                )
            }),
        )
        .with_state(state)
}
