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
//!   script if `v` is unchanged, else retry. Domain logic exists once.
//! * **receipt matching** is race-free because the index entry and the
//!   parked receipt share one key: the `park` script either finds the
//!   mapping or parks; the `index` script writes the mapping and takes
//!   whatever was parked, in one step.

use super::{CAS_ATTEMPTS, MessageStoreOptions, await_key_holder, backend, existing, ms};
use crate::RedisConfig;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use smsgw_core::messages::{
    ClaimRequest, CreateOutcome, MessageRecord, MessageStatus, MessageStore, MessageStoreError,
    ReceiptOutcome, ReceiptUpdate, SubmitUpdate,
};

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
#[derive(Clone)]
pub struct RedisMessageStore {
    conn: ConnectionManager,
    prefix: String,
    opts: MessageStoreOptions,
    create: redis::Script,
    cas: redis::Script,
    index: redis::Script,
    park: redis::Script,
}

impl RedisMessageStore {
    /// Connects to Redis.
    pub async fn connect(
        config: &RedisConfig,
        opts: MessageStoreOptions,
    ) -> Result<Self, MessageStoreError> {
        let conn = config.connect().await.map_err(backend)?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            opts,
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

    /// The record and its version.
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

    /// Read-modify-write of one record. `f` returns `Ok(false)` to write
    /// nothing. Returns the record as last seen (`None`: gone) and whether
    /// `f` changed it.
    async fn update<F>(
        &self,
        id: &str,
        mut f: F,
    ) -> Result<Option<(MessageRecord, bool)>, MessageStoreError>
    where
        F: FnMut(&mut MessageRecord) -> Result<bool, MessageStoreError> + Send,
    {
        for _ in 0..CAS_ATTEMPTS {
            let Some((v, mut rec)) = self.load(id).await? else {
                return Ok(None);
            };
            if !f(&mut rec)? {
                return Ok(Some((rec, false)));
            }
            let json = serde_json::to_string(&rec).map_err(backend)?;
            let r: i64 = self
                .cas
                .key(self.msg_key(id))
                .arg(&v)
                .arg(json)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            match r {
                1 => return Ok(Some((rec, true))),
                -1 => return Ok(None),
                _ => {} // lost the race: reload
            }
        }
        Err(MessageStoreError::Contended {
            message_id: id.to_owned(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Writes `rec` under its id if no record has it: 1 written, 0 exists.
    async fn put_new(&self, rec: &MessageRecord) -> Result<bool, MessageStoreError> {
        let exp = rec.expires_at_ms(self.opts.ttl);
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
            .arg(exp)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(n == 1)
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

    async fn apply_to(
        &self,
        id: &str,
        seq: u16,
        r: &ReceiptUpdate,
    ) -> Result<ReceiptOutcome, MessageStoreError> {
        let res = self.update(id, |rec| Ok(rec.apply_receipt(seq, r))).await?;
        Ok(match res {
            None => ReceiptOutcome::Orphaned,
            Some((rec, true)) => ReceiptOutcome::Applied(rec),
            Some((rec, false)) => ReceiptOutcome::Duplicate(rec),
        })
    }
}

#[async_trait]
impl MessageStore for RedisMessageStore {
    async fn create(&self, rec: &MessageRecord) -> Result<CreateOutcome, MessageStoreError> {
        let mut rec = rec.clone();
        rec.status = rec.derive_status();
        let exp = rec.expires_at_ms(self.opts.ttl);
        let tk = self.tx_key(&rec.app_id, &rec.transaction_id);
        loop {
            let set: Option<String> = redis::cmd("SET")
                .arg(&tk)
                .arg(&rec.message_id)
                .arg("NX")
                .arg("PXAT")
                .arg(exp)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            if set.is_some() {
                return if self.put_new(&rec).await? {
                    Ok(CreateOutcome::Created(rec))
                } else {
                    // Another pod took the key over (see module docs).
                    existing(self, &rec.message_id).await
                };
            }
            let held: Option<String> = redis::cmd("GET")
                .arg(&tk)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let Some(id) = held else {
                continue; // expired between SET and GET: try again
            };
            if let Some(existing) = await_key_holder(self, &id).await? {
                return Ok(CreateOutcome::Existing(existing));
            }
            // The creator died between the key and the record: finish its
            // work under the key's id.
            tracing::warn!(message_id = %id, app_id = %rec.app_id, "taking over an orphaned idempotency key");
            rec.message_id = id;
            return if self.put_new(&rec).await? {
                Ok(CreateOutcome::Created(rec))
            } else {
                existing(self, &rec.message_id).await
            };
        }
    }

    async fn get(&self, message_id: &str) -> Result<Option<MessageRecord>, MessageStoreError> {
        let j: Option<String> = redis::cmd("HGET")
            .arg(self.msg_key(message_id))
            .arg("j")
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        j.map(|j| serde_json::from_str(&j).map_err(backend))
            .transpose()
    }

    async fn by_transaction(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<MessageRecord>, MessageStoreError> {
        let id: Option<String> = redis::cmd("GET")
            .arg(self.tx_key(app_id, transaction_id))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match id {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    async fn record_submit(&self, s: &SubmitUpdate) -> Result<MessageRecord, MessageStoreError> {
        let mut was_accepted = false;
        let res = self
            .update(&s.message_id, |rec| {
                was_accepted = rec.status == MessageStatus::Accepted;
                rec.record_submit(s)?;
                Ok(true)
            })
            .await?;
        let Some((mut rec, _)) = res else {
            return Err(MessageStoreError::NotFound {
                message_id: s.message_id.clone(),
            });
        };
        if was_accepted && rec.status != MessageStatus::Accepted {
            self.unlist_accepted(&s.message_id).await?;
        }
        let Some(sid) = &s.smsc_message_id else {
            return Ok(rec);
        };
        let parked: Option<String> = self
            .index
            .key(self.ix_key(&s.link, sid))
            .arg(&s.message_id)
            .arg(s.seq)
            .arg(rec.expires_at_ms(self.opts.ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if let Some(p) = parked {
            let r: ReceiptUpdate = serde_json::from_str(&p).map_err(backend)?;
            if let ReceiptOutcome::Applied(updated) =
                self.apply_to(&s.message_id, s.seq, &r).await?
            {
                rec = updated;
            }
        }
        Ok(rec)
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> Result<ReceiptOutcome, MessageStoreError> {
        let json = serde_json::to_string(r).map_err(backend)?;
        let mapped: Option<(String, u16)> = self
            .park
            .key(self.ix_key(&r.link, &r.smsc_message_id))
            .arg(json)
            .arg(if r.state.is_final() { "1" } else { "0" })
            .arg(ms(self.opts.parked_ttl).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match mapped {
            Some((id, seq)) => self.apply_to(&id, seq, r).await,
            None => Ok(ReceiptOutcome::Parked),
        }
    }

    async fn claim_stale_accepted(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<MessageRecord>, MessageStoreError> {
        // Look further than `limit`: leased entries at the head are skipped.
        let window = req.limit.saturating_mul(4).max(64);
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.accepted_key())
            .arg("-inf")
            .arg(req.created_before_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(window)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let until = req.now_ms.saturating_add(ms(req.lease));
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= req.limit {
                break;
            }
            let res = self
                .update(&id, |rec| {
                    if !rec.claimable(req.created_before_ms, req.now_ms) {
                        return Ok(false);
                    }
                    rec.claim(&req.owner, until, req.now_ms);
                    Ok(true)
                })
                .await?;
            match res {
                Some((rec, true)) => out.push(rec),
                Some((rec, false)) if rec.status != MessageStatus::Accepted => {
                    self.unlist_accepted(&id).await?;
                }
                Some(_) => {}
                None => self.unlist_accepted(&id).await?, // expired
            }
        }
        Ok(out)
    }
}
