//! Redis user store, shared by every pod. All user keys carry the hash tag
//! `{smsgw:users}` so the Lua scripts touch one slot and work on Redis
//! Cluster too.

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use smsgw_core::claims::{AddressClaim, ClaimStatus};
use smsgw_core::users::{StoreError, UserRecord, UserStore, email_key};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where and how to reach Redis.
///
/// # Defaults
/// Connection timeout 2 s, response timeout 1 s, key prefix `smsgw`,
/// [`DEFAULT_IN_FLIGHT`] commands in flight per bounded connection.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port/db` URL.
    pub url: String,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one command's answer.
    pub response_timeout: Duration,
    /// Prefix of every key, to share one Redis between deployments.
    pub prefix: String,
    /// Commands (or pipelines) a [`BoundedConnection`] lets out at once;
    /// the others wait for a turn before their response timeout starts.
    pub in_flight: usize,
}

/// Commands in flight at once on one bounded connection, by default:
/// far more than Redis needs to stay busy (≈ 40 k commands/s at 1 ms
/// each is 40 in flight), far fewer than a gateway under overload queues.
pub const DEFAULT_IN_FLIGHT: usize = 512;

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            prefix: "smsgw".into(),
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }

    /// [`connect`](Self::connect), with at most `in_flight` commands out at
    /// once.
    pub async fn connect_bounded(&self) -> Result<BoundedConnection, redis::RedisError> {
        Ok(BoundedConnection {
            inner: self.connect().await?,
            turns: Arc::new(Semaphore::new(self.in_flight.max(1))),
        })
    }

    /// A reconnecting connection with the configured timeouts.
    pub async fn connect(&self) -> Result<ConnectionManager, redis::RedisError> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout)
            .set_number_of_retries(2);
        // The manager retries a refused connection with backoff; bound the
        // whole attempt so start-up fails fast instead of hanging.
        let bound = self.connect_timeout * 2;
        tokio::time::timeout(bound, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| {
                redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "no connection to Redis",
                    format!("within {bound:?}"),
                ))
            })?
    }
}

/// A reconnecting connection that lets at most [`RedisConfig::in_flight`]
/// commands out at once; the others wait for a turn.
///
/// Why: the response timeout runs from the moment a command is queued on
/// the multiplexed connection. A gateway under more load than Redis
/// answers queued thousands of calls on it, and they timed out together
/// once the queue was longer than the timeout (the failure bursts of the
/// Redis soak, BENCHMARKS.md). Waiting for a turn first makes the timeout
/// measure Redis, and holds callers back instead of failing them.
#[derive(Clone)]
pub struct BoundedConnection {
    inner: ConnectionManager,
    turns: Arc<Semaphore>,
}

impl redis::aio::ConnectionLike for BoundedConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let _turn = self.turns.acquire().await.map_err(|_| closed())?;
            self.inner.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let _turn = self.turns.acquire().await.map_err(|_| closed())?;
            self.inner.req_packed_commands(cmd, offset, count).await
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// The semaphore of a [`BoundedConnection`] is never closed; this is the
/// error its acquire would give if it were.
fn closed() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "Redis connection closed"))
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

const CREATE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 3 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[2])
return 0
";

/// Deletes a user, its indexes and its app's claims (keys of one hash
/// tag: `ARGV[2]` is the claim key prefix).
const DELETE: &str = r"
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('DEL', ARGV[2] .. id)
  redis.call('ZREM', KEYS[6], id)
end
redis.call('DEL', KEYS[5])
return 1
";

/// Put-if-absent of a claim under the app's bound: 1 taken, 2 bound.
const PUT_CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
return 0
";

/// Replaces a claim only if it is still exactly `ARGV[1]`.
const SWAP_CLAIM: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Deletes a claim and its index entries only if it is still exactly
/// `ARGV[1]`.
const DELETE_CLAIM: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
";

/// Compare-and-set attempts of an approval or release racing other
/// writers of the same claim before it gives up.
const CLAIM_CAS_ATTEMPTS: usize = 8;

/// Users in Redis: `{prefix:users}:u:<id>` holds the JSON record,
/// `…:e:<email>` and `…:a:<app_id>` index it, `…:index` orders ids.
/// Address claims: `…:c:<claim id>` holds the JSON claim, `…:ca:<app_id>`
/// is the set of an app's claim ids, `…:cindex` orders them all.
#[derive(Clone)]
pub struct RedisUserStore {
    pub(crate) conn: BoundedConnection,
    tag: String,
    /// The configured key prefix (quota keys: `{prefix:quota:<app>}`).
    pub(crate) prefix: String,
    pub(crate) quota_scripts: crate::quotas::RedisQuotaScripts,
    create: redis::Script,
    delete: redis::Script,
    put_claim: redis::Script,
    swap_claim: redis::Script,
    delete_claim: redis::Script,
}

impl RedisUserStore {
    /// Connects to Redis.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let conn = config.connect_bounded().await.map_err(backend)?;
        Ok(Self {
            conn,
            tag: format!("{{{}:users}}", config.prefix),
            prefix: config.prefix.clone(),
            quota_scripts: Default::default(),
            create: redis::Script::new(CREATE),
            delete: redis::Script::new(DELETE),
            put_claim: redis::Script::new(PUT_CLAIM),
            swap_claim: redis::Script::new(SWAP_CLAIM),
            delete_claim: redis::Script::new(DELETE_CLAIM),
        })
    }

    fn claim_key(&self, id: &str) -> String {
        format!("{}:c:{id}", self.tag)
    }
    fn app_claims_key(&self, app_id: &str) -> String {
        format!("{}:ca:{app_id}", self.tag)
    }
    fn claim_index_key(&self) -> String {
        format!("{}:cindex", self.tag)
    }

    /// A claim and its stored JSON (what a compare-and-set compares).
    async fn claim_raw(&self, id: &str) -> Result<Option<(AddressClaim, String)>, StoreError> {
        let json: Option<String> = self
            .conn
            .clone()
            .get(self.claim_key(id))
            .await
            .map_err(backend)?;
        json.map(|j| Ok((serde_json::from_str(&j).map_err(backend)?, j)))
            .transpose()
    }

    /// The JSON values of `keys` (one `MGET`), decoded; absent keys are
    /// skipped.
    async fn mget_json<T: serde::de::DeserializeOwned>(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<T>, StoreError> {
        let jsons: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        jsons
            .into_iter()
            .flatten()
            .map(|j| serde_json::from_str(&j).map_err(backend))
            .collect()
    }

    async fn claims_by_id(&self, ids: &[String]) -> Result<Vec<AddressClaim>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.mget_json(ids.iter().map(|id| self.claim_key(id)).collect())
            .await
    }

    fn user_key(&self, id: &str) -> String {
        format!("{}:u:{id}", self.tag)
    }
    fn email_key(&self, email: &str) -> String {
        format!("{}:e:{}", self.tag, email_key(email))
    }
    fn app_key(&self, app: &str) -> String {
        format!("{}:a:{app}", self.tag)
    }
    fn index_key(&self) -> String {
        format!("{}:index", self.tag)
    }

    async fn by_index(&self, key: String) -> Result<Option<UserRecord>, StoreError> {
        let id: Option<String> = self.conn.clone().get(key).await.map_err(backend)?;
        match id {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }
}

#[async_trait]
impl UserStore for RedisUserStore {
    async fn create(&self, user: &UserRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(user).map_err(backend)?;
        let code: i64 = self
            .create
            .key(self.user_key(&user.user_id))
            .key(self.email_key(&user.email))
            .key(self.app_key(&user.app_id))
            .key(self.index_key())
            .arg(json)
            .arg(&user.user_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        match code {
            0 => Ok(()),
            1 => Err(StoreError::Conflict {
                field: "email",
                value: user.email.clone(),
            }),
            2 => Err(StoreError::Conflict {
                field: "app_id",
                value: user.app_id.clone(),
            }),
            _ => Err(StoreError::Conflict {
                field: "user_id",
                value: user.user_id.clone(),
            }),
        }
    }

    async fn update(&self, user: &UserRecord) -> Result<(), StoreError> {
        let old = self
            .get(&user.user_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(user.user_id.clone()))?;
        if email_key(&old.email) != email_key(&user.email) || old.app_id != user.app_id {
            return Err(StoreError::Backend("email and app_id cannot change".into()));
        }
        let json = serde_json::to_string(user).map_err(backend)?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.user_key(&user.user_id))
            .arg(json)
            .arg("XX")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        set.map(|_| ())
            .ok_or_else(|| StoreError::NotFound(user.user_id.clone()))
    }

    async fn delete(&self, user_id: &str) -> Result<bool, StoreError> {
        let Some(old) = self.get(user_id).await? else {
            return Ok(false);
        };
        let n: i64 = self
            .delete
            .key(self.user_key(user_id))
            .key(self.email_key(&old.email))
            .key(self.app_key(&old.app_id))
            .key(self.index_key())
            .key(self.app_claims_key(&old.app_id))
            .key(self.claim_index_key())
            .arg(user_id)
            .arg(self.claim_key(""))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn get(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let json: Option<String> = self
            .conn
            .clone()
            .get(self.user_key(user_id))
            .await
            .map_err(backend)?;
        json.map(|j| serde_json::from_str(&j).map_err(backend))
            .transpose()
    }

    async fn by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.by_index(self.email_key(email)).await
    }

    async fn by_app_id(&self, app_id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.by_index(self.app_key(app_id)).await
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let ids: Vec<String> = self
            .conn
            .clone()
            .zrangebylex_limit(self.index_key(), min, "+", 0, limit as isize)
            .await
            .map_err(backend)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.mget_json(ids.iter().map(|id| self.user_key(id)).collect())
            .await
    }

    async fn put_claim(&self, claim: &AddressClaim, max_per_app: usize) -> Result<(), StoreError> {
        let id = claim.id();
        let json = serde_json::to_string(claim).map_err(backend)?;
        let code: i64 = self
            .put_claim
            .key(self.claim_key(&id))
            .key(self.app_claims_key(&claim.app_id))
            .key(self.claim_index_key())
            .arg(json)
            .arg(&id)
            .arg(max_per_app)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        match code {
            0 => Ok(()),
            1 => Err(StoreError::Conflict {
                field: "address",
                value: id,
            }),
            _ => Err(StoreError::TooManyClaims {
                app_id: claim.app_id.clone(),
                max: max_per_app,
            }),
        }
    }

    async fn claim(&self, claim_id: &str) -> Result<Option<AddressClaim>, StoreError> {
        Ok(self.claim_raw(claim_id).await?.map(|(c, _)| c))
    }

    async fn claims_of_app(&self, app_id: &str) -> Result<Vec<AddressClaim>, StoreError> {
        let mut ids: Vec<String> = self
            .conn
            .clone()
            .smembers(self.app_claims_key(app_id))
            .await
            .map_err(backend)?;
        ids.sort();
        self.claims_by_id(&ids).await
    }

    async fn list_claims(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AddressClaim>, StoreError> {
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let ids: Vec<String> = self
            .conn
            .clone()
            .zrangebylex_limit(self.claim_index_key(), min, "+", 0, limit as isize)
            .await
            .map_err(backend)?;
        self.claims_by_id(&ids).await
    }

    async fn approve_claim(
        &self,
        claim_id: &str,
        at: u64,
    ) -> Result<Option<AddressClaim>, StoreError> {
        for _ in 0..CLAIM_CAS_ATTEMPTS {
            let Some((mut claim, old)) = self.claim_raw(claim_id).await? else {
                return Ok(None);
            };
            if claim.status == ClaimStatus::Approved {
                return Ok(Some(claim));
            }
            claim.status = ClaimStatus::Approved;
            claim.approved_at = Some(at);
            let new = serde_json::to_string(&claim).map_err(backend)?;
            let swapped: i64 = self
                .swap_claim
                .key(self.claim_key(claim_id))
                .arg(old)
                .arg(new)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(backend)?;
            if swapped == 1 {
                return Ok(Some(claim));
            }
        }
        Err(StoreError::Backend(format!(
            "claim {claim_id:?} kept changing during its approval"
        )))
    }

    async fn delete_claim(
        &self,
        claim_id: &str,
        app_id: Option<&str>,
    ) -> Result<Option<AddressClaim>, StoreError> {
        for _ in 0..CLAIM_CAS_ATTEMPTS {
            let Some((claim, old)) = self.claim_raw(claim_id).await? else {
                return Ok(None);
            };
            if app_id.is_some_and(|a| a != claim.app_id) {
                return Ok(None);
            }
            let deleted: i64 = self
                .delete_claim
                .key(self.claim_key(claim_id))
                .key(self.app_claims_key(&claim.app_id))
                .key(self.claim_index_key())
                .arg(old)
                .arg(claim_id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(backend)?;
            if deleted == 1 {
                return Ok(Some(claim));
            }
        }
        Err(StoreError::Backend(format!(
            "claim {claim_id:?} kept changing during its release"
        )))
    }
}
