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
use limiter::Throttle;
use serde::{Deserialize, Serialize};
use smsgw_core::bounded::{BoundedMap, MemoryUse};
use smsgw_core::unix_now;
use smsgw_core::users::{UserRecord, UserStore};
use smsgw_crds::{AppCredentials, Snapshot, UserSpec, is_plausible_email};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prefix of a stored webhook secret that is derived, not kept:
/// `derived:v1:<kid>:<nonce>`.
const WEBHOOK_DERIVED: &str = "derived:v1:";

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

/// Longest token lifetime accepted (`--token-ttl`): a stolen token is
/// bounded by it even where revocation cannot reach (a store outage).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Longest time a revoked token (deleted user, bumped generation) may
/// still be accepted by a pod that checked the user just before.
pub const MAX_REVOCATION_STALENESS: Duration = Duration::from_secs(5);

/// Authentication settings.
///
/// # Defaults
/// Tokens live 1 hour. Per (account, client address) 5 failed attempts
/// are free, then each further attempt waits 1 s, 2 s, 4 s … up to 15
/// minutes after the previous failure (429 with Retry-After meanwhile);
/// per client address 20 free, same backoff. 10 registrations per client
/// address, then the same backoff from 1 minute. At most 4 argon2
/// computations at once, 64 waiting (up to 5 s), beyond that 429. Users
/// are re-read at most every 2 s per pod for revocation.
#[derive(Clone)]
pub struct AuthConfig {
    /// JWT signing and verification keys.
    pub keys: KeySet,
    /// `ADMIN_API_KEY`; `None` disables admin-key authentication (503).
    pub admin_key: Option<String>,
    /// Token lifetime, at most [`MAX_TOKEN_TTL`].
    pub token_ttl: Duration,
    /// Failed attempts per (account, client address) before backoff.
    pub free_failures_per_account: u32,
    /// Failed attempts per client address (any account) before backoff.
    pub free_failures_per_address: u32,
    /// First backoff after the free failures; doubles per failure.
    pub failure_backoff: Duration,
    /// Longest backoff.
    pub failure_backoff_max: Duration,
    /// Failures are forgotten this long after the last one.
    pub failure_window: Duration,
    /// Whether `POST /api/v1/auth/register` is open to anyone.
    pub open_registration: bool,
    /// Registrations per client address before backoff (from 1 minute).
    pub registrations_per_address: u32,
    /// argon2 computations at once (each ~19 MiB).
    pub max_concurrent_hashes: usize,
    /// How long a pod trusts what it read about a token's user (deleted?
    /// generation?), at most [`MAX_REVOCATION_STALENESS`].
    pub revocation_check_interval: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("keys", &self.keys)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .field("token_ttl", &self.token_ttl)
            .field("open_registration", &self.open_registration)
            .field("trusted_proxies", &self.trusted_proxies)
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
            free_failures_per_account: 5,
            free_failures_per_address: 20,
            failure_backoff: Duration::from_secs(1),
            failure_backoff_max: Duration::from_secs(15 * 60),
            failure_window: Duration::from_secs(15 * 60),
            open_registration: true,
            registrations_per_address: 10,
            max_concurrent_hashes: 4,
            revocation_check_interval: Duration::from_secs(2),
            trusted_proxies: Vec::new(),
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

/// What a pod last read about a token's user.
#[derive(Clone, Debug)]
struct Liveness {
    /// `None`: the user does not exist.
    user: Option<(u64, String)>,
}

/// Users and credentials.
pub struct Auth {
    config: AuthConfig,
    store: Arc<dyn UserStore>,
    by_account: Throttle,
    by_address: Throttle,
    registrations: Throttle,
    hashes: password::HashGate,
    /// Users' token generation and app, by user id, each kept
    /// `revocation_check_interval`; at most [`LIVE_USERS`].
    live: std::sync::Mutex<BoundedMap<String, Liveness>>,
    /// Reads of the user store in flight for [`Auth::liveness`], by user
    /// id: requests that find a user's entry stale at once share one read
    /// (a burst after it expired made one read a request). An entry
    /// leaves when a request that shared it is answered, so the map holds
    /// only users with a request in flight; at most [`SHARED_READS`].
    reading: std::sync::Mutex<HashMap<String, Arc<LivenessRead>>>,
    /// Reads not shared because [`Auth::reading`] was full.
    unshared: AtomicU64,
    /// Counts [`Auth::forget`]s: a read that began before one answers its
    /// callers but is not cached (it may predate the change).
    forgets: AtomicU64,
}

/// One read of a user's liveness, shared by the requests waiting for it.
type LivenessRead = tokio::sync::OnceCell<Option<(u64, String)>>;

/// Takes a [`LivenessRead`] out of [`Auth`]'s map when dropped, unless a
/// newer read replaced it.
struct LeaveRead<'a> {
    reading: &'a std::sync::Mutex<HashMap<String, Arc<LivenessRead>>>,
    key: &'a str,
    read: &'a Arc<LivenessRead>,
}

impl Drop for LeaveRead<'_> {
    fn drop(&mut self) {
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        if reading
            .get(self.key)
            .is_some_and(|r| Arc::ptr_eq(r, self.read))
        {
            reading.remove(self.key);
        }
    }
}

/// Users whose token generation is cached at most; past it the oldest is
/// dropped (its next request reads the user store again).
pub const LIVE_USERS: usize = 100_000;

/// Users whose liveness reads are shared at most ([`Auth::liveness`]);
/// past it a request reads on its own (as before reads were shared). Far
/// above the users with a request in flight at once on any pod.
pub const SHARED_READS: usize = 10_000;

/// The answer when the hashing gate is full.
fn busy(_: password::Busy) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_secs: 1,
    }
}

impl Auth {
    /// An authenticator over a user store.
    pub fn new(mut config: AuthConfig, store: Arc<dyn UserStore>) -> Self {
        config.token_ttl = config.token_ttl.min(MAX_TOKEN_TTL);
        config.revocation_check_interval = config
            .revocation_check_interval
            .min(MAX_REVOCATION_STALENESS);
        let throttle = |name, free| {
            Throttle::new(
                name,
                free,
                config.failure_backoff,
                config.failure_backoff_max,
                config.failure_window,
            )
        };
        Self {
            by_account: throttle("auth_failures_by_account", config.free_failures_per_account),
            by_address: throttle("auth_failures_by_address", config.free_failures_per_address),
            registrations: Throttle::new(
                "auth_registrations",
                config.registrations_per_address,
                Duration::from_secs(60),
                Duration::from_secs(3600),
                Duration::from_secs(3600),
            ),
            hashes: password::HashGate::new(
                config.max_concurrent_hashes,
                config.max_concurrent_hashes * 16,
                Duration::from_secs(5),
            ),
            live: std::sync::Mutex::new(BoundedMap::new(
                "auth_users",
                LIVE_USERS,
                usize::MAX,
                config.revocation_check_interval,
            )),
            reading: Default::default(),
            unshared: AtomicU64::new(0),
            forgets: AtomicU64::new(0),
            config,
            store,
        }
    }

    /// What the authenticator's bounded in-memory structures hold (users'
    /// token generations, failure throttles, argon2 working memory), for the `smsgw_memory_*`
    /// gauges.
    pub fn memory(&self) -> Vec<MemoryUse> {
        vec![
            self.live.lock().unwrap_or_else(|p| p.into_inner()).memory(),
            self.by_account.memory(),
            self.by_address.memory(),
            self.registrations.memory(),
            password::memory(),
            self.reads_memory(),
        ]
    }

    /// The liveness reads in flight, shared by the requests waiting for
    /// them (`auth_liveness_reads`).
    fn reads_memory(&self) -> MemoryUse {
        let reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        MemoryUse {
            structure: "auth_liveness_reads",
            entries: reading.len() as u64,
            bytes: reading
                .keys()
                .map(|k| {
                    2 * k.len()
                        + std::mem::size_of::<LivenessRead>()
                        + 2 * std::mem::size_of::<usize>()
                })
                .sum::<usize>() as u64,
            capacity: SHARED_READS as u64,
            evicted: self.unshared.load(Ordering::Relaxed),
        }
    }

    /// The user store.
    pub fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    /// The client address of a request from `peer` with the given headers
    /// (`X-Forwarded-For` is believed only from `trusted_proxies`).
    pub fn client_addr(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let xff = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        crate::net::client_addr(
            peer,
            (!xff.is_empty()).then_some(xff.as_str()),
            &self.config.trusted_proxies,
        )
    }

    /// Reserves one attempt on `account` from `client` (and on `client`
    /// for any account), or answers 429 with the wait. The reservation
    /// counts as a failure until [`Auth::succeeded`].
    fn reserve(
        &self,
        account: &str,
        client: Option<IpAddr>,
        what: &str,
    ) -> Result<(String, Option<String>), ApiError> {
        let now = Instant::now();
        let addr = client.map(crate::net::address_key);
        let account_key = format!("{account}|{}", addr.as_deref().unwrap_or("-"));
        let refused = |wait: Duration, scope: &str| {
            tracing::warn!(
                attempt = what,
                account,
                client = addr.as_deref().unwrap_or("-"),
                scope,
                retry_after_secs = wait.as_secs(),
                "authentication throttled after repeated failures"
            );
            ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            }
        };
        if let Some(a) = &addr {
            self.by_address
                .reserve(a, now)
                .map_err(|w| refused(w, "client address"))?;
        }
        if let Err(w) = self.by_account.reserve(&account_key, now) {
            if let Some(a) = &addr {
                self.by_address.release(a);
            }
            return Err(refused(w, "account and client address"));
        }
        Ok((account_key, addr))
    }

    /// The attempt reserved by [`Auth::reserve`] succeeded.
    fn succeeded(&self, keys: &(String, Option<String>)) {
        self.by_account.reset(&keys.0);
        if let Some(a) = &keys.1 {
            self.by_address.release(a);
        }
    }

    /// Gives back a reservation whose attempt never ran (the hashing gate
    /// was full): the caller is told to retry and loses no attempt.
    fn not_tried(&self, keys: &(String, Option<String>)) {
        self.by_account.release(&keys.0);
        if let Some(a) = &keys.1 {
            self.by_address.release(a);
        }
    }

    fn failed(&self, what: &str, account: &str, keys: &(String, Option<String>)) {
        tracing::warn!(
            attempt = what,
            account,
            client = keys.1.as_deref().unwrap_or("-"),
            "authentication failed"
        );
    }

    /// `POST /api/v1/auth/register`.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        app_name: &str,
    ) -> Result<Registered, ApiError> {
        self.register_from(email, password, app_name, None).await
    }

    /// `POST /api/v1/auth/register` from `client`: refused when open
    /// registration is off, throttled per client address. A taken email
    /// answers 409 without naming it, after the same hashing work as a
    /// new one, so the answer time does not tell either.
    pub async fn register_from(
        &self,
        email: &str,
        password: &str,
        app_name: &str,
        client: Option<IpAddr>,
    ) -> Result<Registered, ApiError> {
        if !self.config.open_registration {
            return Err(ApiError::PermissionDenied(
                "registration is closed on this gateway; ask an administrator for an account"
                    .into(),
            ));
        }
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
        if let Some(ip) = client
            && let Err(wait) = self
                .registrations
                .reserve(&crate::net::address_key(ip), Instant::now())
        {
            tracing::warn!(client = %crate::net::address_key(ip), "registration throttled");
            return Err(ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let taken = || {
            ApiError::Conflict(
                "this email cannot be registered (it may already be in use); log in or use another"
                    .into(),
            )
        };
        let app_secret = password::random_secret();
        let (password_hash, secret_hash) = tokio::join!(
            self.hashes.hash(password.to_owned()),
            self.hashes.hash(app_secret.clone())
        );
        let password_hash = password_hash.map_err(busy)?.map_err(ApiError::Internal)?;
        let secret_hash = secret_hash.map_err(busy)?.map_err(ApiError::Internal)?;
        let user = UserRecord {
            user_id: new_id("usr"),
            email: email.to_owned(),
            app_id: new_id("app"),
            app_name: app_name.to_owned(),
            password_hash,
            secret_hash,
            admin: false,
            managed_by: None,
            created_at: unix_now(),
            allowed_targets: vec![],
            allowed_sender_ids: vec![],
            rate: None,
            source_addresses: vec![],
            webhook_url: None,
            webhook_secret: None,
            webhook_allow_private: false,
            webhook_options: Default::default(),
            quotas: Default::default(),
            token_generation: 0,
        };
        match self.store.create(&user).await {
            Ok(()) => {}
            Err(smsgw_core::users::StoreError::Conflict { field: "email", .. }) => {
                return Err(taken());
            }
            Err(e) => return Err(e.into()),
        }
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
        let account = format!("email:{}", smsgw_core::users::email_key(email));
        let keys = self.reserve(&account, client, "login")?;
        let user = self.store.by_email(email).await?;
        // Same cost whether or not the email exists.
        let phc = match &user {
            Some(u) => u.password_hash.clone(),
            None => password::decoy_hash().await.to_owned(),
        };
        let ok = match self.hashes.verify(password.to_owned(), phc).await {
            Ok(ok) => ok,
            Err(b) => {
                self.not_tried(&keys);
                return Err(busy(b));
            }
        };
        let user = match user {
            Some(u) if ok => u,
            _ => {
                self.failed("login", &account, &keys);
                return Err(ApiError::Unauthenticated(
                    "invalid email or password".into(),
                ));
            }
        };
        self.succeeded(&keys);
        if !app_id.is_empty() && app_id != user.app_id {
            return Err(ApiError::Unauthenticated(
                "app_id does not belong to this user".into(),
            ));
        }
        Ok(self.issue(&user))
    }

    /// `POST /api/v1/auth/token`: app id + app secret → token. An unknown
    /// app id costs the same hash as a known one.
    pub async fn token(
        &self,
        app_id: &str,
        app_secret: &str,
        client: Option<IpAddr>,
    ) -> Result<IssuedToken, ApiError> {
        let account = format!("app:{app_id}");
        let keys = self.reserve(&account, client, "token")?;
        let user = self.store.by_app_id(app_id).await?;
        let phc = match &user {
            Some(u) => u.secret_hash.clone(),
            None => password::decoy_hash().await.to_owned(),
        };
        let ok = match self.hashes.verify(app_secret.to_owned(), phc).await {
            Ok(ok) => ok,
            Err(b) => {
                self.not_tried(&keys);
                return Err(busy(b));
            }
        };
        match user {
            Some(u) if ok => {
                self.succeeded(&keys);
                Ok(self.issue(&u))
            }
            _ => {
                self.failed("token", &account, &keys);
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
            generation: user.token_generation,
        };
        IssuedToken {
            token: self.config.keys.issue(&claims),
            expires_at: exp,
        }
    }

    /// A user caller from `Authorization: Bearer` and `X-App-ID` (gRPC:
    /// `authorization` and `x-app-id` metadata). The token's user must
    /// still exist with the token's generation (read from the shared
    /// store at most every `revocation_check_interval`), so deleting a
    /// user or resetting its app secret ends its tokens on every pod
    /// within that interval.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
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
        match self.liveness(&claims.sub).await? {
            Some((generation, app)) if generation == claims.generation && app == claims.app_id => {}
            Some(_) => {
                return Err(ApiError::Unauthenticated(
                    "the token was revoked; get a new one".into(),
                ));
            }
            None => {
                return Err(ApiError::Unauthenticated(
                    "the token's user no longer exists".into(),
                ));
            }
        }
        Ok(Caller::User {
            user_id: claims.sub,
            app_id: claims.app_id,
            admin: claims.admin,
        })
    }

    /// A user's generation and app id, from the cache when fresh.
    async fn liveness(&self, user_id: &str) -> Result<Option<(u64, String)>, ApiError> {
        let now = Instant::now();
        let key = user_id.to_owned();
        if let Some(l) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key, now)
        {
            return Ok(l.user.clone());
        }
        let read = {
            let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
            match reading.get(&key) {
                Some(r) => r.clone(),
                None if reading.len() >= SHARED_READS => {
                    // Full: a read of its own, outside the map.
                    self.unshared.fetch_add(1, Ordering::Relaxed);
                    Arc::default()
                }
                None => reading.entry(key.clone()).or_default().clone(),
            }
        };
        // Whatever ends this call (answer, error, a client gone), the read
        // leaves the map: the next stale request starts a new one.
        let _leave = LeaveRead {
            reading: &self.reading,
            key: &key,
            read: &read,
        };
        let user = read
            .get_or_try_init(|| async {
                let forgets = self.forgets.load(Ordering::SeqCst);
                let user = self
                    .store
                    .get(user_id)
                    .await?
                    .map(|u| (u.token_generation, u.app_id));
                // Checked under the cache's lock, which `forget` takes
                // after counting: a forget either is seen here or removes
                // what this inserts.
                let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                if self.forgets.load(Ordering::SeqCst) == forgets {
                    let bytes = 2 * key.len()
                        + user.as_ref().map_or(0, |(_, app)| app.len())
                        + std::mem::size_of::<Liveness>();
                    live.insert(key.clone(), Liveness { user: user.clone() }, bytes, now);
                }
                Ok::<_, ApiError>(user)
            })
            .await?
            .clone();
        Ok(user)
    }

    /// The public token keys as a JSON Web Key Set (empty with HS256).
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.config.keys.jwks()
    }

    /// A new webhook signing secret for `user_id`: what to store (a key id
    /// and a random nonce, never the secret) and the secret to show once.
    pub fn new_webhook_secret(&self, user_id: &str) -> (String, String) {
        let nonce = password::random_secret();
        let kid = self.config.keys.derivation_kid().to_owned();
        let stored = format!("{WEBHOOK_DERIVED}{kid}:{nonce}");
        let secret = self
            .webhook_secret(user_id, &stored)
            .expect("the signing key is in the set");
        (stored, secret)
    }

    /// The webhook signing secret of `user_id` from what is stored:
    /// recomputed from a JWT key and the stored nonce, or (records from
    /// before) the stored secret itself. `None` when the key it was derived
    /// from has been retired (the webhook must be set again).
    pub fn webhook_secret(&self, user_id: &str, stored: &str) -> Option<String> {
        let Some(rest) = stored.strip_prefix(WEBHOOK_DERIVED) else {
            return Some(stored.to_owned());
        };
        let (kid, nonce) = rest.rsplit_once(':')?;
        let key = self
            .config
            .keys
            .derive(kid, format!("webhook:{user_id}:{nonce}").as_bytes())?;
        use base64::Engine;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key))
    }

    /// Forgets what this pod cached about `user_id` (it changed here;
    /// other pods notice within `revocation_check_interval`).
    pub fn forget(&self, user_id: &str) {
        // First, so that a read in flight is not cached; then later
        // requests start a read of their own.
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.reading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_id);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&user_id.to_owned());
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
                tracing::warn!("admin key refused");
                Err(ApiError::Unauthenticated("invalid admin key".into()))
            };
        }
        let caller = self.authenticate(headers).await?;
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
            Access::User => self.authenticate(headers).await,
            Access::Any if !headers.contains_key("x-admin-key") => self.authenticate(headers).await,
            Access::Admin | Access::Any => self.authenticate_admin(headers).await,
        }
    }

    /// Makes the store's managed users match the User resources of `snap`:
    /// creates missing ones, updates changed ones, deletes managed users
    /// whose resource is gone. Users registered through the API are not
    /// touched (an email clash with one is logged and skipped).
    ///
    /// A user's password and its app's credentials (the User's
    /// credentials Secret: app id and secret) come as hashes from the
    /// operator (`password_hashes`, `app_secret_hash`), stored as they
    /// are, or in plain from a standalone file, hashed here. A new user
    /// takes the app id of its credentials; a changed app secret revokes
    /// the app's tokens.
    pub async fn sync_managed_users(&self, snap: &Snapshot) -> Result<(), ApiError> {
        for (name, spec) in &snap.users {
            let app = snap.app_credentials.get(name);
            let wanted = Managed {
                spec,
                password: match (snap.password_hashes.get(name), &spec.password) {
                    (Some(h), _) => Secret::Hash(h),
                    (None, Some(p)) => Secret::Plain(p),
                    (None, None) => Secret::Unset,
                },
                app_id: app.map(|c| c.app_id.as_str()),
                app_secret: match app {
                    Some(AppCredentials {
                        app_secret_hash: Some(h),
                        ..
                    }) => Secret::Hash(h),
                    Some(c) if !c.app_secret.is_empty() => Secret::Plain(&c.app_secret),
                    _ => Secret::Unset,
                },
            };
            self.sync_one(name, &wanted).await?;
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

    async fn sync_one(&self, name: &str, wanted: &Managed<'_>) -> Result<(), ApiError> {
        // Pods sharing one user store apply the same snapshot at once: when
        // another pod created the user between our read and our create,
        // the second round finds it and updates it like any existing one.
        if self.sync_once(name, wanted).await? {
            self.sync_once(name, wanted).await?;
        }
        Ok(())
    }

    /// One round of [`Self::sync_one`]; true when the create lost a race
    /// with another pod (nothing was written: go again).
    async fn sync_once(&self, name: &str, wanted: &Managed<'_>) -> Result<bool, ApiError> {
        let spec = wanted.spec;
        let existing = self.store.by_email(&spec.email).await?;
        if let Some(u) = &existing
            && u.managed_by.as_deref() != Some(name)
        {
            tracing::warn!(resource = %name, user_id = %u.user_id, "User resource's email belongs to a user not managed by it; skipped");
            return Ok(false);
        }
        let mut user = match existing {
            Some(u) => u,
            None => {
                let (p, s) = tokio::join!(
                    wanted.password.initial_hash(),
                    wanted.app_secret.initial_hash()
                );
                let user = UserRecord {
                    user_id: new_id("usr"),
                    email: spec.email.clone(),
                    app_id: wanted.app_id.map_or_else(|| new_id("app"), str::to_owned),
                    app_name: spec.app_name.clone(),
                    password_hash: p?,
                    secret_hash: s?,
                    admin: spec.admin,
                    managed_by: Some(name.to_owned()),
                    created_at: unix_now(),
                    allowed_targets: spec.quotas.allowed_targets.clone(),
                    allowed_sender_ids: spec.quotas.allowed_sender_ids.clone(),
                    rate: spec.quotas.rate,
                    quotas: quota_limits(&spec.quotas),
                    source_addresses: spec.source_addresses.clone(),
                    webhook_url: None,
                    webhook_secret: None,
                    webhook_allow_private: spec.webhook_allow_private,
                    webhook_options: Default::default(),
                    token_generation: 0,
                };
                match self.store.create(&user).await {
                    Ok(()) => {}
                    Err(smsgw_core::users::StoreError::Conflict { field: "email", .. }) => {
                        return Ok(true);
                    }
                    Err(smsgw_core::users::StoreError::Conflict {
                        field: "app_id", ..
                    }) => {
                        tracing::warn!(resource = %name, app_id = %user.app_id, "the app id of the User's credentials Secret belongs to another user; skipped");
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(resource = %name, user_id = %user.user_id, "managed user created");
                return Ok(false);
            }
        };
        let before = user.clone();
        user.app_name = spec.app_name.clone();
        user.admin = spec.admin;
        user.allowed_targets = spec.quotas.allowed_targets.clone();
        user.allowed_sender_ids = spec.quotas.allowed_sender_ids.clone();
        user.rate = spec.quotas.rate;
        user.quotas = quota_limits(&spec.quotas);
        user.source_addresses = spec.source_addresses.clone();
        user.webhook_allow_private = spec.webhook_allow_private;
        if let Some(h) = wanted.password.new_hash(&user.password_hash).await? {
            user.password_hash = h;
        }
        match wanted.app_id {
            Some(app_id) if app_id == user.app_id => {
                if let Some(h) = wanted.app_secret.new_hash(&user.secret_hash).await? {
                    user.secret_hash = h;
                    // A new secret is a rotation: tokens of the old end.
                    user.token_generation += 1;
                }
            }
            Some(app_id) => {
                tracing::warn!(resource = %name, user_id = %user.user_id, credentials_app_id = %app_id, stored_app_id = %user.app_id, "the app id of the User's credentials Secret is not the stored one (an app id never changes): the Secret's app credentials do not authenticate");
            }
            None => {}
        }
        if user != before {
            self.store.update(&user).await?;
            if user.token_generation != before.token_generation {
                self.forget(&user.user_id);
            }
            tracing::info!(resource = %name, user_id = %user.user_id, "managed user updated");
        }
        Ok(false)
    }

    /// Issues a new app secret for a user (the old one stops working).
    pub async fn reset_secret(&self, user_id: &str) -> Result<Registered, ApiError> {
        let mut user = self
            .store
            .get(user_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no user {user_id:?}")))?;
        let secret = password::random_secret();
        user.secret_hash = self
            .hashes
            .hash(secret.clone())
            .await
            .map_err(busy)?
            .map_err(ApiError::Internal)?;
        // Tokens issued before the reset stop working.
        user.token_generation += 1;
        self.store.update(&user).await?;
        self.forget(&user.user_id);
        Ok(Registered {
            user_id: user.user_id,
            app_id: user.app_id,
            app_secret: secret,
        })
    }
}

/// A User resource's message quotas as stored on its record.
fn quota_limits(q: &smsgw_crds::Quotas) -> smsgw_core::quotas::QuotaLimits {
    smsgw_core::quotas::QuotaLimits {
        daily: q.daily,
        monthly: q.monthly,
        prepaid: q.prepaid,
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

/// What a snapshot says a managed user should be.
struct Managed<'a> {
    spec: &'a UserSpec,
    password: Secret<'a>,
    /// The app id of the User's credentials Secret, when it exists.
    app_id: Option<&'a str>,
    app_secret: Secret<'a>,
}

/// A managed user's password or app secret as a snapshot gives it.
enum Secret<'a> {
    /// An argon2id PHC string (from the operator), stored as it is.
    Hash(&'a str),
    /// The secret itself (a standalone file), hashed here.
    Plain(&'a str),
    /// None: a new user gets a random one nobody knows.
    Unset,
}

impl Secret<'_> {
    /// The hash a new user stores.
    async fn initial_hash(&self) -> Result<String, ApiError> {
        match self {
            Secret::Hash(h) => Ok((*h).to_owned()),
            Secret::Plain(p) => password::hash((*p).to_owned()).await,
            Secret::Unset => password::hash(password::random_secret()).await,
        }
        .map_err(ApiError::Internal)
    }

    /// The hash to store in place of `stored`, when `stored` does not
    /// already hold this secret.
    async fn new_hash(&self, stored: &str) -> Result<Option<String>, ApiError> {
        match self {
            Secret::Hash(h) => Ok((*h != stored).then(|| (*h).to_owned())),
            Secret::Plain(p) if !password::verify((*p).to_owned(), stored.to_owned()).await => {
                password::hash((*p).to_owned())
                    .await
                    .map(Some)
                    .map_err(ApiError::Internal)
            }
            Secret::Plain(_) | Secret::Unset => Ok(None),
        }
    }
}

/// A random id with a readable prefix: `usr_…`, `app_…`.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests;
