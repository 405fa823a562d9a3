//! The REST router in process (`tower::ServiceExt::oneshot` on the axum
//! router over an embedded store), fed arbitrary request bodies, path
//! parameters and credentials on every route that reads a body: nothing
//! panics, nothing is a 500, and every refusal is a JSON error with a code
//! and a message.
//!
//! Input: `[route: u8][credentials: u8][param len: u8][param][body]`.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use smsgw_api::{
    ApiState,
    auth::{Auth, AuthConfig, jwt::KeySet},
    metrics::Metrics,
    router,
};
use smsgw_messaging::Messaging;
use tower::ServiceExt;

const ADMIN_KEY: &str = "fuzz-admin-key-0123456789";

struct Fixture {
    rt: tokio::runtime::Runtime,
    app: Router,
    bearer: String,
    app_id: String,
    user_id: String,
    _dir: tempfile::TempDir,
}

const ROUTES: [(&str, &str); 12] = [
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
];

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body.to_vec())
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let users: Arc<dyn smsgw_core::users::UserStore> = Arc::new(
            smsgw_store::EmbeddedUserStore::open(&dir.path().join("users.redb")).unwrap(),
        );
        let auth = Auth::new(
            AuthConfig::new(
                KeySet::single("fuzz", vec![42u8; 32]),
                Some(ADMIN_KEY.to_owned()),
            ),
            users.clone(),
        );
        let messages = smsgw_store::messages::EmbeddedMessageStore::open(
            &dir.path().join("messages.redb"),
            Default::default(),
        )
        .unwrap();
        let snapshot =
            smsgw_crds::compile_manifests(include_str!("../../examples/standalone.yaml"))
                .expect("the example compiles");
        let messaging = Messaging::builder(
            Arc::new(messages),
            users,
            Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
        )
        .build();
        let state = ApiState::new(Metrics::new(), auth, Arc::new(messaging));
        let app = router(state);
        let (bearer, app_id, user_id) = rt.block_on(async {
            let reg = serde_json::json!({"email": "f@example.com", "password": "long enough pw", "app_name": "f"});
            let (s, r) = call(
                &app,
                Request::post("/api/v1/auth/register")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(reg.to_string()))
                    .unwrap(),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED);
            let r: serde_json::Value = serde_json::from_slice(&r).unwrap();
            let login = serde_json::json!({"email": "f@example.com", "password": "long enough pw", "app_id": r["app_id"]});
            let (s, t) = call(
                &app,
                Request::post("/api/v1/auth/login")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(login.to_string()))
                    .unwrap(),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
            let t: serde_json::Value = serde_json::from_slice(&t).unwrap();
            (
                format!("Bearer {}", t["token"].as_str().unwrap()),
                r["app_id"].as_str().unwrap().to_owned(),
                r["user_id"].as_str().unwrap().to_owned(),
            )
        });
        Fixture {
            rt,
            app,
            bearer,
            app_id,
            user_id,
            _dir: dir,
        }
    })
}

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
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    req = match creds & 3 {
        0 => req
            .header(header::AUTHORIZATION, &f.bearer)
            .header("x-app-id", &f.app_id),
        1 => req.header("x-admin-key", ADMIN_KEY),
        2 => req.header(header::AUTHORIZATION, "Bearer e30.e30.AAAA"),
        _ => req,
    };
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
