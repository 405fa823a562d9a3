//! Redis message store, shared by every pod.
//!
//! # Keys (`P` is [`RedisConfig::prefix`]; `⟨s⟩` is a string packed by the
//! record codec: a hex or UUID id as its bytes, a decimal SMSC id as a
//! number, anything else as a length and its bytes)
//!
//! A message costs Redis a few fields in shared hashes, not keys of its
//! own: Redis spends ~130 bytes on every top-level key with a TTL before
//! its name and value, more than a listpack entry's whole (BENCHMARKS.md:
//! ~360 bytes a delivered message after its SMSC-id index grace, ~410
//! within it).
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `P:r⟨second⟩` | hash (hashtable: records exceed `hash-max-listpack-value`) | field: the last 10 bytes of a UUIDv7 message id whose time falls in that second (of the Unix epoch); value: the record (`record_codec`) | with the latest of its records (`created_at + ttl`) |
//! | `P:m⟨message_id⟩` | string | the record of a message whose id is not a UUIDv7 (and the layout before, for every id) | `created_at + ttl` |
//! | `{P:t:⟨shard⟩}l` | hash: generation end → `first:current` level | the transaction-id index's generations in this shard | with its latest generation |
//! | `{P:t:⟨shard⟩}⟨end⟩:⟨level⟩:⟨leaf⟩` | hash (listpack) `⟨app_id⟩⟨transaction_id⟩` → expiry (6 bytes) and `⟨message_id⟩` | idempotency | at the generation's end |
//! | `{P:x:⟨shard⟩}l`, `{P:x:⟨shard⟩}⟨end⟩:⟨level⟩:⟨leaf⟩` | as above, `⟨link⟩⟨smsc_id⟩` → expiry, seq (2 bytes), `⟨message_id⟩` | the SMSC-id index | an entry expires with its message, or `index_grace` after a final receipt (then moved to a generation of width `index_grace`) |
//! | `{P:x:⟨shard⟩}p⟨link⟩⟨smsc_id⟩` | hash `p`, `pf` | a receipt parked before its mapping (JSON, final flag) | `parked_ttl` |
//! | `{P:accepted}` | sorted set, score `listed_at_ms` (creation, or the end of a schedule's hold) | ids of messages still `accepted` | never (entries leave on submit or when the sweeper finds them gone) |
//!
//! **Indexes by generation.** Redis 7.0 has no per-field TTL, so an index
//! entry carries its expiry (a lookup skips it once past) and goes to the
//! generation (width `ttl / 4`) that ends after it; a generation's leaves
//! expire at its end. An entry's memory therefore outlives its expiry by
//! at most one generation (6 h of a 24 h TTL, ≈ 8 B a message on average
//! in steady state; a record's by at most one second). A shard (`crc32`
//! of the field mod 64: the hash tag, so on Redis Cluster one slot per
//! shard) lists its generations; a generation grows by levels (module
//! `lua_generations`) so that every leaf stays under
//! `hash-max-listpack-entries` whatever the rate, and starts at the level
//! of the one before it. Lookups read the live generations of one shard in
//! one script: the idempotent create decides in one atomic step. A create
//! is a miss by design: it reads one leaf per live generation and level,
//! at a steady rate one per generation (5 at `ttl / 4`; the version before
//! cut `ttl / 8`, 9 reads: BENCHMARKS.md, session 12). A message stays
//! readable for exactly its TTL ([`KvMessageStore`] does not answer a
//! record past it) and its memory is reclaimed by TTL + 1 s (record) and
//! TTL + `ttl / 4` (index entries).
//!
//! **Rolling upgrade.** Records, keys and index entries written by the
//! versions before (`P:m⟨id⟩`, `P:t⟨app⟩⟨tx⟩`, `P:i⟨link⟩⟨smsc_id⟩`; and
//! `{P:m:<id>}` hash `v`, `j` JSON, `{P:t:<app>:<tx>}`,
//! `{P:i:<link>:<smsc_id>}`) are still read and updated in place (so pods
//! of those versions read them too), until they expire: a rolling upgrade
//! keeps the day of messages already stored. A create first looks at the
//! keys of the layouts before (in the same round trip): while one lives,
//! the transaction is taken; the record put looks for a record there only
//! under an id taken over from an orphaned key (a create's own new id
//! cannot be there). Generations of any width are read (their
//! list holds their ends), so the generations the version before cut
//! `ttl / 8` wide and these `ttl / 4` wide serve pods of both versions
//! alike. During the upgrade itself, a receipt that a
//! pod of an old version parks for a message submitted by a new one (or
//! the reverse) waits for `parked_ttl` instead of being matched, and two
//! creates of one transaction at the same moment, one on an old pod and
//! one on a new, may both win (old pods do not read the new index).
//!
//! Every script touches keys of one hash tag, so the store works on Redis
//! Cluster (the index scripts name only the shard's generation list in
//! `KEYS`; their leaves share its slot). What needs two tags is a sequence
//! of atomic steps, ordered so that a crash between two steps leaves
//! nothing that breaks a rule:
//!
//! * **create**: the transaction-id `put` (the idempotency decision,
//!   atomic), then `ZADD accepted`, then the record (`HSETNX`, refusing an
//!   existing id; these two in one round trip, in order). A pod that dies after the first step leaves an entry
//!   pointing at no record; the next create with that key waits briefly
//!   for the record, then writes it itself *under the id the entry holds*
//!   — so one `(app, transaction)` still maps to one message and one
//!   submission.
//! * **record updates** are optimistic: read the record, apply the domain
//!   rule in Rust ([`smsgw_core::messages`]), write it back with a `cas`
//!   script if its bytes are unchanged (they hold `updated_at_ms`), else
//!   retry. Domain logic exists once, in [`KvMessageStore`] over this
//!   [`RedisKv`]. A pod keeps the bytes of the records it wrote last (a
//!   bounded map) and starts their next update from those instead of a
//!   read: the `cas` finds out, as ever, whether another writer got in
//!   between.
//! * **receipt matching** is race-free because the index entry and the
//!   parked receipt share one shard: the `park` script either finds the
//!   mapping or parks; the `index` script writes the mapping and takes
//!   whatever was parked, in one step (sent with the record's `ZREM
//!   accepted` after a submit, one round trip for both). A final receipt cuts the entry's
//!   life to `index_grace` (a duplicate within it is still matched).

use super::kv::{Cas, VersionedKv};
use super::record_codec::{self, is_lower_hex, nibble, put_str, take_str};
use super::{KvMessageStore, MessageStoreOptions, backend, ms};
use crate::{BoundedConnection, RedisConfig};
use async_trait::async_trait;
use smsgw_core::bounded::{BoundedMap, MemoryUse};
use smsgw_core::messages::{
    MessageRecord, MessageStatus, MessageStoreError, ReceiptUpdate, SubmitUpdate, unix_now_ms,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// `KEYS[1]` an index key of a layout before (hash `m` id, `s` seq): its
/// mapping, if any (a final receipt, `ARGV[2]` '1', cuts its life to the
/// grace `ARGV[1]`).
const LOOKUP_V1: &str = concat!(
    lua_shorten!(),
    r"
local m = redis.call('HMGET', KEYS[1], 'm', 's')
if m[1] and ARGV[2] == '1' then shorten(KEYS[1], ARGV[1]) end
return m
"
);

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

/// Lua: the generation index of one shard, shared by the transaction-id
/// and SMSC-id indexes (module docs). `KEYS[1]` is the shard's list of
/// generations (hash: generation end → `s:c`, its first and current
/// level); every other key a script touches shares its hash tag. A value
/// starts with its expiry (6 bytes, big-endian ms); an entry past it is
/// not found. An entry expiring at `e` belongs to the generation (of the
/// width its index uses) that ends after `e`; a generation's leaves
/// expire at its end.
///
/// A generation's entries go to level `c`, in leaf `h2 mod 2^c`; a leaf
/// that reaches the capacity moves its generation to the next level (twice
/// the leaves), so leaves stay small (listpack-encoded) whatever the rate;
/// a new generation starts at the level of the one before it. Lookups
/// read the newest generation and level first.
macro_rules! lua_generations {
    () => {
        r"
local meta = KEYS[1]
local tag = string.sub(meta, 1, -2)
local function leaf(g, l, h2) return string.format('%s%d:%d:%d', tag, g, l, h2 % (2 ^ l)) end
local function expiry(v) local e = 0 for i = 1, 6 do e = e * 256 + string.byte(v, i) end return e end
local function with_expiry(v, e)
  local b = {}
  for i = 6, 1, -1 do b[i] = string.char(e % 256) e = math.floor(e / 256) end
  return table.concat(b) .. string.sub(v, 7)
end
local function generations()
  local gens = {}
  local flat = redis.call('HGETALL', meta)
  for i = 1, #flat, 2 do
    local s, c = string.match(flat[i + 1], '^(%d+):(%d+)$')
    gens[#gens + 1] = { tonumber(flat[i]), tonumber(s), tonumber(c) }
  end
  table.sort(gens, function(a, b) return a[1] > b[1] end)
  return gens
end
local function find(gens, field, h2, now)
  for _, g in ipairs(gens) do
    if g[1] <= now then break end
    for l = g[3], g[2], -1 do
      local k = leaf(g[1], l, h2)
      local v = redis.call('HGET', k, field)
      if v and expiry(v) > now then return k, v end
    end
  end
  return nil, nil
end
local function insert(gens, field, h2, value, width, cap, now)
  local exp = expiry(value)
  local ends = exp - exp % width + width
  local g = nil
  for _, o in ipairs(gens) do if o[1] == ends then g = o break end end
  if not g then
    local s = nil
    for _, o in ipairs(gens) do
      if o[1] <= now then
        redis.call('HDEL', meta, string.format('%d', o[1]))
      elseif s == nil and o[1] < ends then
        s = o[3]
      end
    end
    g = { ends, s or 0, s or 0 }
    table.insert(gens, g)
    table.sort(gens, function(a, b) return a[1] > b[1] end)
    redis.call('HSET', meta, string.format('%d', ends), g[2] .. ':' .. g[3])
    local t = redis.call('PTTL', meta)
    if t < 0 or t < ends - now then redis.call('PEXPIREAT', meta, string.format('%d', ends)) end
  end
  local k = leaf(ends, g[3], h2)
  local n = redis.call('HLEN', k)
  if n >= cap and g[3] < 26 then
    g[3] = g[3] + 1
    redis.call('HSET', meta, string.format('%d', ends), g[2] .. ':' .. g[3])
    k = leaf(ends, g[3], h2)
    n = redis.call('HLEN', k)
  end
  redis.call('HSET', k, field, value)
  if n == 0 then redis.call('PEXPIREAT', k, string.format('%d', ends)) end
end
"
    };
}

/// The transaction-id index: `ARGV[1]` the field (packed app and
/// transaction id), `ARGV[2]` mode, `ARGV[3]` now, `ARGV[4]` the second
/// hash, `ARGV[5]` the value (expiry, then the packed message id).
///
/// Mode `get`: the live value of the field, or nil. `put` (with
/// `ARGV[6]` the generation width and `ARGV[7]` the leaf capacity): the
/// live value if there is one, else writes `ARGV[5]` and answers nil: the
/// idempotency decision, atomic. `del`: removes the field where it holds
/// exactly `ARGV[5]`.
const TX_INDEX: &str = concat!(
    lua_generations!(),
    r"
local field, mode, now, h2 = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local gens = generations()
local k, v = find(gens, field, h2, now)
if mode == 'del' then
  if v == ARGV[5] then redis.call('HDEL', k, field) end
  return false
end
if v or mode ~= 'put' then return v end
insert(gens, field, h2, ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), now)
return false
"
);

/// The SMSC-id index, `index` step: `ARGV[1]` the field (packed link and
/// SMSC id), `ARGV[2]` now, `ARGV[3]` the second hash, `ARGV[4]` the value
/// (expiry, seq as 2 bytes, packed message id), `ARGV[5]` the generation
/// width, `ARGV[6]` the leaf capacity, `ARGV[7]` the grace (ms, also the
/// width of the generations of entries in their grace). Writes the mapping
/// (newer than any earlier one for the field, which lookups then no longer
/// reach) and returns (and removes) the receipt parked for the field,
/// cutting the mapping's life to the grace when that receipt is final.
const SMSC_INDEX: &str = concat!(
    lua_generations!(),
    r"
local field, now, h2, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
local parked = tag .. 'p' .. field
local p = redis.call('HMGET', parked, 'p', 'pf')
local value, width = ARGV[4], tonumber(ARGV[5])
if p[1] then
  redis.call('DEL', parked)
  if p[2] == '1' then
    local grace = tonumber(ARGV[7])
    value, width = with_expiry(value, math.min(expiry(value), now + grace)), grace
  end
end
insert(generations(), field, h2, value, width, cap, now)
return p[1]
"
);

/// The SMSC-id index, `park` step: `ARGV[1]` the field, `ARGV[2]` now,
/// `ARGV[3]` the second hash, `ARGV[4]` the receipt (JSON), `ARGV[5]` '1'
/// if final, `ARGV[6]` the parked TTL (ms), `ARGV[7]` the grace (ms, as
/// [`SMSC_INDEX`]), `ARGV[8]` the leaf capacity. Returns the mapping's
/// value when mapped (moving it to a generation of the grace when the
/// receipt is final), else parks the receipt beside the index (a final
/// receipt is not replaced by an intermediate one, as `keep_parked` in
/// Rust) and returns nil.
const SMSC_PARK: &str = concat!(
    lua_generations!(),
    r"
local field, now, h2 = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local grace = tonumber(ARGV[7])
local gens = generations()
local k, v = find(gens, field, h2, now)
if k then
  if ARGV[5] == '1' and expiry(v) > now + grace then
    redis.call('HDEL', k, field)
    insert(gens, field, h2, with_expiry(v, now + grace), grace, tonumber(ARGV[8]), now)
  end
  return v
end
local parked = tag .. 'p' .. field
if not (redis.call('HGET', parked, 'pf') == '1' and ARGV[5] == '0') then
  redis.call('HSET', parked, 'p', ARGV[4], 'pf', ARGV[5])
end
redis.call('PEXPIRE', parked, ARGV[6])
return false
"
);

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

/// Shards of each index (transaction id, SMSC id): the hash tags an index
/// is spread over (on Redis Cluster, over as many slots).
const SHARDS: u32 = 64;

/// Generations a message TTL spans in the indexes: an entry's memory
/// outlives its expiry by at most `ttl / GENERATIONS`, and a lookup that
/// misses reads `GENERATIONS + 1` live generations. 4: 5 reads where 8
/// (the version before) made 9, for ≈ 4 B a message more in steady state.
/// Generations of any width are read, so pods of another width (another
/// TTL, the version before) find each other's entries.
const GENERATIONS: u64 = 4;

/// Entries an index leaf takes before its generation moves to the next
/// level: below Redis's `hash-max-listpack-entries` (128 by default), so
/// leaves stay listpack-encoded.
const LEAF_CAPACITY: u32 = 96;

/// Milliseconds of message ids one record bucket holds: its records'
/// memory outlives their expiry by at most this (and the takeover delay).
const RECORD_BUCKET_MS: u64 = 1_000;

/// Records (in buckets, not final) this pod wrote last that it keeps, so
/// that their next update (the `submit_sm_resp` after the create, the
/// receipt after that) starts without reading them back: at most this
/// many, ~250 B each (`smsgw_memory_*{structure="redis_records_written"}`).
const REMEMBERED: usize = 4_096;

/// Bytes of [`REMEMBERED`] records at most.
const REMEMBERED_BYTES: usize = 2 << 20;

/// How long a remembered record is kept.
const REMEMBERED_FOR: Duration = Duration::from_secs(600);

/// The Redis keys of the message store ([`VersionedKv`]; see the module
/// docs for the layout).
#[derive(Clone)]
pub struct RedisKv {
    conn: BoundedConnection,
    prefix: String,
    /// Width of an index generation: `ttl / GENERATIONS`.
    generation_ms: u64,
    cas: redis::Script,
    cas_v1: redis::Script,
    lookup_v1: redis::Script,
    smsc_index: redis::Script,
    smsc_park: redis::Script,
    record_put: redis::Script,
    record_cas: redis::Script,
    tx_index: redis::Script,
    /// Records in buckets as this pod last wrote them, by id.
    written: Arc<Mutex<BoundedMap<String, Vec<u8>>>>,
}

impl RedisKv {
    /// Connects to Redis; `opts.ttl` sets the width of the
    /// transaction-id generations (pods with other TTLs still find each
    /// other's entries).
    pub async fn connect(
        config: &RedisConfig,
        opts: &MessageStoreOptions,
    ) -> Result<Self, MessageStoreError> {
        let conn = config.connect_bounded().await.map_err(backend)?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            generation_ms: (ms(opts.ttl) / GENERATIONS).max(1),
            cas: redis::Script::new(CAS),
            cas_v1: redis::Script::new(CAS_V1),
            lookup_v1: redis::Script::new(LOOKUP_V1),
            smsc_index: redis::Script::new(SMSC_INDEX),
            smsc_park: redis::Script::new(SMSC_PARK),
            record_put: redis::Script::new(RECORD_PUT),
            record_cas: redis::Script::new(RECORD_CAS),
            tx_index: redis::Script::new(TX_INDEX),
            written: Arc::new(Mutex::new(BoundedMap::new(
                "redis_records_written",
                REMEMBERED,
                REMEMBERED_BYTES,
                REMEMBERED_FOR,
            ))),
        })
    }

    /// The records this pod wrote last and keeps for their next update,
    /// for the `smsgw_memory_*` gauges.
    pub fn memory(&self) -> MemoryUse {
        self.written().memory()
    }

    fn written(&self) -> std::sync::MutexGuard<'_, BoundedMap<String, Vec<u8>>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `bytes`, the record of `id` just written to its bucket, for
    /// its next update; a final record is not updated again (but by a
    /// duplicate receipt: that one reads it).
    fn remember(&self, id: &str, bytes: Vec<u8>, status: MessageStatus) {
        let mut written = self.written();
        if status.is_final() {
            written.remove(&id.to_owned());
        } else {
            let size = id.len() + bytes.len();
            written.insert(id.to_owned(), bytes, size, Instant::now());
        }
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
    /// The entry of `parts` in index `kind` (`t` transaction id, `x` SMSC
    /// id): its shard's generation list, its field and its second hash.
    fn index_entry(&self, kind: char, parts: [&str; 2]) -> (String, Vec<u8>, u32) {
        let mut field = Vec::with_capacity(parts[0].len() + parts[1].len() + 4);
        put_str(&mut field, parts[0]);
        put_str(&mut field, parts[1]);
        let h = crc32fast::hash(&field);
        (
            format!("{{{}:{kind}:{}}}l", self.prefix, h % SHARDS),
            field,
            h / SHARDS,
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

    fn conn(&self) -> BoundedConnection {
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

    /// The SMSC-id index script mapping `(link, smsc_id)` to segment `seq`
    /// of message `id` and taking what was parked there (a step of
    /// [`VersionedKv::index_submits`]).
    fn smsc_index_invocation(
        &self,
        link: &str,
        smsc_id: &str,
        id: &str,
        seq: u16,
        expires_at_ms: u64,
        grace: Duration,
    ) -> redis::ScriptInvocation<'_> {
        let (meta, field, h2) = self.index_entry('x', [link, smsc_id]);
        let mut i = self.smsc_index.key(meta);
        i.arg(field)
            .arg(unix_now_ms())
            .arg(h2)
            .arg(smsc_value(id, seq, expires_at_ms))
            .arg(self.generation_ms)
            .arg(LEAF_CAPACITY)
            .arg(ms(grace).max(1));
        i
    }

    /// The transaction-id script for `(app, transaction)` in `mode`.
    fn tx_invocation(
        &self,
        app: &str,
        txid: &str,
        mode: &str,
        value: &[u8],
    ) -> redis::ScriptInvocation<'_> {
        let (meta, field, h2) = self.index_entry('t', [app, txid]);
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

/// An SMSC-id index value: the expiry (6 bytes, big-endian ms), the
/// segment (2 bytes, big-endian) and the packed message id.
fn smsc_value(message_id: &str, seq: u16, expires_at_ms: u64) -> Vec<u8> {
    let mut v = tx_value(message_id, expires_at_ms);
    v.splice(6..6, seq.to_be_bytes());
    v
}

/// The message id and segment an SMSC-id index value maps to.
fn smsc_mapping(v: &[u8]) -> Result<(String, u16), MessageStoreError> {
    match v {
        [_, _, _, _, _, _, s0, s1, id @ ..] => Ok((unpack_id(id)?, u16::from_be_bytes([*s0, *s1]))),
        _ => Err(backend("malformed SMSC-id index entry")),
    }
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

    fn remembered(&self, id: &str) -> Option<(RedisVersion, MessageRecord)> {
        let bytes = self.written().take(&id.to_owned(), Instant::now())?;
        let rec = record_codec::decode(&bytes).ok()?;
        Some((RedisVersion::Bucket(bytes), rec))
    }

    async fn compare_and_set(
        &self,
        id: &str,
        version: &RedisVersion,
        rec: &MessageRecord,
    ) -> Result<Cas, MessageStoreError> {
        let mut written = None;
        let invocation = match version {
            RedisVersion::Bucket(old) => {
                let (bucket, field) = self
                    .record_slot(id)
                    .ok_or_else(|| backend("a bucketed record without a UUIDv7 id"))?;
                let bytes = record_codec::encode(rec);
                let mut i = self.record_cas.key(bucket);
                i.arg(field).arg(old.as_slice()).arg(bytes.as_slice());
                written = Some(bytes);
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
        if let (1, Some(bytes)) = (r, written) {
            self.remember(id, bytes, rec.status);
        }
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
        taken_over: bool,
    ) -> Result<bool, MessageStoreError> {
        let bytes = record_codec::encode(rec);
        let own = self.msg_key(&rec.message_id);
        let old = self.msg_key_v1(&rec.message_id);
        let slot = self.record_slot(&rec.message_id);
        let mut pipe = redis::pipe();
        if rec.status == MessageStatus::Accepted {
            // Listed before the record, in the same round trip (Redis runs
            // a connection's commands in order; a listing repeated by a
            // rerun of the pipeline changes nothing), so a record is never
            // accepted-but-unlisted.
            pipe.cmd("ZADD")
                .arg(self.accepted_key())
                .arg(rec.listed_at_ms())
                .arg(&rec.message_id)
                .ignore();
        }
        // An id of a key taken over may have a record in a layout before
        // (its creator was a pod of a version before): in the same round
        // trip, whether a record has it there. A create's own new id
        // cannot (the layouts before are no longer written).
        match &slot {
            Some((bucket, field)) => {
                let mut put = self.record_put.key(bucket.as_slice());
                put.arg(field.as_slice())
                    .arg(bytes.as_slice())
                    .arg(expires_at_ms)
                    .arg(unix_now_ms());
                pipe.invoke_script(&put);
                if taken_over {
                    pipe.cmd("EXISTS").arg(&own);
                }
            }
            None => {
                pipe.cmd("SET")
                    .arg(&own)
                    .arg(bytes.as_slice())
                    .arg("NX")
                    .arg("PXAT")
                    .arg(expires_at_ms);
            }
        }
        if taken_over {
            pipe.cmd("EXISTS").arg(&old);
        }
        let answers: Vec<redis::Value> = self.query_pipe(&pipe, &[&self.record_put]).await?;
        let mut answers = answers.into_iter();
        let set = match (&slot, answers.next()) {
            (Some(_), Some(v)) => redis::from_redis_value::<bool>(&v).map_err(backend)?,
            (None, Some(v)) => redis::from_redis_value::<Option<String>>(&v)
                .map_err(backend)?
                .is_some(),
            (_, None) => return Err(backend("no answer to a record put")),
        };
        let mut elsewhere = false;
        for v in answers {
            elsewhere |= redis::from_redis_value::<i64>(&v).map_err(backend)? == 1;
        }
        if set && elsewhere {
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
        if set && slot.is_some() {
            self.remember(&rec.message_id, bytes, rec.status);
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
        let mut put = self.tx_invocation(app_id, transaction_id, "put", &value);
        put.arg(self.generation_ms).arg(LEAF_CAPACITY);
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

    async fn index_submits(
        &self,
        id: &str,
        unlist: bool,
        updates: &[SubmitUpdate],
        expires_at_ms: u64,
        grace: Duration,
    ) -> Result<Vec<(u16, ReceiptUpdate)>, MessageStoreError> {
        // One round trip: Redis runs the steps in order, each atomic; a
        // rerun of the pipeline (scripts reloaded) repeats steps that
        // change nothing the second time.
        let mut pipe = redis::pipe();
        if unlist {
            pipe.cmd("ZREM").arg(self.accepted_key()).arg(id).ignore();
        }
        let mut seqs = Vec::with_capacity(updates.len());
        for s in updates {
            if let Some(sid) = &s.smsc_message_id {
                let index =
                    self.smsc_index_invocation(&s.link, sid, id, s.seq, expires_at_ms, grace);
                pipe.invoke_script(&index);
                seqs.push(s.seq);
            }
        }
        if !unlist && seqs.is_empty() {
            return Ok(Vec::new());
        }
        let parked: Vec<Option<String>> = self.query_pipe(&pipe, &[&self.smsc_index]).await?;
        let mut taken = Vec::new();
        for (seq, p) in seqs.into_iter().zip(parked) {
            if let Some(p) = p {
                taken.push((seq, serde_json::from_str(&p).map_err(backend)?));
            }
        }
        Ok(taken)
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
        let (meta, field, h2) = self.index_entry('x', [&r.link, &r.smsc_message_id]);
        let mapped: Option<Vec<u8>> = self
            .smsc_park
            .key(meta.as_str())
            .arg(field.as_slice())
            .arg(unix_now_ms())
            .arg(h2)
            .arg(json)
            .arg(fin)
            .arg(ms(parked_ttl).max(1))
            .arg(grace)
            .arg(LEAF_CAPACITY)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if let Some(v) = mapped {
            return smsc_mapping(&v).map(Some);
        }
        // Parked: unless a layout before mapped it (its own key, binary
        // id; or the JSON layout's). Two plain reads: such keys are rare
        // (none once the layouts before expired); a final receipt then
        // cuts the life of each mapping found to the grace.
        let own_key = self.ix_key(&r.link, &r.smsc_message_id);
        let old_key = self.ix_key_v1(&r.link, &r.smsc_message_id);
        type Mapping<T> = (Option<T>, Option<u16>);
        let ((own_id, own_seq), (old_id, old_seq)): (Mapping<Vec<u8>>, Mapping<String>) =
            redis::pipe()
                .cmd("HMGET")
                .arg(&own_key)
                .arg("m")
                .arg("s")
                .cmd("HMGET")
                .arg(&old_key)
                .arg("m")
                .arg("s")
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
        if r.state.is_final() && (own_id.is_some() || old_id.is_some()) {
            let mut pipe = redis::pipe();
            if own_id.is_some() {
                let mut own = self.lookup_v1.key(own_key.as_slice());
                own.arg(grace).arg(fin);
                pipe.invoke_script(&own).ignore();
            }
            if old_id.is_some() {
                let mut old = self.lookup_v1.key(old_key.as_str());
                old.arg(grace).arg(fin);
                pipe.invoke_script(&old).ignore();
            }
            let () = self.query_pipe(&pipe, &[&self.lookup_v1]).await?;
        }
        let found = match (own_id, own_seq, old_id, old_seq) {
            (Some(id), Some(seq), _, _) => (unpack_id(&id)?, seq),
            (_, _, Some(id), Some(seq)) => (id, seq),
            _ => return Ok(None),
        };
        // The receipt just parked is matched after all.
        let mut parked = meta.into_bytes();
        parked.pop();
        parked.push(b'p');
        parked.extend_from_slice(&field);
        let _: i64 = redis::cmd("DEL")
            .arg(parked)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(Some(found))
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
