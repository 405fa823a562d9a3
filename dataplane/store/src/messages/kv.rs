//! The message operations written once over a versioned key-value store.
//!
//! The Redis and Aerospike backends differ only in how they keep a few
//! kinds of entries; [`VersionedKv`] is that difference: a record loaded
//! with its version, written back only if the version is unchanged
//! (compare-and-set) or only if absent, an idempotency key written only if
//! absent, and the `(link, SMSC id)` entry that holds either the segment it
//! maps to or a parked receipt, changed in one atomic step each way.
//! [`KvMessageStore`] is the [`MessageStore`] over any of them: `create`
//! (key, then record, taking over an orphaned key), `record_submit`,
//! `apply_receipt` and the sweeper's claim, each a read-modify-write that
//! applies the domain rules of [`smsgw_core::messages`] and retries when
//! another writer got in between.

use super::{CAS_ATTEMPTS, MessageStoreOptions, TAKEOVER_AFTER, backend, ms, one_message};
use async_trait::async_trait;
use smsgw_core::messages::{
    ClaimRequest, Claimed, CreateOutcome, MessageRecord, MessageStatus, MessageStore,
    MessageStoreError, ReceiptChange, ReceiptOutcome, ReceiptUpdate, StatusChange, SubmitUpdate,
    unix_now_ms,
};
use std::time::Duration;

/// What a compare-and-set put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cas {
    /// The record had the expected version and now holds the new value.
    Written,
    /// Another writer changed the record since it was loaded.
    Changed,
    /// The record is gone (expired).
    Gone,
}

/// The entries a message store keeps, with one atomic step per operation.
/// Each backend implements this once; [`KvMessageStore`] builds every
/// [`MessageStore`] operation on it.
#[async_trait]
pub trait VersionedKv: Send + Sync + 'static {
    /// A record's version, changed by every write of it.
    type Version: Send + Sync;

    /// Message `id` and its version; `None` when absent or expired.
    async fn load(
        &self,
        id: &str,
    ) -> Result<Option<(Self::Version, MessageRecord)>, MessageStoreError>;

    /// Message `id` and its version as this backend last wrote them, if
    /// it remembers (and forgets them now): a read-modify-write may start
    /// from that instead of a [`VersionedKv::load`], as its write back
    /// finds out whether another writer got in between. `None` by
    /// default.
    fn remembered(&self, _id: &str) -> Option<(Self::Version, MessageRecord)> {
        None
    }

    /// Writes `rec` over message `id` if its version is still `version`.
    async fn compare_and_set(
        &self,
        id: &str,
        version: &Self::Version,
        rec: &MessageRecord,
    ) -> Result<Cas, MessageStoreError>;

    /// Writes `rec` under its id, expiring at `expires_at_ms`, unless a
    /// record has that id: true when written. A record written
    /// [`MessageStatus::Accepted`] is listed for [`VersionedKv::accepted_ids`]
    /// before it can be read. `taken_over` is false when this create put
    /// the idempotency key for this id itself (the caller's new id: only
    /// the places the current layout writes can hold it), true when it
    /// took an orphaned key over (its creator, maybe a pod of a version
    /// before, may still write the record, in that version's layout).
    async fn put_if_absent(
        &self,
        rec: &MessageRecord,
        expires_at_ms: u64,
        taken_over: bool,
    ) -> Result<bool, MessageStoreError>;

    /// Points the idempotency key `(app_id, transaction_id)` at
    /// `message_id`, expiring at `expires_at_ms`, unless the key exists:
    /// true when written.
    async fn put_key_if_absent(
        &self,
        app_id: &str,
        transaction_id: &str,
        message_id: &str,
        expires_at_ms: u64,
    ) -> Result<bool, MessageStoreError>;

    /// The message id the idempotency key holds.
    async fn load_key(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<String>, MessageStoreError>;

    /// What a submit recorded in message `id` leaves to the indexes: takes
    /// it off the accepted list when `unlist` (as
    /// [`VersionedKv::unlist_accepted`]), then, for each of `updates` with
    /// an SMSC id, in one atomic step each: maps `(link, SMSC id)` to its
    /// segment (expiring at `expires_at_ms`, or after `grace` when the
    /// receipt taken is final) and takes the receipt parked under that key,
    /// if any. In that order; answers the receipts taken, with their
    /// segment. A backend that can send the steps together does (Redis: one
    /// round trip).
    async fn index_submits(
        &self,
        id: &str,
        unlist: bool,
        updates: &[SubmitUpdate],
        expires_at_ms: u64,
        grace: Duration,
    ) -> Result<Vec<(u16, ReceiptUpdate)>, MessageStoreError>;

    /// In one atomic step: the `(message id, seq)` that the receipt's
    /// `(link, SMSC id)` maps to (the mapping then lives at most `grace`
    /// more when the receipt is final: long enough to match a duplicate),
    /// or else parks the receipt under that key for `parked_ttl` (a parked
    /// final receipt is not replaced by an intermediate one, as
    /// `keep_parked` in `messages` decides) and answers `None`.
    async fn lookup_or_park(
        &self,
        r: &ReceiptUpdate,
        parked_ttl: Duration,
        grace: Duration,
    ) -> Result<Option<(String, u16)>, MessageStoreError>;

    /// Ids of messages listed as accepted at or before `created_before_ms`
    /// (their [`MessageRecord::listed_at_ms`]: creation, or the end of a
    /// schedule's hold), oldest first, at most `window` of them.
    ///
    /// [`MessageRecord::listed_at_ms`]: smsgw_core::messages::MessageRecord::listed_at_ms
    async fn accepted_ids(
        &self,
        created_before_ms: u64,
        window: usize,
    ) -> Result<Vec<String>, MessageStoreError>;

    /// Takes message `id` off the accepted list. Backends whose listing
    /// follows the record's own writes (a bin indexed while accepted) have
    /// nothing to do.
    async fn unlist_accepted(&self, _id: &str) -> Result<(), MessageStoreError> {
        Ok(())
    }
}

/// How long a waiting create sleeps between looks at the key holder's
/// record.
const HOLDER_POLL: Duration = Duration::from_millis(20);

/// A [`MessageStore`] over a [`VersionedKv`] backend.
#[derive(Clone)]
pub struct KvMessageStore<K> {
    kv: K,
    opts: MessageStoreOptions,
}

impl<K: VersionedKv> KvMessageStore<K> {
    /// The store over `kv`, with these lifetimes.
    pub fn new(kv: K, opts: MessageStoreOptions) -> Self {
        Self { kv, opts }
    }

    /// The backend.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// Message `id` and its version, unless it is past its TTL: a backend
    /// may keep an expired record a little longer (Redis reclaims a bucket
    /// of records when its last one expires).
    async fn load_live(
        &self,
        id: &str,
    ) -> Result<Option<(K::Version, MessageRecord)>, MessageStoreError> {
        Ok(self.live(self.kv.load(id).await?))
    }

    fn live(
        &self,
        loaded: Option<(K::Version, MessageRecord)>,
    ) -> Option<(K::Version, MessageRecord)> {
        loaded.filter(|(_, rec)| rec.expires_at_ms(self.opts.ttl) > unix_now_ms())
    }

    /// Read-modify-write of one record. `f` returns `Ok(false)` to write
    /// nothing. Returns the status the record had before, the record as
    /// last seen (`None`: gone) and whether `f` changed it. The first try
    /// starts from the record as the backend [remembers] it, if it does;
    /// an answer without a write comes only from a record loaded.
    ///
    /// [remembers]: VersionedKv::remembered
    async fn update<F>(
        &self,
        id: &str,
        mut f: F,
    ) -> Result<Option<(MessageStatus, MessageRecord, bool)>, MessageStoreError>
    where
        F: FnMut(&mut MessageRecord) -> Result<bool, MessageStoreError> + Send,
    {
        for attempt in 0..CAS_ATTEMPTS {
            let hint = if attempt == 0 {
                self.kv.remembered(id)
            } else {
                None
            };
            let (loaded, remembered) = match hint {
                Some(r) => (Some(r), true),
                None => (self.kv.load(id).await?, false),
            };
            let Some((version, mut rec)) = self.live(loaded) else {
                return Ok(None);
            };
            let before = rec.status;
            // A remembered record may have changed since: nothing is
            // answered from it but a write that finds it unchanged.
            let write = match f(&mut rec) {
                Ok(false) | Err(_) if remembered => continue,
                r => r?,
            };
            if !write {
                return Ok(Some((before, rec, false)));
            }
            match self.kv.compare_and_set(id, &version, &rec).await? {
                Cas::Written => return Ok(Some((before, rec, true))),
                Cas::Gone => return Ok(None),
                Cas::Changed => {} // lost the race: reload
            }
        }
        Err(MessageStoreError::Contended {
            message_id: id.to_owned(),
            attempts: CAS_ATTEMPTS,
        })
    }

    async fn apply_to(
        &self,
        id: &str,
        seq: u16,
        r: &ReceiptUpdate,
    ) -> Result<ReceiptChange, MessageStoreError> {
        Ok(
            match self.update(id, |rec| Ok(rec.apply_receipt(seq, r))).await? {
                None => ReceiptChange {
                    outcome: ReceiptOutcome::Orphaned,
                    before: None,
                },
                Some((before, rec, true)) => ReceiptChange {
                    outcome: ReceiptOutcome::Applied(rec),
                    before: Some(before),
                },
                Some((before, rec, false)) => ReceiptChange {
                    outcome: ReceiptOutcome::Duplicate(rec),
                    before: Some(before),
                },
            },
        )
    }

    /// A create found the idempotency key held for message `id`: waits up
    /// to [`TAKEOVER_AFTER`] for the holder's record. `None`: it never came
    /// (the holder died between the key and the record), so take the key
    /// over.
    async fn await_key_holder(&self, id: &str) -> Result<Option<MessageRecord>, MessageStoreError> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_AFTER;
        loop {
            if let Some(existing) = self.get(id).await? {
                return Ok(Some(existing));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(HOLDER_POLL).await;
        }
    }

    /// Writes the record of a create that holds its key; when the id is
    /// taken (another pod took the key over), answers with that record.
    async fn put_created(
        &self,
        rec: MessageRecord,
        expires_at_ms: u64,
        taken_over: bool,
    ) -> Result<CreateOutcome, MessageStoreError> {
        if self
            .kv
            .put_if_absent(&rec, expires_at_ms, taken_over)
            .await?
        {
            return Ok(CreateOutcome::Created(rec));
        }
        self.get(&rec.message_id)
            .await?
            .map(CreateOutcome::Existing)
            .ok_or_else(|| backend("message vanished during create"))
    }
}

#[async_trait]
impl<K: VersionedKv> MessageStore for KvMessageStore<K> {
    async fn create(&self, rec: &MessageRecord) -> Result<CreateOutcome, MessageStoreError> {
        let mut rec = rec.clone();
        rec.status = rec.derive_status();
        let exp = rec.expires_at_ms(self.opts.ttl);
        loop {
            if self
                .kv
                .put_key_if_absent(&rec.app_id, &rec.transaction_id, &rec.message_id, exp)
                .await?
            {
                return self.put_created(rec, exp, false).await;
            }
            let Some(id) = self.kv.load_key(&rec.app_id, &rec.transaction_id).await? else {
                continue; // expired in between: try again
            };
            if let Some(existing) = self.await_key_holder(&id).await? {
                return Ok(CreateOutcome::Existing(existing));
            }
            // The creator died between the key and the record: finish its
            // work under the key's id.
            tracing::warn!(message_id = %id, app_id = %rec.app_id, "taking over an orphaned idempotency key");
            rec.message_id = id;
            return self.put_created(rec, exp, true).await;
        }
    }

    async fn get(&self, message_id: &str) -> Result<Option<MessageRecord>, MessageStoreError> {
        Ok(self.load_live(message_id).await?.map(|(_, rec)| rec))
    }

    async fn by_transaction(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<MessageRecord>, MessageStoreError> {
        match self.kv.load_key(app_id, transaction_id).await? {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    async fn record_submit(&self, s: &SubmitUpdate) -> Result<MessageRecord, MessageStoreError> {
        Ok(self.record_submit_change(s).await?.record)
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> Result<ReceiptOutcome, MessageStoreError> {
        Ok(self.apply_receipt_change(r).await?.outcome)
    }

    async fn record_submit_change(
        &self,
        s: &SubmitUpdate,
    ) -> Result<StatusChange, MessageStoreError> {
        self.record_submits(std::slice::from_ref(s)).await
    }

    async fn record_submits(
        &self,
        updates: &[SubmitUpdate],
    ) -> Result<StatusChange, MessageStoreError> {
        let id = one_message(updates)?;
        let res = self
            .update(id, |rec| {
                for s in updates {
                    rec.record_submit(s)?;
                }
                Ok(true)
            })
            .await?;
        let Some((before, mut rec, _)) = res else {
            return Err(MessageStoreError::NotFound {
                message_id: id.to_owned(),
            });
        };
        let unlist = before == MessageStatus::Accepted && rec.status != MessageStatus::Accepted;
        let taken = self
            .kv
            .index_submits(
                id,
                unlist,
                updates,
                rec.expires_at_ms(self.opts.ttl),
                self.opts.index_grace,
            )
            .await?;
        for (seq, r) in taken {
            if let ReceiptOutcome::Applied(updated) = self.apply_to(id, seq, &r).await?.outcome {
                rec = updated;
            }
        }
        Ok(StatusChange {
            before,
            record: rec,
        })
    }

    async fn apply_receipt_change(
        &self,
        r: &ReceiptUpdate,
    ) -> Result<ReceiptChange, MessageStoreError> {
        match self
            .kv
            .lookup_or_park(r, self.opts.parked_ttl, self.opts.index_grace)
            .await?
        {
            Some((id, seq)) => self.apply_to(&id, seq, r).await,
            None => Ok(ReceiptChange {
                outcome: ReceiptOutcome::Parked,
                before: None,
            }),
        }
    }

    async fn claim_stale_accepted(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<Claimed>, MessageStoreError> {
        // Look further than `limit`: leased entries at the head are skipped.
        let window = req.limit.saturating_mul(4).max(64);
        // Held messages are listed at their due time: read up to now for
        // them (a fresh message in that range still has its creator's lease).
        let upto = req.created_before_ms.max(req.now_ms);
        let ids = self.kv.accepted_ids(upto, window).await?;
        let until = req.now_ms.saturating_add(ms(req.lease));
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= req.limit {
                break;
            }
            let mut previous_owner = None;
            let res = self
                .update(&id, |rec| {
                    if !rec.claimable(req.created_before_ms, req.now_ms) {
                        return Ok(false);
                    }
                    previous_owner = rec.claim(&req.owner, until, req.now_ms);
                    Ok(true)
                })
                .await?;
            match res {
                Some((_, record, true)) => out.push(Claimed {
                    record,
                    previous_owner,
                }),
                Some((_, rec, false)) if rec.status != MessageStatus::Accepted => {
                    self.kv.unlist_accepted(&id).await?;
                }
                Some(_) => {}
                None => self.kv.unlist_accepted(&id).await?, // expired
            }
        }
        Ok(out)
    }

    async fn release_claim(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        Ok(matches!(
            self.update(message_id, |rec| Ok(rec.release(owner, until_ms)))
                .await?,
            Some((_, _, true))
        ))
    }
}
