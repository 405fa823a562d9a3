//! REST API on axum.

use crate::metrics::{HttpLabels, RouteLabels};
use crate::text::{CheckTextLenRequest, CheckTextLenResponse, check_text_len};
use crate::{ApiError, ApiState, MAX_BODY_BYTES};
use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::time::Instant;

/// The REST router: `/healthy`, `/metrics` and `/api/v1/...`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthy", get(healthy))
        .route("/metrics", get(metrics))
        .route("/api/v1/sms/check-text-len", post(check_text_len_handler))
        .fallback(|req: Request| async move {
            ApiError::NoRoute(format!("{} {}", req.method(), req.uri().path()))
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthy() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
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
) -> Result<axum::Json<CheckTextLenResponse>, ApiError> {
    let resp = check_text_len(
        &state.config.load(),
        req.message.as_deref(),
        req.esme.as_deref(),
    )?;
    state.metrics.observe_encoding(&resp.encoding);
    Ok(axum::Json(resp))
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

/// A JSON body whose every failure is an [`ApiError`]: too large → 413,
/// not JSON or wrong shape → 400, each with a message saying what is wrong.
/// The Content-Type is not required to be `application/json`, as clients of
/// the platform we replace do not always send it.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(ref inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            }
            other => ApiError::MalformedBody(format!(
                "could not read the request body: {}",
                other.body_text()
            )),
        })?;
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

#[cfg(test)]
mod tests;
