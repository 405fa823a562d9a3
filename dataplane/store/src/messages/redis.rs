//! Redis message store, shared by every pod.
//!
//! # Keys (`P` is [`RedisConfig::prefix`])
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `{P:m:<message_id>}` | hash `v` (version), `j` (JSON record) | the message | `created_at + ttl` |
//! | `{P:t:<app_id>:<transaction_id>}` | string | message id (idempotency) | `created_at + ttl` |
//! | `{P:i:<link>:<smsc_id>}` | hash `m`, `s` (mapping), `p`, `pf` (parked receipt) | index entry and/or parked receipt | message expiry once mapped, `parked_ttl` while only parked |
//! | `{P:accepted}` | sorted set, score `created_at_ms` | ids of messages still `accepted` | never (entries leave on submit or when the sweeper finds them gone) |
//!
//! Every key is its own hash tag, and every script touches exactly one key,
//! so the store works unchanged on Redis Cluster. What needs two keys is a
//! sequence of single-key atomic steps, ordered so that a crash between two
//! steps leaves nothing that breaks a rule:
//!
//! * **create**: `SET tx NX PXAT` (the idempotency decision, atomic), then
//!   `ZADD accepted`, then the record (`create` script, refusing an existing
//!   id). A pod that dies after the first step leaves a key pointing at no
//!   record; the next create with that key waits briefly for the record,
//!   then writes it itself *under the id the key holds* — so one
//!   `(app, transaction)` still maps to one message and one submission.
//! * **record updates** are optimistic: read `v` and `j`, apply the domain
//!   rule in Rust ([`smsgw_core::messages`]), write back with the `cas`
//!   script if `v` is unchanged, else retry. Domain logic exists once, in
//!   [`KvMessageStore`] over this [`RedisKv`].
//! * **receipt matching** is race-free because the index entry and the
//!   parked receipt share one key: the `park` script either finds the
//!   mapping or parks; the `index` script writes the mapping and takes
//!   whatever was parked, in one step.

use super::kv::{Cas, VersionedKv};
use super::{KvMessageStore, MessageStoreOptions, backend, ms};
use crate::RedisConfig;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use smsgw_core::messages::{MessageRecord, MessageStatus, MessageStoreError, ReceiptUpdate};
use std::time::Duration;

/// `KEYS[1]` record; `ARGV[1]` JSON, `ARGV[2]` expiry (ms since epoch).
/// 1 = written, 0 = the id exists.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'j', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
";

/// `KEYS[1]` record; `ARGV[1]` expected version, `ARGV[2]` new JSON.
/// 1 = written, 0 = version changed, -1 = record gone.
const CAS: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tonumber(v) + 1, 'j', ARGV[2])
return 1
";

/// `KEYS[1]` index key; `ARGV[1]` message id, `ARGV[2]` seq, `ARGV[3]`
/// expiry. Writes the mapping; returns (and removes) a parked receipt.
const INDEX: &str = r"
redis.call('HSET', KEYS[1], 'm', ARGV[1], 's', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
local p = redis.call('HGET', KEYS[1], 'p')
if p then redis.call('HDEL', KEYS[1], 'p', 'pf') end
return p
";

/// `KEYS[1]` index key; `ARGV[1]` receipt JSON, `ARGV[2]` '1' if final,
/// `ARGV[3]` parked TTL (ms). Returns {message id, seq} when mapped, else
/// parks (a final receipt is not replaced by an intermediate one, as
/// `keep_parked` in Rust) and returns nil.
const PARK: &str = r"
local m = redis.call('HMGET', KEYS[1], 'm', 's')
if m[1] then return m end
if not (redis.call('HGET', KEYS[1], 'pf') == '1' and ARGV[2] == '0') then
  redis.call('HSET', KEYS[1], 'p', ARGV[1], 'pf', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return nil
";

/// Messages in Redis (see the module docs for the layout).
pub type RedisMessageStore = KvMessageStore<RedisKv>;

impl KvMessageStore<RedisKv> {
    /// Connects to Redis.
    pub async fn connect(
        config: &RedisConfig,
        opts: MessageStoreOptions,
    ) -> Result<Self, MessageStoreError> {
        Ok(Self::new(RedisKv::connect(config).await?, opts))
    }
}

/// The Redis keys of the message store ([`VersionedKv`]; see the module
/// docs for the layout).
#[derive(Clone)]
pub struct RedisKv {
    conn: ConnectionManager,
    prefix: String,
    create: redis::Script,
    cas: redis::Script,
    index: redis::Script,
    park: redis::Script,
}

impl RedisKv {
    /// Connects to Redis.
    pub async fn connect(config: &RedisConfig) -> Result<Self, MessageStoreError> {
        let conn = config.connect().await.map_err(backend)?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            create: redis::Script::new(CREATE),
            cas: redis::Script::new(CAS),
            index: redis::Script::new(INDEX),
            park: redis::Script::new(PARK),
        })
    }

    fn msg_key(&self, id: &str) -> String {
        format!("{{{}:m:{id}}}", self.prefix)
    }
    fn tx_key(&self, app: &str, txid: &str) -> String {
        format!("{{{}:t:{app}:{txid}}}", self.prefix)
    }
    fn ix_key(&self, link: &str, sid: &str) -> String {
        format!("{{{}:i:{link}:{sid}}}", self.prefix)
    }
    fn accepted_key(&self) -> String {
        format!("{{{}:accepted}}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

#[async_trait]
impl VersionedKv for RedisKv {
    type Version = String;

    async fn load(&self, id: &str) -> Result<Option<(String, MessageRecord)>, MessageStoreError> {
        let (v, j): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.msg_key(id))
            .arg("v")
            .arg("j")
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match (v, j) {
            (Some(v), Some(j)) => Ok(Some((v, serde_json::from_str(&j).map_err(backend)?))),
            _ => Ok(None),
        }
    }

    async fn compare_and_set(
        &self,
        id: &str,
        version: &String,
        rec: &MessageRecord,
    ) -> Result<Cas, MessageStoreError> {
        let json = serde_json::to_string(rec).map_err(backend)?;
        let r: i64 = self
            .cas
            .key(self.msg_key(id))
            .arg(version)
            .arg(json)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(match r {
            1 => Cas::Written,
            -1 => Cas::Gone,
            _ => Cas::Changed,
        })
    }

    async fn put_if_absent(
        &self,
        rec: &MessageRecord,
        expires_at_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        if rec.status == MessageStatus::Accepted {
            // Before the record, so a record is never accepted-but-unlisted.
            let _: i64 = redis::cmd("ZADD")
                .arg(self.accepted_key())
                .arg(rec.created_at_ms)
                .arg(&rec.message_id)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
        }
        let json = serde_json::to_string(rec).map_err(backend)?;
        let n: i64 = self
            .create
            .key(self.msg_key(&rec.message_id))
            .arg(json)
            .arg(expires_at_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn put_key_if_absent(
        &self,
        app_id: &str,
        transaction_id: &str,
        message_id: &str,
        expires_at_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.tx_key(app_id, transaction_id))
            .arg(message_id)
            .arg("NX")
            .arg("PXAT")
            .arg(expires_at_ms)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(set.is_some())
    }

    async fn load_key(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<String>, MessageStoreError> {
        redis::cmd("GET")
            .arg(self.tx_key(app_id, transaction_id))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn index_and_take_parked(
        &self,
        link: &str,
        smsc_id: &str,
        id: &str,
        seq: u16,
        expires_at_ms: u64,
    ) -> Result<Option<ReceiptUpdate>, MessageStoreError> {
        let parked: Option<String> = self
            .index
            .key(self.ix_key(link, smsc_id))
            .arg(id)
            .arg(seq)
            .arg(expires_at_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        parked
            .map(|p| serde_json::from_str(&p).map_err(backend))
            .transpose()
    }

    async fn lookup_or_park(
        &self,
        r: &ReceiptUpdate,
        parked_ttl: Duration,
    ) -> Result<Option<(String, u16)>, MessageStoreError> {
        let json = serde_json::to_string(r).map_err(backend)?;
        self.park
            .key(self.ix_key(&r.link, &r.smsc_message_id))
            .arg(json)
            .arg(if r.state.is_final() { "1" } else { "0" })
            .arg(ms(parked_ttl).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn accepted_ids(
        &self,
        created_before_ms: u64,
        window: usize,
    ) -> Result<Vec<String>, MessageStoreError> {
        redis::cmd("ZRANGEBYSCORE")
            .arg(self.accepted_key())
            .arg("-inf")
            .arg(created_before_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(window)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn unlist_accepted(&self, id: &str) -> Result<(), MessageStoreError> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.accepted_key())
            .arg(id)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }
}
