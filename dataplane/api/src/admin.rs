//! Admin operations shared by `/api/v1/admin/*` and `admin.v1`. Every
//! action is logged with who did it; no answer carries a hash or secret
//! except the one-time secret of a reset.

use crate::auth::{Caller, Registered};
use crate::{ApiError, ApiState};
use serde::{Deserialize, Serialize};
use smsgw_core::users::UserRecord;

/// A user as admins see it: no password or secret hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    /// User id.
    pub user_id: String,
    /// Email.
    pub email: String,
    /// Application id.
    pub app_id: String,
    /// Application name.
    pub app_name: String,
    /// Admin rights.
    pub admin: bool,
    /// Name of the User resource managing it, if any.
    pub managed_by: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Allowed links and pools; empty means all.
    pub allowed_targets: Vec<String>,
    /// Allowed sender ids; empty means any.
    pub allowed_sender_ids: Vec<String>,
    /// App rate cap, messages per second.
    pub rate: Option<u32>,
    /// Messages per UTC calendar day; absent: no daily quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_quota: Option<u64>,
    /// Messages per UTC calendar month; absent: no monthly quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_quota: Option<u64>,
    /// Sends are paid from the app's prepaid balance (in segments).
    #[serde(default)]
    pub prepaid: bool,
    /// The app's webhook may target private and loopback addresses.
    #[serde(default)]
    pub webhook_allow_private: bool,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            user_id: u.user_id,
            email: u.email,
            app_id: u.app_id,
            app_name: u.app_name,
            admin: u.admin,
            managed_by: u.managed_by,
            created_at: u.created_at,
            allowed_targets: u.allowed_targets,
            allowed_sender_ids: u.allowed_sender_ids,
            rate: u.rate,
            daily_quota: u.quotas.daily,
            monthly_quota: u.quotas.monthly,
            prepaid: u.quotas.prepaid,
            webhook_allow_private: u.webhook_allow_private,
        }
    }
}

/// A page of users.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserPage {
    /// The users.
    pub users: Vec<UserView>,
    /// Pass as `page_token` for the next page; absent on the last.
    pub next_page_token: Option<String>,
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// New application name.
    pub app_name: Option<String>,
    /// New rate cap (0 removes the cap).
    pub rate: Option<u32>,
    /// New allowed targets (empty: all).
    pub allowed_targets: Option<Vec<String>>,
    /// New daily quota in messages, UTC calendar day (0 removes it).
    pub daily_quota: Option<u64>,
    /// New monthly quota in messages, UTC calendar month (0 removes it).
    pub monthly_quota: Option<u64>,
    /// Make the app prepaid (true: each send takes its segments from the
    /// balance, topped up through `POST /api/v1/admin/apps/{app_id}/balance`)
    /// or not.
    pub prepaid: Option<bool>,
    /// New admin flag.
    pub admin: Option<bool>,
    /// Let (true) or stop letting (false) the app's webhook target private,
    /// loopback and link-local addresses.
    pub webhook_allow_private: Option<bool>,
}

/// Lists users, `page_size` (1..=1000, default 100) at a time.
pub async fn list_users(
    state: &ApiState,
    page_size: Option<u32>,
    page_token: Option<&str>,
) -> Result<UserPage, ApiError> {
    let size = page_size.unwrap_or(100);
    if !(1..=1000).contains(&size) {
        return Err(ApiError::InvalidField {
            field: "page_size",
            reason: "must be between 1 and 1000".into(),
        });
    }
    let users = state
        .auth
        .store()
        .list(page_token.filter(|t| !t.is_empty()), size as usize)
        .await?;
    let next_page_token = (users.len() == size as usize)
        .then(|| users.last().map(|u| u.user_id.clone()))
        .flatten();
    Ok(UserPage {
        users: users.into_iter().map(Into::into).collect(),
        next_page_token,
    })
}

async fn load(state: &ApiState, user_id: &str) -> Result<UserRecord, ApiError> {
    state
        .auth
        .store()
        .get(user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id:?}")))
}

fn refuse_managed(u: &UserRecord, what: &str) -> Result<(), ApiError> {
    match &u.managed_by {
        Some(r) => Err(ApiError::Conflict(format!(
            "user {:?} is managed by User resource {r:?}; {what} it there",
            u.user_id
        ))),
        None => Ok(()),
    }
}

/// One user.
pub async fn get_user(state: &ApiState, user_id: &str) -> Result<UserView, ApiError> {
    load(state, user_id).await.map(Into::into)
}

/// Applies `update` to a user. Managed users are changed through their
/// resource, so they are refused here.
pub async fn update_user(
    state: &ApiState,
    caller: &Caller,
    user_id: &str,
    update: UserUpdate,
) -> Result<UserView, ApiError> {
    let mut u = load(state, user_id).await?;
    refuse_managed(&u, "change")?;
    if let Some(name) = update.app_name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ApiError::InvalidField {
                field: "app_name",
                reason: "must be 1 to 100 characters".into(),
            });
        }
        u.app_name = name.to_owned();
    }
    if let Some(rate) = update.rate {
        u.rate = (rate > 0).then_some(rate);
    }
    if let Some(targets) = update.allowed_targets {
        let config = state.config.load();
        if let Some(t) = targets.iter().find(|t| !config.has_target(t)) {
            return Err(ApiError::InvalidField {
                field: "allowed_targets",
                reason: format!("no link or pool named {t:?}"),
            });
        }
        u.allowed_targets = targets;
    }
    if let Some(daily) = update.daily_quota {
        u.quotas.daily = (daily > 0).then_some(daily);
    }
    if let Some(monthly) = update.monthly_quota {
        u.quotas.monthly = (monthly > 0).then_some(monthly);
    }
    if let Some(prepaid) = update.prepaid {
        u.quotas.prepaid = prepaid;
    }
    if let Some(admin) = update.admin {
        u.admin = admin;
    }
    if let Some(allow) = update.webhook_allow_private {
        u.webhook_allow_private = allow;
    }
    state.auth.store().update(&u).await?;
    tracing::info!(actor = %caller, action = "update_user", user_id = %u.user_id, admin = u.admin, webhook_allow_private = u.webhook_allow_private, quotas = ?u.quotas, "admin action");
    Ok(u.into())
}

/// Grants or revokes admin.
pub async fn set_admin(
    state: &ApiState,
    caller: &Caller,
    user_id: &str,
    admin: bool,
) -> Result<UserView, ApiError> {
    update_user(
        state,
        caller,
        user_id,
        UserUpdate {
            admin: Some(admin),
            ..Default::default()
        },
    )
    .await
}

/// Deletes a user; managed users are refused.
pub async fn delete_user(state: &ApiState, caller: &Caller, user_id: &str) -> Result<(), ApiError> {
    let u = load(state, user_id).await?;
    refuse_managed(&u, "delete")?;
    state.auth.store().delete(user_id).await?;
    tracing::info!(actor = %caller, action = "delete_user", user_id = %user_id, "admin action");
    Ok(())
}

/// New app secret for a user, shown once.
pub async fn reset_secret(
    state: &ApiState,
    caller: &Caller,
    user_id: &str,
) -> Result<Registered, ApiError> {
    let r = state.auth.reset_secret(user_id).await?;
    tracing::info!(actor = %caller, action = "reset_app_secret", user_id = %user_id, "admin action");
    Ok(r)
}

/// The running configuration, secrets replaced by `***`.
pub fn config(state: &ApiState, caller: &Caller) -> serde_json::Value {
    tracing::info!(actor = %caller, action = "get_config", "admin action");
    serde_json::to_value(state.config.load().redacted()).expect("snapshot serialises")
}

/// Loads blacklist `name` from its CSV files now and reports what was
/// loaded (numbers, prefixes, malformed lines with their line numbers).
pub async fn reload_blacklist(
    state: &ApiState,
    caller: &Caller,
    name: &str,
) -> Result<smsgw_core::policy::LoadReport, ApiError> {
    use smsgw_core::policy::ReloadError;
    let Some(reloader) = &state.blacklists else {
        return Err(ApiError::Unavailable(
            "no blacklists are configured (--blacklist NAME=BUCKET/PREFIX)".into(),
        ));
    };
    tracing::info!(actor = %caller, action = "reload_blacklist", list = name, "admin action");
    reloader.reload(name).await.map_err(|e| match e {
        ReloadError::UnknownList(n) => ApiError::NotFound(format!(
            "no blacklist {n:?} is configured; configured: {}",
            reloader.lists().join(", ")
        )),
        other => ApiError::Unavailable(other.to_string()),
    })
}

/// A top-up of an app's prepaid balance.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    /// Segments to add, 1 to 10¹².
    pub add: u64,
    /// Idempotency key (at most 128 bytes), e.g. the invoice or payment id:
    /// a repeat with the same id adds nothing and answers the balance
    /// after the first. Without it every call adds.
    #[serde(default)]
    pub top_up_id: Option<String>,
}

/// Adds segments to an app's prepaid balance (managed apps too: the
/// balance is state, not configuration).
pub async fn top_up(
    state: &ApiState,
    caller: &Caller,
    app_id: &str,
    req: TopUpRequest,
) -> Result<smsgw_messaging::quotas::BalanceView, ApiError> {
    let view = state
        .messages
        .top_up(app_id, req.add, req.top_up_id.as_deref())
        .await?;
    tracing::info!(actor = %caller, action = "top_up", %app_id, add = req.add, top_up_id = ?req.top_up_id, applied = view.applied, balance = view.balance, "admin action");
    Ok(view)
}
