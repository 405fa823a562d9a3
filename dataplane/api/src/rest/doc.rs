//! The OpenAPI 3.1 document of the REST API, generated from the handlers'
//! `#[utoipa::path]` attributes and the request/response types, served at
//! `GET /api/v1/openapi.json`, with an interactive page at `GET /docs`.

use super::*;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "smsgw REST API",
        description = "SMS over REST. Authenticated calls send `Authorization: Bearer <jwt>` \
            (from `/api/v1/auth/login` or `/api/v1/auth/token`) and `X-App-ID`; admin calls \
            send `X-Admin-Key` (the gateway's `ADMIN_API_KEY`) or an admin user's token. \
            Every error is `{\"error\": {\"code\", \"message\", \"field\"?}}`."
    ),
    paths(
        healthy, ready, metrics, openapi_json_handler, docs_page,
        register, login, token, jwks,
        send_handler, batch::send_batch_handler, check_text_len_handler, sms_info, sms_by_transaction,
        set_webhook, claim_address, list_own_claims, release_address,
        list_events, list_links, get_link, account,
        list_users, get_user, update_user, delete_user, set_admin, reset_secret,
        config, admin_list_claims, approve_claim, reject_claim, admin_list_links, admin_stats, control_link, reload_blacklist, top_up, app_account,
        dashboard_stats,
    ),
    components(schemas(ErrorBody, crate::send::AppEvent)),
    modifiers(&SecuritySchemes, &ErrorResponses),
    tags(
        (name = "health", description = "Liveness, readiness, metrics (no authentication)"),
        (name = "auth", description = "Registration, tokens and their verification keys (no authentication)"),
        (name = "sms", description = "Sending messages and looking them up"),
        (name = "smpp", description = "SMPP links and their state"),
        (name = "settings", description = "Settings of the caller's app: its webhook, the source addresses it claims for inbound (MO) messages"),
        (name = "events", description = "The caller's app's events, read back from a cursor"),
        (name = "admin", description = "Administration: `X-Admin-Key` or an admin user's token"),
        (name = "dashboard", description = "Operational numbers for dashboards"),
        (name = "docs", description = "This document"),
    ),
)]
struct ApiDoc;

/// The OpenAPI document of the REST API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document as pretty-printed JSON.
pub fn openapi_json() -> String {
    openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "docs",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json_handler() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(openapi_json).clone(),
    )
        .into_response()
}

/// The interactive page: Scalar's API reference, loaded by the browser
/// from a CDN, reading `/api/v1/openapi.json`. The script is pinned by
/// subresource integrity: the sha384 of `dist/browser/standalone.js` in
/// the npm package `@scalar/api-reference@1.72.1` (`npm pack`, then
/// `openssl dgst -sha384 -binary … | base64`); a CDN serving anything
/// else is refused by the browser.
const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>smsgw API</title>
</head>
<body>
  <noscript>This page needs JavaScript; the document itself is at <a href="api/v1/openapi.json">/api/v1/openapi.json</a>.</noscript>
  <script id="api-reference" data-url="api/v1/openapi.json"></script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.72.1/dist/browser/standalone.js"
    integrity="sha384-U11tb2XnKvmwt8RlTvnwUnYgrN+ur4Xyh9htLhjajWNR/Oyl5AX5DEz00qRmlrmK"
    crossorigin="anonymous"></script>
</body>
</html>
"#;

/// Interactive API documentation (HTML; try requests from the browser).
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String)))]
pub(crate) async fn docs_page() -> impl IntoResponse {
    axum::response::Html(DOCS_HTML)
}

/// Security schemes: `bearer` (JWT) with `app_id` (`X-App-ID`) for users,
/// `admin_key` (`X-Admin-Key`) for admins.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Token from /api/v1/auth/login or /api/v1/auth/token; \
                         always together with X-App-ID",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "app_id",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-App-ID",
                "The app id the token was issued for",
            ))),
        );
        c.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Key",
                "The gateway's ADMIN_API_KEY; when it is unset, calls with this header answer 503",
            ))),
        );
    }
}

/// The error answers every operation can give, from what it takes: a body
/// (400, 413), query parameters (400), path parameters (404),
/// credentials (401; 403 and 503 where the admin key applies), and 500 for
/// everything past the health endpoints. Each is an [`ErrorBody`].
struct ErrorResponses;

/// (name, status, description) of the shared error responses.
const ERRORS: &[(&str, &str, &str)] = &[
    (
        "InvalidArgument",
        "400",
        "Invalid input: `invalid_argument` (with `field`), or a cause such as `unknown_target`",
    ),
    (
        "Unauthenticated",
        "401",
        "Missing or invalid credentials (`unauthenticated`)",
    ),
    (
        "PermissionDenied",
        "403",
        "The caller lacks the right (`permission_denied`)",
    ),
    ("NotFound", "404", "No such record (`not_found`)"),
    (
        "PayloadTooLarge",
        "413",
        "Body over 256 KiB (`payload_too_large`)",
    ),
    (
        "Internal",
        "500",
        "Internal failure (`internal`); details are logged, not returned",
    ),
    (
        "Unavailable",
        "503",
        "A service needed is unavailable (`unavailable`), e.g. the admin key is not configured",
    ),
];

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        for (name, _, description) in ERRORS {
            c.responses.insert(
                (*name).to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(*description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                ),
            );
        }
        for (path, item) in api.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                add_errors(path, op);
            }
        }
    }
}

fn add_errors(path: &str, op: &mut Operation) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let query = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let security = serde_json::to_string(&op.security).unwrap_or_default();
    let secured = security.contains("bearer") || security.contains("admin_key");
    let wanted = [
        (op.request_body.is_some() || query, "400"),
        (secured, "401"),
        (security.contains("admin_key"), "403"),
        (
            params
                .iter()
                .any(|p| matches!(p.parameter_in, ParameterIn::Path)),
            "404",
        ),
        (op.request_body.is_some(), "413"),
        (path.starts_with("/api/v1/") || secured, "500"),
        (security.contains("admin_key"), "503"),
    ];
    for (_, status) in wanted.iter().filter(|(w, _)| *w) {
        let (name, ..) = ERRORS
            .iter()
            .find(|(_, s, _)| s == status)
            .expect("every status has a shared response");
        op.responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
    }
}
