//! The API state the in-process targets (`rest`, `grpc`) share: an
//! embedded user and message store in a temporary directory, the
//! standalone example's configuration, an admin key, and one registered
//! user with a token, built once per process.

// Each target uses its own part of the fixture.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt;
use smsgw_api::{
    ApiState,
    auth::{Auth, AuthConfig, jwt::KeySet},
    metrics::Metrics,
    router,
};
use smsgw_messaging::Messaging;
use tower::ServiceExt;

/// The admin key the fixture accepts.
pub const ADMIN_KEY: &str = "fuzz-admin-key-0123456789";

/// The shared state, the REST router over it, and the registered user.
pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    pub app: Router,
    pub state: ApiState,
    pub bearer: String,
    pub app_id: String,
    pub user_id: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// `req` with the credentials `sel & 3` picks: 0 the user's token and
    /// app id, 1 the admin key, 2 a forged token, 3 none.
    pub fn credentials(
        &self,
        req: axum::http::request::Builder,
        sel: u8,
    ) -> axum::http::request::Builder {
        match sel & 3 {
            0 => req
                .header(header::AUTHORIZATION, &self.bearer)
                .header("x-app-id", &self.app_id),
            1 => req.header("x-admin-key", ADMIN_KEY),
            2 => req.header(header::AUTHORIZATION, "Bearer e30.e30.AAAA"),
            _ => req,
        }
    }
}

/// One REST request through the router: its status and body.
pub async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body.to_vec())
}

/// The process-wide fixture, built on first use.
pub fn fixture() -> &'static Fixture {
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
        let app = router(state.clone());
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
            state,
            bearer,
            app_id,
            user_id,
            _dir: dir,
        }
    })
}
