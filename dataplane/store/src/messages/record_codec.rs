//! Compact binary encoding of a [`MessageRecord`], shared by the stores.
//!
//! Every write of a message (create, each segment's submit outcome, each
//! receipt) decodes and re-encodes its record, so the encoding is on the
//! hot path. Version 1 is a flat little-endian layout (strings as a `u32`
//! length and UTF-8 bytes, options as a presence byte), led by the byte
//! [`V1`]. Records written as JSON by earlier versions start with `{` and
//! are still read: [`decode`] accepts both, [`encode`] writes version 1.
//!
//! Adding a field to `MessageRecord` (the compiler points here): append it
//! after the last field of version 1 and read it only when bytes remain
//! (`None`/default otherwise), so records written before it still decode;
//! a change to an existing field needs a new version byte.

use super::backend;
use smsgw_core::messages::{
    MessageRecord, MessageStatus, MessageStoreError, ReceiptState, SegmentRecord, SubmitStatus,
    Target,
};

/// First byte of a version-1 record (JSON records start with `{`).
const V1: u8 = 1;

/// Encodes `rec` as version 1.
pub(crate) fn encode(rec: &MessageRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
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

/// Decodes a record written by [`encode`] or, from earlier versions, as JSON.
pub(crate) fn decode(bytes: &[u8]) -> Result<MessageRecord, MessageStoreError> {
    match bytes.first() {
        Some(&V1) => {
            let mut r = Reader(&bytes[1..]);
            let rec = decode_v1(&mut r).ok_or_else(|| backend("malformed message record"))?;
            if !r.0.is_empty() {
                return Err(backend("malformed message record: trailing bytes"));
            }
            Ok(rec)
        }
        Some(b'{') => serde_json::from_slice(bytes).map_err(backend),
        Some(v) => Err(backend(format!("message record of unknown version {v}"))),
        None => Err(backend("empty message record")),
    }
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

struct Writer(Vec<u8>);

impl Writer {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn a_record_should_survive_encoding() {
        let rec = full();
        assert_eq!(decode(&encode(&rec)).unwrap(), rec);
        let mut bare = rec.clone();
        bare.task_id = None;
        bare.link = None;
        bare.claimed_by = None;
        bare.segments.clear();
        bare.target = Target::Link("l".into());
        bare.traceparent = None;
        bare.tracestate = None;
        assert_eq!(decode(&encode(&bare)).unwrap(), bare);
        let mut state_only = rec.clone();
        state_only.traceparent = None;
        assert_eq!(decode(&encode(&state_only)).unwrap(), state_only);
        // A callback, with and without a trace context or resubmissions.
        let mut called = rec.clone();
        called.callback = Some(smsgw_core::outbox::Callback {
            url: "https://example.com/cb?x=1".into(),
            events: Some(smsgw_core::outbox::EventMask::parse(&["final"]).unwrap()),
        });
        assert_eq!(decode(&encode(&called)).unwrap(), called);
        let mut called_bare = bare.clone();
        called_bare.callback = called.callback.clone();
        assert_eq!(decode(&encode(&called_bare)).unwrap(), called_bare);
        // Resubmitted segments, with and without a trace context.
        let mut resubmitted = rec.clone();
        resubmitted.segments[1].resubmitted = true;
        resubmitted.segments[2].resubmitted = true;
        assert_eq!(decode(&encode(&resubmitted)).unwrap(), resubmitted);
        resubmitted.traceparent = None;
        resubmitted.tracestate = None;
        assert_eq!(decode(&encode(&resubmitted)).unwrap(), resubmitted);
        // A record written before the mark existed reads as not resubmitted.
        let mut before = encode(&resubmitted);
        before.truncate(before.len() - 4 - 2 * 2);
        let mut unmarked = resubmitted.clone();
        unmarked
            .segments
            .iter_mut()
            .for_each(|s| s.resubmitted = false);
        assert_eq!(decode(&before).unwrap(), unmarked);
    }

    #[test]
    fn a_json_record_of_an_earlier_version_should_still_be_read() {
        let rec = full();
        assert_eq!(decode(&serde_json::to_vec(&rec).unwrap()).unwrap(), rec);
    }

    #[test]
    fn a_truncated_or_foreign_record_should_be_an_error_not_a_panic() {
        let bytes = encode(&full());
        // A record cut right before its trace context is one without it.
        let untraced = MessageRecord {
            traceparent: None,
            tracestate: None,
            callback: None,
            ..full()
        };
        let before_trace = encode(&untraced).len();
        assert_eq!(decode(&bytes[..before_trace]).unwrap(), untraced);
        for n in (0..bytes.len()).filter(|n| *n != before_trace) {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        assert!(decode(&[7, 0, 0]).is_err());
    }
}
