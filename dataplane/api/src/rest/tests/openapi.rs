//! The OpenAPI document against the router and the real answers.

use super::*;
use axum::http::Method;
use std::collections::BTreeSet;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Every path template the router serves, read from axum's own route table
/// (its `Debug` output lists `RouteId(n): "<path>"` for each route of its
/// `path_router`, then the same for the `fallback_router`).
fn router_paths(app: &Router) -> BTreeSet<String> {
    let debug = format!("{app:?}");
    let start = debug
        .find("path_router:")
        .expect("Router Debug names its path_router");
    let end = debug
        .find("fallback_router:")
        .expect("Router Debug names its fallback_router");
    let mut paths = BTreeSet::new();
    let mut rest = &debug[start..end];
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + "RouteId(".len()..];
        let Some(close) = rest.find(')') else { break };
        if let Some(quoted) = rest[close..].strip_prefix("): \"")
            && let Some(end) = quoted.find('"')
        {
            paths.insert(quoted[..end].to_owned());
        }
    }
    paths
}

/// A concrete path for a template: every `{param}` becomes `probe`.
fn probe_uri(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("probe");
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

fn document() -> Value {
    serde_json::to_value(crate::openapi()).unwrap()
}

async fn status_of(app: &Router, method: &Method, uri: &str, creds: Option<(&str, &str)>) -> u16 {
    let mut req = axum::http::Request::builder()
        .method(method.clone())
        .uri(uri);
    if let Some((bearer, app_id)) = creds {
        req = req
            .header(header::AUTHORIZATION, bearer)
            .header("x-app-id", app_id)
            .header("x-admin-key", ADMIN_KEY);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Fails for a route (path and method) the router serves that the document
/// does not describe, for a documented one the router does not serve, and
/// for a documented security requirement the route does not enforce (or
/// enforces without saying so).
#[tokio::test]
async fn every_route_of_the_router_is_in_the_openapi_document_and_nothing_else() {
    let (_d, app, bearer, app_id) = user_app().await;
    let routed = router_paths(&app);
    assert!(
        routed.contains("/api/v1/sms/send") && routed.len() >= 20,
        "could not read the routes from axum's Router Debug output (did its format change?): {routed:?}"
    );
    let doc = document();
    let documented = doc["paths"].as_object().unwrap();
    let mut problems = Vec::new();
    for path in documented.keys() {
        if !routed.contains(path) {
            problems.push(format!("{path} is documented but not routed"));
        }
    }
    for path in &routed {
        let uri = probe_uri(path);
        for method in &METHODS {
            let m = method.as_str().to_ascii_lowercase();
            let op = &documented.get(path).unwrap_or(&Value::Null)[&m];
            let status = status_of(&app, method, &uri, Some((&bearer, &app_id))).await;
            let served = status != 405;
            match (served, op.is_object()) {
                (true, false) => problems.push(format!(
                    "{method} {path} is routed (answered {status}) but not in the OpenAPI document"
                )),
                (false, true) => {
                    problems.push(format!("{method} {path} is documented but answers 405"))
                }
                _ => {}
            }
            if !served || !op.is_object() {
                continue;
            }
            let secured = op["security"].as_array().is_some_and(|reqs| {
                reqs.iter()
                    .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
            });
            let anonymous = status_of(&app, method, &uri, None).await;
            if secured != (anonymous == 401) {
                problems.push(format!(
                    "{method} {path}: documented as {}, but answers {anonymous} without credentials",
                    if secured { "authenticated" } else { "public" }
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The document with `#/components/schemas/<name>` as its root schema, and
/// every object schema closed (`additionalProperties: false`) so a field
/// the handlers send but the document lacks is caught too. Schemas used in
/// an `allOf` (flattened structs) stay open.
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    let text = doc.to_string();
    let schemas = root["components"]["schemas"].as_object_mut().unwrap();
    for (n, s) in schemas.iter_mut() {
        let in_all_of = text.contains(&format!(
            "\"allOf\":[{{\"$ref\":\"#/components/schemas/{n}\""
        ));
        if s.get("properties").is_some() && s.get("additionalProperties").is_none() && !in_all_of {
            s["additionalProperties"] = json!(false);
        }
    }
    assert!(schemas.contains_key(name), "no schema {name}");
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    jsonschema::draft202012::new(&root).unwrap()
}

fn assert_matches(doc: &Value, name: &str, instance: &Value) {
    let v = validator(doc, name);
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not match {instance}:\n{}",
        errors.join("\n")
    );
}

async fn call(app: &Router, req: axum::http::request::Builder, body: Value) -> (StatusCode, Value) {
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let (s, v, _) = send(app, req.body(body).unwrap()).await;
    (s, v)
}

#[tokio::test]
async fn the_schemas_match_what_the_handlers_answer() {
    let (_d, app, bearer, app_id) = user_app().await;
    let doc = document();
    let user = |req: axum::http::request::Builder| {
        req.header(header::AUTHORIZATION, &bearer)
            .header("x-app-id", &app_id)
    };

    let (s, v) = call(&app, axum::http::Request::get("/healthy"), Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_matches(&doc, "HealthStatus", &v);

    let reg = json!({"email": "v@example.com", "password": "long enough pw", "app_name": "b"});
    let (s, v) = call(&app, post("/api/v1/auth/register"), reg).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_matches(&doc, "Registered", &v);

    let (s, v) = call(
        &app,
        user(post("/api/v1/sms/check-text-len")),
        json!({"message": "Привет"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_matches(&doc, "CheckTextLenResponse", &v);

    // An error naming its field, and a refused send counted for its campaign.
    let (s, v) = call(&app, user(post("/api/v1/sms/check-text-len")), json!({})).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("message"))
    );
    assert_matches(&doc, "ErrorBody", &v);
    let (s, v) = call(
        &app,
        user(post("/api/v1/sms/send")),
        json!({"esme": "nowhere", "source": "S", "destination": "+4915112345678", "message": "hi", "task_id": "spring"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_matches(&doc, "ErrorBody", &v);

    let (s, v) = call(
        &app,
        user(axum::http::Request::get("/dashboard/stats")),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_matches(&doc, "DashboardStats", &v);
    assert_eq!(v["top_campaigns"][0]["task_id"], "spring", "{v}");

    let admin = |req: axum::http::request::Builder| req.header("x-admin-key", ADMIN_KEY);
    let (s, v) = call(
        &app,
        admin(axum::http::Request::get("/api/v1/admin/users")),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_matches(&doc, "UserPage", &v);
    let (s, v) = call(
        &app,
        admin(axum::http::Request::get("/api/v1/admin/links")),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_matches(&doc, "LinkList", &v);
    let (s, v) = call(
        &app,
        admin(axum::http::Request::get("/api/v1/admin/stats")),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_matches(&doc, "StatsView", &v);

    // Answers that need a bound link, built as the handlers build them.
    let segment = crate::send::SegmentView {
        seq: 1,
        smsc_message_id: Some("0a1b".into()),
        submit_status: "accepted".into(),
        receipt_state: Some("DELIVRD".into()),
        error_code: None,
        reason: None,
        submitted_at_ms: Some(1),
        receipt_at_ms: None,
        resubmitted: true,
    };
    let sent = crate::send::SendResponse {
        success: true,
        esme: "default".into(),
        message_id: "m1".into(),
        transaction_id: "t1".into(),
        segments: 1,
        status: smsgw_core::messages::MessageStatus::Accepted,
        link: None,
        segment_info: vec![segment.clone()],
        duplicate: false,
    };
    assert_matches(&doc, "SendResponse", &serde_json::to_value(&sent).unwrap());
    let link = smsgw_core::links::LinkView {
        name: "l".into(),
        state: "bound".into(),
        sessions_bound: 1,
        sessions_total: 1,
        in_flight: 0,
        last_enquire_link_rtt_ms: Some(0.4),
        last_error: None,
        last_error_at_ms: None,
        submit_rate: 0.0,
        receipt_rate: 0.0,
        sessions: vec![smsgw_core::links::SessionView {
            index: 0,
            role: "transceiver".into(),
            state: "bound".into(),
            in_flight: 0,
            last_enquire_link_rtt_ms: None,
            pod: Some("smsgw-proxy-0".into()),
        }],
    };
    assert_matches(&doc, "LinkView", &serde_json::to_value(&link).unwrap());
    let event = crate::send::AppEvent::Status {
        app_id: "a".into(),
        message_id: "m1".into(),
        transaction_id: "t1".into(),
        status: smsgw_core::messages::MessageStatus::Delivered,
        at_ms: 2,
        possible_duplicate: true,
    };
    assert_matches(&doc, "AppEvent", &serde_json::to_value(&event).unwrap());
    let mo = crate::send::AppEvent::MobileOriginated {
        app_id: "a".into(),
        link: "l".into(),
        source: "4917".into(),
        destination: "4444".into(),
        message: String::new(),
        at_ms: 3,
        text_error: Some("national language 4 (bengali) shift tables are not supported".into()),
        undecoded_payload: Some("YWJj".into()),
        data_coding: 0,
        incomplete: true,
    };
    assert_matches(&doc, "AppEvent", &serde_json::to_value(&mo).unwrap());

    // And a wrong shape is caught (the check is not vacuous).
    let mut wrong = serde_json::to_value(&sent).unwrap();
    wrong["segments"] = json!("one");
    assert!(!validator(&doc, "SendResponse").is_valid(&wrong));
    wrong = serde_json::to_value(&sent).unwrap();
    wrong["surprise"] = json!(1);
    assert!(!validator(&doc, "SendResponse").is_valid(&wrong));
}

#[tokio::test]
async fn the_document_and_the_docs_page_are_served_without_credentials() {
    let (_d, s) = state(smsgw_crds::Snapshot::default(), None);
    let app = router(s);
    let resp = app
        .clone()
        .oneshot(
            axum::http::Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    assert_eq!(v, document());
    for scheme in ["bearer", "app_id", "admin_key"] {
        assert!(
            v["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
    let resp = app
        .oneshot(
            axum::http::Request::get("/docs")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&html).contains("data-url=\"api/v1/openapi.json\""));
}
