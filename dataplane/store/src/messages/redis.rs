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
use super::record_codec::{self, is_lower_hex, nibble, packed, put_str, take_str};
use super::{KvMessageStore, MessageStoreOptions, backend, ms};
use crate::RedisConfig;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use smsgw_core::messages::{
    MessageRecord, MessageStatus, MessageStoreError, ReceiptUpdate, unix_now_ms,
};
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

/// `KEYS[1]` a record bucket; `ARGV[1]` the field, `ARGV[2]` the record,
/// `ARGV[3]` its expiry and `ARGV[4]` now (ms since epoch). Writes the
/// record unless the field exists (0), and makes the bucket live at least
/// until the record's expiry (1).
const RECORD_PUT: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local t = redis.call('PTTL', KEYS[1])
if t < 0 or t < tonumber(ARGV[3]) - tonumber(ARGV[4]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return 1
";

/// [`CAS`] for a record in a bucket: `KEYS[1]` bucket, `ARGV[1]` field,
/// `ARGV[2]` the bytes it was read as, `ARGV[3]` the new bytes.
const RECORD_CAS: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
if v ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
";

/// The transaction-id index of one shard (module docs). `KEYS[1]` the
/// shard's generation list (hash: generation start → `s:c:until`, the
/// first and current level and the latest expiry of its entries; every
/// other key the script touches shares its hash tag). `ARGV[1]` the
/// field (packed app and transaction id), `ARGV[2]` mode, `ARGV[3]` now,
/// `ARGV[4]` the second hash (picks a leaf within a level), `ARGV[5]` the
/// value (6 bytes of expiry, big-endian ms, then the packed message id).
///
/// Mode `get`: the live value of the field, or nil. `put` (with
/// `ARGV[6]` the start of the generation the entry belongs in and
/// `ARGV[7]` the leaf capacity): the live value if there is one, else
/// writes `ARGV[5]` and answers nil: the idempotency decision, atomic.
/// `del`: removes the field where it holds exactly `ARGV[5]`.
///
/// A generation's entries go to level `c`, in leaf `hash2 mod 2^c`; a
/// leaf that reaches the capacity moves the generation to the next level
/// (twice the leaves), so leaves stay small (listpack-encoded) whatever
/// the rate; a new generation starts at the level the one before ended.
const TX_INDEX: &str = r"
local meta = KEYS[1]
local tag = string.sub(meta, 1, -2)
local field, mode, now, h2 = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local function leaf(g, l) return string.format('%s%d:%d:%d', tag, g, l, h2 % (2 ^ l)) end
local function expiry(v) local e = 0 for i = 1, 6 do e = e * 256 + string.byte(v, i) end return e end
local gens, latest = {}, nil
local flat = redis.call('HGETALL', meta)
for i = 1, #flat, 2 do
  local s, c, u = string.match(flat[i + 1], '^(%d+):(%d+):(%d+)$')
  gens[tonumber(flat[i])] = { tonumber(s), tonumber(c), tonumber(u), flat[i] }
end
for g, lv in pairs(gens) do
  if lv[3] > now then
    for l = lv[1], lv[2] do
      local k = leaf(g, l)
      local v = redis.call('HGET', k, field)
      if v then
        if mode == 'del' then
          if v == ARGV[5] then redis.call('HDEL', k, field) end
        elseif expiry(v) > now then
          return v
        end
      end
    end
  end
end
if mode ~= 'put' then return false end
local cg, cap, exp = tonumber(ARGV[6]), tonumber(ARGV[7]), expiry(ARGV[5])
local lv = gens[cg]
if not lv then
  local s, before = 0, nil
  for g, o in pairs(gens) do
    if o[3] <= now then
      redis.call('HDEL', meta, o[4])
    elseif g < cg and (before == nil or g > before) then
      before, s = g, o[2]
    end
  end
  lv = { s, s, exp }
end
local k = leaf(cg, lv[2])
if lv[2] < 26 and redis.call('HLEN', k) >= cap then
  lv[2] = lv[2] + 1
  k = leaf(cg, lv[2])
end
if exp > lv[3] then lv[3] = exp end
redis.call('HSET', meta, string.format('%d', cg), string.format('%d:%d:%d', lv[1], lv[2], lv[3]))
redis.call('HSET', k, field, ARGV[5])
for _, key in ipairs({ k, meta }) do
  local t = redis.call('PTTL', key)
  if t < 0 or t < exp - now then redis.call('PEXPIREAT', key, string.format('%d', exp)) end
end
return false
";

/// A record's version: the bytes it was read as, or (for a record of the
/// version before, still JSON) its `v` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisVersion {
    /// A record in a bucket (the binary encoding), as read.
    Bucket(Vec<u8>),
    /// A record in a key of its own (the binary encoding), as read.
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
        Ok(Self::new(RedisKv::connect(config, &opts).await?, opts))
    }
}

/// Transaction-id shards: the hash tags the index is spread over (on
/// Redis Cluster, over as many slots).
const TX_SHARDS: u32 = 64;

/// Generations a message TTL spans in the transaction-id index: an entry's
/// memory outlives its expiry by at most `ttl / TX_GENERATIONS`.
const TX_GENERATIONS: u64 = 8;

/// Entries a transaction-id leaf takes before its generation moves to the
/// next level: below Redis's `hash-max-listpack-entries` (128 by default),
/// so leaves stay listpack-encoded.
const TX_LEAF_CAPACITY: u32 = 96;

/// Milliseconds of message ids one record bucket holds: its records'
/// memory outlives their expiry by at most this (and the takeover delay).
const RECORD_BUCKET_MS: u64 = 1_000;

/// The Redis keys of the message store ([`VersionedKv`]; see the module
/// docs for the layout).
#[derive(Clone)]
pub struct RedisKv {
    conn: ConnectionManager,
    prefix: String,
    /// The message TTL (ms): an entry's creation is its expiry less it.
    ttl_ms: u64,
    /// Width of a transaction-id generation: `ttl / TX_GENERATIONS`.
    generation_ms: u64,
    cas: redis::Script,
    cas_v1: redis::Script,
    index: redis::Script,
    park: redis::Script,
    lookup_v1: redis::Script,
    unpark: redis::Script,
    record_put: redis::Script,
    record_cas: redis::Script,
    tx_index: redis::Script,
}

impl RedisKv {
    /// Connects to Redis; `opts.ttl` sets the width of the
    /// transaction-id generations (pods with other TTLs still find each
    /// other's entries).
    pub async fn connect(
        config: &RedisConfig,
        opts: &MessageStoreOptions,
    ) -> Result<Self, MessageStoreError> {
        let conn = config.connect().await.map_err(backend)?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            ttl_ms: ms(opts.ttl),
            generation_ms: (ms(opts.ttl) / TX_GENERATIONS).max(1),
            cas: redis::Script::new(CAS),
            cas_v1: redis::Script::new(CAS_V1),
            index: redis::Script::new(INDEX),
            park: redis::Script::new(PARK),
            lookup_v1: redis::Script::new(LOOKUP_V1),
            unpark: redis::Script::new(UNPARK),
            record_put: redis::Script::new(RECORD_PUT),
            record_cas: redis::Script::new(RECORD_CAS),
            tx_index: redis::Script::new(TX_INDEX),
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
    /// The bucket key and field of a record whose id carries its time.
    fn record_slot(&self, id: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let (ms, rest) = uuid_v7(id)?;
        Some((
            self.key(b'r', &[&(ms / RECORD_BUCKET_MS).to_string()]),
            rest.to_vec(),
        ))
    }
    /// The transaction-id entry of `(app, transaction)`: its shard's
    /// generation list, its field and its second hash.
    fn tx_entry(&self, app: &str, txid: &str) -> (String, Vec<u8>, u32) {
        let mut field = Vec::with_capacity(app.len() + txid.len() + 4);
        put_str(&mut field, app);
        put_str(&mut field, txid);
        let h = crc32fast::hash(&field);
        (
            format!("{{{}:t:{}}}l", self.prefix, h % TX_SHARDS),
            field,
            h / TX_SHARDS,
        )
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

    /// Runs `pipe`, whose `EVALSHA`s are of `scripts`; loads them and runs
    /// it again when Redis does not know one (a restart, a failover).
    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        scripts: &[&redis::Script],
    ) -> Result<T, MessageStoreError> {
        match pipe.query_async(&mut self.conn()).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                for s in scripts {
                    s.prepare_invoke()
                        .load_async(&mut self.conn())
                        .await
                        .map_err(backend)?;
                }
                pipe.query_async(&mut self.conn()).await.map_err(backend)
            }
            r => r.map_err(backend),
        }
    }

    /// The transaction-id script for `(app, transaction)` in `mode`.
    fn tx_invocation(
        &self,
        app: &str,
        txid: &str,
        mode: &str,
        value: &[u8],
    ) -> redis::ScriptInvocation<'_> {
        let (meta, field, h2) = self.tx_entry(app, txid);
        let mut i = self.tx_index.key(meta);
        i.arg(field).arg(mode).arg(unix_now_ms()).arg(h2).arg(value);
        i
    }
}

/// The time and the last 10 bytes of a UUIDv7 message id in its simple
/// form (32 lowercase hex digits, version nibble 7): what the gateway
/// makes. `None` for any other id.
fn uuid_v7(id: &str) -> Option<(u64, [u8; 10])> {
    let b = id.as_bytes();
    if b.len() != 32 || b[12] != b'7' || !is_lower_hex(b) {
        return None;
    }
    let byte = |i: usize| (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
    let ms = (0..6).fold(0u64, |acc, i| (acc << 8) | u64::from(byte(i)));
    let mut rest = [0u8; 10];
    for (i, r) in rest.iter_mut().enumerate() {
        *r = byte(6 + i);
    }
    Some((ms, rest))
}

/// A transaction-id index value: the expiry (6 bytes, big-endian ms) and
/// the packed message id.
fn tx_value(message_id: &str, expires_at_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&expires_at_ms.min((1 << 48) - 1).to_be_bytes()[2..]);
    put_str(&mut v, message_id);
    v
}

/// A packed message id (an index value), whole.
fn unpack_id(bytes: &[u8]) -> Result<String, MessageStoreError> {
    match take_str(bytes) {
        Some((id, [])) => Ok(id),
        _ => Err(backend("malformed message id in an index entry")),
    }
}

#[async_trait]
impl VersionedKv for RedisKv {
    type Version = RedisVersion;

    async fn load(
        &self,
        id: &str,
    ) -> Result<Option<(RedisVersion, MessageRecord)>, MessageStoreError> {
        if let Some((bucket, field)) = self.record_slot(id) {
            let bytes: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(bucket)
                .arg(field)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            if let Some(b) = bytes {
                let rec = record_codec::decode(&b)?;
                return Ok(Some((RedisVersion::Bucket(b), rec)));
            }
        }
        // Layouts before: a key of its own, binary, then JSON.
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
            RedisVersion::Bucket(old) => {
                let (bucket, field) = self
                    .record_slot(id)
                    .ok_or_else(|| backend("a bucketed record without a UUIDv7 id"))?;
                let mut i = self.record_cas.key(bucket);
                i.arg(field)
                    .arg(old.as_slice())
                    .arg(record_codec::encode(rec));
                i
            }
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
        // An id of a layout before is taken too (a takeover of its key): in
        // the same round trip, whether a record has it there.
        let bytes = record_codec::encode(rec);
        let own = self.msg_key(&rec.message_id);
        let old = self.msg_key_v1(&rec.message_id);
        let slot = self.record_slot(&rec.message_id);
        let (set, own_exists, old_exists): (bool, i64, i64) = match &slot {
            Some((bucket, field)) => {
                let mut put = self.record_put.key(bucket.as_slice());
                put.arg(field.as_slice())
                    .arg(bytes)
                    .arg(expires_at_ms)
                    .arg(unix_now_ms());
                let mut pipe = redis::pipe();
                pipe.invoke_script(&put)
                    .cmd("EXISTS")
                    .arg(&own)
                    .cmd("EXISTS")
                    .arg(&old);
                self.query_pipe(&pipe, &[&self.record_put]).await?
            }
            None => {
                let (set, old_exists): (Option<String>, i64) = redis::pipe()
                    .cmd("SET")
                    .arg(&own)
                    .arg(bytes)
                    .arg("NX")
                    .arg("PXAT")
                    .arg(expires_at_ms)
                    .cmd("EXISTS")
                    .arg(&old)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(backend)?;
                (set.is_some(), 0, old_exists)
            }
        };
        if set && (own_exists == 1 || old_exists == 1) {
            let undo = match &slot {
                Some((bucket, field)) => {
                    let mut c = redis::cmd("HDEL");
                    c.arg(bucket.as_slice()).arg(field.as_slice());
                    c
                }
                None => {
                    let mut c = redis::cmd("DEL");
                    c.arg(&own);
                    c
                }
            };
            let _: i64 = undo.query_async(&mut self.conn()).await.map_err(backend)?;
            return Ok(false);
        }
        Ok(set)
    }

    async fn put_key_if_absent(
        &self,
        app_id: &str,
        transaction_id: &str,
        message_id: &str,
        expires_at_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        // The keys of the layouts before, in the same round trip: while
        // one lives, the transaction is taken.
        let value = tx_value(message_id, expires_at_ms);
        let created = expires_at_ms.saturating_sub(self.ttl_ms);
        let mut put = self.tx_invocation(app_id, transaction_id, "put", &value);
        put.arg(created - created % self.generation_ms)
            .arg(TX_LEAF_CAPACITY);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&put)
            .cmd("EXISTS")
            .arg(self.tx_key(app_id, transaction_id))
            .cmd("EXISTS")
            .arg(self.tx_key_v1(app_id, transaction_id));
        let (found, own, old): (Option<Vec<u8>>, i64, i64) =
            self.query_pipe(&pipe, &[&self.tx_index]).await?;
        if found.is_some() {
            return Ok(false);
        }
        if own == 1 || old == 1 {
            let () = self
                .tx_invocation(app_id, transaction_id, "del", &value)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn load_key(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<String>, MessageStoreError> {
        let get = self.tx_invocation(app_id, transaction_id, "get", &[]);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&get)
            .cmd("GET")
            .arg(self.tx_key(app_id, transaction_id))
            .cmd("GET")
            .arg(self.tx_key_v1(app_id, transaction_id));
        let (found, own, old): (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>) =
            self.query_pipe(&pipe, &[&self.tx_index]).await?;
        match (old, own, found) {
            (Some(id), _, _) => Ok(Some(id)),
            (None, Some(b), _) => unpack_id(&b).map(Some),
            (None, None, Some(v)) if v.len() > 6 => unpack_id(&v[6..]).map(Some),
            (None, None, Some(_)) => Err(backend("malformed transaction-id index entry")),
            (None, None, None) => Ok(None),
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
