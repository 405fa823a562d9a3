//! Redis user store, shared by every pod. All user keys carry the hash tag
//! `{smsgw:users}` so the Lua scripts touch one slot and work on Redis
//! Cluster too.

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use smsgw_core::users::{StoreError, UserRecord, UserStore, email_key};
use std::time::Duration;

/// Where and how to reach Redis.
///
/// # Defaults
/// Connection timeout 2 s, response timeout 1 s, key prefix `smsgw`.
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
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            prefix: "smsgw".into(),
        }
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

const DELETE: &str = r"
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
";

/// Users in Redis: `{prefix:users}:u:<id>` holds the JSON record,
/// `…:e:<email>` and `…:a:<app_id>` index it, `…:index` orders ids.
#[derive(Clone)]
pub struct RedisUserStore {
    conn: ConnectionManager,
    tag: String,
    create: redis::Script,
    delete: redis::Script,
}

impl RedisUserStore {
    /// Connects to Redis.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let conn = config.connect().await.map_err(backend)?;
        Ok(Self {
            conn,
            tag: format!("{{{}:users}}", config.prefix),
            create: redis::Script::new(CREATE),
            delete: redis::Script::new(DELETE),
        })
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
            .arg(user_id)
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
        let keys: Vec<String> = ids.iter().map(|id| self.user_key(id)).collect();
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
}
