//! `POST /api/v1/sms/send-batch`: up to [`MAX_BATCH`] messages in one
//! call, each sent as `POST /api/v1/sms/send` would send it (validated,
//! limited, policed and stored on its own), answered with one result per
//! message, in the order given.

use super::*;
use crate::error::ErrorDetail;
use futures::StreamExt;

/// Most messages in one batch.
pub const MAX_BATCH: usize = 1000;

/// Largest batch body: room for [`MAX_BATCH`] messages of ordinary size
/// (a single send's body is bounded by [`MAX_BODY_BYTES`]).
pub const MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Messages of one batch in flight at once.
const BATCH_CONCURRENCY: usize = 64;

/// A batch of messages to send.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct BatchRequest {
    /// 1 to 1,000 messages, each the body of `POST /api/v1/sms/send`.
    /// A message that is not one is refused alone (its result's `error`).
    #[schema(value_type = Vec<crate::send::SendRequest>)]
    messages: Vec<serde_json::Value>,
}

/// The outcome of one message of a batch.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BatchItem {
    /// Its position in the request's `messages`, from 0.
    index: usize,
    /// The HTTP status a `POST /api/v1/sms/send` of it alone would have
    /// answered: 200, or the refusal's (400, 403, 409, 429, 503, …).
    status: u16,
    /// The send's answer, when it was accepted (status 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<crate::send::SendResponse>,
    /// Why it was refused, otherwise: the `error` of the single send's
    /// answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
    /// With status 429: seconds until a retry may succeed (the single
    /// send's `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// The outcomes of a batch, one per message, in the request's order.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BatchResponse {
    /// Messages accepted (status 200, a repeated `transaction_id`'s
    /// `duplicate` included).
    accepted: usize,
    /// Messages refused.
    refused: usize,
    /// One result per message, in order.
    results: Vec<BatchItem>,
}

/// Sends up to 1,000 messages, each as `POST /api/v1/sms/send` would, and
/// answers each one's outcome in order. The batch is refused as a whole
/// only when it is not a batch: not `{"messages": [...]}` (400
/// `invalid_argument`), no message (400 `empty_batch`), more than 1,000
/// (400 `batch_too_large`), over 8 MiB (413); then nothing is sent.
/// Otherwise the answer is 200 and every message has its own `status`:
/// one refused message (a bad destination, a contact policy, a rate
/// limit) does not stop the others.
#[utoipa::path(post, path = "/api/v1/sms/send-batch", tag = "sms",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per message, in order; each accepted or refused on its own", body = BatchResponse),
        (status = 400, description = "Not a batch: not `{\"messages\": [...]}` (`invalid_argument`), no message (`empty_batch`), more than 1,000 (`batch_too_large`); nothing was sent", body = ErrorBody),
        (status = 413, description = "Body over 8 MiB (`payload_too_large`); nothing was sent", body = ErrorBody),
    ),
    security(("bearer" = [], "app_id" = [])))]
pub(crate) async fn send_batch_handler(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: http::HeaderMap,
    req: Request,
) -> Result<Json<BatchResponse>, ApiError> {
    let batch: BatchRequest = parse_json(read_body_within(req, MAX_BATCH_BODY_BYTES).await?)?;
    let n = batch.messages.len();
    if n == 0 {
        return Err(ApiError::SendRefused {
            code: "empty_batch",
            message: "messages: a batch needs at least one message".into(),
            forbidden: false,
        });
    }
    if n > MAX_BATCH {
        return Err(ApiError::SendRefused {
            code: "batch_too_large",
            message: format!("messages: {n} messages; a batch holds at most {MAX_BATCH}"),
            forbidden: false,
        });
    }
    let (state, caller, headers) = (&state, &caller, &headers);
    let results: Vec<BatchItem> = futures::stream::iter(batch.messages.into_iter().enumerate())
        .map(|(index, message)| async move {
            let sent = match serde_json::from_value::<crate::send::SendRequest>(message) {
                Ok(m) => {
                    let trace = crate::trace::from_headers("POST /api/v1/sms/send-batch", headers);
                    crate::send::send(state, caller, m, trace).await
                }
                Err(e) => Err(ApiError::MalformedBody(format!("invalid message: {e}"))),
            };
            match sent {
                Ok(response) => BatchItem {
                    index,
                    status: 200,
                    response: Some(response),
                    error: None,
                    retry_after: None,
                },
                Err(e) => BatchItem {
                    index,
                    status: e.http_status().as_u16(),
                    response: None,
                    retry_after: e.retry_after(),
                    error: Some(e.detail()),
                },
            }
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    let accepted = results.iter().filter(|r| r.status == 200).count();
    Ok(Json(BatchResponse {
        accepted,
        refused: results.len() - accepted,
        results,
    }))
}
