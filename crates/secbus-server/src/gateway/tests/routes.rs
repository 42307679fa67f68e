//! Every route and its errors, through the router.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::support::{Harness, ids_of, login_failed, login_succeeded_after, new_id};
use crate::gateway::ROUTES;
use crate::gateway::api_key::Role;

fn assert_error(answer: &super::support::Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.body["code"], code, "{}", answer.text);
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(
        answer.body.get("field").is_some(),
        "the error shape has field"
    );
}

#[tokio::test]
async fn a_structured_event_is_stored_with_the_callers_tenant() {
    let h = Harness::new().await;
    let event = login_failed("bob", "203.0.113.9");
    let answer = h.publish("acme", &event).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.body["id"], event["id"]);
    assert_eq!(answer.body["sequence"], 1);
    assert_eq!(answer.body["duplicate"], false);
    let page = h.get("/v1/events", "acme", Role::Read).await;
    assert_eq!(page.body["events"][0]["event"]["tenantid"], "acme");
    assert_eq!(page.body["events"][0]["event"]["data"], event["data"]);
    // The same id again is a duplicate: nothing new is stored.
    let again = h.publish("acme", &event).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(h.stored_ids("acme").await.len(), 1);
}

#[tokio::test]
async fn a_binary_mode_event_takes_its_attributes_from_ce_headers() {
    let h = Harness::new().await;
    let id = new_id();
    let request = Request::post("/v1/events")
        .header(
            "authorization",
            format!("Bearer {}", h.key("acme", Role::Publish)),
        )
        .header("ce-specversion", "1.0")
        .header("ce-id", &id)
        .header("ce-source", "idp/test")
        .header("ce-type", "auth.login.failed")
        .header("ce-subject", "user/bob%40acme")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"user":"bob","src_ip":"198.51.100.7","reason":"bad_password"}"#,
        ))
        .unwrap();
    let answer = h.send(request).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let page = h.get("/v1/events", "acme", Role::Read).await;
    let stored = &page.body["events"][0]["event"];
    assert_eq!(stored["id"], id.as_str());
    assert_eq!(
        stored["subject"], "user/bob@acme",
        "ce- values are percent-decoded"
    );
    assert_eq!(stored["data"]["src_ip"], "198.51.100.7");
}

#[tokio::test]
async fn each_bad_event_is_refused_with_its_code_and_nothing_is_stored() {
    let h = Harness::with(|c| c.limits.max_body_bytes = 4096).await;
    let good = login_failed("bob", "203.0.113.9");
    let mut no_source = good.clone();
    no_source.as_object_mut().unwrap().remove("source");
    let mut old_spec = good.clone();
    old_spec["specversion"] = json!("0.3");
    let mut unknown = good.clone();
    unknown["type"] = json!("auth.login.teleported");
    let mut bad_schema = good.clone();
    bad_schema["data"]["src_ip"] = json!(42);
    let mut secret = good.clone();
    secret["data"]["user_agent"] = json!("curl AKIAIOSFODNN7EXAMPLE");
    let mut bad_id = good.clone();
    bad_id["id"] = json!("");
    let mut huge = good.clone();
    huge["data"]["user_agent"] = json!("x".repeat(5000));
    let cases: [(&Value, StatusCode, &str, Option<&str>); 7] = [
        (
            &no_source,
            StatusCode::BAD_REQUEST,
            "missing_attribute",
            Some("source"),
        ),
        (
            &old_spec,
            StatusCode::BAD_REQUEST,
            "unsupported_specversion",
            Some("specversion"),
        ),
        (
            &unknown,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_event_type",
            None,
        ),
        (
            &bad_schema,
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_violation",
            None,
        ),
        (
            &secret,
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret_detected",
            None,
        ),
        (
            &bad_id,
            StatusCode::BAD_REQUEST,
            "invalid_attribute",
            Some("id"),
        ),
        (
            &huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            None,
        ),
    ];
    for (event, status, code, field) in cases {
        let answer = h.publish("acme", event).await;
        assert_error(&answer, status, code);
        if let Some(field) = field {
            assert_eq!(answer.body["field"], field, "{}", answer.text);
        }
    }
    let secret_answer = h.publish("acme", &secret).await;
    assert!(
        !secret_answer.text.contains("AKIAIOSFODNN7EXAMPLE"),
        "a refusal never echoes the secret: {}",
        secret_answer.text
    );
    let key = h.key("acme", Role::Publish).to_owned();
    let not_json = h
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            Some(("application/json", b"{nope".to_vec())),
        )
        .await;
    assert_error(&not_json, StatusCode::BAD_REQUEST, "malformed_json");
    let text = h
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            Some(("text/plain", b"hello".to_vec())),
        )
        .await;
    assert_error(
        &text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let mut other_tenant = good.clone();
    other_tenant["tenantid"] = json!("globex");
    assert_error(
        &h.publish("acme", &other_tenant).await,
        StatusCode::FORBIDDEN,
        "tenant_mismatch",
    );
    assert!(h.stored_ids("acme").await.is_empty());
    assert!(h.stored_ids("globex").await.is_empty());
    let metrics = h.call(Method::GET, "/metrics", None, None).await.text;
    for code in [
        "missing_attribute",
        "schema_violation",
        "secret_detected",
        "tenant_mismatch",
    ] {
        assert!(
            metrics.contains(&format!(
                "secbus_gateway_events_refused_total{{code=\"{code}\"}}"
            )),
            "refusals of {code} are counted:\n{metrics}"
        );
    }
}

/// Items that name their tenant are decoded from their own bytes, the others
/// through a JSON tree; both kinds pass the gate before the batch is stored.
#[tokio::test]
async fn batch_items_naming_the_callers_tenant_or_none_are_gated_alike() {
    let h = Harness::new().await;
    let mut events: Vec<Value> = (0..4)
        .map(|i| login_failed(&format!("w{i}"), "203.0.113.9"))
        .collect();
    for e in events.iter_mut().step_by(2) {
        e["tenantid"] = json!("acme");
    }
    let ok = h.publish_batch("acme", &events).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    let stored = h.stored_ids("acme").await;
    let sent: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, sent);

    let mut bad: Vec<Value> = (0..4)
        .map(|i| login_failed(&format!("x{i}"), "203.0.113.9"))
        .collect();
    bad[0]["tenantid"] = json!("acme");
    bad[0]["data"]["user_agent"] = json!("curl AKIAIOSFODNN7EXAMPLE");
    bad[1]["data"]["user_agent"] = json!("curl AKIAIOSFODNN7EXAMPLE");
    bad[2]["tenantid"] = json!("acme");
    bad[2]["data"]["src_ip"] = json!(42);
    bad[3]["tenantid"] = json!("acme");
    bad[3]["id"] = json!("");
    let refused = h.publish_batch("acme", &bad).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let codes: Vec<(u64, &str)> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            (0, "secret_detected"),
            (1, "secret_detected"),
            (2, "schema_violation"),
            (3, "invalid_attribute"),
        ],
        "{}",
        refused.text
    );
    assert!(!refused.text.contains("AKIAIOSFODNN7EXAMPLE"));
    assert_eq!(h.stored_ids("acme").await, stored);
}

#[tokio::test]
async fn a_batch_is_stored_whole_or_refused_whole_with_every_bad_item_named() {
    let h = Harness::with(|c| {
        c.limits.batch_max_events = 3;
        c.rate_limit.burst = 100.0;
    })
    .await;
    let events: Vec<Value> = (0..3)
        .map(|i| login_failed(&format!("u{i}"), "203.0.113.9"))
        .collect();
    let ok = h.publish_batch("acme", &events).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    let results = ok.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (r, e) in results.iter().zip(&events) {
        assert_eq!(r["id"], e["id"]);
    }
    assert_eq!(results[2]["sequence"], 3);

    let mut bad: Vec<Value> = (0..3)
        .map(|i| login_failed(&format!("v{i}"), "203.0.113.9"))
        .collect();
    bad[1]["data"]["src_ip"] = json!(false);
    bad[2]["tenantid"] = json!("globex");
    let refused = h.publish_batch("acme", &bad).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let errors = refused.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{}", refused.text);
    assert_eq!(
        (errors[0]["index"].as_u64(), errors[0]["code"].as_str()),
        (Some(1), Some("schema_violation"))
    );
    assert_eq!(
        (errors[1]["index"].as_u64(), errors[1]["code"].as_str()),
        (Some(2), Some("tenant_mismatch"))
    );
    assert_eq!(
        h.stored_ids("acme").await.len(),
        3,
        "nothing of the refused batch is stored"
    );

    let four: Vec<Value> = (0..4)
        .map(|i| login_failed(&format!("w{i}"), "203.0.113.9"))
        .collect();
    assert_error(
        &h.publish_batch("acme", &four).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
    );
    assert_error(
        &h.publish_batch("acme", &[]).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    let key = h.key("acme", Role::Publish).to_owned();
    let object = h
        .call(
            Method::POST,
            "/v1/events/batch",
            Some(&key),
            Some(("application/cloudevents-batch+json", b"{}".to_vec())),
        )
        .await;
    assert_error(&object, StatusCode::BAD_REQUEST, "malformed_json");
    let wrong_media = h
        .call(
            Method::POST,
            "/v1/events/batch",
            Some(&key),
            Some(("application/cloudevents+json", b"[]".to_vec())),
        )
        .await;
    assert_error(
        &wrong_media,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_eq!(h.stored_ids("acme").await.len(), 3);
}

#[tokio::test]
async fn a_batch_over_the_byte_limit_is_refused() {
    let h = Harness::with(|c| c.limits.batch_max_bytes = 2048).await;
    let events: Vec<Value> = (0..20)
        .map(|i| login_failed(&format!("u{i}"), "203.0.113.9"))
        .collect();
    assert_error(
        &h.publish_batch("acme", &events).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert!(h.stored_ids("acme").await.is_empty());
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let h = Harness::with(|c| {
        c.limits.batch_max_events = 2;
        c.rate_limit.events_per_second = 0.5;
        c.rate_limit.burst = 2.0;
    })
    .await;
    for i in 0..2 {
        let a = h
            .publish("acme", &login_failed(&format!("u{i}"), "203.0.113.9"))
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
    }
    let limited = h.publish("acme", &login_failed("u2", "203.0.113.9")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    // The bucket is per tenant.
    let other = h
        .publish("globex", &login_failed("g0", "203.0.113.9"))
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text);
    assert_eq!(h.stored_ids("acme").await.len(), 2);
}

#[tokio::test]
async fn history_filters_by_type_subject_correlation_and_time_and_pages_without_gaps() {
    let h = Harness::with(|c| c.rate_limit.events_per_second = 0.0).await;
    let root = login_failed("bob", "203.0.113.9");
    let mut sent = vec![root.clone()];
    for i in 0..6 {
        let mut e = login_failed(if i % 2 == 0 { "bob" } else { "eve" }, "203.0.113.9");
        e["time"] = json!(format!("2026-01-01T00:00:0{i}Z"));
        sent.push(e);
    }
    let child = login_succeeded_after(&root, "bob");
    sent.push(child.clone());
    for e in &sent {
        assert_eq!(h.publish("acme", e).await.status, StatusCode::ACCEPTED);
    }
    let all_ids: Vec<String> = sent
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(h.stored_ids("acme").await, all_ids);

    let ids = |a: super::support::Answer| ids_of(&a.body["events"]);
    let succeeded = h
        .get("/v1/events?type=auth.login.succeeded", "acme", Role::Read)
        .await;
    assert_eq!(ids(succeeded), vec![all_ids[7].clone()]);
    let auth_all = h.get("/v1/events?type=auth.%3E", "acme", Role::Read).await;
    assert_eq!(ids(auth_all).len(), 8);
    let star = h
        .get("/v1/events?type=auth.*.failed", "acme", Role::Read)
        .await;
    assert_eq!(ids(star).len(), 7);
    let eve = h
        .get("/v1/events?subject=user/eve", "acme", Role::Read)
        .await;
    assert_eq!(
        ids(eve),
        vec![all_ids[2].clone(), all_ids[4].clone(), all_ids[6].clone()]
    );
    let story = h
        .get(
            &format!("/v1/events?correlationid={}", all_ids[0]),
            "acme",
            Role::Read,
        )
        .await;
    assert_eq!(ids(story), vec![all_ids[0].clone(), all_ids[7].clone()]);
    let window = h
        .get(
            "/v1/events?since=2026-01-01T00:00:01Z&until=2026-01-01T00:00:03Z",
            "acme",
            Role::Read,
        )
        .await;
    assert_eq!(
        ids(window),
        all_ids[2..5].to_vec(),
        "since and until are inclusive"
    );

    let mut paged = Vec::new();
    let mut path = "/v1/events?limit=3".to_owned();
    loop {
        let page = h.get(&path, "acme", Role::Read).await;
        let got = ids_of(&page.body["events"]);
        assert!(got.len() <= 3);
        paged.extend(got);
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/events?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, all_ids, "pages neither skip nor repeat");

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=zzz", "cursor"),
        ("since=yesterday", "since"),
        ("type=Auth..x", "type"),
    ] {
        let bad = h
            .get(&format!("/v1/events?{query}"), "acme", Role::Read)
            .await;
        assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_query");
        assert_eq!(bad.body["field"], field, "{query}: {}", bad.text);
    }
    let unknown = h.get("/v1/events?colour=red", "acme", Role::Read).await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn a_correlation_comes_back_in_order_with_its_causation_tree() {
    let h = Harness::new().await;
    let root = login_failed("bob", "203.0.113.9");
    let second = {
        let mut e = login_failed("bob", "203.0.113.9");
        e["correlationid"] = root["id"].clone();
        e["causationid"] = root["id"].clone();
        e
    };
    let third = login_succeeded_after(&second, "bob");
    let unrelated = login_failed("eve", "198.51.100.1");
    for e in [&root, &second, &third, &unrelated] {
        assert_eq!(h.publish("acme", e).await.status, StatusCode::ACCEPTED);
    }
    let path = format!("/v1/correlations/{}", root["id"].as_str().unwrap());
    let answer = h.get(&path, "acme", Role::Read).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        ids_of(&answer.body["events"]),
        [&root, &second, &third].map(|e| e["id"].as_str().unwrap().to_owned())
    );
    let tree = &answer.body["tree"];
    assert_eq!(tree.as_array().unwrap().len(), 1, "one root: {tree}");
    assert_eq!(tree[0]["id"], root["id"]);
    assert_eq!(tree[0]["children"][0]["id"], second["id"]);
    assert_eq!(tree[0]["children"][0]["children"][0]["id"], third["id"]);
    assert_eq!(
        tree[0]["children"][0]["children"][0]["type"],
        "auth.login.succeeded"
    );
    let missing = h
        .get(
            &format!("/v1/correlations/{}", new_id()),
            "acme",
            Role::Read,
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
}

/// Makes a dead letter of one new `tenant` event: a group terminates it.
pub(super) async fn dead_letter(h: &Harness, tenant: &str, group: &str) -> (String, String) {
    use secbus::{StartAt, SubscribeOptions, Subscriber, TenantId};
    let t = TenantId::new(tenant).unwrap();
    let mut group = h
        .bus
        .subscribe(SubscribeOptions::group(t.clone(), group).start(StartAt::New))
        .await
        .unwrap();
    let event = login_failed("mallory", "192.0.2.66");
    assert_eq!(h.publish(tenant, &event).await.status, StatusCode::ACCEPTED);
    let delivery = group.next().await.unwrap().unwrap();
    assert_eq!(delivery.event().id.as_str(), event["id"].as_str().unwrap());
    delivery.term("not parseable by triage").await.unwrap();
    let dl = h.bus.dead_letters(&t, 100).await.unwrap();
    let made = dl
        .iter()
        .find(|d| d.event.id.as_str() == event["id"])
        .expect("a dead letter");
    (made.id.clone(), event["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn dead_letters_are_listed_redriven_and_deleted_by_an_admin() {
    let h = Harness::new().await;
    let (dl_id, event_id) = dead_letter(&h, "acme", "triage").await;
    let list = h.get("/v1/dlq", "acme", Role::Admin).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let items = list.body["dead_letters"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], dl_id.as_str());
    assert_eq!(items[0]["event"]["id"], event_id.as_str());
    assert_eq!(items[0]["reason"], "terminated");
    assert_eq!(items[0]["group"], "triage");
    assert_error(
        &h.get("/v1/dlq?limit=0", "acme", Role::Admin).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );

    let admin = h.key("acme", Role::Admin).to_owned();
    let redrive = h
        .call(
            Method::POST,
            &format!("/v1/dlq/{dl_id}/redrive"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(redrive.status, StatusCode::ACCEPTED, "{}", redrive.text);
    assert_eq!(redrive.body["id"], event_id.as_str());
    let again = h
        .call(
            Method::POST,
            &format!("/v1/dlq/{dl_id}/redrive"),
            Some(&admin),
            None,
        )
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");

    let (second, _) = dead_letter(&h, "acme", "enrichment").await;
    let deleted = h
        .call(
            Method::DELETE,
            &format!("/v1/dlq/{second}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    let gone = h
        .call(
            Method::DELETE,
            &format!("/v1/dlq/{second}"),
            Some(&admin),
            None,
        )
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
    let list = h.get("/v1/dlq", "acme", Role::Admin).await;
    assert_eq!(
        list.body["dead_letters"].as_array().unwrap().len(),
        0,
        "{}",
        list.text
    );
}

#[tokio::test]
async fn health_readiness_unknown_routes_and_metrics() {
    let h = Harness::new().await;
    let health = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_error(
        &h.call(Method::GET, "/v2/nothing", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    assert_eq!(
        h.publish("acme", &login_failed("bob", "203.0.113.9"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    dead_letter(&h, "acme", "triage").await;
    let metrics = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let samples = super::support::parse_metrics(&metrics.text);
    let sample = |name: &str, labels: &str| {
        samples
            .get(&format!("{name}{labels}"))
            .copied()
            .unwrap_or_else(|| panic!("{name}{labels} missing in\n{}", metrics.text))
    };
    assert_eq!(
        sample(
            "secbus_gateway_events_accepted_total",
            r#"{tenant="acme",type="auth.login.failed"}"#
        ),
        2.0
    );
    assert_eq!(sample("secbus_gateway_publish_seconds_count", ""), 2.0);
    assert_eq!(sample("secbus_dead_letters", r#"{tenant="acme"}"#), 1.0);
    assert_eq!(sample("secbus_dead_letters", r#"{tenant="globex"}"#), 0.0);

    h.bus.close().await.unwrap();
    let closed = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        closed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        closed.text
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let h = Harness::new().await;
    let doc = h.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for route in ROUTES {
        let op = &doc.body["paths"][route.path][route.method];
        assert_eq!(
            op["operationId"], route.operation_id,
            "{} {}",
            route.method, route.path
        );
        assert!(
            op["responses"].get(route.success.0.to_string()).is_some(),
            "{}",
            route.path
        );
        if route.role.is_some() {
            assert!(
                op["responses"].get("401").is_some(),
                "{} documents 401",
                route.path
            );
        }
    }
    let paths = doc.body["paths"].as_object().unwrap();
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(operations, ROUTES.len());
}

#[tokio::test]
async fn a_202_on_the_embedded_engine_means_stored_on_disk() {
    let h = Harness::on("embedded:{dir}/bus", |_| {}).await;
    let one = login_failed("bob", "203.0.113.9");
    let answer = h.publish("acme", &one).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let batch: Vec<Value> = (0..5)
        .map(|i| login_failed(&format!("u{i}"), "203.0.113.9"))
        .collect();
    let answer = h.publish_batch("acme", &batch).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let sequences: Vec<u64> = answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [2, 3, 4, 5, 6]);
    h.bus.close().await.unwrap();

    // A fresh process on the same folder reads back exactly what got a 202.
    let url = format!("embedded:{}/bus", h.dir().display());
    let reopened = secbus::Bus::connect(&url).await.unwrap();
    let page = reopened
        .history(&secbus::HistoryQuery::new(
            secbus::TenantId::new("acme").unwrap(),
        ))
        .await
        .unwrap();
    let stored: Vec<&str> = page.events.iter().map(|(_, e)| e.id.as_str()).collect();
    let sent: Vec<&str> = std::iter::once(&one)
        .chain(&batch)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(stored, sent);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn every_code_has_one_status_and_the_document_names_only_known_codes() {
    use crate::gateway::error::{CODES, status_of};
    let expected = [
        ("unauthorized", 401),
        ("forbidden", 403),
        ("tenant_mismatch", 403),
        ("not_found", 404),
        ("payload_too_large", 413),
        ("batch_too_large", 413),
        ("event_too_large", 413),
        ("unsupported_media_type", 415),
        ("rate_limited", 429),
        ("schema_violation", 422),
        ("unknown_event_type", 422),
        ("secret_detected", 422),
        ("malformed_json", 400),
        ("invalid_query", 400),
        ("engine_unavailable", 503),
        ("unsupported", 501),
        ("engine_error", 500),
    ];
    for (code, status) in expected {
        assert!(CODES.contains(&code), "{code} is documented");
        assert_eq!(status_of(code).as_u16(), status, "{code}");
    }
    for route in ROUTES {
        for code in route.errors {
            assert!(
                CODES.contains(code),
                "{} answers {code}, not in CODES",
                route.path
            );
            assert!(
                !status_of(code).is_server_error() || *code == "engine_unavailable",
                "{} lists {code}, which maps to {}",
                route.path,
                status_of(code)
            );
        }
    }
    let h = Harness::new().await;
    let doc = h
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await
        .body;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().unwrap() {
            assert!(["get", "post", "delete"].contains(&method.as_str()));
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()));
            for (status, response) in op["responses"].as_object().unwrap() {
                assert!(status.parse::<u16>().is_ok(), "{path} {status}");
                assert!(response["description"].is_string(), "{path} {status}");
            }
            for requirement in op["security"].as_array().unwrap() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{path}: scheme {name}");
                }
            }
            for p in op["parameters"].as_array().unwrap() {
                if p["in"] == "path" {
                    assert!(path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())));
                }
            }
        }
    }
    // An error answer has exactly the shape the document describes.
    let answer = h.get("/v1/events?limit=0", "acme", Role::Read).await;
    let required = doc["components"]["schemas"]["Error"]["required"]
        .as_array()
        .unwrap();
    for key in required {
        assert!(answer.body.get(key.as_str().unwrap()).is_some(), "{key}");
    }
    let codes = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.contains(&answer.body["code"]));
}

#[tokio::test]
async fn a_full_batch_at_the_default_limits_passes_and_one_more_event_does_not() {
    let h = Harness::new().await;
    // Past axum's own 2 MB default, under the gateway's 4 MiB.
    let command_line = format!(
        "powershell.exe -File {}",
        "C:\\tools\\report.ps1 ".repeat(150)
    );
    let events: Vec<Value> = (0..1000)
        .map(|i| {
            json!({
                "specversion": "1.0",
                "id": new_id(),
                "source": "edr/test",
                "type": "endpoint.process.created",
                "data": {"host": format!("ws-{i}"), "os": "windows",
                         "image": "C:\\Windows\\powershell.exe", "command_line": command_line}
            })
        })
        .collect();
    let bytes = serde_json::to_vec(&events).unwrap().len();
    assert!(bytes > 3 << 20 && bytes < 4 << 20, "{bytes} bytes");
    let answer = h.publish_batch("acme", &events).await;
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "{}",
        &answer.text[..answer.text.len().min(600)]
    );
    assert_eq!(answer.body["results"].as_array().unwrap().len(), 1000);
    let mut over = events[..1].to_vec();
    over.extend((0..1000).map(|i| login_failed(&format!("v{i}"), "203.0.113.9")));
    let refused = h.publish_batch("acme", &over).await;
    assert_error(&refused, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    assert_eq!(h.stored_ids("acme").await.len(), 1000);
}

#[tokio::test]
async fn a_wrong_method_or_an_undecodable_path_gets_the_one_error_shape() {
    let h = Harness::new().await;
    for (method, path) in [
        (Method::PUT, "/v1/events"),
        (Method::DELETE, "/v1/events/batch"),
        (Method::POST, "/healthz"),
    ] {
        let answer = h.call(method.clone(), path, None, None).await;
        assert_error(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
    }
    let read = h.key("acme", Role::Read).to_owned();
    let admin = h.key("acme", Role::Admin).to_owned();
    for (method, path, key) in [
        (Method::GET, "/v1/correlations/%FF%FE", &read),
        (Method::POST, "/v1/dlq/%FF/redrive", &admin),
        (Method::DELETE, "/v1/dlq/%FF", &admin),
    ] {
        let answer = h.call(method, path, Some(key), None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    // Without a key the same paths answer 401 first.
    let answer = h
        .call(Method::GET, "/v1/correlations/%FF", None, None)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn every_answer_follows_the_schema_the_document_gives_it() {
    let h = Harness::new().await;
    let doc = h
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await
        .body;
    let follows = |schema: &str, body: &Value| {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{schema}"),
            "components": doc["components"],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("{schema} is not a valid schema: {e}"));
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{schema}: {errors:?}\n{body}");
    };
    let root = login_failed("bob", "203.0.113.9");
    let mut answers: Vec<(&str, super::support::Answer)> = vec![
        ("publishEvent", h.publish("acme", &root).await),
        (
            "publishBatch",
            h.publish_batch("acme", &[login_succeeded_after(&root, "bob")])
                .await,
        ),
    ];
    let (dl_id, _) = dead_letter(&h, "acme", "triage").await;
    let admin = h.key("acme", Role::Admin).to_owned();
    answers.push(("listEvents", h.get("/v1/events", "acme", Role::Read).await));
    let correlation = format!("/v1/correlations/{}", root["id"].as_str().unwrap());
    answers.push((
        "getCorrelation",
        h.get(&correlation, "acme", Role::Read).await,
    ));
    answers.push((
        "listDeadLetters",
        h.get("/v1/dlq", "acme", Role::Admin).await,
    ));
    let redrive = format!("/v1/dlq/{dl_id}/redrive");
    answers.push((
        "redriveDeadLetter",
        h.call(Method::POST, &redrive, Some(&admin), None).await,
    ));
    answers.push(("healthz", h.call(Method::GET, "/healthz", None, None).await));
    answers.push(("readyz", h.call(Method::GET, "/readyz", None, None).await));
    let mut checked = 0;
    for route in ROUTES {
        let Some(schema) = route.response else {
            continue;
        };
        let (_, answer) = answers
            .iter()
            .find(|(op, _)| *op == route.operation_id)
            .unwrap_or_else(|| panic!("no answer of {} to check", route.operation_id));
        assert_eq!(answer.status.as_u16(), route.success.0, "{}", answer.text);
        follows(schema, &answer.body);
        checked += 1;
    }
    assert_eq!(checked, answers.len());
    assert!(
        !answers[2].1.body["events"].as_array().unwrap().is_empty(),
        "the checked history is not empty"
    );

    let mut bad = vec![login_failed("eve", "203.0.113.9"); 2];
    bad[1]["data"]["src_ip"] = json!(1);
    let refusal = h.publish_batch("acme", &bad).await;
    assert_eq!(refusal.status, StatusCode::UNPROCESSABLE_ENTITY);
    follows("Error", &refusal.body);
    follows(
        "Error",
        &h.get("/v1/events?limit=0", "acme", Role::Read).await.body,
    );
}
