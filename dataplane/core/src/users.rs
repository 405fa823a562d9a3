//! Users, their applications, and the store that keeps them.

use crate::claims::AddressClaim;
use serde::{Deserialize, Serialize};

/// A user and its application, as stored. Hashes are PHC strings
/// (argon2id); the plain password and app secret are never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Stable user id.
    pub user_id: String,
    /// Login email, unique (compared lower-cased).
    pub email: String,
    /// Application id, unique; clients send it as `X-App-ID`.
    pub app_id: String,
    /// Application name.
    pub app_name: String,
    /// argon2id hash of the password.
    pub password_hash: String,
    /// argon2id hash of the app secret.
    pub secret_hash: String,
    /// Admin rights.
    pub admin: bool,
    /// Declared by a User resource: created and updated from configuration,
    /// not deletable through the API. Holds the resource name.
    #[serde(default)]
    pub managed_by: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Links and pools the app may use; empty means all.
    #[serde(default)]
    pub allowed_targets: Vec<String>,
    /// Sender ids the app may use; empty means any.
    #[serde(default)]
    pub allowed_sender_ids: Vec<String>,
    /// Messages per second for the app; `None` means no app-level cap.
    #[serde(default)]
    pub rate: Option<u32>,
    /// Daily and monthly message quotas and the prepaid flag; the default
    /// (none) costs the send path nothing.
    #[serde(
        default,
        skip_serializing_if = "crate::quotas::QuotaLimits::is_unlimited"
    )]
    pub quotas: crate::quotas::QuotaLimits,
    /// Addresses whose inbound messages belong to this app.
    #[serde(default)]
    pub source_addresses: Vec<String>,
    /// Where status changes and inbound messages are POSTed, if anywhere.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Key of the HMAC-SHA256 signature of webhook bodies (a signing key,
    /// not a password: it must be kept to sign; never logged or shown again
    /// after it is set).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Set by an admin: this app's webhook may target private, loopback
    /// and link-local addresses (refused otherwise unless the gateway runs
    /// with `--webhook-allow-private`).
    #[serde(default)]
    pub webhook_allow_private: bool,
    /// How events reach the webhook: batched or one per request, and
    /// which kinds.
    #[serde(default, skip_serializing_if = "WebhookOptions::is_default")]
    pub webhook_options: WebhookOptions,
    /// Token generation: tokens carry the generation they were issued at
    /// and stop working when it is bumped (app-secret reset, revocation).
    #[serde(default)]
    pub token_generation: u64,
}

/// An app's choices for its webhook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookOptions {
    /// Events sent as JSON arrays (up to the gateway's batch size per
    /// request) instead of one JSON object per request.
    #[serde(default)]
    pub batch: bool,
    /// Event kinds wanted; `None`: every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::outbox::EventMask>,
}

impl WebhookOptions {
    /// True for the defaults (one event per request, every kind).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique key (email, app id) is taken.
    #[error("{field} {value:?} is already registered")]
    Conflict {
        /// Which unique field.
        field: &'static str,
        /// The value that is taken.
        value: String,
    },
    /// The record does not exist.
    #[error("no user {0:?}")]
    NotFound(String),
    /// An app already holds as many address claims as it may
    /// ([`crate::claims::MAX_CLAIMS_PER_APP`]).
    #[error("app {app_id:?} already holds {max} address claims")]
    TooManyClaims {
        /// The claiming app.
        app_id: String,
        /// How many it may hold.
        max: usize,
    },
    /// The backend failed (I/O, connection, corruption).
    #[error("store backend failed: {0}")]
    Backend(String),
}

/// Normalised email key: trimmed and lower-cased.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Persistent users, shared by every pod using the same backend.
///
/// `create` is atomic on the unique keys: of concurrent creations with one
/// email (or app id), exactly one succeeds and the others get
/// [`StoreError::Conflict`].
#[async_trait::async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user; fails with `Conflict` if the email or app id exists.
    async fn create(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Replaces a user's record (same user id; email and app id unchanged).
    async fn update(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Removes a user, its indexes and its app's address claims; false if
    /// it did not exist.
    async fn delete(&self, user_id: &str) -> Result<bool, StoreError>;
    /// A user by id.
    async fn get(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// A user by email (case-insensitive).
    async fn by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    /// A user by application id.
    async fn by_app_id(&self, app_id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Users ordered by user id, starting after `after`, at most `limit`.
    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError>;

    /// Stores a new address claim if its id ([`AddressClaim::id`]) is free
    /// and its app holds fewer than `max_per_app` claims, atomically across
    /// every pod: `Conflict { field: "address" }` when the id is taken
    /// (whoever holds it), [`StoreError::TooManyClaims`] at the bound.
    async fn put_claim(&self, claim: &AddressClaim, max_per_app: usize) -> Result<(), StoreError>;
    /// The claim with id `claim_id`.
    async fn claim(&self, claim_id: &str) -> Result<Option<AddressClaim>, StoreError>;
    /// Every claim of an app, ordered by id.
    async fn claims_of_app(&self, app_id: &str) -> Result<Vec<AddressClaim>, StoreError>;
    /// Claims ordered by id, starting after `after`, at most `limit`.
    async fn list_claims(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AddressClaim>, StoreError>;
    /// Marks a claim approved at `at` (Unix seconds) and answers it; an
    /// approved one is answered unchanged; `None` when there is no such
    /// claim (released meanwhile: never brought back).
    async fn approve_claim(
        &self,
        claim_id: &str,
        at: u64,
    ) -> Result<Option<AddressClaim>, StoreError>;
    /// Deletes a claim, only if `app_id` holds it when one is given (an
    /// app releasing its own) or whoever does (an admin); answers the
    /// claim deleted, `None` when there was none (or another app's).
    async fn delete_claim(
        &self,
        claim_id: &str,
        app_id: Option<&str>,
    ) -> Result<Option<AddressClaim>, StoreError>;
}
