//! REST API on axum.

use crate::metrics::{HttpLabels, RouteLabels};
use crate::text::{CheckTextLenRequest, CheckTextLenResponse, check_text_len};
use crate::{ApiError, ApiState, MAX_BODY_BYTES};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::header;
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
        // JsonBody enforces MAX_BODY_BYTES itself (see read_body).
        .layer(DefaultBodyLimit::disable())
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
