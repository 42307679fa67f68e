//! Who may do what: every route, for no key, an unknown key, and each tenant's
//! key of each role; and a tenant never sees another's events.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::routes::dead_letter;
use super::support::{Harness, ROLES, TENANTS, login_failed, login_succeeded_after};
use crate::gateway::ROUTES;
use crate::gateway::api_key::Role;

/// A request body that is valid for the route, if it takes one.
fn body_for(path: &str) -> Option<(&'static str, Vec<u8>)> {
    match path {
        "/v1/events" => Some((
            "application/cloudevents+json",
            serde_json::to_vec(&login_failed("bob", "203.0.113.9")).unwrap(),
        )),
        "/v1/events/batch" => Some((
            "application/cloudevents-batch+json",
            serde_json::to_vec(&json!([login_failed("bob", "203.0.113.9")])).unwrap(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn every_route_checks_the_key_and_the_role() {
    let h = Harness::with(|c| c.rate_limit.events_per_second = 0.0).await;
    let mut checked = 0;
    for route in ROUTES {
        let method: Method = route.method.to_uppercase().parse().unwrap();
        let path = route
            .path
            .replace("{correlationid}", &super::support::new_id())
            .replace("{id}", &super::support::new_id());
        let Some(needed) = route.role else {
            let open = h.call(method.clone(), &path, None, None).await;
            assert_eq!(open.status.as_u16(), route.success.0, "{path} needs no key");
            continue;
        };
        if path == "/v1/stream" {
            // Streams answer 200 and never end: their auth is checked in
            // stream_socket, over a socket.
            continue;
        }
        for key in [None, Some("sbk_not-a-configured-key")] {
            let answer = h
                .call(method.clone(), &path, key, body_for(route.path))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} key {key:?}"
            );
            assert_eq!(answer.body["code"], "unauthorized");
        }
        for tenant in TENANTS {
            for role in ROLES {
                let key = h.key(tenant, role).to_owned();
                let answer = h
                    .call(method.clone(), &path, Some(&key), body_for(route.path))
                    .await;
                let allowed = role == needed || role == Role::Admin;
                if allowed {
                    assert!(
                        answer.status != StatusCode::UNAUTHORIZED
                            && answer.status != StatusCode::FORBIDDEN,
                        "{tenant}/{} may {method} {path}: {} {}",
                        role.name(),
                        answer.status,
                        answer.text
                    );
                } else {
                    assert_eq!(
                        answer.status,
                        StatusCode::FORBIDDEN,
                        "{tenant}/{} may not {method} {path}: {}",
                        role.name(),
                        answer.text
                    );
                    assert_eq!(answer.body["code"], "forbidden");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked,
        6 * 7,
        "six keys over every keyed route but the stream"
    );
}

#[tokio::test]
async fn a_key_also_works_as_x_api_key_and_not_in_the_query_outside_the_stream() {
    let h = Harness::new().await;
    let key = h.key("acme", Role::Read).to_owned();
    let request = axum::http::Request::get("/v1/events")
        .header("x-api-key", &key)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(h.send(request).await.status, StatusCode::OK);
    let in_query = h
        .call(
            Method::GET,
            &format!("/v1/events?api_key={key}"),
            None,
            None,
        )
        .await;
    assert_eq!(in_query.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn one_tenant_never_sees_or_touches_anothers_events() {
    let h = Harness::new().await;
    let root = login_failed("bob", "203.0.113.9");
    let child = login_succeeded_after(&root, "bob");
    for e in [&root, &child] {
        assert_eq!(h.publish("acme", e).await.status, StatusCode::ACCEPTED);
    }
    let (dl_id, _) = dead_letter(&h, "acme", "triage").await;
    let root_id = root["id"].as_str().unwrap();

    // Publishing as acme with globex in the body is refused, not rerouted.
    let mut forged = login_failed("bob", "203.0.113.9");
    forged["tenantid"] = json!("globex");
    assert_eq!(
        h.publish("acme", &forged).await.body["code"],
        "tenant_mismatch"
    );

    assert!(h.stored_ids("globex").await.is_empty());
    let corr = h
        .get(&format!("/v1/correlations/{root_id}"), "globex", Role::Read)
        .await;
    assert_eq!(corr.status, StatusCode::NOT_FOUND, "as if it did not exist");
    let by_corr = h
        .get(
            &format!("/v1/events?correlationid={root_id}"),
            "globex",
            Role::Read,
        )
        .await;
    assert_eq!(by_corr.body["events"].as_array().unwrap().len(), 0);
    let dlq = h.get("/v1/dlq", "globex", Role::Admin).await;
    assert_eq!(dlq.body["dead_letters"].as_array().unwrap().len(), 0);
    let globex_admin = h.key("globex", Role::Admin).to_owned();
    for (method, path) in [
        (Method::POST, format!("/v1/dlq/{dl_id}/redrive")),
        (Method::DELETE, format!("/v1/dlq/{dl_id}")),
    ] {
        let answer = h.call(method, &path, Some(&globex_admin), None).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.text
        );
    }
    // Acme still has all of it.
    assert_eq!(h.stored_ids("acme").await.len(), 3);
    assert_eq!(
        h.get("/v1/dlq", "acme", Role::Admin).await.body["dead_letters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_body_naming_another_tenant_is_refused_in_every_mode_for_every_publishing_key() {
    let h = Harness::with(|c| c.rate_limit.events_per_second = 0.0).await;
    let mut checked = 0;
    for tenant in TENANTS {
        let other = TENANTS.iter().find(|t| **t != tenant).unwrap();
        for role in [Role::Publish, Role::Admin] {
            let key = h.key(tenant, role).to_owned();
            let mut forged = login_failed("bob", "203.0.113.9");
            forged["tenantid"] = json!(other);
            let structured = h
                .call(
                    Method::POST,
                    "/v1/events",
                    Some(&key),
                    Some((
                        "application/cloudevents+json",
                        serde_json::to_vec(&forged).unwrap(),
                    )),
                )
                .await;
            let batch = h
                .call(
                    Method::POST,
                    "/v1/events/batch",
                    Some(&key),
                    Some((
                        "application/cloudevents-batch+json",
                        serde_json::to_vec(&json!([login_failed("ok", "203.0.113.9"), forged]))
                            .unwrap(),
                    )),
                )
                .await;
            let binary = axum::http::Request::post("/v1/events")
                .header("authorization", format!("Bearer {key}"))
                .header("ce-specversion", "1.0")
                .header("ce-id", super::support::new_id())
                .header("ce-source", "idp/test")
                .header("ce-type", "auth.login.failed")
                .header("ce-tenantid", *other)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    r#"{"user":"bob","src_ip":"198.51.100.7","reason":"bad_password"}"#,
                ))
                .unwrap();
            let binary = h.send(binary).await;
            for (mode, answer) in [
                ("structured", structured),
                ("batch", batch),
                ("binary", binary),
            ] {
                assert_eq!(
                    (answer.status, answer.body["code"].as_str()),
                    (StatusCode::FORBIDDEN, Some("tenant_mismatch")),
                    "{tenant}/{} {mode}: {}",
                    role.name(),
                    answer.text
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 3);
    for tenant in TENANTS {
        assert!(
            h.stored_ids(tenant).await.is_empty(),
            "{tenant} stored nothing"
        );
    }
}
