//! REST API on axum.

use crate::admin::{self, UserPage, UserUpdate, UserView};
use crate::auth::{Access, Caller, IssuedToken, Registered};
use crate::error::ErrorBody;
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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub(crate) mod batch;
pub(crate) mod doc;

/// Routes whose calls the dashboard's request rate leaves out: probes,
/// scrapes, documentation and the dashboard itself.
const UNCOUNTED_ROUTES: &[&str] = &[
    "/healthy",
    "/ready",
    "/metrics",
    "/dashboard/stats",
    "/docs",
    "/api/v1/openapi.json",
    "/.well-known/jwks.json",
];

/// The REST router: public `/healthy`, `/ready`, `/metrics`, `/api/v1/auth/*`,
/// the token verification keys (`/.well-known/jwks.json`) and the API documentation (`/api/v1/openapi.json`, `/docs`);
/// `/api/v1/admin/*` for admins (admin key or admin user);
/// `/dashboard/stats` for either (for anyone with `--public-dashboard`); every other `/api/v1` route for
/// authenticated users. Every route is described in the OpenAPI document
/// ([`crate::openapi`]); a test fails for one that is not.
pub fn router(state: ApiState) -> Router {
    let needs = |access| middleware::from_fn_with_state((state.clone(), access), require);
    let auth = Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/token", post(token))
        .route_layer(middleware::from_fn(json_only));
    let public = Router::new()
        .route("/healthy", get(healthy))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .merge(auth)
        .route("/api/v1/openapi.json", get(doc::openapi_json_handler))
        .route("/docs", get(doc::docs_page));
    let dashboard = Router::new().route("/dashboard/stats", get(dashboard_stats));
    let dashboard = if state.public_dashboard {
        dashboard.route_layer(middleware::from_fn_with_state(state.clone(), optional))
    } else {
        dashboard.route_layer(needs(Access::Any))
    };
    let user = Router::new()
        .route("/api/v1/sms/check-text-len", post(check_text_len_handler))
        .route("/api/v1/sms/send", post(send_handler))
        .route("/api/v1/sms/send-batch", post(batch::send_batch_handler))
        .route("/api/v1/sms", get(sms_by_transaction))
        .route("/api/v1/sms/{message_id}", get(sms_info))
        .route("/api/v1/settings/webhook", axum::routing::put(set_webhook))
        .route(
            "/api/v1/settings/addresses",
            get(list_own_claims).post(claim_address),
        )
        .route(
            "/api/v1/settings/addresses/{claim_id}",
            axum::routing::delete(release_address),
        )
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/smpp/links", get(list_links))
        .route("/api/v1/smpp/links/{name}", get(get_link))
        .route("/api/v1/account", get(account))
        .route_layer(needs(Access::User));
    let admin = Router::new()
        .route("/api/v1/admin/users", get(list_users))
        .route(
            "/api/v1/admin/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/api/v1/admin/users/{id}/admin", post(set_admin))
        .route("/api/v1/admin/users/{id}/reset-secret", post(reset_secret))
        .route(
            "/api/v1/admin/apps/{app_id}/balance",
            get(app_account).post(top_up),
        )
        .route("/api/v1/admin/config", get(config))
        .route("/api/v1/admin/addresses", get(admin_list_claims))
        .route(
            "/api/v1/admin/addresses/{claim_id}",
            axum::routing::delete(reject_claim),
        )
        .route(
            "/api/v1/admin/addresses/{claim_id}/approve",
            post(approve_claim),
        )
        .route("/api/v1/admin/links", get(admin_list_links))
        .route("/api/v1/admin/stats", get(admin_stats))
        .route("/api/v1/admin/links/{name}/{action}", post(control_link))
        .route(
            "/api/v1/admin/blacklists/{name}/reload",
            post(reload_blacklist),
        )
        .route_layer(needs(Access::Admin));
    Router::new()
        .merge(public)
        .merge(user)
        .merge(admin)
        .merge(dashboard)
        .fallback(|req: Request| async move {
            ApiError::NoRoute(format!("{} {}", req.method(), req.uri().path()))
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(middleware::from_fn(security_headers))
        // JsonBody and the batch route bound bodies themselves (read_body_within).
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Content-Security-Policy of `/docs`: its one script from the CDN,
/// pinned by subresource integrity in the page; calls only to this origin.
const DOCS_CSP: &str = "default-src 'none'; \
    script-src https://cdn.jsdelivr.net 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='; \
    style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.scalar.com; \
    font-src 'self' data: https://cdn.jsdelivr.net https://fonts.scalar.com; \
    img-src 'self' data: https:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Headers on every answer: no MIME sniffing, no framing, no referrer;
/// nothing under `/api` or `/dashboard` is cached (tokens and secrets
/// travel there); a strict CSP on `/docs`.
async fn security_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    if path.starts_with("/api/") || path.starts_with("/dashboard") {
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    if path == "/docs" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(DOCS_CSP),
        );
    }
    resp
}

/// Auth routes read JSON only: a body of another type (a form post or
/// `text/plain`, which browsers send cross-site without a preflight) is
/// refused with 415 before it is read.
async fn json_only(req: Request, next: Next) -> Result<Response, ApiError> {
    // Only the routes' own method (POST) carries a body; any other method
    // goes on to the router, which answers 405 as for every other route.
    if req.method() != axum::http::Method::POST {
        return Ok(next.run(req).await);
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "auth requests must have Content-Type: application/json (got {:?})",
            if ct.is_empty() { "none" } else { ct.as_str() }
        )))
    }
}

/// Authenticates the caller as `access` asks and hands it to the route.
async fn require(
    State((state, access)): State<(ApiState, Access)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state.auth.authorize(access, req.headers()).await?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// A public route that still authenticates callers who send credentials
/// (`Authorization`, `X-App-ID` or `X-Admin-Key`), as [`Access::Any`];
/// a request without any goes on with no [`Caller`].
async fn optional(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let h = req.headers();
    if ["authorization", "x-app-id", "x-admin-key"]
        .iter()
        .any(|k| h.contains_key(*k))
    {
        let caller = state.auth.authorize(Access::Any, h).await?;
        req.extensions_mut().insert(caller);
    }
    Ok(next.run(req).await)
}

/// `{"status": …}` of the health endpoints.
#[derive(Serialize, utoipa::ToSchema)]
struct HealthStatus {
    /// `ok`, `ready`, or why the gateway is not ready.
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthy", tag = "health",
    responses((status = 200, description = "The process is alive", body = HealthStatus)))]
async fn healthy() -> impl IntoResponse {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: 200 once a configuration is in force, 503 before (a gateway
/// waiting for its first snapshot from the operator).
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, description = "A configuration is in force", body = HealthStatus),
    (status = 503, description = "Waiting for the first configuration snapshot", body = HealthStatus),
))]
async fn ready(State(state): State<ApiState>) -> Response {
    if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        Json(HealthStatus { status: "ready" }).into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthStatus {
                status: "waiting for a configuration snapshot",
            }),
        )
            .into_response()
    }
}

/// Prometheus metrics (OpenMetrics text), all under the `smsgw_` prefix.
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "OpenMetrics text exposition",
     content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
))]
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// A JSON Web Key Set (RFC 7517), as served at `/.well-known/jwks.json`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JwkSetDoc {
    /// The public keys, the one signing new tokens first.
    keys: Vec<JwkDoc>,
}

/// One public key of the [`JwkSetDoc`].
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JwkDoc {
    /// Key type: `OKP` (Ed25519) or `RSA`.
    kty: String,
    /// Key id, as in the `kid` header of the tokens it signs.
    kid: String,
    /// Algorithm: `EdDSA` or `RS256`.
    alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(rename = "use")]
    use_: String,
    /// `Ed25519` (OKP keys).
    crv: Option<String>,
    /// Public key, base64url (OKP keys).
    x: Option<String>,
    /// Modulus, base64url (RSA keys).
    n: Option<String>,
    /// Exponent, base64url (RSA keys).
    e: Option<String>,
}

/// The public keys that verify this gateway's tokens, so other services
/// can check a token without the signing key. Empty while tokens are
/// HS256 (`SMSGW_JWT_PRIVATE_KEYS` unset): a shared secret is never
/// published. A token's `kid` header names its key; during a rotation the
/// set holds the new and the old keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "The JSON Web Key Set", body = JwkSetDoc)))]
async fn jwks(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.auth.jwks()),
    )
}

/// Encoding and segment count of a text, under the rules of a link or pool.
#[utoipa::path(post, path = "/api/v1/sms/check-text-len", tag = "sms",
    request_body = CheckTextLenRequest,
    responses((status = 200, description = "The analysis", body = CheckTextLenResponse)),
    security(("bearer" = [], "app_id" = [])))]
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

/// `POST /api/v1/auth/register` body; every field is required.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    /// Login email, unique.
    #[schema(required)]
    email: Option<String>,
    /// At least 10 characters.
    #[schema(required)]
    password: Option<String>,
    /// Name of the user's application.
    #[schema(required)]
    app_name: Option<String>,
}

fn required<'a>(v: &'a Option<String>, field: &'static str) -> Result<&'a str, ApiError> {
    v.as_deref().ok_or(ApiError::InvalidField {
        field,
        reason: "is required".into(),
    })
}

/// Creates a user and its application; the app secret is shown only here.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The new user, app id and app secret", body = Registered),
        (status = 403, description = "Open registration is off on this gateway (`permission_denied`)", body = ErrorBody),
        (status = 409, description = "The email cannot be registered, e.g. it is taken (`conflict`; the answer does not name it)", body = ErrorBody),
        (status = 429, description = "Too many registrations from this client address (`too_many_requests`), with `Retry-After`", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    ))]
async fn register(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    JsonBody(b): JsonBody<RegisterBody>,
) -> Result<(axum::http::StatusCode, Json<Registered>), ApiError> {
    let r = state
        .auth
        .register_from(
            required(&b.email, "email")?,
            required(&b.password, "password")?,
            required(&b.app_name, "app_name")?,
            addr,
        )
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(r)))
}

/// `POST /api/v1/auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    /// Login email.
    #[schema(required)]
    email: Option<String>,
    /// Password.
    #[schema(required)]
    password: Option<String>,
    /// The user's app id (optional; checked when given).
    #[serde(default)]
    app_id: Option<String>,
}

/// A JWT for email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "A signed token", body = IssuedToken),
        (status = 429, description = "Too many failed logins (`too_many_requests`), with `Retry-After`", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    ))]
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

/// `POST /api/v1/auth/token` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    /// App id.
    #[schema(required)]
    app_id: Option<String>,
    /// App secret.
    #[schema(required)]
    app_secret: Option<String>,
}

/// A JWT for an app id and app secret (machine clients).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    request_body = TokenBody,
    responses(
        (status = 200, description = "A signed token", body = IssuedToken),
        (status = 429, description = "Too many failed attempts (`too_many_requests`), with `Retry-After`", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    ))]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Users per page, 1 to 1000 (default 100).
    page_size: Option<u32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Lists users, a page at a time.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", params(PageQuery),
    responses((status = 200, description = "A page of users", body = UserPage)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn list_users(
    State(state): State<ApiState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<UserPage>, ApiError> {
    admin::list_users(&state, q.page_size, q.page_token.as_deref())
        .await
        .map(Json)
}

/// One user.
#[utoipa::path(get, path = "/api/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserView)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn get_user(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    admin::get_user(&state, &id).await.map(Json)
}

/// Changes a user; absent fields stay as they are. Managed users (from a
/// User resource) are refused.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    request_body = UserUpdate,
    responses((status = 200, description = "The user as changed", body = UserView)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
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

/// Deletes a user; managed users are refused.
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Deleted")),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn delete_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    admin::delete_user(&state, &caller, &id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `POST /api/v1/admin/users/{id}/admin` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminFlag {
    /// Grant (true) or revoke (false) admin rights.
    admin: bool,
}

/// Grants or revokes admin rights.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/admin", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    request_body = AdminFlag,
    responses((status = 200, description = "The user as changed", body = UserView)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
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

/// Issues a new app secret for a user, shown only here.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/reset-secret", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user's ids and new app secret", body = Registered)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn reset_secret(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Registered>, ApiError> {
    admin::reset_secret(&state, &caller, &id).await.map(Json)
}

/// Adds segments to an app's prepaid balance. With `top_up_id` the call is
/// idempotent: a repeat adds nothing and answers `applied: false` with the
/// balance after the first.
#[utoipa::path(post, path = "/api/v1/admin/apps/{app_id}/balance", tag = "admin",
    params(("app_id" = String, Path, description = "Application id")),
    request_body = admin::TopUpRequest,
    responses(
        (status = 200, description = "The balance after the top-up", body = smsgw_messaging::quotas::BalanceView),
        (status = 400, description = "`add` is not between 1 and 10¹², or `top_up_id` is longer than 128 bytes (`invalid_argument`)", body = ErrorBody),
        (status = 404, description = "No app with that id (`not_found`)", body = ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn top_up(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
    JsonBody(req): JsonBody<admin::TopUpRequest>,
) -> Result<Json<smsgw_messaging::quotas::BalanceView>, ApiError> {
    admin::top_up(&state, &caller, &app_id, req).await.map(Json)
}

/// An app's account as the app sees it at `GET /api/v1/account`: its
/// quotas, their use in the current UTC day and month, and its balance.
#[utoipa::path(get, path = "/api/v1/admin/apps/{app_id}/balance", tag = "admin",
    params(("app_id" = String, Path, description = "Application id")),
    responses(
        (status = 200, description = "The app's quotas, their use and its balance", body = smsgw_messaging::quotas::Account),
        (status = 404, description = "No app with that id (`not_found`)", body = ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn app_account(
    State(state): State<ApiState>,
    Path(app_id): Path<String>,
) -> Result<Json<smsgw_messaging::quotas::Account>, ApiError> {
    Ok(Json(state.messages.account_of_app(&app_id).await?))
}

/// The caller's app: its rate cap, its daily and monthly message quotas
/// with what is used of them in the current UTC day and month and when
/// each resets, and its prepaid balance in segments.
#[utoipa::path(get, path = "/api/v1/account", tag = "settings",
    responses(
        (status = 200, description = "The app's quotas, their use and its balance", body = smsgw_messaging::quotas::Account),
        (status = 403, description = "Called with the admin key: the account is an app's (`permission_denied`)", body = ErrorBody),
    ),
    security(("bearer" = [], "app_id" = [])))]
async fn account(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<smsgw_messaging::quotas::Account>, ApiError> {
    match &caller {
        Caller::User {
            user_id, app_id, ..
        } => Ok(Json(
            state
                .messages
                .account(smsgw_messaging::Sender { user_id, app_id })
                .await?,
        )),
        Caller::AdminKey => Err(ApiError::PermissionDenied(
            "the account is an app's: call it with the app's token and X-App-ID".into(),
        )),
    }
}

/// The configuration in force (links, pools, users, policies), secrets
/// replaced by `***`.
#[utoipa::path(get, path = "/api/v1/admin/config", tag = "admin",
    responses((status = 200, description = "The configuration snapshot", body = Object)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn config(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Json<serde_json::Value> {
    Json(admin::config(&state, &caller))
}

/// Sends a message to a link or pool. Idempotent on the app and
/// `transaction_id`: a repeat of the same message (destination, text and
/// source) answers the first one (`duplicate`); the key repeated with
/// another destination, text or source is refused (409
/// `transaction_id_reused`). Message options: `validity_period`
/// (seconds), `schedule_delivery_time` (held by the gateway until due, or
/// passed to the SMSC by a link with `scheduleAtSmsc`), `priority` (0–3,
/// also the order at a backed-up link's window) and `flash` (class 0).
#[utoipa::path(post, path = "/api/v1/sms/send", tag = "sms",
    request_body = crate::send::SendRequest,
    responses(
        (status = 200, description = "Accepted (and, with `wait_for_submit`, submitted)", body = crate::send::SendResponse),
        (status = 400, description = "A field is missing or malformed, with its own code (`invalid_destination`, `invalid_source`, `invalid_message`, `invalid_sent_at`, `invalid_transaction_id`, `invalid_validity_period`, `invalid_schedule_delivery_time`, `invalid_priority`, `invalid_flash`, `unknown_target`, `unknown_strategy`, …)", body = ErrorBody),
        (status = 402, description = "The app is prepaid and its balance does not cover the message's segments (`insufficient_balance`); nothing is stored or charged", body = ErrorBody),
        (status = 403, description = "Target not allowed (`target_not_allowed`), sender not allowed, refused by a contact policy (`daily_cp`, `weekly_cp`, `blacklist`, `duplicate`), or the app's daily or monthly message quota is used up (`quota_exceeded`; the message says which and when it resets)", body = ErrorBody),
        (status = 409, description = "The `transaction_id` belongs to another message of the app (another destination, text or source): `transaction_id_reused`; nothing is stored or sent", body = ErrorBody),
        (status = 429, description = "Over a rate limit of the app, link or pool (`rate_limited`), with `Retry-After`", body = ErrorBody),
        (status = 503, description = "The contact-policy engine or store is unreachable (`unavailable`)", body = ErrorBody),
    ),
    security(("bearer" = [], "app_id" = [])))]
async fn send_handler(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: http::HeaderMap,
    body: Result<JsonBody<crate::send::SendRequest>, ApiError>,
) -> Response {
    let trace = crate::trace::from_headers("POST /api/v1/sms/send", &headers);
    let (esme, transaction_id, r) = match body {
        Ok(JsonBody(req)) => (
            req.esme.clone(),
            req.transaction_id.clone(),
            crate::send::send(&state, &caller, req, trace).await,
        ),
        Err(e) => (String::new(), String::new(), Err(e)),
    };
    match r {
        Ok(ok) => Json(ok).into_response(),
        Err(e) if state.compat_platform_responses => platform_refusal(e, esme, transaction_id),
        Err(e) => e.into_response(),
    }
}

/// A refused send as the platform answered it over REST
/// (`--compat-platform-responses`): its `SmsResponse` in JSON —
/// `{"success": false, "error": "<reason>", "esme": <as requested>}` —
/// plus smsgw's `error_code` and the `transaction_id`, with the HTTP status
/// (and `Retry-After`) smsgw's own shape would have.
fn platform_refusal(e: ApiError, esme: String, transaction_id: String) -> Response {
    let detail = e.detail();
    let body = serde_json::json!({
        "success": false,
        "error": detail.message,
        "esme": esme,
        "error_code": detail.code,
        "transaction_id": transaction_id,
    });
    e.respond_with(body)
}

/// A message of the caller's app, with per-segment submit and receipt state.
#[utoipa::path(get, path = "/api/v1/sms/{message_id}", tag = "sms",
    params(("message_id" = String, Path, description = "Gateway message id")),
    responses((status = 200, description = "The message", body = crate::send::MessageView)),
    security(("bearer" = [], "app_id" = [])))]
async fn sms_info(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(message_id): Path<String>,
) -> Result<Json<crate::send::MessageView>, ApiError> {
    crate::send::info(&state, &caller, Some(&message_id), None)
        .await
        .map(Json)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TransactionQuery {
    /// The send request's `transaction_id` (required).
    #[param(required)]
    transaction_id: Option<String>,
}

/// The caller's message with a given `transaction_id`.
#[utoipa::path(get, path = "/api/v1/sms", tag = "sms", params(TransactionQuery),
    responses((status = 200, description = "The message", body = crate::send::MessageView)),
    security(("bearer" = [], "app_id" = [])))]
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

/// Loads a blacklist from its CSV files now (`--blacklist NAME=BUCKET/PREFIX`)
/// and reports what was loaded; the new list replaces the old at once.
#[utoipa::path(post, path = "/api/v1/admin/blacklists/{name}/reload", tag = "admin",
    params(("name" = String, Path, description = "List name", example = "default")),
    responses(
        (status = 200, description = "The load report (malformed lines with their line numbers)", body = smsgw_core::policy::LoadReport),
        (status = 404, description = "No list of that name is configured (`not_found`)", body = ErrorBody),
        (status = 503, description = "No lists configured, or the load failed; the previous list stays (`unavailable`)", body = ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn reload_blacklist(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<smsgw_core::policy::LoadReport>, ApiError> {
    admin::reload_blacklist(&state, &caller, &name)
        .await
        .map(Json)
}

/// Messages submitted, delivered, failed and refused (by reason), and
/// throughput, per link, pool and app, since this gateway started; and the
/// rate limiter's state.
#[utoipa::path(get, path = "/api/v1/admin/stats", tag = "admin",
    responses((status = 200, description = "The counters", body = crate::stats::StatsView)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn admin_stats(State(state): State<ApiState>) -> Json<crate::stats::StatsView> {
    Json(state.stats_view())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DashboardQuery {
    /// Campaigns to list, 1 to 100 (default 10).
    top: Option<usize>,
}

/// API calls per second and error rate over the last minute, the most
/// active campaigns (`task_id`), and this process's CPU, memory and disk.
/// Admins see every app's campaigns; users their own app's. With
/// `--public-dashboard` it answers without credentials too (every app's
/// campaigns, as on the platform smsgw replaces).
#[utoipa::path(get, path = "/dashboard/stats", tag = "dashboard", params(DashboardQuery),
    responses((status = 200, description = "The dashboard's numbers", body = crate::dashboard::DashboardStats)),
    security(("bearer" = [], "app_id" = []), ("admin_key" = [])))]
async fn dashboard_stats(
    State(state): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Query(q): Query<DashboardQuery>,
) -> Result<Json<crate::dashboard::DashboardStats>, ApiError> {
    crate::dashboard::stats(&state, caller.as_ref().map(|c| &c.0), q.top)
        .await
        .map(Json)
}

/// Sets (or, with an empty or null `url`, removes) the app's webhook and
/// issues a new signing secret. Status changes and inbound messages
/// ([`AppEvent`](crate::send::AppEvent)) are POSTed to it with
/// `X-Smsgw-Timestamp` and `X-Smsgw-Signature: sha256=HMAC(secret, "<timestamp>.<body>")`.
#[utoipa::path(put, path = "/api/v1/settings/webhook", tag = "settings",
    request_body = crate::webhook::WebhookSettings,
    responses((status = 200, description = "The webhook and its new secret", body = crate::webhook::WebhookSet)),
    security(("bearer" = [], "app_id" = [])))]
async fn set_webhook(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(settings): JsonBody<crate::webhook::WebhookSettings>,
) -> Result<Json<crate::webhook::WebhookSet>, ApiError> {
    crate::webhook::set(&state, &caller, settings)
        .await
        .map(Json)
}

/// Claims a source address for the caller's app: MO to it (or, with a
/// `keyword`, MO to it whose first word is the keyword) reaches the app's
/// webhook, `GET /api/v1/events` and the gRPC WatchEvents stream once an
/// admin approves the claim. An address is claimed by one app at most; an
/// address a User resource lists cannot be claimed.
#[utoipa::path(post, path = "/api/v1/settings/addresses", tag = "settings",
    request_body = crate::claims::ClaimRequest,
    responses(
        (status = 201, description = "The claim, `pending` until an admin approves it", body = crate::claims::ClaimView),
        (status = 400, description = "Not a short code or E.164 number (`invalid_address`), or a malformed keyword (`invalid_keyword`)", body = ErrorBody),
        (status = 409, description = "Claimed by another app (`address_taken`) or by this one (`already_claimed`), listed by a User resource (`address_managed`), or the app holds the most claims it may (`too_many_claims`)", body = ErrorBody),
    ),
    security(("bearer" = [], "app_id" = [])))]
async fn claim_address(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<crate::claims::ClaimRequest>,
) -> Result<(axum::http::StatusCode, Json<crate::claims::ClaimView>), ApiError> {
    let c = crate::claims::claim(&state, &caller, req).await?;
    Ok((axum::http::StatusCode::CREATED, Json(c)))
}

/// The caller's app's address claims, pending and approved.
#[utoipa::path(get, path = "/api/v1/settings/addresses", tag = "settings",
    responses((status = 200, description = "The claims", body = crate::claims::ClaimList)),
    security(("bearer" = [], "app_id" = [])))]
async fn list_own_claims(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<crate::claims::ClaimList>, ApiError> {
    crate::claims::list_own(&state, &caller).await.map(Json)
}

/// Releases one of the caller's app's claims: MO to the address stops
/// reaching it.
#[utoipa::path(delete, path = "/api/v1/settings/addresses/{claim_id}", tag = "settings",
    params(("claim_id" = String, Path, description = "The claim's id: address digits, or `digits:KEYWORD`", example = "4444:STOP")),
    responses(
        (status = 204, description = "Released"),
        (status = 400, description = "Not a claim id (`invalid_claim_id`)", body = ErrorBody),
    ),
    security(("bearer" = [], "app_id" = [])))]
async fn release_address(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(claim_id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    crate::claims::release(&state, &caller, &claim_id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ClaimQuery {
    /// Only claims in this state: `pending` or `approved` (default: both).
    status: Option<String>,
    /// Stored claims read per page, 1 to 1000 (default 100); with
    /// `status`, a page may hold fewer.
    page_size: Option<u32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Every app's address claims, a page at a time (e.g. `?status=pending`,
/// those waiting for a decision).
#[utoipa::path(get, path = "/api/v1/admin/addresses", tag = "admin", params(ClaimQuery),
    responses((status = 200, description = "A page of claims", body = crate::claims::ClaimPage)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn admin_list_claims(
    State(state): State<ApiState>,
    Query(q): Query<ClaimQuery>,
) -> Result<Json<crate::claims::ClaimPage>, ApiError> {
    let status = crate::claims::parse_status(q.status.as_deref().unwrap_or(""))?;
    crate::claims::list_all(&state, status, q.page_size, q.page_token.as_deref())
        .await
        .map(Json)
}

/// Approves an address claim: MO to the address reaches the claiming app
/// (on this pod at once, on the others within 5 s).
#[utoipa::path(post, path = "/api/v1/admin/addresses/{claim_id}/approve", tag = "admin",
    params(("claim_id" = String, Path, description = "The claim's id", example = "4444")),
    responses(
        (status = 200, description = "The claim, approved", body = crate::claims::ClaimView),
        (status = 409, description = "A User resource lists the address now (`address_managed`)", body = ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn approve_claim(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(claim_id): Path<String>,
) -> Result<Json<crate::claims::ClaimView>, ApiError> {
    crate::claims::approve(&state, &caller, &claim_id)
        .await
        .map(Json)
}

/// Rejects (deletes) an address claim, pending or approved; the address
/// is free to claim again.
#[utoipa::path(delete, path = "/api/v1/admin/addresses/{claim_id}", tag = "admin",
    params(("claim_id" = String, Path, description = "The claim's id", example = "4444")),
    responses((status = 200, description = "The claim deleted", body = crate::claims::ClaimView)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn reject_claim(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(claim_id): Path<String>,
) -> Result<Json<crate::claims::ClaimView>, ApiError> {
    crate::claims::reject(&state, &caller, &claim_id)
        .await
        .map(Json)
}

/// `GET /api/v1/events` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// The `cursor` of the last event read (the `next` of the previous
    /// answer); absent: from the oldest event kept.
    after: Option<String>,
    /// At most this many events (1–1000, default 100).
    limit: Option<usize>,
}

/// One event read back.
#[derive(Serialize, utoipa::ToSchema)]
struct PulledEvent {
    /// Its place in the app's log: give it as `after` to read what follows.
    cursor: String,
    /// The event as a webhook gets it (an `AppEvent` with its `event_id`).
    #[schema(value_type = Object)]
    event: serde_json::Value,
}

/// A page of the app's events.
#[derive(Serialize, utoipa::ToSchema)]
struct EventPage {
    /// In the order they happened.
    events: Vec<PulledEvent>,
    /// Where to read on from: the last event's cursor, or the `after`
    /// given when nothing followed it.
    next: Option<String>,
}

/// The caller's app's events (status changes, inbound messages) after a
/// cursor, oldest first: every event is kept for `--events-retention`
/// (24 h) whether or not a webhook took it, so a client that reads from
/// its last cursor misses nothing.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "The events after the cursor", body = EventPage)),
    security(("bearer" = [], "app_id" = [])))]
async fn list_events(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let app_id = crate::events::app_of(&caller)?;
    let got =
        crate::events::page(&state, app_id, q.after.as_deref(), q.limit.unwrap_or(100)).await?;
    let next = got.last().map(|l| l.cursor.clone()).or(q.after);
    Ok(Json(EventPage {
        events: got
            .into_iter()
            .map(|l| PulledEvent {
                event: serde_json::from_str(&l.body).unwrap_or(serde_json::Value::String(l.body)),
                cursor: l.cursor,
            })
            .collect(),
        next,
    }))
}

/// `{"links": [...]}`.
#[derive(Serialize, utoipa::ToSchema)]
struct LinkList {
    /// Every link the gateway holds.
    links: Vec<smsgw_core::links::LinkView>,
}

/// Every SMPP link and its state (users: `/api/v1/smpp/links`; admins:
/// `/api/v1/admin/links`).
#[utoipa::path(get, path = "/api/v1/smpp/links", tag = "smpp",
    responses((status = 200, description = "The links", body = LinkList)),
    security(("bearer" = [], "app_id" = [])))]
async fn list_links(State(state): State<ApiState>) -> Json<LinkList> {
    Json(LinkList {
        links: state.messages.links().links(),
    })
}

/// Every SMPP link and its state, for admins.
#[utoipa::path(get, path = "/api/v1/admin/links", tag = "admin",
    responses((status = 200, description = "The links", body = LinkList)),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
async fn admin_list_links(state: State<ApiState>) -> Json<LinkList> {
    list_links(state).await
}

/// One SMPP link and its sessions.
#[utoipa::path(get, path = "/api/v1/smpp/links/{name}", tag = "smpp",
    params(("name" = String, Path, description = "Link name")),
    responses((status = 200, description = "The link", body = smsgw_core::links::LinkView)),
    security(("bearer" = [], "app_id" = [])))]
async fn get_link(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<smsgw_core::links::LinkView>, ApiError> {
    state
        .messages
        .links()
        .link(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no link named {name:?}")))
}

/// Starts, stops or restarts a link (all its sessions).
#[utoipa::path(post, path = "/api/v1/admin/links/{name}/{action}", tag = "admin",
    params(
        ("name" = String, Path, description = "Link name"),
        ("action" = String, Path, description = "`start`, `stop` or `restart`", example = "restart"),
    ),
    responses(
        (status = 200, description = "The link after the action", body = smsgw_core::links::LinkView),
        (status = 400, description = "Not an action (`invalid_argument`, field `action`)", body = ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = [], "app_id" = [])))]
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
    if !UNCOUNTED_ROUTES.contains(&route.as_str()) {
        let status = resp.status();
        m.recent.record(
            status.is_client_error() || status.is_server_error(),
            status.is_server_error(),
        );
    }
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

/// The client's IP address, when the server recorded it: the peer, or
/// behind a trusted proxy the address it forwarded for.
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<ApiState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(state.auth.client_addr(peer, &parts.headers)))
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
        parse_json(read_body_within(req, MAX_BODY_BYTES).await?).map(JsonBody)
    }
}

/// A JSON body as `T`: empty, not JSON or the wrong shape → 400 with a
/// message saying what is wrong.
fn parse_json<T: DeserializeOwned>(bytes: Bytes) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::MalformedBody(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::MalformedBody(match e.classify() {
            serde_json::error::Category::Data => format!("invalid request: {e}"),
            _ => format!("invalid JSON: {e}"),
        })
    })
}

/// Past the body limit, up to this much more is read and dropped before
/// answering 413, so that ordinary clients, which write the whole body
/// before reading the answer, see the 413 instead of a broken pipe.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;

/// Reads a request body of at most `limit` bytes ([`MAX_BODY_BYTES`], or a
/// batch's).
async fn read_body_within(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let mut stream = req.into_body().into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::MalformedBody(format!("could not read the request body: {e}"))
        })?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > limit + DRAIN_BYTES {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests;
