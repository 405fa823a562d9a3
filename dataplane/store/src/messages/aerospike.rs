//! Aerospike message store (the production default): TTL'd records,
//! atomic creates and optimistic updates by record generation.
//!
//! # Records (namespace and set names from [`AerospikeConfig`])
//!
//! | set | key | bins | TTL |
//! |---|---|---|---|
//! | `<set>` | message id | `r` the record, a blob in the binary record encoding (`record_codec`; `j`, a JSON string, in records of the version before, still read); `acc` = `listed_at_ms` (creation, or the end of a schedule's hold) while `accepted` (secondary index `<set>_acc`) | rest of `created_at + ttl` |
//! | `<set>_tx` | `app_id \0 transaction_id` | `m` message id | same as the message |
//! | `<set>_ix` | `link \0 smsc_id` | `m`, `s` mapping; `p`, `pf` parked receipt | message's once mapped, `index_grace` after a final receipt, `parked_ttl` while only parked |
//!
//! Atomic steps are single-record operations: `CREATE_ONLY` puts (the
//! idempotency key, the record) and generation-checked puts
//! (`EXPECT_GEN_EQUAL`) for every read-modify-write, retried on
//! `GenerationError`. The index entry and the parked receipt share one
//! record, so a receipt racing its `submit_sm_resp` is either matched or
//! parked and then taken by the index write — never lost. The claim query
//! uses the sparse secondary index on `acc`, so it reads only messages still
//! `accepted`, not the whole set. The message operations are the Redis
//! store's, written once in [`KvMessageStore`] over this [`AerospikeKv`]:
//! the same crash-safe create order (key, then record; a later create with
//! the key takes over an orphaned key under its id). A write of a record
//! read as JSON writes it as `r` and drops `j`.
//!
//! Size: a delivered single-segment message's `r` is about 210 bytes
//! (BENCHMARKS.md states the record's size on the server).

use super::kv::{Cas, VersionedKv};
use super::record_codec;
use super::{CAS_ATTEMPTS, KvMessageStore, MessageStoreOptions, backend, keep_parked, ms};
use aerospike::query::{Filter, PartitionFilter};
use aerospike::{
    AdminPolicy, Bin, Bins, Client, ClientPolicy, CollectionIndexType, Expiration,
    GenerationPolicy, IndexType, Key, QueryPolicy, ReadPolicy, Record, RecordExistsAction,
    ResultCode, Statement, Task, Value, WritePolicy,
};
use async_trait::async_trait;
use futures::StreamExt;
use smsgw_core::messages::{
    MessageRecord, MessageStatus, MessageStoreError, ReceiptUpdate, SubmitUpdate, unix_now_ms,
};
use std::sync::Arc;
use std::time::Duration;

/// Where the messages live in Aerospike.
///
/// # Defaults
/// Namespace `smsgw`, set `messages`.
#[derive(Clone, Debug)]
pub struct AerospikeConfig {
    /// Seed hosts, `host:port[,host:port…]` (as `AEROSPIKE_HOSTS`).
    pub hosts: String,
    /// Namespace (must allow TTLs: `nsup-period` > 0).
    pub namespace: String,
    /// Set of the message records; the key and index sets are named after it.
    pub set: String,
}

impl AerospikeConfig {
    /// Defaults for `hosts`.
    pub fn new(hosts: impl Into<String>) -> Self {
        Self {
            hosts: hosts.into(),
            namespace: "smsgw".into(),
            set: "messages".into(),
        }
    }
}

/// Messages in Aerospike (see the module docs for the layout).
pub type AerospikeMessageStore = KvMessageStore<AerospikeKv>;

impl KvMessageStore<AerospikeKv> {
    /// Connects and makes sure the `acc` secondary index exists.
    pub async fn connect(
        config: &AerospikeConfig,
        opts: MessageStoreOptions,
    ) -> Result<Self, MessageStoreError> {
        Ok(Self::new(AerospikeKv::connect(config).await?, opts))
    }
}

/// The Aerospike records of the message store ([`VersionedKv`]; see the
/// module docs for the layout).
#[derive(Clone)]
pub struct AerospikeKv {
    client: Arc<Client>,
    ns: String,
    set: String,
    tx_set: String,
    ix_set: String,
}

fn is(e: &aerospike::Error, rc: ResultCode) -> bool {
    e.matches(&[rc])
}

fn string_bin(rec: &Record, name: &str) -> Option<String> {
    match rec.bins.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The message a record of the message set holds (`r`, or `j` as written
/// by the version before); `None` without either.
fn message_of(rec: &Record) -> Result<Option<MessageRecord>, MessageStoreError> {
    match (rec.bins.get("r"), rec.bins.get("j")) {
        (Some(Value::Blob(b)), _) => record_codec::decode(b).map(Some),
        (_, Some(Value::String(j))) => record_codec::decode(j.as_bytes()).map(Some),
        _ => Ok(None),
    }
}

fn int_bin(rec: &Record, name: &str) -> Option<i64> {
    match rec.bins.get(name) {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    }
}

/// `d` in whole seconds, at least 1.
fn seconds_for(d: Duration) -> Expiration {
    Expiration::Seconds(
        u32::try_from(ms(d).div_ceil(1000))
            .unwrap_or(u32::MAX)
            .max(1),
    )
}

/// Seconds left until `expires_at_ms`, at least 1 (0 would mean the
/// namespace default to the server).
fn seconds_until(expires_at_ms: u64) -> Expiration {
    let left = expires_at_ms.saturating_sub(unix_now_ms()).div_ceil(1000);
    Expiration::Seconds(u32::try_from(left).unwrap_or(u32::MAX).max(1))
}

impl AerospikeKv {
    /// One step of [`VersionedKv::index_submits`]: maps `(link, smsc_id)`
    /// to segment `seq` of message `id` and takes the receipt parked under
    /// that key, if any (a generation-checked write).
    async fn index_and_take_parked(
        &self,
        link: &str,
        smsc_id: &str,
        id: &str,
        seq: u16,
        expires_at_ms: u64,
        grace: Duration,
    ) -> Result<Option<ReceiptUpdate>, MessageStoreError> {
        let key = self.ix_key(link, smsc_id)?;
        let bins = [
            Bin::new("m", Value::from(id.to_owned())),
            Bin::new("s", Value::from(i64::from(seq))),
        ];
        for _ in 0..CAS_ATTEMPTS {
            let (p, parked) = match self.read(&key).await? {
                None => (
                    Self::policy(
                        RecordExistsAction::CreateOnly,
                        None,
                        seconds_until(expires_at_ms),
                    ),
                    None,
                ),
                // Replace drops the parked bins with the mapping written.
                Some(r) => (
                    Self::policy(
                        RecordExistsAction::Replace,
                        Some(r.generation),
                        seconds_until(expires_at_ms),
                    ),
                    string_bin(&r, "p"),
                ),
            };
            match self.client.put(&p, &key, &bins).await {
                Ok(()) => {
                    let parked = parked
                        .map(|j| serde_json::from_str::<ReceiptUpdate>(&j).map_err(backend))
                        .transpose()?;
                    if parked.as_ref().is_some_and(|r| r.state.is_final()) {
                        self.retire(&key, grace).await?;
                    }
                    return Ok(parked);
                }
                Err(e)
                    if is(&e, ResultCode::GenerationError)
                        || is(&e, ResultCode::KeyExistsError) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Err(MessageStoreError::Contended {
            message_id: id.to_owned(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Connects and makes sure the `acc` secondary index exists.
    pub async fn connect(config: &AerospikeConfig) -> Result<Self, MessageStoreError> {
        let client = Client::new(&ClientPolicy::default(), &config.hosts)
            .await
            .map_err(backend)?;
        let store = Self {
            client: Arc::new(client),
            ns: config.namespace.clone(),
            set: config.set.clone(),
            tx_set: format!("{}_tx", config.set),
            ix_set: format!("{}_ix", config.set),
        };
        let index = format!("{}_acc", store.set);
        match store
            .client
            .create_index_on_bin(
                &AdminPolicy::default(),
                &store.ns,
                &store.set,
                "acc",
                &index,
                IndexType::Numeric,
                CollectionIndexType::Default,
                None,
            )
            .await
        {
            Ok(task) => task
                .wait_till_complete(None)
                .await
                .map(|_| ())
                .map_err(backend)?,
            Err(e) if is(&e, ResultCode::IndexFound) => {}
            Err(e) => return Err(backend(e)),
        }
        Ok(store)
    }

    fn key(&self, set: &str, k: String) -> Result<Key, MessageStoreError> {
        Key::new(self.ns.as_str(), set, Value::from(k)).map_err(backend)
    }
    fn msg_key(&self, id: &str) -> Result<Key, MessageStoreError> {
        self.key(&self.set, id.to_owned())
    }
    fn tx_key(&self, app: &str, txid: &str) -> Result<Key, MessageStoreError> {
        self.key(&self.tx_set, format!("{app}\0{txid}"))
    }
    fn ix_key(&self, link: &str, sid: &str) -> Result<Key, MessageStoreError> {
        self.key(&self.ix_set, format!("{link}\0{sid}"))
    }

    async fn read(&self, key: &Key) -> Result<Option<Record>, MessageStoreError> {
        match self
            .client
            .get(&ReadPolicy::default(), key, Bins::All)
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(e) if is(&e, ResultCode::KeyNotFoundError) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    fn policy(exists: RecordExistsAction, generation: Option<u32>, exp: Expiration) -> WritePolicy {
        WritePolicy {
            record_exists_action: exists,
            generation_policy: if generation.is_some() {
                GenerationPolicy::ExpectGenEqual
            } else {
                GenerationPolicy::None
            },
            generation: generation.unwrap_or(0),
            expiration: exp,
            ..WritePolicy::default()
        }
    }

    /// The bins of a message: the record (dropping the JSON of the
    /// version before, if any) and its `acc` listing.
    fn msg_bins(rec: &MessageRecord) -> [Bin; 3] {
        let acc = if rec.status == MessageStatus::Accepted {
            Value::from(i64::try_from(rec.listed_at_ms()).unwrap_or(i64::MAX))
        } else {
            Value::Nil // removes the bin, and the record from the index
        };
        [
            Bin::new("r", Value::Blob(record_codec::encode(rec))),
            Bin::new("j", Value::Nil),
            Bin::new("acc", acc),
        ]
    }

    /// Cuts the life of index entry `key` to `grace` (after a final
    /// receipt); an entry already gone is fine.
    async fn retire(&self, key: &Key, grace: Duration) -> Result<(), MessageStoreError> {
        let p = Self::policy(RecordExistsAction::UpdateOnly, None, seconds_for(grace));
        match self.client.touch(&p, key).await {
            Ok(()) => Ok(()),
            Err(e) if is(&e, ResultCode::KeyNotFoundError) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

#[async_trait]
impl VersionedKv for AerospikeKv {
    type Version = u32;

    async fn load(&self, id: &str) -> Result<Option<(u32, MessageRecord)>, MessageStoreError> {
        let Some(r) = self.read(&self.msg_key(id)?).await? else {
            return Ok(None);
        };
        Ok(message_of(&r)?.map(|m| (r.generation, m)))
    }

    async fn compare_and_set(
        &self,
        id: &str,
        generation: &u32,
        rec: &MessageRecord,
    ) -> Result<Cas, MessageStoreError> {
        let p = Self::policy(
            RecordExistsAction::UpdateOnly,
            Some(*generation),
            Expiration::DontUpdate,
        );
        match self
            .client
            .put(&p, &self.msg_key(id)?, &Self::msg_bins(rec))
            .await
        {
            Ok(()) => Ok(Cas::Written),
            Err(e) if is(&e, ResultCode::GenerationError) => Ok(Cas::Changed),
            Err(e) if is(&e, ResultCode::KeyNotFoundError) => Ok(Cas::Gone),
            Err(e) => Err(backend(e)),
        }
    }

    async fn put_if_absent(
        &self,
        rec: &MessageRecord,
        expires_at_ms: u64,
        _taken_over: bool,
    ) -> Result<bool, MessageStoreError> {
        let p = Self::policy(
            RecordExistsAction::CreateOnly,
            None,
            seconds_until(expires_at_ms),
        );
        match self
            .client
            .put(&p, &self.msg_key(&rec.message_id)?, &Self::msg_bins(rec))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is(&e, ResultCode::KeyExistsError) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn put_key_if_absent(
        &self,
        app_id: &str,
        transaction_id: &str,
        message_id: &str,
        expires_at_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        let p = Self::policy(
            RecordExistsAction::CreateOnly,
            None,
            seconds_until(expires_at_ms),
        );
        let bins = [Bin::new("m", Value::from(message_id.to_owned()))];
        match self
            .client
            .put(&p, &self.tx_key(app_id, transaction_id)?, &bins)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is(&e, ResultCode::KeyExistsError) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn load_key(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<String>, MessageStoreError> {
        let tk = self.tx_key(app_id, transaction_id)?;
        Ok(self.read(&tk).await?.and_then(|r| string_bin(&r, "m")))
    }

    async fn index_submits(
        &self,
        id: &str,
        unlist: bool,
        updates: &[SubmitUpdate],
        expires_at_ms: u64,
        grace: Duration,
    ) -> Result<Vec<(u16, ReceiptUpdate)>, MessageStoreError> {
        if unlist {
            self.unlist_accepted(id).await?;
        }
        let mut taken = Vec::new();
        for s in updates {
            let Some(sid) = &s.smsc_message_id else {
                continue;
            };
            if let Some(r) = self
                .index_and_take_parked(&s.link, sid, id, s.seq, expires_at_ms, grace)
                .await?
            {
                taken.push((s.seq, r));
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
        let key = self.ix_key(&r.link, &r.smsc_message_id)?;
        let parked_exp = seconds_for(parked_ttl);
        for _ in 0..CAS_ATTEMPTS {
            let existing = self.read(&key).await?;
            if let Some(ix) = &existing
                && let (Some(id), Some(seq)) = (string_bin(ix, "m"), int_bin(ix, "s"))
            {
                let seq = u16::try_from(seq).map_err(backend)?;
                if r.state.is_final() {
                    self.retire(&key, grace).await?;
                }
                return Ok(Some((id, seq)));
            }
            let (p, keep) = match existing {
                None => (
                    Self::policy(RecordExistsAction::CreateOnly, None, parked_exp),
                    r.clone(),
                ),
                Some(ix) => {
                    let old = string_bin(&ix, "p")
                        .map(|j| serde_json::from_str::<ReceiptUpdate>(&j))
                        .transpose()
                        .map_err(backend)?;
                    let keep = match old {
                        Some(old) => keep_parked(old, r.clone()),
                        None => r.clone(),
                    };
                    (
                        Self::policy(RecordExistsAction::Replace, Some(ix.generation), parked_exp),
                        keep,
                    )
                }
            };
            let json = serde_json::to_string(&keep).map_err(backend)?;
            let bins = [
                Bin::new("p", Value::from(json)),
                Bin::new("pf", Value::from(i64::from(keep.state.is_final()))),
            ];
            match self.client.put(&p, &key, &bins).await {
                Ok(()) => return Ok(None),
                Err(e)
                    if is(&e, ResultCode::GenerationError)
                        || is(&e, ResultCode::KeyExistsError) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Err(MessageStoreError::Contended {
            message_id: format!("receipt {}:{}", r.link, r.smsc_message_id),
            attempts: CAS_ATTEMPTS,
        })
    }

    async fn accepted_ids(
        &self,
        created_before_ms: u64,
        window: usize,
    ) -> Result<Vec<String>, MessageStoreError> {
        let mut stmt = Statement::new(
            self.ns.as_str(),
            self.set.as_str(),
            Bins::from(vec!["r", "j"]),
        );
        stmt.set_filter(Filter::range(
            "acc",
            0i64,
            i64::try_from(created_before_ms).unwrap_or(i64::MAX),
        ));
        let policy = QueryPolicy {
            max_records: u64::try_from(window).unwrap_or(u64::MAX),
            ..QueryPolicy::default()
        };
        let rs = self
            .client
            .query(&policy, PartitionFilter::all(), stmt)
            .await
            .map_err(backend)?;
        let mut ids = Vec::new();
        let mut stream = rs.into_stream();
        while let Some(r) = stream.next().await {
            if let Some(rec) = message_of(&r.map_err(backend)?)? {
                ids.push(rec.message_id);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::record_codec::tests::delivered;

    fn record(bins: &[Bin]) -> Record {
        let bins = bins
            .iter()
            .filter(|b| b.value != Value::Nil)
            .map(|b| (b.name.clone(), b.value.clone()))
            .collect();
        Record::new(None, bins, None, 1, 0)
    }

    #[test]
    fn a_message_should_be_one_blob_bin_in_the_record_encoding() {
        let rec = delivered();
        let bins = AerospikeKv::msg_bins(&rec);
        let names: Vec<&str> = bins.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["r", "j", "acc"]);
        assert_eq!(bins[0].value, Value::Blob(record_codec::encode(&rec)));
        // 211 bytes of bin data for a delivered single-segment message.
        assert!(matches!(&bins[0].value, Value::Blob(b) if b.len() == 211));
        // Writing drops the JSON of the version before; a message no longer
        // accepted leaves the `acc` index.
        assert_eq!(bins[1].value, Value::Nil);
        assert_eq!(bins[2].value, Value::Nil);
        assert_eq!(message_of(&record(&bins)).unwrap(), Some(rec.clone()));

        let mut accepted = rec.clone();
        accepted.status = MessageStatus::Accepted;
        let bins = AerospikeKv::msg_bins(&accepted);
        assert_eq!(
            bins[2].value,
            Value::from(i64::try_from(accepted.listed_at_ms()).unwrap())
        );
    }

    #[test]
    fn a_record_of_the_version_before_should_still_be_read() {
        let rec = delivered();
        let json = serde_json::to_string(&rec).unwrap();
        let old = record(&[Bin::new("j", Value::from(json))]);
        assert_eq!(message_of(&old).unwrap(), Some(rec));
        assert_eq!(message_of(&record(&[])).unwrap(), None);
        let bad = record(&[Bin::new("r", Value::Blob(vec![2, 0]))]);
        assert!(message_of(&bad).is_err());
    }
}
