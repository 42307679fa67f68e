//! `GET /v1/correlations/{correlationid}`: one story's events and which caused which.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use secbus::HistoryQuery;
use serde::Serialize;

use super::api_key::{Caller, Role};
use super::error::{ApiError, ApiResult};
use super::history::StoredEvent;
use super::state::AppState;

/// Events of one correlation returned at most.
const MAX_EVENTS: usize = 10_000;

/// One event in the causation tree.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Node {
    /// The event's id.
    id: String,
    /// Its type.
    #[serde(rename = "type")]
    ty: String,
    /// Its log position.
    sequence: u64,
    /// The events it caused, in log order.
    children: Vec<Node>,
}

/// A correlation.
#[derive(Debug, Serialize)]
pub(crate) struct Correlation {
    /// The correlation id.
    correlationid: String,
    /// Every event of it, in log order.
    events: Vec<StoredEvent>,
    /// Roots (events whose cause is not in the correlation) with their descendants.
    tree: Vec<Node>,
}

/// `GET /v1/correlations/{correlationid}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Correlation>> {
    caller.require(Role::Read)?;
    let Path(correlationid) = path?;
    let mut q = HistoryQuery::new(caller.tenant.clone());
    q.correlationid = Some(correlationid.clone());
    q.limit = MAX_EVENTS;
    q.scan_max = usize::MAX;
    let page = state.bus.history(&q).await?;
    if page.events.is_empty() {
        return Err(ApiError::not_found("correlation"));
    }
    let events: Vec<StoredEvent> = page
        .events
        .into_iter()
        .map(|(sequence, event)| StoredEvent { sequence, event })
        .collect();
    let tree = tree(&events);
    Ok(Json(Correlation {
        correlationid,
        events,
        tree,
    }))
}

/// The causation forest of events in log order. An event whose `causationid`
/// names no event of the list is a root; a repeated id keeps its first event.
fn tree(events: &[StoredEvent]) -> Vec<Node> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        index.entry(e.event.id.as_str()).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    let mut roots = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if index.get(e.event.id.as_str()) != Some(&i) {
            continue;
        }
        match e.event.causationid.as_deref().and_then(|c| index.get(c)) {
            Some(&parent) if parent != i => children[parent].push(i),
            _ => roots.push(i),
        }
    }
    fn build(i: usize, events: &[StoredEvent], children: &[Vec<usize>], depth: usize) -> Node {
        let e = &events[i];
        Node {
            id: e.event.id.as_str().to_owned(),
            ty: e.event.ty.as_str().to_owned(),
            sequence: e.sequence,
            // A causation cycle cannot come from ids in log order, but the
            // depth bound keeps a forged one from recursing without end.
            children: if depth > events.len() {
                Vec::new()
            } else {
                children[i]
                    .iter()
                    .map(|&c| build(c, events, children, depth + 1))
                    .collect()
            },
        }
    }
    roots
        .into_iter()
        .map(|r| build(r, events, &children, 0))
        .collect()
}
