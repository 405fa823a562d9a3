//! REST API on axum.

use crate::admin::{self, UserPage, UserUpdate, UserView};
use crate::auth::{Caller, IssuedToken, Registered};
use crate::metrics::{HttpLabels, RouteLabels};
use crate::text::{CheckTextLenRequest, CheckTextLenResponse, check_text_len};
use crate::{ApiError, ApiState, MAX_BODY_BYTES};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query,
    Request, State,
};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The REST router: public `/healthy`, `/ready`, `/metrics` and `/api/v1/auth/*`;
/// `/api/v1/admin/*` for admins (admin key or admin user); every other
/// `/api/v1` route for authenticated users.
pub fn router(state: ApiState) -> Router {
    let public = Router::new()
        .route("/healthy", get(healthy))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/token", post(token));
    let user = Router::new()
        .route("/api/v1/sms/check-text-len", post(check_text_len_handler))
        .route("/api/v1/sms/send", post(send_handler))
        .route("/api/v1/sms", get(sms_by_transaction))
        .route("/api/v1/sms/{message_id}", get(sms_info))
        .route("/api/v1/settings/webhook", axum::routing::put(set_webhook))
        .route("/api/v1/smpp/links", get(list_links))
        .route("/api/v1/smpp/links/{name}", get(get_link))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_user));
    let admin = Router::new()
        .route("/api/v1/admin/users", get(list_users))
        .route(
            "/api/v1/admin/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/api/v1/admin/users/{id}/admin", post(set_admin))
        .route("/api/v1/admin/users/{id}/reset-secret", post(reset_secret))
        .route("/api/v1/admin/config", get(config))
        .route("/api/v1/admin/links", get(list_links))
        .route("/api/v1/admin/stats", get(admin_stats))
        .route("/api/v1/admin/links/{name}/{action}", post(control_link))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .merge(public)
        .merge(user)
        .merge(admin)
        .fallback(|req: Request| async move {
            ApiError::NoRoute(format!("{} {}", req.method(), req.uri().path()))
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        // JsonBody enforces MAX_BODY_BYTES itself (see read_body).
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn require_user(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state.auth.authenticate(req.headers())?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

async fn require_admin(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state.auth.authenticate_admin(req.headers()).await?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

async fn healthy() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// 200 once a configuration is in force, 503 before (a gateway waiting
/// for its first snapshot).
async fn ready(State(state): State<ApiState>) -> Response {
    if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "waiting for a configuration snapshot" })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn check_text_len_handler(
    State(state): State<ApiState>,
    JsonBody(req): JsonBody<CheckTextLenRequest>,
) -> Result<Json<CheckTextLenResponse>, ApiError> {
    let resp = check_text_len(
        &state.config.load(),
        req.message.as_deref(),
        req.esme.as_deref(),
    )?;
    state.metrics.observe_encoding(&resp.encoding);
    Ok(Json(resp))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: Option<String>,
    password: Option<String>,
    app_name: Option<String>,
}

fn required<'a>(v: &'a Option<String>, field: &'static str) -> Result<&'a str, ApiError> {
    v.as_deref().ok_or(ApiError::InvalidField {
        field,
        reason: "is required".into(),
    })
}

async fn register(
    State(state): State<ApiState>,
    JsonBody(b): JsonBody<RegisterBody>,
) -> Result<(axum::http::StatusCode, Json<Registered>), ApiError> {
    let r = state
        .auth
        .register(
            required(&b.email, "email")?,
            required(&b.password, "password")?,
            required(&b.app_name, "app_name")?,
        )
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: Option<String>,
    password: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
}

async fn login(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Json<IssuedToken>, ApiError> {
    let t = state
        .auth
        .login(
            required(&b.email, "email")?,
            required(&b.password, "password")?,
            b.app_id.as_deref().unwrap_or(""),
            addr,
        )
        .await?;
    Ok(Json(t))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    app_id: Option<String>,
    app_secret: Option<String>,
}

async fn token(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    JsonBody(b): JsonBody<TokenBody>,
) -> Result<Json<IssuedToken>, ApiError> {
    let t = state
        .auth
        .token(
            required(&b.app_id, "app_id")?,
            required(&b.app_secret, "app_secret")?,
            addr,
        )
        .await?;
    Ok(Json(t))
}

#[derive(Deserialize)]
struct PageQuery {
    page_size: Option<u32>,
    page_token: Option<String>,
}

async fn list_users(
    State(state): State<ApiState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<UserPage>, ApiError> {
    admin::list_users(&state, q.page_size, q.page_token.as_deref())
        .await
        .map(Json)
}

async fn get_user(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    admin::get_user(&state, &id).await.map(Json)
}

async fn update_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(update): JsonBody<UserUpdate>,
) -> Result<Json<UserView>, ApiError> {
    admin::update_user(&state, &caller, &id, update)
        .await
        .map(Json)
}

async fn delete_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    admin::delete_user(&state, &caller, &id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFlag {
    admin: bool,
}

async fn set_admin(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(flag): JsonBody<AdminFlag>,
) -> Result<Json<UserView>, ApiError> {
    admin::set_admin(&state, &caller, &id, flag.admin)
        .await
        .map(Json)
}

async fn reset_secret(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Registered>, ApiError> {
    admin::reset_secret(&state, &caller, &id).await.map(Json)
}

async fn config(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Json<serde_json::Value> {
    Json(admin::config(&state, &caller))
}

async fn send_handler(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<crate::send::SendRequest>,
) -> Result<Json<crate::send::SendResponse>, ApiError> {
    crate::send::send(&state, &caller, req).await.map(Json)
}

async fn sms_info(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(message_id): Path<String>,
) -> Result<Json<crate::send::MessageView>, ApiError> {
    crate::send::info(&state, &caller, Some(&message_id), None)
        .await
        .map(Json)
}

#[derive(Deserialize)]
struct TransactionQuery {
    transaction_id: Option<String>,
}

async fn sms_by_transaction(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<TransactionQuery>,
) -> Result<Json<crate::send::MessageView>, ApiError> {
    let tx = q.transaction_id.ok_or(ApiError::InvalidField {
        field: "transaction_id",
        reason: "is required".into(),
    })?;
    crate::send::info(&state, &caller, None, Some(&tx))
        .await
        .map(Json)
}

async fn admin_stats(State(state): State<ApiState>) -> Json<crate::stats::StatsView> {
    let mut v = state.messages.stats.view();
    v.limiter = state.limiter.status().into();
    Json(v)
}

async fn set_webhook(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(settings): JsonBody<crate::webhook::WebhookSettings>,
) -> Result<Json<crate::webhook::WebhookSet>, ApiError> {
    crate::webhook::set(&state, &caller, settings)
        .await
        .map(Json)
}

async fn list_links(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "links": state.links.links() }))
}

async fn get_link(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<smsgw_core::links::LinkView>, ApiError> {
    state
        .links
        .link(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no link named {name:?}")))
}

async fn control_link(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<smsgw_core::links::LinkView>, ApiError> {
    let action = action.parse().map_err(|reason| ApiError::InvalidField {
        field: "action",
        reason,
    })?;
    crate::links::control(&state, &caller, &name, action)
        .await
        .map(Json)
}

async fn record_metrics(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// The client's IP address, when the server recorded it.
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A JSON body whose every failure is an [`ApiError`]: too large → 413,
/// not JSON or wrong shape → 400, each with a message saying what is wrong.
/// The Content-Type is not required to be `application/json`, as clients of
/// the platform we replace do not always send it.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req).await?;
        if bytes.is_empty() {
            return Err(ApiError::MalformedBody(
                "request body is empty; expected a JSON object".into(),
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::MalformedBody(match e.classify() {
                serde_json::error::Category::Data => format!("invalid request: {e}"),
                _ => format!("invalid JSON: {e}"),
            })
        })
    }
}

/// Past [`MAX_BODY_BYTES`], up to this much more is read and dropped before
/// answering 413, so that ordinary clients, which write the whole body
/// before reading the answer, see the 413 instead of a broken pipe.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;

/// Reads a request body of at most [`MAX_BODY_BYTES`].
async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let mut stream = req.into_body().into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::MalformedBody(format!("could not read the request body: {e}"))
        })?;
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            buf.extend_from_slice(&chunk);
        } else if seen > MAX_BODY_BYTES + DRAIN_BYTES {
            break;
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests;
