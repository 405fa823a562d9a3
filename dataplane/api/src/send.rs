//! Sending and looking messages up, for REST and gRPC alike: the caller's
//! identity becomes a [`smsgw_messaging`] call, its errors an [`ApiError`],
//! and the request's trace is finished with the outcome. The lifecycle
//! itself lives in `smsgw-messaging`.

use crate::auth::Caller;
use crate::trace::RequestTrace;
use crate::{ApiError, ApiState};
use smsgw_messaging::{Sender, Viewer};

pub use smsgw_messaging::{AppEvent, MessageView, SegmentView, SendRequest, SendResponse, SentAt};

/// Sends one message as `caller` (a user: the admin key cannot send).
///
/// `trace` is the request's trace (the client's context and, when spans
/// are exported, the API span); it is finished here with the outcome.
pub async fn send(
    state: &ApiState,
    caller: &Caller,
    req: SendRequest,
    trace: RequestTrace,
) -> Result<SendResponse, ApiError> {
    let result = match caller {
        Caller::User {
            user_id, app_id, ..
        } => match check_callback(state, user_id, &req).await {
            Ok(()) => state
                .messages
                .send(Sender { user_id, app_id }, req, &trace)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        },
        Caller::AdminKey => Err(ApiError::SendRefused {
            code: "user_required",
            message: "sending needs a user's token, not the admin key".into(),
            forbidden: true,
        }),
    };
    if crate::trace::enabled() {
        if let Ok(r) = &result {
            trace.set(opentelemetry::KeyValue::new(
                "smsgw.message_id",
                r.message_id.clone(),
            ));
        }
        trace.finish(
            result
                .as_ref()
                .err()
                .map(|e| (e.code(), e.http_status().as_u16())),
        );
    }
    result
}

/// A send's `callback_url` must pass the checks of the app's webhook
/// ([`crate::webhook::check_destination`]).
async fn check_callback(
    state: &ApiState,
    user_id: &str,
    req: &SendRequest,
) -> Result<(), ApiError> {
    let Some(url) = req
        .callback_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Ok(());
    };
    let allowed = state.webhook_allow_private
        || state
            .auth
            .store()
            .get(user_id)
            .await?
            .is_some_and(|u| u.webhook_allow_private);
    crate::webhook::check_destination(url, "callback_url", allowed)
}

/// A message of the caller's app (any message for the admin key), by
/// message id or transaction id.
pub async fn info(
    state: &ApiState,
    caller: &Caller,
    message_id: Option<&str>,
    transaction_id: Option<&str>,
) -> Result<MessageView, ApiError> {
    let viewer = match caller {
        Caller::User { app_id, .. } => Viewer::App(app_id),
        Caller::AdminKey => Viewer::Admin,
    };
    Ok(state
        .messages
        .find(viewer, message_id, transaction_id)
        .await?)
}
