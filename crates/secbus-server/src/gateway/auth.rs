//! Who is calling: the API key from `Authorization: Bearer`, `X-Api-Key`, or
//! (on `/v1/stream` only, for browsers' EventSource) `?api_key=`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::api_key::{Caller, Role};
use super::error::ApiError;
use super::state::AppState;

/// The one path where a key in the query string is accepted.
const QUERY_KEY_PATH: &str = "/v1/stream";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let presented = header_key(&parts.headers).or_else(|| {
            (parts.uri.path() == QUERY_KEY_PATH)
                .then(|| query_key(parts.uri.query().unwrap_or("")))
                .flatten()
        });
        let presented = presented.ok_or_else(ApiError::unauthorized)?;
        state
            .keys
            .authenticate(&presented)
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

impl Caller {
    /// Refuses a caller without `role` with 403 `forbidden`.
    pub(crate) fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ApiError::new(
                "forbidden",
                format!(
                    "the key {} does not have the {} role",
                    self.name,
                    role.name()
                ),
            ))
        }
    }
}

fn header_key(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn query_key(query: &str) -> Option<String> {
    url_form_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| v)
}

/// `a=b&c=d` pairs, percent-decoded.
fn url_form_pairs(query: &str) -> Vec<(String, String)> {
    let uri: axum::http::Uri = match format!("/?{query}").parse() {
        Ok(uri) => uri,
        Err(_) => return Vec::new(),
    };
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default()
}
