//! CheckESME and link control, shared by REST and gRPC.

use crate::auth::Caller;
use crate::{ApiError, ApiState};
use smsgw_core::links::{LinkAction, LinkView};

/// State of the links behind `esme`: every link when empty, the link of
/// that name, or each member link of the pool of that name.
pub fn check_esme(state: &ApiState, esme: Option<&str>) -> Result<Vec<LinkView>, ApiError> {
    let Some(name) = esme.filter(|e| !e.is_empty()) else {
        return Ok(state.messages.links().links());
    };
    if let Some(link) = state.messages.links().link(name) {
        return Ok(vec![link]);
    }
    let config = state.config.load();
    if let Some(pool) = config.pools.get(name) {
        return Ok(pool
            .members
            .iter()
            .filter_map(|m| state.messages.links().link(&m.link))
            .collect());
    }
    Err(ApiError::NotFound(format!(
        "no link or pool named {name:?}"
    )))
}

/// Starts, stops or restarts a link, logging who did it.
pub async fn control(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    action: LinkAction,
) -> Result<LinkView, ApiError> {
    let view = state
        .messages
        .links()
        .control(name, action)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("no link named {name:?}")))?;
    if view.state == "suspended" && action != LinkAction::Stop {
        return Err(ApiError::Conflict(format!(
            "link {name:?} is suspended by its SmppLink (spec.suspended); set it to false to start the link"
        )));
    }
    tracing::info!(actor = %caller, action = ?action, link = %name, state = %view.state, "admin action");
    Ok(view)
}
