//! Pull: an app reads its events back from a cursor (`GET /api/v1/events`,
//! gRPC WatchEvents with `after`), so a client that cannot receive
//! webhooks, or reconnects, misses nothing the outbox kept.

use crate::auth::Caller;
use crate::{ApiError, ApiState};
use smsgw_core::outbox::{Logged, OutboxError};

/// Most events one read returns.
pub const MAX_PAGE: usize = 1000;

/// The caller's app.
pub(crate) fn app_of(caller: &Caller) -> Result<&str, ApiError> {
    match caller {
        Caller::User { app_id, .. } => Ok(app_id),
        Caller::AdminKey => Err(ApiError::PermissionDenied(
            "events belong to a user's app".into(),
        )),
    }
}

/// Up to `limit` events of `app_id` after `after` (from the oldest kept
/// without it).
pub async fn page(
    state: &ApiState,
    app_id: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Logged>, ApiError> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidField {
            field: "limit",
            reason: format!("must be 1 to {MAX_PAGE}"),
        });
    }
    let outbox = state
        .messages
        .outbox()
        .ok_or_else(|| ApiError::Unavailable("this gateway keeps no events".into()))?;
    outbox
        .read(app_id, after.filter(|a| !a.is_empty()), limit)
        .await
        .map_err(|e| match e {
            OutboxError::BadPosition(p) => ApiError::InvalidField {
                field: "after",
                reason: format!("{p:?} is not a cursor this gateway handed out"),
            },
            e => ApiError::Internal(e.to_string()),
        })
}
