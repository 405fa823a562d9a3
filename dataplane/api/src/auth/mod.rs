//! Authentication and users: registration, login, tokens, the admin key,
//! and users managed from configuration. Shared by REST and gRPC: both
//! front ends turn their headers or metadata into an [`http::HeaderMap`]
//! and call [`Auth::authenticate`].

pub mod jwt;
mod limiter;
pub mod password;

use crate::ApiError;
use http::HeaderMap;
use jwt::{Claims, KeySet};
use limiter::FailureLimiter;
use serde::{Deserialize, Serialize};
use smsgw_core::unix_now;
use smsgw_core::users::{UserRecord, UserStore};
use smsgw_crds::{Snapshot, UserSpec, is_plausible_email};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest password accepted at registration.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A user with a valid token whose app id matched `X-App-ID`.
    User {
        /// User id.
        user_id: String,
        /// Application id.
        app_id: String,
        /// Admin flag as of token issue.
        admin: bool,
    },
    /// Automation holding the static admin key.
    AdminKey,
}

/// Which callers a route or call accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// A user ([`Auth::authenticate`]).
    User,
    /// An admin ([`Auth::authenticate_admin`]).
    Admin,
    /// An admin when the admin key is given, else a user.
    Any,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::User {
                user_id, app_id, ..
            } => write!(f, "user:{user_id}/app:{app_id}"),
            Caller::AdminKey => f.write_str("admin-key"),
        }
    }
}

/// Authentication settings.
///
/// # Defaults
/// Tokens live 1 hour; 5 failed logins per email and 20 per client address
/// within 15 minutes, then 429.
#[derive(Clone)]
pub struct AuthConfig {
    /// JWT signing and verification keys.
    pub keys: KeySet,
    /// `ADMIN_API_KEY`; `None` disables admin-key authentication (503).
    pub admin_key: Option<String>,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Failed logins allowed per email per window.
    pub max_failures_per_email: usize,
    /// Failed logins allowed per client address per window.
    pub max_failures_per_address: usize,
    /// Failure-counting window.
    pub failure_window: Duration,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("keys", &self.keys)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// Defaults around the given keys and admin key.
    pub fn new(keys: KeySet, admin_key: Option<String>) -> Self {
        Self {
            keys,
            admin_key: admin_key.filter(|k| !k.is_empty()),
            token_ttl: Duration::from_secs(3600),
            max_failures_per_email: 5,
            max_failures_per_address: 20,
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

/// A new account, as answered by registration. The secret is shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    /// User id.
    pub user_id: String,
    /// Application id.
    pub app_id: String,
    /// Application secret (only here; stored as a hash).
    pub app_secret: String,
}

/// A signed token and its expiry.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
}

/// Users and credentials.
pub struct Auth {
    config: AuthConfig,
    store: Arc<dyn UserStore>,
    by_email: FailureLimiter,
    by_address: FailureLimiter,
}

impl Auth {
    /// An authenticator over a user store.
    pub fn new(config: AuthConfig, store: Arc<dyn UserStore>) -> Self {
        Self {
            by_email: FailureLimiter::new(config.max_failures_per_email, config.failure_window),
            by_address: FailureLimiter::new(config.max_failures_per_address, config.failure_window),
            config,
            store,
        }
    }

    /// The user store.
    pub fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    /// `POST /api/v1/auth/register`.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        app_name: &str,
    ) -> Result<Registered, ApiError> {
        let email = email.trim();
        if !is_plausible_email(email) {
            return Err(ApiError::InvalidField {
                field: "email",
                reason: "is not a valid email address".into(),
            });
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ApiError::InvalidField {
                field: "password",
                reason: format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            });
        }
        let app_name = app_name.trim();
        if app_name.is_empty() || app_name.chars().count() > 100 {
            return Err(ApiError::InvalidField {
                field: "app_name",
                reason: "must be 1 to 100 characters".into(),
            });
        }
        if self.store.by_email(email).await?.is_some() {
            // Fast path; the atomic create below decides races.
            return Err(ApiError::Conflict(format!(
                "email {email:?} is already registered"
            )));
        }
        let app_secret = password::random_secret();
        let (password_hash, secret_hash) = tokio::join!(
            password::hash(password.to_owned()),
            password::hash(app_secret.clone())
        );
        let user = UserRecord {
            user_id: new_id("usr"),
            email: email.to_owned(),
            app_id: new_id("app"),
            app_name: app_name.to_owned(),
            password_hash: password_hash.map_err(ApiError::Internal)?,
            secret_hash: secret_hash.map_err(ApiError::Internal)?,
            admin: false,
            managed_by: None,
            created_at: unix_now(),
            allowed_targets: vec![],
            allowed_sender_ids: vec![],
            rate: None,
            source_addresses: vec![],
            webhook_url: None,
            webhook_secret: None,
        };
        self.store.create(&user).await?;
        tracing::info!(user_id = %user.user_id, app_id = %user.app_id, "user registered");
        Ok(Registered {
            user_id: user.user_id,
            app_id: user.app_id,
            app_secret,
        })
    }

    /// `POST /api/v1/auth/login`: email + password (+ app id) → token.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        app_id: &str,
        client: Option<IpAddr>,
    ) -> Result<IssuedToken, ApiError> {
        let now = Instant::now();
        let email_key = smsgw_core::users::email_key(email);
        let addr_key = client.map(|a| a.to_string());
        let limited = self.by_email.check(&email_key, now).or_else(|| {
            addr_key
                .as_deref()
                .and_then(|a| self.by_address.check(a, now))
        });
        if let Some(wait) = limited {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let user = self.store.by_email(email).await?;
        let ok = match &user {
            Some(u) => password::verify(password.to_owned(), u.password_hash.clone()).await,
            None => {
                // Same cost whether or not the email exists.
                let _ = password::hash(password.to_owned()).await;
                false
            }
        };
        let user = match user {
            Some(u) if ok => u,
            _ => {
                self.by_email.fail(&email_key, now);
                if let Some(a) = &addr_key {
                    self.by_address.fail(a, now);
                }
                return Err(ApiError::Unauthenticated(
                    "invalid email or password".into(),
                ));
            }
        };
        if !app_id.is_empty() && app_id != user.app_id {
            return Err(ApiError::Unauthenticated(
                "app_id does not belong to this user".into(),
            ));
        }
        self.by_email.reset(&email_key);
        Ok(self.issue(&user))
    }

    /// `POST /api/v1/auth/token`: app id + app secret → token.
    pub async fn token(
        &self,
        app_id: &str,
        app_secret: &str,
        client: Option<IpAddr>,
    ) -> Result<IssuedToken, ApiError> {
        let now = Instant::now();
        let key = format!("app:{app_id}");
        let addr_key = client.map(|a| a.to_string());
        if let Some(wait) = self.by_email.check(&key, now).or_else(|| {
            addr_key
                .as_deref()
                .and_then(|a| self.by_address.check(a, now))
        }) {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let user = self.store.by_app_id(app_id).await?;
        let ok = match &user {
            Some(u) => password::verify(app_secret.to_owned(), u.secret_hash.clone()).await,
            None => false,
        };
        match user {
            Some(u) if ok => {
                self.by_email.reset(&key);
                Ok(self.issue(&u))
            }
            _ => {
                self.by_email.fail(&key, now);
                if let Some(a) = &addr_key {
                    self.by_address.fail(a, now);
                }
                Err(ApiError::Unauthenticated(
                    "invalid app_id or app_secret".into(),
                ))
            }
        }
    }

    fn issue(&self, user: &UserRecord) -> IssuedToken {
        let iat = unix_now();
        let exp = iat + self.config.token_ttl.as_secs();
        let claims = Claims {
            sub: user.user_id.clone(),
            app_id: user.app_id.clone(),
            admin: user.admin,
            iat,
            exp,
            jti: new_id("tok"),
            iss: jwt::ISSUER.into(),
        };
        IssuedToken {
            token: self.config.keys.issue(&claims),
            expires_at: exp,
        }
    }

    /// A user caller from `Authorization: Bearer` and `X-App-ID` (gRPC:
    /// `authorization` and `x-app-id` metadata).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = bearer(headers)?;
        let claims = self
            .config
            .keys
            .verify(token, unix_now())
            .map_err(|e| ApiError::Unauthenticated(e.to_string()))?;
        let app_id = headers
            .get("x-app-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::Unauthenticated("missing X-App-ID header".into()))?;
        if app_id != claims.app_id {
            return Err(ApiError::Unauthenticated(
                "X-App-ID does not match the token".into(),
            ));
        }
        Ok(Caller::User {
            user_id: claims.sub,
            app_id: claims.app_id,
            admin: claims.admin,
        })
    }

    /// An admin caller: the static admin key (`X-Admin-Key`), or a user
    /// token whose user is an admin now (the flag is re-read from the store,
    /// so revoking admin takes effect at once).
    pub async fn authenticate_admin(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if let Some(given) = headers.get("x-admin-key") {
            let Some(expected) = &self.config.admin_key else {
                return Err(ApiError::Unavailable(
                    "admin key authentication is disabled: ADMIN_API_KEY is not set".into(),
                ));
            };
            use subtle::ConstantTimeEq;
            return if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                Ok(Caller::AdminKey)
            } else {
                Err(ApiError::Unauthenticated("invalid admin key".into()))
            };
        }
        let caller = self.authenticate(headers)?;
        let Caller::User { user_id, .. } = &caller else {
            unreachable!("authenticate yields users")
        };
        match self.store.get(user_id).await? {
            Some(u) if u.admin => Ok(caller),
            Some(_) => Err(ApiError::PermissionDenied("admin rights required".into())),
            None => Err(ApiError::Unauthenticated(
                "the token's user no longer exists".into(),
            )),
        }
    }

    /// The caller, authenticated as `access` asks.
    pub(crate) async fn authorize(
        &self,
        access: Access,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        match access {
            Access::User => self.authenticate(headers),
            Access::Any if !headers.contains_key("x-admin-key") => self.authenticate(headers),
            Access::Admin | Access::Any => self.authenticate_admin(headers).await,
        }
    }

    /// Makes the store's managed users match the User resources of `snap`:
    /// creates missing ones, updates changed ones, deletes managed users
    /// whose resource is gone. Users registered through the API are not
    /// touched (an email clash with one is logged and skipped).
    pub async fn sync_managed_users(&self, snap: &Snapshot) -> Result<(), ApiError> {
        for (name, spec) in &snap.users {
            self.sync_one(name, spec).await?;
        }
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(after.as_deref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.user_id.clone());
            for u in page {
                if let Some(name) = &u.managed_by
                    && !snap.users.contains_key(name)
                {
                    self.store.delete(&u.user_id).await?;
                    tracing::info!(user_id = %u.user_id, resource = %name, "managed user removed with its resource");
                }
            }
        }
        Ok(())
    }

    async fn sync_one(&self, name: &str, spec: &UserSpec) -> Result<(), ApiError> {
        let existing = self.store.by_email(&spec.email).await?;
        if let Some(u) = &existing
            && u.managed_by.as_deref() != Some(name)
        {
            tracing::warn!(resource = %name, user_id = %u.user_id, "User resource's email belongs to a user not managed by it; skipped");
            return Ok(());
        }
        let mut user = match existing {
            Some(u) => u,
            None => {
                let password = spec
                    .password
                    .clone()
                    .unwrap_or_else(password::random_secret);
                let (p, s) = tokio::join!(
                    password::hash(password),
                    password::hash(password::random_secret())
                );
                let user = UserRecord {
                    user_id: new_id("usr"),
                    email: spec.email.clone(),
                    app_id: new_id("app"),
                    app_name: spec.app_name.clone(),
                    password_hash: p.map_err(ApiError::Internal)?,
                    secret_hash: s.map_err(ApiError::Internal)?,
                    admin: spec.admin,
                    managed_by: Some(name.to_owned()),
                    created_at: unix_now(),
                    allowed_targets: spec.quotas.allowed_targets.clone(),
                    allowed_sender_ids: spec.quotas.allowed_sender_ids.clone(),
                    rate: spec.quotas.rate,
                    source_addresses: spec.source_addresses.clone(),
                    webhook_url: None,
                    webhook_secret: None,
                };
                self.store.create(&user).await?;
                tracing::info!(resource = %name, user_id = %user.user_id, "managed user created");
                return Ok(());
            }
        };
        let before = user.clone();
        user.app_name = spec.app_name.clone();
        user.admin = spec.admin;
        user.allowed_targets = spec.quotas.allowed_targets.clone();
        user.allowed_sender_ids = spec.quotas.allowed_sender_ids.clone();
        user.rate = spec.quotas.rate;
        user.source_addresses = spec.source_addresses.clone();
        if let Some(p) = &spec.password
            && !password::verify(p.clone(), user.password_hash.clone()).await
        {
            user.password_hash = password::hash(p.clone())
                .await
                .map_err(ApiError::Internal)?;
        }
        if user != before {
            self.store.update(&user).await?;
            tracing::info!(resource = %name, user_id = %user.user_id, "managed user updated");
        }
        Ok(())
    }

    /// Issues a new app secret for a user (the old one stops working).
    pub async fn reset_secret(&self, user_id: &str) -> Result<Registered, ApiError> {
        let mut user = self
            .store
            .get(user_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no user {user_id:?}")))?;
        let secret = password::random_secret();
        user.secret_hash = password::hash(secret.clone())
            .await
            .map_err(ApiError::Internal)?;
        self.store.update(&user).await?;
        Ok(Registered {
            user_id: user.user_id,
            app_id: user.app_id,
            app_secret: secret,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let v = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthenticated("missing Authorization: Bearer token".into()))?;
    let v = v
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))?;
    let (scheme, token) = v
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthenticated("malformed Authorization header".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthenticated(
            "expected Authorization: Bearer <token>".into(),
        ));
    }
    Ok(token.trim())
}

/// A random id with a readable prefix: `usr_…`, `app_…`.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests;
