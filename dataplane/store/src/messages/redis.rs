//! Redis message store, shared by every pod.
//!
//! # Keys (`P` is [`RedisConfig::prefix`]; `⟨s⟩` is a string packed by the
//! record codec: a hex or UUID id as its bytes, a decimal SMSC id as a
//! number, anything else as a length and its bytes)
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `P:m⟨message_id⟩` | string | the record, in the binary record encoding (`record_codec`) | `created_at + ttl` |
//! | `P:t⟨app_id⟩⟨transaction_id⟩` | string | `⟨message_id⟩` (idempotency) | `created_at + ttl` |
//! | `P:i⟨link⟩⟨smsc_id⟩` | hash `m` `⟨message_id⟩`, `s` seq (mapping); `p`, `pf` (parked receipt, JSON) | index entry and/or parked receipt | message expiry once mapped; `index_grace` after a final receipt; `parked_ttl` while only parked |
//! | `{P:accepted}` | sorted set, score `created_at_ms` | ids of messages still `accepted` | never (entries leave on submit or when the sweeper finds them gone) |
//!
//! A delivered single-segment message costs about 540 bytes of Redis
//! memory once its index entry is gone (BENCHMARKS.md). Records, keys and
//! index entries written by the version before (`{P:m:<id>}` hash `v`, `j`
//! JSON; `{P:t:<app>:<tx>}`; `{P:i:<link>:<smsc_id>}`) are still read and
//! updated in place (a record stays JSON, so pods of that version read it
//! too), until they expire: a rolling upgrade keeps the day of messages
//! already stored. During the upgrade itself, a receipt that a pod of the
//! old version parks for a message submitted by a new one (or the reverse)
//! waits for `parked_ttl` instead of being matched.
//!
//! Every script touches exactly one key, so the store works unchanged on
//! Redis Cluster. What needs two keys is a sequence of single-key atomic
//! steps, ordered so that a crash between two steps leaves nothing that
//! breaks a rule:
//!
//! * **create**: `SET tx NX PXAT` (the idempotency decision, atomic), then
//!   `ZADD accepted`, then the record (`SET NX PXAT`, refusing an existing
//!   id). A pod that dies after the first step leaves a key pointing at no
//!   record; the next create with that key waits briefly for the record,
//!   then writes it itself *under the id the key holds* — so one
//!   `(app, transaction)` still maps to one message and one submission.
//! * **record updates** are optimistic: read the record, apply the domain
//!   rule in Rust ([`smsgw_core::messages`]), write it back with the `cas`
//!   script if its bytes are unchanged (they hold `updated_at_ms`), else
//!   retry. Domain logic exists once, in [`KvMessageStore`] over this
//!   [`RedisKv`].
//! * **receipt matching** is race-free because the index entry and the
//!   parked receipt share one key: the `park` script either finds the
//!   mapping or parks; the `index` script writes the mapping and takes
//!   whatever was parked, in one step. A final receipt cuts the entry's
//!   life to `index_grace` (a duplicate within it is still matched).

use super::kv::{Cas, VersionedKv};
use super::record_codec::{self, put_str, take_str};
use super::{KvMessageStore, MessageStoreOptions, backend, ms};
use crate::RedisConfig;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use smsgw_core::messages::{MessageRecord, MessageStatus, MessageStoreError, ReceiptUpdate};
use std::time::Duration;

/// `KEYS[1]` record; `ARGV[1]` the bytes it was read as, `ARGV[2]` the new
/// bytes. 1 = written, 0 = changed since, -1 = record gone.
const CAS: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";

/// The same for a record of the version before (hash `v` version, `j`
/// JSON): `ARGV[1]` expected version, `ARGV[2]` new JSON.
const CAS_V1: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tonumber(v) + 1, 'j', ARGV[2])
return 1
";

/// Lua: sets key `k` to expire in `ms` unless it expires sooner already
/// (`PEXPIRE … LT` without needing Redis 7).
macro_rules! lua_shorten {
    () => {
        "local function shorten(k, ms)\n  local t = redis.call('PTTL', k)\n  if t < 0 or t > tonumber(ms) then redis.call('PEXPIRE', k, ms) end\nend\n"
    };
}

/// `KEYS[1]` index key; `ARGV[1]` packed message id, `ARGV[2]` seq,
/// `ARGV[3]` expiry (ms since epoch), `ARGV[4]` grace (ms). Writes the
/// mapping; returns (and removes) a parked receipt, cutting the entry's
/// life to the grace when that receipt is final.
const INDEX: &str = concat!(
    lua_shorten!(),
    r"
redis.call('HSET', KEYS[1], 'm', ARGV[1], 's', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
local p = redis.call('HMGET', KEYS[1], 'p', 'pf')
if p[1] then
  redis.call('HDEL', KEYS[1], 'p', 'pf')
  if p[2] == '1' then shorten(KEYS[1], ARGV[4]) end
end
return p[1]
"
);

/// `KEYS[1]` index key; `ARGV[1]` receipt JSON, `ARGV[2]` '1' if final,
/// `ARGV[3]` parked TTL (ms), `ARGV[4]` grace (ms). Returns {message id,
/// seq} when mapped (cutting the entry's life to the grace when the
/// receipt is final), else parks (a final receipt is not replaced by an
/// intermediate one, as `keep_parked` in Rust) and returns nil.
const PARK: &str = concat!(
    lua_shorten!(),
    r"
local m = redis.call('HMGET', KEYS[1], 'm', 's')
if m[1] then
  if ARGV[2] == '1' then shorten(KEYS[1], ARGV[4]) end
  return m
end
if not (redis.call('HGET', KEYS[1], 'pf') == '1' and ARGV[2] == '0') then
  redis.call('HSET', KEYS[1], 'p', ARGV[1], 'pf', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return nil
"
);

/// `KEYS[1]` index key of the version before: its mapping, if any (a
/// final receipt cuts its life to the grace `ARGV[1]`, as [`PARK`]).
const LOOKUP_V1: &str = concat!(
    lua_shorten!(),
    r"
local m = redis.call('HMGET', KEYS[1], 'm', 's')
if m[1] and ARGV[2] == '1' then shorten(KEYS[1], ARGV[1]) end
return m
"
);

/// `KEYS[1]` index key: drops the receipt parked there by a [`PARK`] that
/// then found the mapping under the key of the version before; the key
/// goes when nothing else is left in it.
const UNPARK: &str = r"
redis.call('HDEL', KEYS[1], 'p', 'pf')
";

/// A record's version: the bytes it was read as, or (for a record of the
/// version before, still JSON) its `v` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisVersion {
    /// A record in the binary encoding, as read.
    Binary(Vec<u8>),
    /// A JSON record of the version before, and its `v` field.
    Json(String),
}

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
    cas: redis::Script,
    cas_v1: redis::Script,
    index: redis::Script,
    park: redis::Script,
    lookup_v1: redis::Script,
    unpark: redis::Script,
}

impl RedisKv {
    /// Connects to Redis.
    pub async fn connect(config: &RedisConfig) -> Result<Self, MessageStoreError> {
        let conn = config.connect().await.map_err(backend)?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            cas: redis::Script::new(CAS),
            cas_v1: redis::Script::new(CAS_V1),
            index: redis::Script::new(INDEX),
            park: redis::Script::new(PARK),
            lookup_v1: redis::Script::new(LOOKUP_V1),
            unpark: redis::Script::new(UNPARK),
        })
    }

    /// `P:<kind>` followed by `parts`, each packed.
    fn key(&self, kind: u8, parts: &[&str]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 2 + 20 * parts.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.push(b':');
        k.push(kind);
        for p in parts {
            put_str(&mut k, p);
        }
        k
    }
    fn msg_key(&self, id: &str) -> Vec<u8> {
        self.key(b'm', &[id])
    }
    fn tx_key(&self, app: &str, txid: &str) -> Vec<u8> {
        self.key(b't', &[app, txid])
    }
    fn ix_key(&self, link: &str, sid: &str) -> Vec<u8> {
        self.key(b'i', &[link, sid])
    }
    fn accepted_key(&self) -> String {
        format!("{{{}:accepted}}", self.prefix)
    }
    // Keys of the version before, read until they expire.
    fn msg_key_v1(&self, id: &str) -> String {
        format!("{{{}:m:{id}}}", self.prefix)
    }
    fn tx_key_v1(&self, app: &str, txid: &str) -> String {
        format!("{{{}:t:{app}:{txid}}}", self.prefix)
    }
    fn ix_key_v1(&self, link: &str, sid: &str) -> String {
        format!("{{{}:i:{link}:{sid}}}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// A packed message id (an index value), whole.
fn unpack_id(bytes: &[u8]) -> Result<String, MessageStoreError> {
    match take_str(bytes) {
        Some((id, [])) => Ok(id),
        _ => Err(backend("malformed message id in an index entry")),
    }
}

fn packed(id: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    put_str(&mut v, id);
    v
}

#[async_trait]
impl VersionedKv for RedisKv {
    type Version = RedisVersion;

    async fn load(
        &self,
        id: &str,
    ) -> Result<Option<(RedisVersion, MessageRecord)>, MessageStoreError> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.msg_key(id))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if let Some(b) = bytes {
            let rec = record_codec::decode(&b)?;
            return Ok(Some((RedisVersion::Binary(b), rec)));
        }
        let (v, j): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.msg_key_v1(id))
            .arg("v")
            .arg("j")
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match (v, j) {
            (Some(v), Some(j)) => Ok(Some((RedisVersion::Json(v), record_codec::decode(&j)?))),
            _ => Ok(None),
        }
    }

    async fn compare_and_set(
        &self,
        id: &str,
        version: &RedisVersion,
        rec: &MessageRecord,
    ) -> Result<Cas, MessageStoreError> {
        let invocation = match version {
            RedisVersion::Binary(old) => {
                let mut i = self.cas.key(self.msg_key(id));
                i.arg(old.as_slice()).arg(record_codec::encode(rec));
                i
            }
            RedisVersion::Json(v) => {
                let json = serde_json::to_string(rec).map_err(backend)?;
                let mut i = self.cas_v1.key(self.msg_key_v1(id));
                i.arg(v).arg(json);
                i
            }
        };
        let r: i64 = invocation
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
        // An id of the version before is taken too (a takeover of its key).
        let (set, old): (Option<String>, i64) = redis::pipe()
            .cmd("SET")
            .arg(self.msg_key(&rec.message_id))
            .arg(record_codec::encode(rec))
            .arg("NX")
            .arg("PXAT")
            .arg(expires_at_ms)
            .cmd("EXISTS")
            .arg(self.msg_key_v1(&rec.message_id))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if set.is_some() && old == 1 {
            let _: i64 = redis::cmd("DEL")
                .arg(self.msg_key(&rec.message_id))
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            return Ok(false);
        }
        Ok(set.is_some())
    }

    async fn put_key_if_absent(
        &self,
        app_id: &str,
        transaction_id: &str,
        message_id: &str,
        expires_at_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        // The key of the version before, in the same round trip: while it
        // lives, the transaction is taken.
        let (set, old): (Option<String>, i64) = redis::pipe()
            .cmd("SET")
            .arg(self.tx_key(app_id, transaction_id))
            .arg(packed(message_id))
            .arg("NX")
            .arg("PXAT")
            .arg(expires_at_ms)
            .cmd("EXISTS")
            .arg(self.tx_key_v1(app_id, transaction_id))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if set.is_some() && old == 1 {
            let _: i64 = redis::cmd("DEL")
                .arg(self.tx_key(app_id, transaction_id))
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            return Ok(false);
        }
        Ok(set.is_some())
    }

    async fn load_key(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<String>, MessageStoreError> {
        let (new, old): (Option<Vec<u8>>, Option<String>) = redis::pipe()
            .cmd("GET")
            .arg(self.tx_key(app_id, transaction_id))
            .cmd("GET")
            .arg(self.tx_key_v1(app_id, transaction_id))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match (old, new) {
            (Some(id), _) => Ok(Some(id)),
            (None, Some(b)) => unpack_id(&b).map(Some),
            (None, None) => Ok(None),
        }
    }

    async fn index_and_take_parked(
        &self,
        link: &str,
        smsc_id: &str,
        id: &str,
        seq: u16,
        expires_at_ms: u64,
        grace: Duration,
    ) -> Result<Option<ReceiptUpdate>, MessageStoreError> {
        let parked: Option<String> = self
            .index
            .key(self.ix_key(link, smsc_id))
            .arg(packed(id))
            .arg(seq)
            .arg(expires_at_ms)
            .arg(ms(grace).max(1))
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
        grace: Duration,
    ) -> Result<Option<(String, u16)>, MessageStoreError> {
        let json = serde_json::to_string(r).map_err(backend)?;
        let fin = if r.state.is_final() { "1" } else { "0" };
        let grace = ms(grace).max(1);
        let key = self.ix_key(&r.link, &r.smsc_message_id);
        let mapped: Option<(Vec<u8>, u16)> = self
            .park
            .key(key.as_slice())
            .arg(json)
            .arg(fin)
            .arg(ms(parked_ttl).max(1))
            .arg(grace)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if let Some((id, seq)) = mapped {
            return Ok(Some((unpack_id(&id)?, seq)));
        }
        // Parked: unless the version before mapped it.
        let (id, seq): (Option<String>, Option<u16>) = self
            .lookup_v1
            .key(self.ix_key_v1(&r.link, &r.smsc_message_id))
            .arg(grace)
            .arg(fin)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let (Some(id), Some(seq)) = (id, seq) else {
            return Ok(None);
        };
        let () = self
            .unpark
            .key(key)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(Some((id, seq)))
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
