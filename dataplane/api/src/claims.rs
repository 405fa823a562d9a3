//! Source addresses an app claims for its inbound (MO) messages, shared by
//! REST (`/api/v1/settings/addresses`, `/api/v1/admin/addresses`) and
//! gRPC (`sms.v1` ClaimAddress/ListAddressClaims/ReleaseAddress,
//! `admin.v1` ListAddressClaims/ApproveAddressClaim/RejectAddressClaim).
//! The rule (unique, pending until an admin approves, never an address a
//! User resource lists) is [`smsgw_core::claims`]'s.

use crate::auth::Caller;
use crate::{ApiError, ApiState};
use serde::{Deserialize, Serialize};
use smsgw_core::claims::{AddressClaim, AddressKind, ClaimStatus};

/// `POST /api/v1/settings/addresses` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// A short code (3 to 6 digits) or an E.164 number (7 to 15 digits,
    /// `+` optional).
    #[schema(required, example = "4444")]
    pub address: Option<String>,
    /// Only MO whose first word is this keyword (1 to 20 letters or
    /// digits, case-insensitive); absent: every MO to the address that no
    /// keyword claim takes.
    #[schema(example = "STOP")]
    pub keyword: Option<String>,
}

/// A claim as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimView {
    /// Its id: the address digits, or `digits:KEYWORD`; used in the paths
    /// that release, approve and reject it.
    #[schema(example = "4444:STOP")]
    pub claim_id: String,
    /// The address, digits only.
    pub address: String,
    /// `number` or `short_code`.
    #[schema(value_type = String, example = "short_code")]
    pub kind: AddressKind,
    /// Upper-case keyword, if the claim is on one.
    pub keyword: Option<String>,
    /// The claiming app.
    pub app_id: String,
    /// `pending` (receives nothing yet) or `approved`.
    #[schema(value_type = String, example = "pending")]
    pub status: ClaimStatus,
    /// When it was claimed, Unix seconds.
    pub created_at: u64,
    /// When an admin approved it, Unix seconds.
    pub approved_at: Option<u64>,
}

impl From<AddressClaim> for ClaimView {
    fn from(c: AddressClaim) -> Self {
        Self {
            claim_id: c.id(),
            address: c.address,
            kind: c.kind,
            keyword: c.keyword,
            app_id: c.app_id,
            status: c.status,
            created_at: c.created_at,
            approved_at: c.approved_at,
        }
    }
}

/// The caller's app's claims.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimList {
    /// Ordered by id.
    pub claims: Vec<ClaimView>,
}

/// A page of every app's claims.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimPage {
    /// Ordered by id (only those of the status asked for).
    pub claims: Vec<ClaimView>,
    /// Pass as `page_token` for the next page; absent on the last.
    pub next_page_token: Option<String>,
}

/// The caller's user and app; claims belong to a user's app.
fn app(caller: &Caller) -> Result<(&str, &str), ApiError> {
    match caller {
        Caller::User {
            user_id, app_id, ..
        } => Ok((user_id, app_id)),
        Caller::AdminKey => Err(ApiError::PermissionDenied(
            "address claims belong to a user's app".into(),
        )),
    }
}

/// The caller's app claims an address (or a keyword on it); the claim is
/// `pending` until an admin approves it.
pub async fn claim(
    state: &ApiState,
    caller: &Caller,
    req: ClaimRequest,
) -> Result<ClaimView, ApiError> {
    let (user_id, app_id) = app(caller)?;
    let address = req.address.as_deref().ok_or(ApiError::InvalidField {
        field: "address",
        reason: "is required".into(),
    })?;
    let c = state
        .messages
        .claim_address(user_id, app_id, address, req.keyword.as_deref())
        .await?;
    Ok(c.into())
}

/// The caller's app's claims.
pub async fn list_own(state: &ApiState, caller: &Caller) -> Result<ClaimList, ApiError> {
    let (_, app_id) = app(caller)?;
    let claims = state.messages.address_claims(app_id).await?;
    Ok(ClaimList {
        claims: claims.into_iter().map(Into::into).collect(),
    })
}

/// The caller's app releases one of its claims.
pub async fn release(
    state: &ApiState,
    caller: &Caller,
    claim_id: &str,
) -> Result<ClaimView, ApiError> {
    let (_, app_id) = app(caller)?;
    Ok(state
        .messages
        .release_address(app_id, claim_id)
        .await?
        .into())
}

/// `pending` or `approved`, for the admin listing's filter.
pub fn parse_status(s: &str) -> Result<Option<ClaimStatus>, ApiError> {
    match s {
        "" => Ok(None),
        "pending" => Ok(Some(ClaimStatus::Pending)),
        "approved" => Ok(Some(ClaimStatus::Approved)),
        other => Err(ApiError::InvalidField {
            field: "status",
            reason: format!("{other:?} is neither pending nor approved"),
        }),
    }
}

/// Every app's claims (only `status` ones when given), `page_size`
/// (1..=1000, default 100) stored claims at a time.
pub async fn list_all(
    state: &ApiState,
    status: Option<ClaimStatus>,
    page_size: Option<u32>,
    page_token: Option<&str>,
) -> Result<ClaimPage, ApiError> {
    let size = page_size.unwrap_or(100);
    if !(1..=1000).contains(&size) {
        return Err(ApiError::InvalidField {
            field: "page_size",
            reason: "must be between 1 and 1000".into(),
        });
    }
    let (claims, next_page_token) = state
        .messages
        .list_address_claims(status, page_token, size as usize)
        .await?;
    Ok(ClaimPage {
        claims: claims.into_iter().map(Into::into).collect(),
        next_page_token,
    })
}

/// An admin approves a claim: MO to its address reaches the app.
pub async fn approve(
    state: &ApiState,
    caller: &Caller,
    claim_id: &str,
) -> Result<ClaimView, ApiError> {
    let c = state.messages.approve_address_claim(claim_id).await?;
    tracing::info!(by = %caller, claim = claim_id, app_id = %c.app_id, "admin approved an address claim");
    Ok(c.into())
}

/// An admin rejects (deletes) a claim, pending or approved.
pub async fn reject(
    state: &ApiState,
    caller: &Caller,
    claim_id: &str,
) -> Result<ClaimView, ApiError> {
    let c = state.messages.reject_address_claim(claim_id).await?;
    tracing::info!(by = %caller, claim = claim_id, app_id = %c.app_id, "admin rejected an address claim");
    Ok(c.into())
}
