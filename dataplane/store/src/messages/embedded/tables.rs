//! The embedded store's tables and the pure operations on them: each
//! logged [`Op`] applied in one write transaction ([`Op::apply`]), with no
//! clock, queue or file of its own — the same on the first run and on a
//! replay of the log.

use crate::messages::{backend, keep_parked, record_codec};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use smsgw_core::messages::{
    Claimed, CreateOutcome, MessageRecord, MessageStatus, MessageStoreError, ReceiptChange,
    ReceiptOutcome, ReceiptUpdate, StatusChange, SubmitUpdate,
};

/// message_id → record ([`record_codec`]: binary, or JSON when written by
/// an earlier version).
pub(super) const MSGS: TableDefinition<&str, &[u8]> = TableDefinition::new("msg");
/// `app \0 transaction_id` → message_id.
pub(super) const TXS: TableDefinition<&str, &str> = TableDefinition::new("msg_tx");
/// `link \0 smsc_id` → `seq \0 message_id`.
const INDEX: TableDefinition<&str, &str> = TableDefinition::new("msg_smsc_index");
/// `link \0 smsc_id` → JSON of the [`Parked`] receipt.
pub(super) const PARKED: TableDefinition<&str, &[u8]> = TableDefinition::new("msg_parked");
/// (parked_at_ms, `link \0 smsc_id`) → (), to expire parked receipts.
const PARKED_AT: TableDefinition<(u64, &str), ()> = TableDefinition::new("msg_parked_at");
/// (listed_at_ms, message_id) → () while the message is `accepted`: its
/// creation, or the time a schedule holds it until
/// ([`MessageRecord::listed_at_ms`]).
const ACCEPTED: TableDefinition<(u64, &str), ()> = TableDefinition::new("msg_accepted");
/// (created_at_ms, message_id) → (), every message, to expire them.
const CREATED: TableDefinition<(u64, &str), ()> = TableDefinition::new("msg_created");
/// [`WAL_SEQ`] → number of the last logged batch applied here.
const META: TableDefinition<&str, u64> = TableDefinition::new("msg_meta");
pub(super) const WAL_SEQ: &str = "wal_seq";

/// Most messages removed by one purge transaction.
pub(super) const PURGE_BATCH: usize = 10_000;

/// Every table, opened once per group-committed transaction and shared by
/// the batch's operations (opening and closing a redb table costs a lookup
/// and a root update in the table tree each time).
pub(super) struct Tables<'t> {
    pub(super) msgs: Table<'t, &'static str, &'static [u8]>,
    pub(super) txs: Table<'t, &'static str, &'static str>,
    pub(super) index: Table<'t, &'static str, &'static str>,
    pub(super) parked: Table<'t, &'static str, &'static [u8]>,
    pub(super) parked_at: Table<'t, (u64, &'static str), ()>,
    pub(super) accepted: Table<'t, (u64, &'static str), ()>,
    pub(super) created: Table<'t, (u64, &'static str), ()>,
    pub(super) meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, MessageStoreError> {
        Ok(Self {
            msgs: txn.open_table(MSGS).map_err(backend)?,
            txs: txn.open_table(TXS).map_err(backend)?,
            index: txn.open_table(INDEX).map_err(backend)?,
            parked: txn.open_table(PARKED).map_err(backend)?,
            parked_at: txn.open_table(PARKED_AT).map_err(backend)?,
            accepted: txn.open_table(ACCEPTED).map_err(backend)?,
            created: txn.open_table(CREATED).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
        })
    }
}

/// A receipt waiting for its mapping, and when it was parked.
#[derive(serde::Serialize, serde::Deserialize)]
struct Parked {
    at_ms: u64,
    receipt: ReceiptUpdate,
}

fn get_parked(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    k: &str,
) -> Result<Option<Parked>, MessageStoreError> {
    match t.get(k).map_err(backend)? {
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(backend),
        None => Ok(None),
    }
}

pub(super) fn tx_key(app: &str, txid: &str) -> String {
    format!("{app}\0{txid}")
}
fn ix_key(link: &str, smsc_id: &str) -> String {
    format!("{link}\0{smsc_id}")
}

/// One write, as logged: everything it reads besides the store (the clock,
/// the TTLs) is in it, so applying it again after a crash does the same.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) enum Op {
    Create {
        rec: Box<MessageRecord>,
        now: u64,
        ttl: u64,
    },
    /// One segment's outcome: no longer written (a submission is one
    /// [`Op::Submits`]), replayed from logs of earlier versions.
    Submit {
        s: SubmitUpdate,
        now: u64,
        ttl: u64,
    },
    Receipt {
        r: ReceiptUpdate,
        now: u64,
        ttl: u64,
    },
    Claim {
        owner: String,
        created_before_ms: u64,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
        ttl: u64,
    },
    Purge {
        now: u64,
        ttl: u64,
        parked_ttl: u64,
    },
    // Last ones, so that logs written before they existed replay unchanged
    // (new variants go after these).
    Release {
        message_id: String,
        owner: String,
        until_ms: u64,
        now: u64,
        ttl: u64,
    },
    Submits {
        updates: Vec<SubmitUpdate>,
        now: u64,
        ttl: u64,
    },
}

/// What an [`Op`] answers.
pub(super) enum Done {
    Created(CreateOutcome),
    Submitted(StatusChange),
    Receipt(ReceiptChange),
    Claimed(Vec<Claimed>),
    Purged(u64),
    Released(bool),
}

impl Op {
    /// Applies this write in the batch's transaction. It must check before
    /// it writes: an `Err` does not undo its writes (they are committed with
    /// the rest of the batch, and replayed the same way).
    pub(super) fn apply(&self, t: &mut Tables<'_>) -> Result<Done, MessageStoreError> {
        match self {
            Op::Create { rec, now, ttl } => create_in(t, rec, *now, *ttl).map(Done::Created),
            Op::Submit { s, now, ttl } => {
                submits_in(t, std::slice::from_ref(s), *now, *ttl).map(Done::Submitted)
            }
            Op::Receipt { r, now, ttl } => receipt_in(t, r, *now, *ttl).map(Done::Receipt),
            Op::Claim {
                owner,
                created_before_ms,
                now_ms,
                lease_ms,
                limit,
                ttl,
            } => claim_in(
                t,
                owner,
                *created_before_ms,
                *now_ms,
                now_ms.saturating_add(*lease_ms),
                *limit,
                *ttl,
            )
            .map(Done::Claimed),
            Op::Purge {
                now,
                ttl,
                parked_ttl,
            } => purge_in(t, *now, *ttl, *parked_ttl).map(Done::Purged),
            Op::Release {
                message_id,
                owner,
                until_ms,
                now,
                ttl,
            } => release_in(t, message_id, owner, *until_ms, *now, *ttl).map(Done::Released),
            Op::Submits { updates, now, ttl } => {
                submits_in(t, updates, *now, *ttl).map(Done::Submitted)
            }
        }
    }
}

pub(super) fn get_record(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<MessageRecord>, MessageStoreError> {
    match t.get(id).map_err(backend)? {
        Some(v) => record_codec::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn live(rec: Option<MessageRecord>, ttl_ms: u64, now: u64) -> Option<MessageRecord> {
    rec.filter(|r| r.created_at_ms.saturating_add(ttl_ms) > now)
}

fn put_msg(t: &mut Tables<'_>, rec: &MessageRecord) -> Result<(), MessageStoreError> {
    t.msgs
        .insert(
            rec.message_id.as_str(),
            record_codec::encode(rec).as_slice(),
        )
        .map_err(backend)?;
    let k = (rec.listed_at_ms(), rec.message_id.as_str());
    if rec.status == MessageStatus::Accepted {
        t.accepted.insert(k, ()).map_err(backend)?;
    } else {
        t.accepted.remove(k).map_err(backend)?;
    }
    Ok(())
}

/// Removes a message and every key pointing at it.
fn remove_msg(t: &mut Tables<'_>, rec: &MessageRecord) -> Result<(), MessageStoreError> {
    let id = rec.message_id.as_str();
    t.msgs.remove(id).map_err(backend)?;
    t.accepted
        .remove((rec.listed_at_ms(), id))
        .map_err(backend)?;
    t.created.remove((rec.created_at_ms, id)).map_err(backend)?;
    let txs = &mut t.txs;
    let tk = tx_key(&rec.app_id, &rec.transaction_id);
    let owned = txs
        .get(tk.as_str())
        .map_err(backend)?
        .is_some_and(|v| v.value() == id);
    if owned {
        txs.remove(tk.as_str()).map_err(backend)?;
    }
    let ix = &mut t.index;
    if let Some(link) = &rec.link {
        for s in &rec.segments {
            if let Some(sid) = &s.smsc_message_id {
                let k = ix_key(link, sid);
                let ours = ix
                    .get(k.as_str())
                    .map_err(backend)?
                    .is_some_and(|v| parse_ix(v.value()).is_some_and(|(_, m)| m == id));
                if ours {
                    ix.remove(k.as_str()).map_err(backend)?;
                }
            }
        }
    }
    Ok(())
}

fn parse_ix(v: &str) -> Option<(u16, &str)> {
    let (seq, id) = v.split_once('\0')?;
    Some((seq.parse().ok()?, id))
}

/// Applies `r` to segment `seq` of message `id` in the batch's transaction.
fn apply_in(
    t: &mut Tables<'_>,
    id: &str,
    seq: u16,
    r: &ReceiptUpdate,
    ttl_ms: u64,
    now: u64,
) -> Result<ReceiptChange, MessageStoreError> {
    let Some(mut rec) = live(get_record(&t.msgs, id)?, ttl_ms, now) else {
        return Ok(ReceiptChange {
            outcome: ReceiptOutcome::Orphaned,
            before: None,
        });
    };
    let before = Some(rec.status);
    if !rec.apply_receipt(seq, r) {
        return Ok(ReceiptChange {
            outcome: ReceiptOutcome::Duplicate(rec),
            before,
        });
    }
    put_msg(t, &rec)?;
    Ok(ReceiptChange {
        outcome: ReceiptOutcome::Applied(rec),
        before,
    })
}

fn create_in(
    t: &mut Tables<'_>,
    rec: &MessageRecord,
    now: u64,
    ttl: u64,
) -> Result<CreateOutcome, MessageStoreError> {
    let tk = tx_key(&rec.app_id, &rec.transaction_id);
    let existing = t
        .txs
        .get(tk.as_str())
        .map_err(backend)?
        .map(|v| v.value().to_owned());
    if let Some(id) = existing {
        match get_record(&t.msgs, &id)? {
            Some(old) if old.created_at_ms.saturating_add(ttl) > now => {
                return Ok(CreateOutcome::Existing(old));
            }
            // Expired but not purged yet: the key is free again.
            Some(old) => remove_msg(t, &old)?,
            None => {}
        }
    }
    if t.msgs
        .get(rec.message_id.as_str())
        .map_err(backend)?
        .is_some()
    {
        return Err(backend(format!(
            "message id {:?} already exists",
            rec.message_id
        )));
    }
    t.txs
        .insert(tk.as_str(), rec.message_id.as_str())
        .map_err(backend)?;
    t.created
        .insert((rec.created_at_ms, rec.message_id.as_str()), ())
        .map_err(backend)?;
    put_msg(t, rec)?;
    Ok(CreateOutcome::Created(rec.clone()))
}

/// Every segment outcome of one submission (all of one message) in this
/// transaction: applied to the record in memory first (the core's
/// `record_submit` refuses a segment out of range before anything is
/// written), the record written once, then each SMSC id indexed and a
/// receipt parked under it applied.
fn submits_in(
    t: &mut Tables<'_>,
    updates: &[SubmitUpdate],
    now: u64,
    ttl: u64,
) -> Result<StatusChange, MessageStoreError> {
    let id = crate::messages::one_message(updates)?;
    let mut rec =
        live(get_record(&t.msgs, id)?, ttl, now).ok_or_else(|| MessageStoreError::NotFound {
            message_id: id.to_owned(),
        })?;
    let before = rec.status;
    for s in updates {
        rec.record_submit(s)?;
    }
    put_msg(t, &rec)?;
    for s in updates {
        let Some(sid) = &s.smsc_message_id else {
            continue;
        };
        let k = ix_key(&s.link, sid);
        t.index
            .insert(k.as_str(), format!("{}\0{}", s.seq, s.message_id).as_str())
            .map_err(backend)?;
        let parked = get_parked(&t.parked, &k)?;
        if parked.is_some() {
            t.parked.remove(k.as_str()).map_err(backend)?;
        }
        if let Some(parked) = parked
            && let ReceiptOutcome::Applied(updated) =
                apply_in(t, id, s.seq, &parked.receipt, ttl, now)?.outcome
        {
            rec = updated;
        }
    }
    Ok(StatusChange {
        before,
        record: rec,
    })
}

fn receipt_in(
    t: &mut Tables<'_>,
    r: &ReceiptUpdate,
    now: u64,
    ttl: u64,
) -> Result<ReceiptChange, MessageStoreError> {
    let k = ix_key(&r.link, &r.smsc_message_id);
    let target = t
        .index
        .get(k.as_str())
        .map_err(backend)?
        .and_then(|v| parse_ix(v.value()).map(|(seq, id)| (seq, id.to_owned())));
    if let Some((seq, id)) = target {
        return apply_in(t, &id, seq, r, ttl, now);
    }
    let keep = match get_parked(&t.parked, &k)? {
        Some(old) => keep_parked(old.receipt, r.clone()),
        None => r.clone(),
    };
    let json = serde_json::to_vec(&Parked {
        at_ms: now,
        receipt: keep,
    })
    .map_err(backend)?;
    t.parked
        .insert(k.as_str(), json.as_slice())
        .map_err(backend)?;
    t.parked_at.insert((now, k.as_str()), ()).map_err(backend)?;
    Ok(ReceiptChange {
        outcome: ReceiptOutcome::Parked,
        before: None,
    })
}

fn claim_in(
    t: &mut Tables<'_>,
    owner: &str,
    created_before_ms: u64,
    now: u64,
    until: u64,
    limit: usize,
    ttl: u64,
) -> Result<Vec<Claimed>, MessageStoreError> {
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for e in t
            .accepted
            // Held messages are listed at their due time (see
            // `MessageRecord::listed_at_ms`): read up to now for them.
            .range((0u64, "")..(created_before_ms.max(now).saturating_add(1), ""))
            .map_err(backend)?
        {
            let (k, _) = e.map_err(backend)?;
            ids.push(k.value().1.to_owned());
        }
        ids
    };
    let mut out = Vec::new();
    for id in ids {
        if out.len() >= limit {
            break;
        }
        let Some(mut rec) = live(get_record(&t.msgs, &id)?, ttl, now) else {
            continue;
        };
        if !rec.claimable(created_before_ms, now) {
            continue;
        }
        let previous_owner = rec.claim(owner, until, now);
        put_msg(t, &rec)?;
        out.push(Claimed {
            record: rec,
            previous_owner,
        });
    }
    Ok(out)
}

fn release_in(
    t: &mut Tables<'_>,
    id: &str,
    owner: &str,
    until_ms: u64,
    now: u64,
    ttl: u64,
) -> Result<bool, MessageStoreError> {
    let Some(mut rec) = live(get_record(&t.msgs, id)?, ttl, now) else {
        return Ok(false);
    };
    if !rec.release(owner, until_ms) {
        return Ok(false);
    }
    put_msg(t, &rec)?;
    Ok(true)
}

/// Removes up to [`PURGE_BATCH`] expired messages and the parked receipts
/// past their own TTL; answers how many messages it removed.
fn purge_in(
    t: &mut Tables<'_>,
    now: u64,
    ttl: u64,
    parked_ttl: u64,
) -> Result<u64, MessageStoreError> {
    let cutoff = now.saturating_sub(ttl);
    let keys: Vec<(u64, String)> = {
        let mut keys = Vec::new();
        for e in t
            .created
            .range((0u64, "")..(cutoff.saturating_add(1), ""))
            .map_err(backend)?
        {
            let (k, _) = e.map_err(backend)?;
            keys.push((k.value().0, k.value().1.to_owned()));
            if keys.len() >= PURGE_BATCH {
                break;
            }
        }
        keys
    };
    for (at, id) in &keys {
        match get_record(&t.msgs, id)? {
            Some(rec) => remove_msg(t, &rec)?,
            None => {
                t.created.remove((*at, id.as_str())).map_err(backend)?;
            }
        }
    }
    // Parked receipts past their own TTL.
    let pcut = now.saturating_sub(parked_ttl);
    let old: Vec<(u64, String)> = t
        .parked_at
        .range((0u64, "")..(pcut.saturating_add(1), ""))
        .map_err(backend)?
        .take(PURGE_BATCH)
        .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for (at, k) in &old {
        t.parked_at.remove((*at, k.as_str())).map_err(backend)?;
        // Re-parked later (or taken): a newer time, keep it.
        if get_parked(&t.parked, k)?.is_some_and(|p| p.at_ms == *at) {
            t.parked.remove(k.as_str()).map_err(backend)?;
        }
    }
    Ok(keys.len() as u64)
}
