//! Compact binary encoding of a [`MessageRecord`], shared by the stores
//! (embedded, Redis, Aerospike).
//!
//! Every write of a message (create, each segment's submit outcome, each
//! receipt) decodes and re-encodes its record, so the encoding is on the
//! hot path; in the shared stores it is also most of a message's memory.
//! [`encode`] writes version 2, led by the byte [`V2`]: no field names,
//! a flags byte for the optional fields, integers as LEB128 varints, every
//! time but the creation time as a zig-zag delta from it, and strings
//! packed by shape ([`Writer::str`]: a hex or UUID id as its bytes, a
//! canonical decimal SMSC id as a number). [`decode`] also reads version 1
//! (flat little-endian, led by [`V1`], written by the embedded store
//! before) and JSON (starting with `{`: the embedded store before that, and
//! the Redis and Aerospike stores before version 2), so a rolling upgrade
//! reads the records already in place.
//!
//! Adding a field to `MessageRecord` (the compiler points here): give it a
//! bit of the extension flags (bits 1–6 are free; bit 7 is kept for a
//! further flags byte) and write it in the extension fields, or append it
//! after the text behind a new version byte; never change what an
//! existing byte means. A record none of whose extension fields is set is
//! written without the extension byte, so readers that predate it still
//! read it.

use super::backend;
use smsgw_core::messages::{
    MessageOptions, MessageRecord, MessageStatus, MessageStoreError, ReceiptState, SegmentRecord,
    SubmitStatus, Target,
};

/// First byte of a version-1 record (JSON records start with `{`).
const V1: u8 = 1;
/// First byte of a version-2 record.
const V2: u8 = 2;

// Record flags (version 2): which optional fields follow.
const F_TASK: u8 = 1;
const F_LINK: u8 = 1 << 1;
const F_CLAIMED: u8 = 1 << 2;
const F_TRACEPARENT: u8 = 1 << 3;
const F_TRACESTATE: u8 = 1 << 4;
const F_CALLBACK: u8 = 1 << 5;
const F_POOL: u8 = 1 << 6;
/// An extension flags byte follows the record flags.
const F_EXT: u8 = 1 << 7;

// Extension flags (version 2, behind `F_EXT`): which extension fields
// follow the callback.
const X_SENT_AT: u8 = 1;
/// The message options: an options byte (`O_*`, priority in bits 4–5)
/// and its fields follow `sent_at`.
const X_OPTIONS: u8 = 1 << 1;

// Options byte (behind `X_OPTIONS`).
const O_VALIDITY: u8 = 1;
const O_SCHEDULE: u8 = 1 << 1;
const O_AT_SMSC: u8 = 1 << 2;
const O_FLASH: u8 = 1 << 3;
const O_PRIORITY_SHIFT: u32 = 4;
const O_KNOWN: u8 = 0x3F;

// Segment flags (version 2).
const S_SMSC_ID: u8 = 1;
const S_RESUBMITTED: u8 = 1 << 1;
const S_ERROR: u8 = 1 << 2;
const S_SUBMITTED_AT: u8 = 1 << 3;
const S_RECEIPT_AT: u8 = 1 << 4;

/// Encodes `rec` as version 2:
///
/// `V2`, flags, [extension flags], status, `created_at_ms` (8 bytes LE),
/// then as varints or
/// [`Writer::str`]s: updated (delta), message id, app, transaction id,
/// [task], source, destination, encoding, target name, [link], TON/NPI
/// (4 bytes), [claimed by], claim end (optional delta: 0 = none), segment
/// count and each segment (flags, seq, submit tag [+ status or reason],
/// receipt (0 = none, else state + 1), [SMSC id], [error], [submitted
/// delta], [receipt delta]), [traceparent], [tracestate], [callback JSON],
/// the extension fields ([sent_at delta]), and last the text.
pub(crate) fn encode(rec: &MessageRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        96 + rec.text.len() + 24 * rec.segments.len(),
    ));
    let callback = rec
        .callback
        .as_ref()
        .map(|c| serde_json::to_string(c).expect("callbacks serialise"));
    let flags = [
        (rec.task_id.is_some(), F_TASK),
        (rec.link.is_some(), F_LINK),
        (rec.claimed_by.is_some(), F_CLAIMED),
        (rec.traceparent.is_some(), F_TRACEPARENT),
        (rec.tracestate.is_some(), F_TRACESTATE),
        (callback.is_some(), F_CALLBACK),
        (matches!(rec.target, Target::Pool(_)), F_POOL),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |f, (_, bit)| f | bit);
    let ext = [
        (rec.sent_at_ms.is_some(), X_SENT_AT),
        (!rec.options.is_default(), X_OPTIONS),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |f, (_, bit)| f | bit);
    w.u8(V2);
    if ext == 0 {
        w.u8(flags);
    } else {
        w.u8(flags | F_EXT);
        w.u8(ext);
    }
    w.u8(status_tag(rec.status));
    let t0 = rec.created_at_ms;
    w.0.extend_from_slice(&t0.to_le_bytes());
    w.delta(t0, rec.updated_at_ms);
    w.str(&rec.message_id);
    w.str(&rec.app_id);
    w.str(&rec.transaction_id);
    if let Some(t) = &rec.task_id {
        w.str(t);
    }
    w.str(&rec.source);
    w.str(&rec.destination);
    w.str(&rec.encoding);
    w.str(rec.target.name());
    if let Some(l) = &rec.link {
        w.str(l);
    }
    w.0.extend_from_slice(&rec.ton_npi);
    if let Some(c) = &rec.claimed_by {
        w.str(c);
    }
    w.opt_delta(t0, (rec.claim_until_ms != 0).then_some(rec.claim_until_ms));
    w.varint(rec.segments.len() as u128);
    for s in &rec.segments {
        let SegmentRecord {
            seq,
            smsc_message_id,
            submit,
            receipt,
            error_code,
            submitted_at_ms,
            receipt_at_ms,
            resubmitted,
        } = s;
        let flags = [
            (smsc_message_id.is_some(), S_SMSC_ID),
            (*resubmitted, S_RESUBMITTED),
            (error_code.is_some(), S_ERROR),
            (submitted_at_ms.is_some(), S_SUBMITTED_AT),
            (receipt_at_ms.is_some(), S_RECEIPT_AT),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit);
        w.u8(flags);
        w.varint(u128::from(*seq));
        match submit {
            SubmitStatus::Pending => w.u8(0),
            SubmitStatus::Accepted => w.u8(1),
            SubmitStatus::Rejected { command_status } => {
                w.u8(2);
                w.varint(u128::from(*command_status));
            }
            SubmitStatus::Unknown { reason } => {
                w.u8(3);
                w.str(reason);
            }
        }
        w.u8(receipt.map_or(0, |r| 1 + receipt_tag(r)));
        if let Some(sid) = smsc_message_id {
            w.str(sid);
        }
        if let Some(c) = error_code {
            w.varint(u128::from(*c));
        }
        if let Some(t) = submitted_at_ms {
            w.delta(t0, *t);
        }
        if let Some(t) = receipt_at_ms {
            w.delta(t0, *t);
        }
    }
    for s in [&rec.traceparent, &rec.tracestate, &callback]
        .into_iter()
        .flatten()
    {
        w.str(s);
    }
    if let Some(t) = rec.sent_at_ms {
        w.delta(t0, t);
    }
    if ext & X_OPTIONS != 0 {
        let o = &rec.options;
        let bits = [
            (o.validity_period_s.is_some(), O_VALIDITY),
            (o.schedule_delivery_ms.is_some(), O_SCHEDULE),
            (o.schedule_at_smsc, O_AT_SMSC),
            (o.flash, O_FLASH),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold((o.priority.min(3)) << O_PRIORITY_SHIFT, |f, (_, bit)| {
            f | bit
        });
        w.u8(bits);
        if let Some(v) = o.validity_period_s {
            w.varint(u128::from(v));
        }
        if let Some(t) = o.schedule_delivery_ms {
            w.delta(t0, t);
        }
    }
    w.str(&rec.text);
    w.0
}

/// Decodes a record written by [`encode`], or by an earlier version (version
/// 1, or JSON).
pub(crate) fn decode(bytes: &[u8]) -> Result<MessageRecord, MessageStoreError> {
    let version = bytes.first().copied();
    if version == Some(V1) || version == Some(V2) {
        let mut r = Reader(&bytes[1..]);
        let rec = if version == Some(V1) {
            decode_v1(&mut r)
        } else {
            decode_v2(&mut r)
        };
        let rec = rec.ok_or_else(|| backend("malformed message record"))?;
        if !r.0.is_empty() {
            return Err(backend("malformed message record: trailing bytes"));
        }
        return Ok(rec);
    }
    match version {
        Some(b'{') => serde_json::from_slice(bytes).map_err(backend),
        Some(v) => Err(backend(format!("message record of unknown version {v}"))),
        None => Err(backend("empty message record")),
    }
}

fn decode_v2(r: &mut Reader<'_>) -> Option<MessageRecord> {
    let flags = r.u8()?;
    let ext = if flags & F_EXT != 0 { r.u8()? } else { 0 };
    if ext & !(X_SENT_AT | X_OPTIONS) != 0 {
        return None;
    }
    let has = |bit: u8| flags & bit != 0;
    let status = status_of(r.u8()?)?;
    let t0 = r.u64()?;
    let updated_at_ms = r.delta(t0)?;
    let message_id = r.cstr()?;
    let app_id = r.cstr()?;
    let transaction_id = r.cstr()?;
    let task_id = if has(F_TASK) { Some(r.cstr()?) } else { None };
    let source = r.cstr()?;
    let destination = r.cstr()?;
    let encoding = r.cstr()?;
    let name = r.cstr()?;
    let target = if has(F_POOL) {
        Target::Pool(name)
    } else {
        Target::Link(name)
    };
    let link = if has(F_LINK) { Some(r.cstr()?) } else { None };
    let ton_npi = r.take(4)?.try_into().ok()?;
    let claimed_by = if has(F_CLAIMED) {
        Some(r.cstr()?)
    } else {
        None
    };
    let claim_until_ms = r.opt_delta(t0)?.unwrap_or(0);
    let n = usize::try_from(r.varint()?).ok()?;
    // Each segment takes at least 4 bytes: no huge allocation from a bad count.
    let mut segments = Vec::with_capacity(n.min(r.0.len() / 4));
    for _ in 0..n {
        let f = r.u8()?;
        if f & !(S_SMSC_ID | S_RESUBMITTED | S_ERROR | S_SUBMITTED_AT | S_RECEIPT_AT) != 0 {
            return None;
        }
        let seq = u16::try_from(r.varint()?).ok()?;
        let submit = match r.u8()? {
            0 => SubmitStatus::Pending,
            1 => SubmitStatus::Accepted,
            2 => SubmitStatus::Rejected {
                command_status: u32::try_from(r.varint()?).ok()?,
            },
            3 => SubmitStatus::Unknown { reason: r.cstr()? },
            _ => return None,
        };
        let receipt = match r.u8()? {
            0 => None,
            t => Some(receipt_of(t - 1)?),
        };
        let smsc_message_id = if f & S_SMSC_ID != 0 {
            Some(r.cstr()?)
        } else {
            None
        };
        let error_code = if f & S_ERROR != 0 {
            Some(u32::try_from(r.varint()?).ok()?)
        } else {
            None
        };
        let submitted_at_ms = if f & S_SUBMITTED_AT != 0 {
            Some(r.delta(t0)?)
        } else {
            None
        };
        let receipt_at_ms = if f & S_RECEIPT_AT != 0 {
            Some(r.delta(t0)?)
        } else {
            None
        };
        segments.push(SegmentRecord {
            seq,
            smsc_message_id,
            submit,
            receipt,
            error_code,
            submitted_at_ms,
            receipt_at_ms,
            resubmitted: f & S_RESUBMITTED != 0,
        });
    }
    let traceparent = if has(F_TRACEPARENT) {
        Some(r.cstr()?)
    } else {
        None
    };
    let tracestate = if has(F_TRACESTATE) {
        Some(r.cstr()?)
    } else {
        None
    };
    let callback = if has(F_CALLBACK) {
        Some(serde_json::from_str(&r.cstr()?).ok()?)
    } else {
        None
    };
    let sent_at_ms = if ext & X_SENT_AT != 0 {
        Some(r.delta(t0)?)
    } else {
        None
    };
    let options = if ext & X_OPTIONS != 0 {
        let bits = r.u8()?;
        if bits & !O_KNOWN != 0 {
            return None;
        }
        let on = |bit: u8| bits & bit != 0;
        MessageOptions {
            validity_period_s: if on(O_VALIDITY) {
                Some(u32::try_from(r.varint()?).ok()?)
            } else {
                None
            },
            schedule_delivery_ms: if on(O_SCHEDULE) {
                Some(r.delta(t0)?)
            } else {
                None
            },
            schedule_at_smsc: on(O_AT_SMSC),
            priority: bits >> O_PRIORITY_SHIFT,
            flash: on(O_FLASH),
        }
    } else {
        MessageOptions::default()
    };
    let text = r.cstr()?;
    Some(MessageRecord {
        message_id,
        app_id,
        transaction_id,
        task_id,
        source,
        destination,
        encoding,
        target,
        link,
        created_at_ms: t0,
        updated_at_ms,
        status,
        segments,
        claimed_by,
        claim_until_ms,
        text,
        ton_npi,
        traceparent,
        tracestate,
        callback,
        sent_at_ms,
        options,
    })
}

fn decode_v1(r: &mut Reader<'_>) -> Option<MessageRecord> {
    let message_id = r.str()?;
    let app_id = r.str()?;
    let transaction_id = r.str()?;
    let task_id = r.opt_str()?;
    let source = r.str()?;
    let destination = r.str()?;
    let encoding = r.str()?;
    let target = match r.u8()? {
        0 => Target::Link(r.str()?),
        1 => Target::Pool(r.str()?),
        _ => return None,
    };
    let link = r.opt_str()?;
    let created_at_ms = r.u64()?;
    let updated_at_ms = r.u64()?;
    let status = status_of(r.u8()?)?;
    let n = r.u32()? as usize;
    // Each segment takes at least 7 bytes: no huge allocation from a bad length.
    let mut segments = Vec::with_capacity(n.min(r.0.len() / 7));
    for _ in 0..n {
        let seq = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let smsc_message_id = r.opt_str()?;
        let submit = match r.u8()? {
            0 => SubmitStatus::Pending,
            1 => SubmitStatus::Accepted,
            2 => SubmitStatus::Rejected {
                command_status: r.u32()?,
            },
            3 => SubmitStatus::Unknown { reason: r.str()? },
            _ => return None,
        };
        let receipt = match r.u8()? {
            0 => None,
            1 => Some(receipt_of(r.u8()?)?),
            _ => return None,
        };
        let error_code = match r.u8()? {
            0 => None,
            1 => Some(r.u32()?),
            _ => return None,
        };
        segments.push(SegmentRecord {
            seq,
            smsc_message_id,
            submit,
            receipt,
            error_code,
            submitted_at_ms: r.opt_u64()?,
            receipt_at_ms: r.opt_u64()?,
            resubmitted: false,
        });
    }
    let claimed_by = r.opt_str()?;
    let claim_until_ms = r.u64()?;
    let text = r.str()?;
    let ton_npi = r.take(4)?.try_into().ok()?;
    let (traceparent, tracestate) = if r.0.is_empty() {
        (None, None)
    } else {
        (r.opt_str()?, r.opt_str()?)
    };
    if !r.0.is_empty() {
        let k = r.u32()?;
        for _ in 0..k {
            let i = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            segments.get_mut(usize::from(i))?.resubmitted = true;
        }
    }
    let callback = if r.0.is_empty() {
        None
    } else {
        match r.opt_str()? {
            Some(j) => Some(serde_json::from_str(&j).ok()?),
            None => None,
        }
    };
    Some(MessageRecord {
        message_id,
        app_id,
        transaction_id,
        task_id,
        source,
        destination,
        encoding,
        target,
        link,
        created_at_ms,
        updated_at_ms,
        status,
        segments,
        claimed_by,
        claim_until_ms,
        text,
        ton_npi,
        traceparent,
        tracestate,
        callback,
        sent_at_ms: None,
        options: MessageOptions::default(),
    })
}

fn status_tag(s: MessageStatus) -> u8 {
    match s {
        MessageStatus::Accepted => 0,
        MessageStatus::Pending => 1,
        MessageStatus::Delivered => 2,
        MessageStatus::Failed => 3,
        MessageStatus::Rejected => 4,
        MessageStatus::Unknown => 5,
    }
}

fn status_of(t: u8) -> Option<MessageStatus> {
    Some(match t {
        0 => MessageStatus::Accepted,
        1 => MessageStatus::Pending,
        2 => MessageStatus::Delivered,
        3 => MessageStatus::Failed,
        4 => MessageStatus::Rejected,
        5 => MessageStatus::Unknown,
        _ => return None,
    })
}

fn receipt_tag(s: ReceiptState) -> u8 {
    match s {
        ReceiptState::Delivered => 0,
        ReceiptState::Undeliverable => 1,
        ReceiptState::Expired => 2,
        ReceiptState::Rejected => 3,
        ReceiptState::Deleted => 4,
        ReceiptState::Accepted => 5,
        ReceiptState::Enroute => 6,
        ReceiptState::Unknown => 7,
    }
}

fn receipt_of(t: u8) -> Option<ReceiptState> {
    Some(match t {
        0 => ReceiptState::Delivered,
        1 => ReceiptState::Undeliverable,
        2 => ReceiptState::Expired,
        3 => ReceiptState::Rejected,
        4 => ReceiptState::Deleted,
        5 => ReceiptState::Accepted,
        6 => ReceiptState::Enroute,
        7 => ReceiptState::Unknown,
        _ => return None,
    })
}

/// Appends `s` to `out` as [`Writer::str`] does (for keys and index values
/// of the stores).
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut w = Writer(std::mem::take(out));
    w.str(s);
    *out = w.0;
}

/// Reads a string written by [`put_str`] from the front of `bytes`,
/// returning it and the bytes after it.
pub(crate) fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let mut r = Reader(bytes);
    let s = r.cstr()?;
    Some((s, r.0))
}

// Kinds of a packed string (the low 2 bits of its header).
const K_RAW: u128 = 0;
const K_HEX: u128 = 1;
const K_DECIMAL: u128 = 2;
const K_DASHED_HEX: u128 = 3;

/// A canonical decimal (no leading zero, at most 36 digits: below 2^120,
/// so that it fits a header shifted by 2).
fn as_decimal(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 36 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    s.parse().ok()
}

/// Whether `b` is lowercase hex digits (at least one).
pub(crate) fn is_lower_hex(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The value of a lowercase hex digit.
pub(crate) fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// LEB128.
    fn varint(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    /// `t` as a zig-zag delta from `t0` (wrapping: every `u64` round-trips).
    fn delta(&mut self, t0: u64, t: u64) {
        let d = t.wrapping_sub(t0) as i64;
        self.varint(u128::from(((d << 1) ^ (d >> 63)) as u64));
    }
    /// 0 for `None`, else the zig-zag delta plus one.
    fn opt_delta(&mut self, t0: u64, t: Option<u64>) {
        match t {
            None => self.u8(0),
            Some(t) => {
                let d = t.wrapping_sub(t0) as i64;
                self.varint(u128::from(((d << 1) ^ (d >> 63)) as u64) + 1);
            }
        }
    }
    /// A string, packed by shape behind a varint header `n << 2 | kind`:
    /// a canonical decimal as its value (`n`, no bytes follow); lower-case
    /// hex as `n` digits two to a byte; lower-case hex groups joined by `-`
    /// (a UUID, a `traceparent`) as `n` groups, their lengths and their
    /// digits two to a byte; anything else as `n` UTF-8 bytes.
    fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        if let Some(v) = as_decimal(s) {
            self.varint(v << 2 | K_DECIMAL);
        } else if b.len() > 1 && is_lower_hex(b) {
            self.varint((b.len() as u128) << 2 | K_HEX);
            self.nibbles(b.iter().copied());
        } else if let Some(groups) = dashed_hex(s) {
            self.varint((groups.len() as u128) << 2 | K_DASHED_HEX);
            for g in &groups {
                self.varint(g.len() as u128);
            }
            self.nibbles(groups.iter().flat_map(|g| g.bytes()));
        } else {
            self.varint((b.len() as u128) << 2 | K_RAW);
            self.0.extend_from_slice(b);
        }
    }
    fn nibbles(&mut self, digits: impl Iterator<Item = u8>) {
        let mut high = None;
        for d in digits.map(nibble) {
            match high.take() {
                None => high = Some(d),
                Some(h) => self.0.push(h << 4 | d),
            }
        }
        if let Some(h) = high {
            self.0.push(h << 4);
        }
    }
}

/// The groups of a string of lower-case hex groups joined by `-` (at least
/// two groups, none empty).
fn dashed_hex(s: &str) -> Option<Vec<&str>> {
    let groups: Vec<&str> = s.split('-').collect();
    (groups.len() >= 2 && groups.iter().all(|g| is_lower_hex(g.as_bytes()))).then_some(groups)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.u64()?)),
            _ => None,
        }
    }
    fn varint(&mut self) -> Option<u128> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            let bits = u128::from(b & 0x7f);
            if shift > 0 && bits.leading_zeros() < shift {
                return None; // past 128 bits
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn zigzag(&mut self, t0: u64, z: u128) -> Option<u64> {
        let z = u64::try_from(z).ok()?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        Some(t0.wrapping_add(d as u64))
    }
    fn delta(&mut self, t0: u64) -> Option<u64> {
        let z = self.varint()?;
        self.zigzag(t0, z)
    }
    fn opt_delta(&mut self, t0: u64) -> Option<Option<u64>> {
        match self.varint()? {
            0 => Some(None),
            z => Some(Some(self.zigzag(t0, z - 1)?)),
        }
    }
    /// A string written by [`Writer::str`].
    fn cstr(&mut self) -> Option<String> {
        let h = self.varint()?;
        let n = h >> 2;
        match h & 3 {
            K_DECIMAL => Some(n.to_string()),
            K_HEX => {
                let n = usize::try_from(n).ok()?;
                self.hex(n)
            }
            K_DASHED_HEX => {
                let groups = usize::try_from(n).ok()?;
                if groups < 2 || groups > self.0.len() {
                    return None;
                }
                let mut lens = Vec::with_capacity(groups);
                for _ in 0..groups {
                    lens.push(usize::try_from(self.varint()?).ok().filter(|l| *l > 0)?);
                }
                let total = lens.iter().try_fold(0usize, |a, l| a.checked_add(*l))?;
                let digits = self.hex(total)?;
                let mut out = String::with_capacity(total + groups - 1);
                let mut at = 0;
                for (i, l) in lens.iter().enumerate() {
                    if i > 0 {
                        out.push('-');
                    }
                    out.push_str(&digits[at..at + l]);
                    at += l;
                }
                Some(out)
            }
            _ => {
                let n = usize::try_from(n).ok()?;
                String::from_utf8(self.take(n)?.to_vec()).ok()
            }
        }
    }
    /// `n` lower-case hex digits, two to a byte (a last odd one padded
    /// with a zero nibble).
    fn hex(&mut self, n: usize) -> Option<String> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let bytes = self.take(n.div_ceil(2))?;
        if n % 2 == 1 && bytes[bytes.len() - 1] & 0x0f != 0 {
            return None;
        }
        let mut out = String::with_capacity(n);
        for b in bytes {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        out.truncate(n);
        Some(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes `rec` as version 1.
    fn encode_v1(rec: &MessageRecord) -> Vec<u8> {
        let mut w = V1Writer(Vec::with_capacity(
            192 + rec.text.len() + 48 * rec.segments.len(),
        ));
        w.u8(V1);
        w.str(&rec.message_id);
        w.str(&rec.app_id);
        w.str(&rec.transaction_id);
        w.opt_str(rec.task_id.as_deref());
        w.str(&rec.source);
        w.str(&rec.destination);
        w.str(&rec.encoding);
        match &rec.target {
            Target::Link(n) => {
                w.u8(0);
                w.str(n);
            }
            Target::Pool(n) => {
                w.u8(1);
                w.str(n);
            }
        }
        w.opt_str(rec.link.as_deref());
        w.u64(rec.created_at_ms);
        w.u64(rec.updated_at_ms);
        w.u8(status_tag(rec.status));
        w.u32(rec.segments.len() as u32);
        for s in &rec.segments {
            let SegmentRecord {
                seq,
                smsc_message_id,
                submit,
                receipt,
                error_code,
                submitted_at_ms,
                receipt_at_ms,
                resubmitted: _,
            } = s;
            w.0.extend_from_slice(&seq.to_le_bytes());
            w.opt_str(smsc_message_id.as_deref());
            match submit {
                SubmitStatus::Pending => w.u8(0),
                SubmitStatus::Accepted => w.u8(1),
                SubmitStatus::Rejected { command_status } => {
                    w.u8(2);
                    w.u32(*command_status);
                }
                SubmitStatus::Unknown { reason } => {
                    w.u8(3);
                    w.str(reason);
                }
            }
            match receipt {
                None => w.u8(0),
                Some(r) => {
                    w.u8(1);
                    w.u8(receipt_tag(*r));
                }
            }
            match error_code {
                None => w.u8(0),
                Some(c) => {
                    w.u8(1);
                    w.u32(*c);
                }
            }
            w.opt_u64(*submitted_at_ms);
            w.opt_u64(*receipt_at_ms);
        }
        w.opt_str(rec.claimed_by.as_deref());
        w.u64(rec.claim_until_ms);
        w.str(&rec.text);
        w.0.extend_from_slice(&rec.ton_npi);
        // Appended after version 1's first fields: absent in records written
        // before, and left out when there is no trace context (nor anything
        // after it).
        let resubmitted: Vec<u16> = rec
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.resubmitted)
            .map(|(i, _)| i as u16)
            .collect();
        let callback = rec
            .callback
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("callbacks serialise"));
        if rec.traceparent.is_some()
            || rec.tracestate.is_some()
            || !resubmitted.is_empty()
            || callback.is_some()
        {
            w.opt_str(rec.traceparent.as_deref());
            w.opt_str(rec.tracestate.as_deref());
        }
        // Appended after the trace context: the positions of the resubmitted
        // segments, left out when there are none (nor a callback).
        if !resubmitted.is_empty() || callback.is_some() {
            w.u32(resubmitted.len() as u32);
            for i in resubmitted {
                w.0.extend_from_slice(&i.to_le_bytes());
            }
        }
        // Appended after them: the message's own callback (JSON), if any.
        if callback.is_some() {
            w.opt_str(callback.as_deref());
        }
        w.0
    }

    struct V1Writer(Vec<u8>);

    impl V1Writer {
        fn u8(&mut self, v: u8) {
            self.0.push(v);
        }
        fn u32(&mut self, v: u32) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        fn u64(&mut self, v: u64) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        fn str(&mut self, s: &str) {
            self.u32(s.len() as u32);
            self.0.extend_from_slice(s.as_bytes());
        }
        fn opt_str(&mut self, s: Option<&str>) {
            match s {
                None => self.u8(0),
                Some(s) => {
                    self.u8(1);
                    self.str(s);
                }
            }
        }
        fn opt_u64(&mut self, v: Option<u64>) {
            match v {
                None => self.u8(0),
                Some(v) => {
                    self.u8(1);
                    self.u64(v);
                }
            }
        }
    }

    /// `rec` survives both the current encoding and version 1.
    fn both(rec: &MessageRecord) {
        assert_eq!(decode(&encode(rec)).unwrap(), *rec);
        assert_eq!(decode(&encode_v1(rec)).unwrap(), *rec);
    }

    fn full() -> MessageRecord {
        let mut segs = vec![SegmentRecord::new(0), SegmentRecord::new(1)];
        segs.push(SegmentRecord {
            seq: 2,
            smsc_message_id: Some("0a1B".into()),
            submit: SubmitStatus::Accepted,
            receipt: Some(ReceiptState::Enroute),
            error_code: Some(17),
            submitted_at_ms: Some(5),
            receipt_at_ms: Some(6),
            resubmitted: false,
        });
        segs[0].submit = SubmitStatus::Rejected { command_status: 88 };
        segs[1].submit = SubmitStatus::Unknown {
            reason: "timeout ü".into(),
        };
        MessageRecord {
            message_id: "m1".into(),
            app_id: "app".into(),
            transaction_id: "tx\0é".into(),
            task_id: Some("task".into()),
            source: "SENDER".into(),
            destination: "4478".into(),
            encoding: "ucs2".into(),
            target: Target::Pool("p".into()),
            link: Some("l1".into()),
            created_at_ms: 1,
            updated_at_ms: u64::MAX,
            status: MessageStatus::Unknown,
            segments: segs,
            claimed_by: Some("pod-a".into()),
            claim_until_ms: 9,
            text: "héllo 😀".into(),
            ton_npi: [1, 2, 3, 4],
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: Some("k=v".into()),
            callback: None,
            sent_at_ms: None,
            options: MessageOptions::default(),
        }
    }

    #[test]
    fn a_record_should_survive_encoding() {
        let rec = full();
        both(&rec);
        let mut bare = rec.clone();
        bare.task_id = None;
        bare.link = None;
        bare.claimed_by = None;
        bare.segments.clear();
        bare.target = Target::Link("l".into());
        bare.traceparent = None;
        bare.tracestate = None;
        both(&bare);
        let mut state_only = rec.clone();
        state_only.traceparent = None;
        both(&state_only);
        // A callback, with and without a trace context or resubmissions.
        let mut called = rec.clone();
        called.callback = Some(smsgw_core::outbox::Callback {
            url: "https://example.com/cb?x=1".into(),
            events: Some(smsgw_core::outbox::EventMask::parse(&["final"]).unwrap()),
        });
        both(&called);
        let mut called_bare = bare.clone();
        called_bare.callback = called.callback.clone();
        both(&called_bare);
        // Resubmitted segments, with and without a trace context.
        let mut resubmitted = rec.clone();
        resubmitted.segments[1].resubmitted = true;
        resubmitted.segments[2].resubmitted = true;
        both(&resubmitted);
        resubmitted.traceparent = None;
        resubmitted.tracestate = None;
        both(&resubmitted);
        // A record written before the mark existed reads as not resubmitted.
        let mut before = encode_v1(&resubmitted);
        before.truncate(before.len() - 4 - 2 * 2);
        let mut unmarked = resubmitted.clone();
        unmarked
            .segments
            .iter_mut()
            .for_each(|s| s.resubmitted = false);
        assert_eq!(decode(&before).unwrap(), unmarked);
    }

    #[test]
    fn the_clients_sent_at_should_survive_encoding_and_cost_nothing_when_absent() {
        let rec = delivered();
        let without = encode(&rec);
        assert_eq!(
            without[1] & F_EXT,
            0,
            "no extension byte: readers before it still read the record"
        );
        for t in [
            rec.created_at_ms - 1_500,
            rec.created_at_ms + 7,
            0,
            u64::MAX,
        ] {
            let sent = MessageRecord {
                sent_at_ms: Some(t),
                ..rec.clone()
            };
            let bytes = encode(&sent);
            assert_eq!(decode(&bytes).unwrap(), sent, "sent at {t}");
            for n in 0..bytes.len() {
                assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
            }
        }
        let sent = MessageRecord {
            sent_at_ms: Some(rec.created_at_ms - 1_500),
            ..rec.clone()
        };
        // One extension byte and a two-byte delta.
        assert_eq!(encode(&sent).len(), without.len() + 3);
        // An extension bit this version does not know is an error.
        let mut foreign = encode(&sent);
        foreign[2] |= 1 << 1;
        assert!(decode(&foreign).is_err());
        // JSON records carry it too.
        assert_eq!(decode(&serde_json::to_vec(&sent).unwrap()).unwrap(), sent);
    }

    #[test]
    fn message_options_should_survive_encoding_and_cost_nothing_when_absent() {
        let rec = delivered();
        let without = encode(&rec);
        let cases = [
            MessageOptions {
                priority: 3,
                ..MessageOptions::default()
            },
            MessageOptions {
                validity_period_s: Some(604_800),
                flash: true,
                priority: 1,
                ..MessageOptions::default()
            },
            MessageOptions {
                schedule_delivery_ms: Some(rec.created_at_ms + 86_400_000),
                schedule_at_smsc: true,
                validity_period_s: Some(60),
                priority: 2,
                flash: true,
            },
        ];
        for options in cases {
            let with = MessageRecord {
                options: options.clone(),
                sent_at_ms: Some(rec.created_at_ms - 5),
                ..rec.clone()
            };
            let bytes = encode(&with);
            assert_eq!(decode(&bytes).unwrap(), with, "{options:?}");
            for n in 0..bytes.len() {
                assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
            }
            let alone = MessageRecord {
                options: options.clone(),
                ..rec.clone()
            };
            assert_eq!(decode(&encode(&alone)).unwrap(), alone);
            assert_eq!(decode(&serde_json::to_vec(&alone).unwrap()).unwrap(), alone);
        }
        assert_eq!(without[1] & F_EXT, 0, "no options: no extension byte");
        // An options bit this version does not know is an error.
        let mut foreign = encode(&MessageRecord {
            options: MessageOptions {
                flash: true,
                ..MessageOptions::default()
            },
            ..rec.clone()
        });
        // The options byte comes right before the text, which ends both.
        let common = foreign
            .iter()
            .rev()
            .zip(without.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let at = foreign.len() - common - 1;
        assert_eq!(foreign[at], O_FLASH, "the options byte");
        foreign[at] |= 1 << 6;
        assert!(decode(&foreign).is_err());
        // A JSON record written before the options reads as none.
        let json = serde_json::to_value(&rec).unwrap();
        assert!(json.get("options").is_none());
        assert_eq!(
            decode(&serde_json::to_vec(&json).unwrap()).unwrap().options,
            MessageOptions::default()
        );
    }

    #[test]
    fn a_json_record_of_an_earlier_version_should_still_be_read() {
        let rec = full();
        assert_eq!(decode(&serde_json::to_vec(&rec).unwrap()).unwrap(), rec);
    }

    #[test]
    fn a_truncated_or_foreign_record_should_be_an_error_not_a_panic() {
        let bytes = encode(&full());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        // Version 1: a record cut right before its trace context is one
        // without it (it was appended later); any other cut is an error.
        let bytes = encode_v1(&full());
        // A record cut right before its trace context is one without it.
        let untraced = MessageRecord {
            traceparent: None,
            tracestate: None,
            callback: None,
            ..full()
        };
        let before_trace = encode_v1(&untraced).len();
        assert_eq!(decode(&bytes[..before_trace]).unwrap(), untraced);
        for n in (0..bytes.len()).filter(|n| *n != before_trace) {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        assert!(decode(&[7, 0, 0]).is_err());
    }

    #[test]
    fn strings_should_be_packed_by_shape_and_read_back_exactly() {
        let cases = [
            ("", 1),
            ("a", 2),
            ("0", 1),
            ("7", 1),
            ("12345678901", 6),
            ("0123", 3),                                   // leading zero: hex digits
            ("123456789012345678901234567890123456", 17),  // 36 digits: a number
            ("1234567890123456789012345678901234567", 21), // 37: hex digits
            ("0190f3a2b4c57d8e9fa0b1c2d3e4f5a6", 18),      // a UUID, simple
            ("0190f3a2-b4c5-7d8e-9fa0-b1c2d3e4f5a6", 22),  // a UUID, hyphenated
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                31,
            ),
            ("0190F3A2B4C5", 13), // upper case: as it is
            ("ab-", 4),
            ("-ab", 4),
            ("a--b", 5),
            ("héllo 😀", 12),
            ("app-1", 6),
        ];
        let sizes: Vec<(&str, usize)> = cases
            .iter()
            .map(|(s, _)| {
                let mut out = Vec::new();
                put_str(&mut out, s);
                (*s, out.len())
            })
            .collect();
        assert_eq!(sizes, cases);
        for (s, _) in cases {
            let mut out = Vec::new();
            put_str(&mut out, s);
            out.push(9);
            assert_eq!(take_str(&out), Some((s.to_owned(), &[9u8][..])), "{s:?}");
        }
        // A foreign header is an error, not a panic: an odd hex digit count
        // with a non-zero pad, a dashed group of length 0, a length past
        // the end, a varint past 128 bits.
        for bad in [
            &[3 << 2 | 1, 0xab, 0xcd][..],
            &[2 << 2 | 3, 0, 2, 0xab],
            &[9 << 2, b'a'],
            &[0xff; 20],
        ] {
            assert_eq!(take_str(bad), None, "{bad:?}");
        }
    }

    /// A delivered single-segment message as the gateway stores it.
    pub(crate) fn delivered() -> MessageRecord {
        let t0 = 1_780_000_000_123;
        MessageRecord {
            message_id: "0190f3a2b4c57d8e9fa0b1c2d3e4f5a6".into(),
            app_id: "app-1".into(),
            transaction_id: "3f1e0c1a-8d4b-4c2e-9a7f-2b6d5e4c3a21".into(),
            task_id: None,
            source: "ACME".into(),
            destination: "447700900123".into(),
            encoding: "gsm7".into(),
            target: Target::Link("smsc-a".into()),
            link: Some("smsc-a".into()),
            created_at_ms: t0,
            updated_at_ms: t0 + 2_340,
            status: MessageStatus::Delivered,
            segments: vec![SegmentRecord {
                seq: 0,
                smsc_message_id: Some("3735928559".into()),
                submit: SubmitStatus::Accepted,
                receipt: Some(ReceiptState::Delivered),
                error_code: Some(0),
                submitted_at_ms: Some(t0 + 12),
                receipt_at_ms: Some(t0 + 2_000),
                resubmitted: false,
            }],
            claimed_by: Some("smsgw-7d9f8c6b5-x2x4z".into()),
            claim_until_ms: t0 + 30_000,
            text: "Your code is 482913. It expires in 10 minutes.".into(),
            ton_npi: [5, 0, 1, 1],
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
            callback: None,
            sent_at_ms: None,
            options: MessageOptions::default(),
        }
    }

    #[test]
    fn a_delivered_message_should_take_a_third_of_its_json() {
        let rec = delivered();
        let bytes = encode(&rec);
        assert_eq!(decode(&bytes).unwrap(), rec);
        let json = serde_json::to_vec(&rec).unwrap().len();
        let v1 = encode_v1(&rec).len();
        // 211 bytes (46 of them the text) against 736 as JSON and 354 in
        // version 1.
        assert_eq!((bytes.len(), v1, json), (211, 354, 736));
    }
}
