//! `GET /v1/openapi.json`: the OpenAPI 3.1 document, generated from [`ROUTES`]
//! (the table the router is built from) and the error codes of [`status_of`].

use std::collections::BTreeMap;

use axum::Json;
use serde_json::{Value, json};

use super::ROUTES;
use super::error::status_of;

/// `GET /v1/openapi.json`.
pub(crate) async fn get() -> Json<Value> {
    Json(document())
}

/// The request body schema of a route: a batch is an array of events.
fn request_schema(path: &str) -> Value {
    if path.ends_with("/batch") {
        json!({"type": "array", "items": {"$ref": "#/components/schemas/CloudEvent"}})
    } else {
        json!({"$ref": "#/components/schemas/CloudEvent"})
    }
}

/// The document.
pub(crate) fn document() -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(route.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": description, "schema": {"type": "string"}})
        }));
        let mut responses = serde_json::Map::new();
        let mut success = json!({"description": route.success.1});
        if let Some(schema) = route.response {
            success["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
        }
        responses.insert(route.success.0.to_string(), success);
        let mut codes: Vec<&str> = route.errors.to_vec();
        if route.role.is_some() {
            codes.extend(["unauthorized", "forbidden"]);
        }
        let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for code in codes {
            by_status
                .entry(status_of(code).as_u16())
                .or_default()
                .push(code);
        }
        for (status, codes) in by_status {
            responses.insert(
                status.to_string(),
                json!({
                    "description": format!("error: {}", codes.join(", ")),
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }),
            );
        }
        let mut op = json!({
            "operationId": route.operation_id,
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
        });
        match route.role {
            Some(role) => {
                op["security"] = json!([{"bearer": []}, {"apiKey": []}]);
                op["x-secbus-role"] = json!(role.name());
            }
            None => op["security"] = json!([]),
        }
        if !route.request.is_empty() {
            let content: serde_json::Map<String, Value> = route
                .request
                .iter()
                .map(|t| (t.to_string(), json!({"schema": request_schema(route.path)})))
                .collect();
            op["requestBody"] = json!({"required": true, "content": content});
        }
        paths
            .entry(route.path.to_owned())
            .or_default()
            .insert(route.method.to_owned(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "secbus gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Publish CloudEvents, read history, stream live events, manage dead letters. \
                            Every call acts for the tenant of its API key."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
            },
            "schemas": {
                "CloudEvent": {
                    "type": "object",
                    "description": "A CloudEvent 1.0 in structured mode, with the secbus extensions; tenantid defaults to the key's tenant",
                    "required": ["specversion", "id", "source", "type"],
                    "properties": {
                        "specversion": {"const": "1.0"},
                        "id": {"type": "string"},
                        "source": {"type": "string"},
                        "type": {"type": "string"},
                        "tenantid": {"type": "string"},
                        "subject": {"type": "string"},
                        "time": {"type": "string", "format": "date-time"},
                        "dataschema": {"type": "string"},
                        "datacontenttype": {"type": "string"},
                        "correlationid": {"type": "string"},
                        "causationid": {"type": "string"},
                        "traceparent": {"type": "string"},
                        "data": {}
                    }
                },
                "Accepted": {
                    "type": "object",
                    "required": ["id", "sequence", "duplicate"],
                    "properties": {
                        "id": {"type": "string"},
                        "sequence": {"type": ["integer", "null"], "description": "the log position; null for a duplicate"},
                        "duplicate": {"type": "boolean"}
                    }
                },
                "BatchAccepted": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}}}
                },
                "StoredEvent": {
                    "type": "object",
                    "required": ["sequence", "event"],
                    "properties": {
                        "sequence": {"type": "integer"},
                        "event": {"$ref": "#/components/schemas/CloudEvent"}
                    }
                },
                "EventsPage": {
                    "type": "object",
                    "required": ["events", "next_cursor"],
                    "properties": {
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/StoredEvent"}},
                        "next_cursor": {"type": ["string", "null"]}
                    }
                },
                "CausationNode": {
                    "type": "object",
                    "required": ["id", "type", "sequence", "children"],
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"type": "string"},
                        "sequence": {"type": "integer"},
                        "children": {"type": "array", "items": {"$ref": "#/components/schemas/CausationNode"}}
                    }
                },
                "Correlation": {
                    "type": "object",
                    "required": ["correlationid", "events", "tree"],
                    "properties": {
                        "correlationid": {"type": "string"},
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/StoredEvent"}},
                        "tree": {"type": "array", "items": {"$ref": "#/components/schemas/CausationNode"}}
                    }
                },
                "DeadLetter": {
                    "type": "object",
                    "required": ["id", "event", "group", "reason", "attempts", "dead_at"],
                    "properties": {
                        "id": {"type": "string"},
                        "event": {"$ref": "#/components/schemas/CloudEvent"},
                        "group": {"type": "string"},
                        "reason": {"type": "string"},
                        "attempts": {"type": "integer"},
                        "last_error": {"type": ["string", "null"]},
                        "published_at": {"type": ["string", "null"], "format": "date-time"},
                        "dead_at": {"type": "string", "format": "date-time"}
                    }
                },
                "DeadLetters": {
                    "type": "object",
                    "required": ["dead_letters"],
                    "properties": {"dead_letters": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}}}
                },
                "Redriven": {
                    "type": "object",
                    "required": ["id", "sequence"],
                    "properties": {"id": {"type": "string"}, "sequence": {"type": ["integer", "null"]}}
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string"}, "engine": {"type": "string"}}
                },
                "Error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "properties": {
                        "code": {"type": "string", "enum": super::error::CODES},
                        "message": {"type": "string"},
                        "field": {"type": ["string", "null"]},
                        "errors": {"type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "index": {"type": "integer"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": ["string", "null"]}
                            }
                        }}
                    }
                }
            }
        }
    })
}
