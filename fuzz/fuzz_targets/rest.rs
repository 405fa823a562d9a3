//! The REST router in process (`tower::ServiceExt::oneshot` on the axum
//! router over an embedded store), fed arbitrary request bodies, path
//! parameters and credentials on every route that reads a body: nothing
//! panics, nothing is a 500, and every refusal is a JSON error with a code
//! and a message.
//!
//! Input: `[route: u8][credentials: u8][param len: u8][param][body]`.

#![no_main]

#[path = "api_fixture.rs"]
mod api_fixture;

use api_fixture::{call, fixture};
use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use libfuzzer_sys::fuzz_target;

const ROUTES: [(&str, &str); 17] = [
    ("POST", "/api/v1/sms/check-text-len"),
    ("POST", "/api/v1/sms/send"),
    ("PUT", "/api/v1/settings/webhook"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/register"),
    ("PATCH", "/api/v1/admin/users/{}"),
    ("POST", "/api/v1/admin/users/{}/admin"),
    ("POST", "/api/v1/admin/users/{}/reset-secret"),
    ("POST", "/api/v1/admin/links/{}/stop"),
    ("GET", "/api/v1/sms/{}"),
    ("GET", "/api/v1/sms?transaction_id={}"),
    ("POST", "/api/v1/settings/addresses"),
    ("DELETE", "/api/v1/settings/addresses/{}"),
    ("GET", "/api/v1/admin/addresses?status={}&page_token={}"),
    ("POST", "/api/v1/admin/addresses/{}/approve"),
    ("DELETE", "/api/v1/admin/addresses/{}"),
];

fuzz_target!(|data: &[u8]| {
    let [route, creds, plen, rest @ ..] = data else {
        return;
    };
    let plen = usize::from(*plen).min(rest.len());
    let (param, body) = rest.split_at(plen);
    let f = fixture();
    let (method, path) = ROUTES[usize::from(*route) % ROUTES.len()];
    let param = match creds >> 4 {
        0 => f.user_id.clone(),
        1 => "local-sim".to_owned(),
        _ => {
            // Only what a URI path or query may hold.
            let s: String = String::from_utf8_lossy(param)
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-._~".contains(*c))
                .collect();
            if s.is_empty() { "x".to_owned() } else { s }
        }
    };
    let uri = path.replace("{}", &param);
    let req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    let req = f.credentials(req, *creds);
    let req = req.body(Body::from(body.to_vec())).unwrap();
    let (status, out) = f.rt.block_on(call(&f.app, req));
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {path}: {}",
        String::from_utf8_lossy(&out)
    );
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "{status} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&out)
            )
        });
        assert!(v["error"]["code"].is_string(), "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
});
