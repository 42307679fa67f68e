//! A gateway over a fresh bus with keys for two tenants and every role, and
//! helpers to call it the way a client does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use secbus::{Bus, BusConfig};
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::cli::schema::load_gate;
use crate::gateway::api_key::{KeyEntry, Role, generate_key, hash_key};
use crate::gateway::config::GatewayConfig;
use crate::gateway::{AppState, app};

/// The tenants every harness has keys for.
pub(super) const TENANTS: [&str; 2] = ["acme", "globex"];
/// The roles every tenant has one key for.
pub(super) const ROLES: [Role; 3] = [Role::Publish, Role::Read, Role::Admin];

/// A gateway under test.
pub(super) struct Harness {
    pub(super) app: Router,
    pub(super) bus: Bus,
    keys: HashMap<(String, &'static str), String>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Value,
    pub(super) text: String,
}

impl Harness {
    /// A gateway on the memory engine with the default config.
    pub(super) async fn new() -> Harness {
        Harness::with(|_| {}).await
    }

    /// A gateway on the memory engine, with `adjust` applied to the config.
    pub(super) async fn with(adjust: impl FnOnce(&mut GatewayConfig)) -> Harness {
        Harness::on("memory:", adjust).await
    }

    /// A gateway on `bus` (`{dir}` is replaced by a fresh temp dir).
    pub(super) async fn on(bus: &str, adjust: impl FnOnce(&mut GatewayConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = bus.replace("{dir}", &dir.path().display().to_string());
        let bus = Bus::connect_with(&url, bus_config(&dir))
            .await
            .expect("bus");
        Harness::over(bus, dir, adjust)
    }

    /// A gateway on an open `bus`, whose files live in `dir`.
    pub(super) fn over(
        bus: Bus,
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut GatewayConfig),
    ) -> Harness {
        let mut config = GatewayConfig {
            bus: bus.url().to_owned(),
            ..GatewayConfig::default()
        };
        let mut keys = HashMap::new();
        for tenant in TENANTS {
            for role in ROLES {
                let key = generate_key();
                config.keys.push(KeyEntry {
                    name: format!("{tenant}-{}", role.name()),
                    tenant: tenant.to_owned(),
                    roles: vec![role],
                    hash: hash_key(&key),
                });
                keys.insert((tenant.to_owned(), role.name()), key);
            }
        }
        adjust(&mut config);
        config.validate().expect("valid test config");
        let gate = load_gate(&[]).unwrap_or_else(|_| panic!("the catalog loads"));
        let (state, stop) = AppState::new(bus.clone(), Arc::clone(&gate) as _, config).unwrap();
        Harness {
            bus: state.bus.clone(),
            app: app(state),
            keys,
            _stop: stop,
            _dir: dir,
        }
    }

    /// The temp dir the bus's files live in.
    pub(super) fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The key of `tenant` with only `role`.
    pub(super) fn key(&self, tenant: &str, role: Role) -> &str {
        &self.keys[&(tenant.to_owned(), role.name())]
    }

    /// Sends `request` through the router.
    pub(super) async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// `method path` with `key` (if any) and a JSON `body` of `content_type`.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = match body {
            Some((content_type, bytes)) => request
                .header("content-type", content_type)
                .body(Body::from(bytes)),
            None => request.body(Body::empty()),
        };
        self.send(request.expect("request")).await
    }

    /// GET `path` as `tenant` with `role`.
    pub(super) async fn get(&self, path: &str, tenant: &str, role: Role) -> Answer {
        self.call(Method::GET, path, Some(self.key(tenant, role)), None)
            .await
    }

    /// POST one structured-mode event as `tenant`'s publisher.
    pub(super) async fn publish(&self, tenant: &str, event: &Value) -> Answer {
        let body = serde_json::to_vec(event).unwrap();
        self.call(
            Method::POST,
            "/v1/events",
            Some(self.key(tenant, Role::Publish)),
            Some(("application/cloudevents+json", body)),
        )
        .await
    }

    /// POST a batch as `tenant`'s publisher.
    pub(super) async fn publish_batch(&self, tenant: &str, events: &[Value]) -> Answer {
        let body = serde_json::to_vec(events).unwrap();
        self.call(
            Method::POST,
            "/v1/events/batch",
            Some(self.key(tenant, Role::Publish)),
            Some(("application/cloudevents-batch+json", body)),
        )
        .await
    }

    /// The ids of `tenant`'s stored events, in log order (all pages).
    pub(super) async fn stored_ids(&self, tenant: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/events?limit=1000&cursor={c}"),
                None => "/v1/events?limit=1000".to_owned(),
            };
            let page = self.get(&path, tenant, Role::Read).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text);
            ids.extend(ids_of(&page.body["events"]));
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return ids,
            }
        }
    }
}

/// The bus settings of a test: its spool stays in `dir`, not the working directory.
pub(super) fn bus_config(dir: &tempfile::TempDir) -> BusConfig {
    BusConfig {
        spool_dir: dir.path().join("spool"),
        ..BusConfig::default()
    }
}

/// The `event.id` of each item of a history page's `events`.
pub(super) fn ids_of(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["event"]["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A fresh UUIDv7 event id.
pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A valid `auth.login.failed` for `user` from `ip`, without a tenant (the key's).
pub(super) fn login_failed(user: &str, ip: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": new_id(),
        "source": "idp/test",
        "type": "auth.login.failed",
        "subject": format!("user/{user}"),
        "data": {"user": user, "src_ip": ip, "reason": "bad_password"}
    })
}

/// `parent`'s child of type `auth.login.succeeded` (same correlation, caused by it).
pub(super) fn login_succeeded_after(parent: &Value, user: &str) -> Value {
    let parent_id = parent["id"].as_str().unwrap();
    let correlation = parent
        .get("correlationid")
        .and_then(Value::as_str)
        .unwrap_or(parent_id);
    json!({
        "specversion": "1.0",
        "id": new_id(),
        "source": "idp/test",
        "type": "auth.login.succeeded",
        "correlationid": correlation,
        "causationid": parent_id,
        "data": {"user": user, "src_ip": "203.0.113.9", "method": "password"}
    })
}

/// The samples of a Prometheus / OpenMetrics text: `name{labels}` to value.
pub(super) fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}
