//! deliver_sm: receipts (TLVs or text form) and MO reassembly.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use rusmpp::{
    pdus::DeliverSm,
    tlvs::TlvValue,
    values::{MessageState, Npi, Ton},
};
use smsgw_text::{ConcatInfo, Encoding, TextError, Udh};

use crate::{
    config::ReassemblyConfig,
    ids::{IdFormat, SmscMessageId},
    types::{Address, MobileOriginated, ReassemblyStatus, Receipt, ReceiptAck, ReceiptState},
};

/// esm_class message type: SMSC delivery receipt.
pub const ESM_DELIVERY_RECEIPT: u8 = 0x04;
/// esm_class message type: intermediate delivery notification.
pub const ESM_INTERMEDIATE: u8 = 0x20;
/// esm_class UDH indicator.
pub const ESM_UDHI: u8 = 0x40;

/// What a deliver_sm turned out to be.
#[derive(Debug)]
pub enum Delivered {
    /// A receipt.
    Receipt(Receipt),
    /// One part (or all) of an MO message.
    Mo(MoPart),
}

/// An MO message or one part of a concatenated one.
#[derive(Debug)]
pub struct MoPart {
    /// Source.
    pub source: Address,
    /// Destination.
    pub destination: Address,
    /// data_coding.
    pub data_coding: u8,
    /// esm_class.
    pub esm_class: u8,
    /// Payload after the UDH (stripped whenever UDHI is set and the header
    /// parses).
    pub payload: Bytes,
    /// Concatenation info: (reference, total, seq). The reference keeps
    /// the three kinds apart: an 8-bit UDH reference as is, a 16-bit one
    /// with bit 16 set, a SAR `sar_msg_ref_num` with bit 17 set.
    pub concat: Option<(u32, u8, u8)>,
    /// The whole user data header, parsed: its national language shift
    /// elements select the tables the text is decoded with. `None` without
    /// UDHI; an error when UDHI is set and the header is malformed.
    pub udh: Option<Result<Udh, TextError>>,
}

fn ton(t: Ton) -> u8 {
    u8::from(t)
}
fn npi(n: Npi) -> u8 {
    u8::from(n)
}

/// Classifies and parses one deliver_sm. Returns `None` for a receipt
/// without any message id.
pub fn classify(link: &str, d: &DeliverSm, ids: IdFormat) -> Option<Delivered> {
    let esm = u8::from(d.esm_class);
    let kind = esm & 0x3C;
    let mut payload: Bytes = d.short_message().as_ref().to_vec().into();
    let mut sar: (Option<u16>, Option<u8>, Option<u8>) = (None, None, None);
    let mut receipted_id = None;
    let mut state_tlv = None;
    let mut err_tlv = None;
    for tlv in d.tlvs() {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) if payload.is_empty() => {
                payload = p.value.as_ref().to_vec().into()
            }
            Some(TlvValue::ReceiptedMessageId(id)) => receipted_id = Some(id.as_str().to_owned()),
            Some(TlvValue::MessageState(s)) => state_tlv = Some(*s),
            Some(TlvValue::NetworkErrorCode(e)) => err_tlv = Some(u32::from(e.error_code)),
            Some(TlvValue::SarMsgRefNum(r)) => sar.0 = Some(*r),
            Some(TlvValue::SarTotalSegments(t)) => sar.1 = Some(*t),
            Some(TlvValue::SarSegmentSeqnum(s)) => sar.2 = Some(*s),
            _ => {}
        }
    }
    if kind == ESM_DELIVERY_RECEIPT || kind == ESM_INTERMEDIATE {
        let text = String::from_utf8_lossy(&payload);
        let fields = TextReceipt::parse(&text);
        let raw_id = receipted_id.or(fields.id.map(str::to_owned))?;
        let state = state_tlv
            .map(state_from_tlv)
            .or(fields.stat.map(state_from_text))
            .unwrap_or(ReceiptState::Unknown);
        let error_code = err_tlv.or_else(|| fields.err.and_then(parse_err));
        return Some(Delivered::Receipt(Receipt {
            link: link.to_owned(),
            smsc_message_id: SmscMessageId::new(raw_id, ids),
            state,
            error_code,
            done_at: fields.done_date.and_then(parse_smpp_date),
            intermediate: kind == ESM_INTERMEDIATE,
            ack: Default::default(),
        }));
    }
    let mut concat = None;
    let mut udh = None;
    if esm & ESM_UDHI != 0 {
        udh = Some(match smsgw_text::parse_udh(&payload) {
            Ok((header, _)) => {
                concat = header.concat.map(concat_key);
                payload = payload.slice(header.len..);
                Ok(header)
            }
            Err(e) => Err(e),
        });
    }
    if concat.is_none()
        && let (Some(r), Some(t), Some(s)) = sar
    {
        concat = Some((SAR_REFERENCE | u32::from(r), t, s));
    }
    Some(Delivered::Mo(MoPart {
        source: Address::new(
            d.source_addr.as_str(),
            ton(d.source_addr_ton),
            npi(d.source_addr_npi),
        ),
        destination: Address::new(
            d.destination_addr.as_str(),
            ton(d.dest_addr_ton),
            npi(d.dest_addr_npi),
        ),
        data_coding: u8::from(d.data_coding),
        esm_class: esm,
        payload,
        concat,
        udh,
    }))
}

/// Tag of a SAR reference in [`MoPart::concat`]: parts tied by SAR TLVs
/// never join a set tied by a UDH that happens to carry the same number.
const SAR_REFERENCE: u32 = 0x2_0000;

/// (reference, total, seq) of a concatenation element; a 16-bit reference
/// is kept apart from an 8-bit one of the same value.
fn concat_key(c: ConcatInfo) -> (u32, u8, u8) {
    let reference = if c.wide_reference {
        0x1_0000 | u32::from(c.reference)
    } else {
        u32::from(c.reference)
    };
    (reference, c.total, c.seq)
}

/// Fields of the text receipt form
/// `id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TextReceipt<'a> {
    /// `id:`
    pub id: Option<&'a str>,
    /// `submit date:`
    pub submit_date: Option<&'a str>,
    /// `done date:`
    pub done_date: Option<&'a str>,
    /// `stat:`
    pub stat: Option<&'a str>,
    /// `err:`
    pub err: Option<&'a str>,
}

impl<'a> TextReceipt<'a> {
    /// Parses the fields; keys are case-insensitive, order does not matter.
    pub fn parse(text: &'a str) -> Self {
        let lower = text.to_ascii_lowercase();
        let field = |key: &str| -> Option<&'a str> {
            let pat = format!("{key}:");
            let mut from = 0;
            while let Some(pos) = lower[from..].find(&pat) {
                let at = from + pos;
                if at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace() {
                    let rest = text[at + pat.len()..].trim_start();
                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    return Some(&rest[..end]).filter(|s| !s.is_empty());
                }
                from = at + 1;
            }
            None
        };
        Self {
            id: field("id"),
            submit_date: field("submit date"),
            done_date: field("done date"),
            stat: field("stat"),
            err: field("err"),
        }
    }
}

fn state_from_tlv(s: MessageState) -> ReceiptState {
    match s {
        MessageState::Scheduled | MessageState::Enroute => ReceiptState::Enroute,
        MessageState::Delivered => ReceiptState::Delivered,
        MessageState::Expired => ReceiptState::Expired,
        MessageState::Deleted => ReceiptState::Deleted,
        MessageState::Undeliverable => ReceiptState::Undeliverable,
        MessageState::Accepted => ReceiptState::Accepted,
        MessageState::Rejected => ReceiptState::Rejected,
        _ => ReceiptState::Unknown,
    }
}

/// Maps a `stat:` value (DELIVRD, UNDELIV, … and common long spellings).
pub fn state_from_text(s: &str) -> ReceiptState {
    let s = s.to_ascii_uppercase();
    if s.starts_with("DELIV") {
        ReceiptState::Delivered
    } else if s.starts_with("UNDELIV") {
        ReceiptState::Undeliverable
    } else if s.starts_with("EXPIR") {
        ReceiptState::Expired
    } else if s.starts_with("REJECT") {
        ReceiptState::Rejected
    } else if s.starts_with("DELET") {
        ReceiptState::Deleted
    } else if s.starts_with("ACCEPT") {
        ReceiptState::Accepted
    } else if s.starts_with("ENROUTE") {
        ReceiptState::Enroute
    } else {
        ReceiptState::Unknown
    }
}

fn parse_err(s: &str) -> Option<u32> {
    s.parse::<u32>()
        .ok()
        .or_else(|| u32::from_str_radix(s, 16).ok())
}

/// Parses `YYMMDDhhmm[ss]` as UTC.
pub fn parse_smpp_date(s: &str) -> Option<SystemTime> {
    if !(s.len() == 10 || s.len() == 12) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| -> i64 { s[i..i + 2].parse().unwrap_or(0) };
    let (y, mo, d, h, mi) = (2000 + n(0), n(2), n(4), n(6), n(8));
    let sec = if s.len() == 12 { n(10) } else { 0 };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // days_from_civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Formats a UTC instant as an SMPP receipt date: `YYMMDDhhmm`, or
/// `YYMMDDhhmmss` with `seconds` (the form [`parse_smpp_date`] reads back).
/// The year is written modulo 100; an instant before 1970 formats as the
/// epoch.
pub fn format_smpp_date(t: SystemTime, seconds: bool) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // civil_from_days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut out = format!(
        "{:02}{m:02}{d:02}{:02}{:02}",
        y.rem_euclid(100),
        rem / 3600,
        rem / 60 % 60
    );
    if seconds {
        out.push_str(&format!("{:02}", rem % 60));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SetKey {
    source: String,
    destination: String,
    reference: u32,
    total: u8,
}

#[derive(Debug)]
struct PendingSet {
    first: MoPart,
    parts: Vec<Option<Bytes>>,
    /// The user data header of each part that arrived.
    headers: Vec<Option<Result<Udh, TextError>>>,
    received: usize,
    started: Instant,
}

/// Bounded reassembly buffer for concatenated MO messages: at most
/// `max_pending` incomplete sets holding at most `max_bytes` payload octets
/// in all; past either bound the oldest sets are surfaced incomplete.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    sets: HashMap<SetKey, PendingSet>,
    /// Payload octets held in `sets`.
    held: usize,
    /// Sets surfaced incomplete to make room (at a bound), since start.
    evicted: u64,
}

impl Reassembler {
    /// An empty buffer.
    pub fn new(config: ReassemblyConfig) -> Self {
        Self {
            config,
            sets: HashMap::new(),
            held: 0,
            evicted: 0,
        }
    }

    /// Number of incomplete sets held.
    pub fn pending(&self) -> usize {
        self.sets.len()
    }

    /// Payload octets held in incomplete sets.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// What it holds and its bounds (metrics).
    pub fn status(&self) -> ReassemblyStatus {
        ReassemblyStatus {
            sets: self.sets.len(),
            held_bytes: self.held,
            max_sets: self.config.max_pending,
            evicted: self.evicted,
        }
    }

    /// Adds a part; returns the messages that became surfaceable (the
    /// completed one, and any incomplete set evicted to make room).
    pub fn push(&mut self, link: &str, part: MoPart, now: Instant) -> Vec<MobileOriginated> {
        let Some((reference, total, seq)) = part.concat else {
            return vec![surface(link, part, Vec::new(), 1, true)];
        };
        if total <= 1 || seq == 0 || seq > total {
            return vec![surface(link, part, Vec::new(), 1, true)];
        }
        let key = SetKey {
            source: part.source.addr.clone(),
            destination: part.destination.addr.clone(),
            reference,
            total,
        };
        let mut out = Vec::new();
        if !self.sets.contains_key(&key) && self.sets.len() >= self.config.max_pending.max(1) {
            out.extend(self.evict_oldest(link));
        }
        let set = self.sets.entry(key.clone()).or_insert_with(|| PendingSet {
            first: MoPart {
                payload: Bytes::new(),
                ..clone_part(&part)
            },
            parts: vec![None; total as usize],
            headers: vec![None; total as usize],
            received: 0,
            started: now,
        });
        if seq == 1 {
            // The first part's header fields describe the message, whatever
            // order the parts arrived in.
            set.first = MoPart {
                payload: Bytes::new(),
                ..clone_part(&part)
            };
        }
        set.headers[seq as usize - 1] = part.udh;
        let slot = &mut set.parts[seq as usize - 1];
        match slot {
            None => set.received += 1,
            Some(old) => self.held -= old.len(),
        }
        self.held += part.payload.len();
        *slot = Some(part.payload);
        if set.received == set.parts.len()
            && let Some(set) = self.remove(&key)
        {
            out.push(finish(link, set));
        }
        while self.held > self.config.max_bytes {
            match self.evict_oldest(link) {
                Some(mo) => out.push(mo),
                None => break,
            }
        }
        out
    }

    /// Surfaces (incomplete) every set older than the timeout.
    pub fn expire(&mut self, link: &str, now: Instant) -> Vec<MobileOriginated> {
        let timeout = self.config.timeout;
        let old: Vec<SetKey> = self
            .sets
            .iter()
            .filter(|(_, s)| now.duration_since(s.started) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        old.into_iter()
            .filter_map(|k| self.remove(&k))
            .map(|s| finish(link, s))
            .collect()
    }

    /// Removes a set, releasing the octets it held.
    fn remove(&mut self, key: &SetKey) -> Option<PendingSet> {
        let set = self.sets.remove(key)?;
        self.held -= set.parts.iter().flatten().map(Bytes::len).sum::<usize>();
        Some(set)
    }

    /// Surfaces the oldest set, incomplete.
    fn evict_oldest(&mut self, link: &str) -> Option<MobileOriginated> {
        let oldest = self
            .sets
            .iter()
            .min_by_key(|(_, s)| s.started)
            .map(|(k, _)| k.clone())?;
        self.evicted += 1;
        self.remove(&oldest).map(|set| finish(link, set))
    }
}

fn clone_part(p: &MoPart) -> MoPart {
    MoPart {
        source: p.source.clone(),
        destination: p.destination.clone(),
        data_coding: p.data_coding,
        esm_class: p.esm_class,
        payload: p.payload.clone(),
        concat: p.concat,
        udh: p.udh.clone(),
    }
}

fn finish(link: &str, set: PendingSet) -> MobileOriginated {
    let complete = set.received == set.parts.len();
    let n = set.parts.len() as u8;
    let slots = set
        .parts
        .into_iter()
        .zip(set.headers)
        .map(|(p, h)| Some((p?, h)))
        .collect();
    surface(link, set.first, slots, n, complete)
}

/// A part's body and its user data header.
type BodyAndHeader = (Bytes, Option<Result<Udh, TextError>>);

/// Decodes consecutive parts of a message (in order) in `encoding`, each
/// with the national language tables its own header selects.
fn decode_run(encoding: Encoding, parts: &[BodyAndHeader]) -> Result<String, TextError> {
    let mut decoded = Vec::with_capacity(parts.len());
    for (body, udh) in parts {
        let udh = match udh {
            None => None,
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => return Err(e.clone()),
        };
        decoded.push((udh, &body[..]));
    }
    smsgw_text::decode_parts(encoding, decoded)
}

/// Decodes a message by `data_coding` from its parts in sequence order,
/// `None` for a part that never arrived. The parts on either side of a
/// missing one are decoded apart, so an escape or surrogate pair is never
/// completed with a unit of some other part; a pair that the gap cut in
/// half (an escape or a high surrogate just before it, a low surrogate
/// just after it) is dropped rather than read as something else.
fn decode_text(data_coding: u8, slots: &[Option<BodyAndHeader>]) -> Result<String, TextError> {
    let encoding = Encoding::from_data_coding(data_coding)
        .ok_or(TextError::UnsupportedDataCoding { data_coding })?;
    let mut out = String::new();
    let mut i = 0;
    while i < slots.len() {
        if slots[i].is_none() {
            i += 1;
            continue;
        }
        let start = i;
        while i < slots.len() && slots[i].is_some() {
            i += 1;
        }
        let mut run: Vec<BodyAndHeader> = slots[start..i].iter().flatten().cloned().collect();
        trim_cut_pairs(encoding, &mut run, start > 0, i < slots.len());
        out.push_str(&decode_run(encoding, &run)?);
    }
    Ok(out)
}

/// Drops the halves of pairs a missing part cut off: at the end of `run`
/// (`before_gap`) a dangling GSM escape or a UCS-2 high surrogate, at its
/// start (`after_gap`) a UCS-2 low surrogate.
fn trim_cut_pairs(
    encoding: Encoding,
    run: &mut [BodyAndHeader],
    after_gap: bool,
    before_gap: bool,
) {
    const ESC: u8 = 0x1B;
    let unit = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    // Escapes at the very end of the run, whichever parts hold them.
    let escapes = run
        .iter()
        .rev()
        .flat_map(|(b, _)| b.iter().rev())
        .take_while(|&&b| b == ESC)
        .count();
    if before_gap && let Some(last) = run.iter_mut().rev().find(|(b, _)| !b.is_empty()) {
        let b = &last.0;
        let cut = match encoding {
            // An odd number of escapes at the end leaves the last unpaired.
            Encoding::Gsm7 => usize::from(escapes % 2 == 1),
            Encoding::Ucs2 if b.len() >= 2 && b.len() % 2 == 0 => {
                2 * usize::from((0xD800..0xDC00).contains(&unit(b, b.len() - 2)))
            }
            _ => 0,
        };
        last.0 = b.slice(..b.len() - cut);
    }
    if after_gap
        && encoding == Encoding::Ucs2
        && let Some(first) = run.iter_mut().find(|(b, _)| !b.is_empty())
        && first.0.len() >= 2
        && (0xDC00..0xE000).contains(&unit(&first.0, 0))
    {
        first.0 = first.0.slice(2..);
    }
}

fn surface(
    link: &str,
    first: MoPart,
    slots: Vec<Option<BodyAndHeader>>,
    n: u8,
    complete: bool,
) -> MobileOriginated {
    let (payload, text) = if slots.is_empty() {
        let text = decode_text(
            first.data_coding,
            &[Some((first.payload.clone(), first.udh))],
        );
        (first.payload, text)
    } else {
        let mut buf = BytesMut::with_capacity(slots.iter().flatten().map(|p| p.0.len()).sum());
        for p in slots.iter().flatten() {
            buf.extend_from_slice(&p.0);
        }
        (buf.freeze(), decode_text(first.data_coding, &slots))
    };
    MobileOriginated {
        link: link.to_owned(),
        source: first.source,
        destination: first.destination,
        data_coding: first.data_coding,
        esm_class: first.esm_class,
        payload,
        parts: n,
        complete,
        text,
        ack: ReceiptAck::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_receipt_fields_are_found_in_any_case_and_order() {
        let t = "id:0000007B sub:001 dlvrd:001 submit date:2401021530 done date:240102153105 \
                 stat:DELIVRD err:000 Text:hello id:bogus";
        let r = TextReceipt::parse(t);
        assert_eq!(r.id, Some("0000007B"));
        assert_eq!(r.stat, Some("DELIVRD"));
        assert_eq!(r.err, Some("000"));
        assert_eq!(r.done_date, Some("240102153105"));
        assert_eq!(r.submit_date, Some("2401021530"));
        let upper = TextReceipt::parse("ID:42 STAT:UNDELIV ERR:0A1");
        assert_eq!(upper.id, Some("42"));
        assert_eq!(
            state_from_text(upper.stat.unwrap()),
            ReceiptState::Undeliverable
        );
        assert_eq!(parse_err("0A1"), Some(0xA1));
    }

    #[test]
    fn smpp_dates_become_utc_instants() {
        let t = parse_smpp_date("240102153105").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_704_209_465
        );
        assert!(parse_smpp_date("241302153105").is_none());
    }

    fn part(reference: u32, total: u8, seq: u8, body: &'static [u8]) -> MoPart {
        MoPart {
            source: Address::new("4917", 1, 1),
            destination: Address::new("1234", 0, 0),
            data_coding: 0,
            esm_class: 0x40,
            payload: Bytes::from_static(body),
            concat: Some((reference, total, seq)),
            udh: None,
        }
    }

    #[test]
    fn parts_in_any_order_are_reassembled_once_complete() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let now = Instant::now();
        assert!(r.push("l", part(7, 3, 3, b"C"), now).is_empty());
        assert!(r.push("l", part(7, 3, 1, b"A"), now).is_empty());
        let done = r.push("l", part(7, 3, 2, b"B"), now);
        assert_eq!(done.len(), 1);
        assert_eq!(&done[0].payload[..], b"ABC");
        assert!(done[0].complete);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn incomplete_sets_are_surfaced_on_timeout_and_on_overflow() {
        let cfg = ReassemblyConfig {
            max_pending: 2,
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let mut r = Reassembler::new(cfg);
        let t0 = Instant::now();
        r.push("l", part(1, 2, 1, b"a"), t0);
        r.push("l", part(2, 2, 1, b"b"), t0 + Duration::from_secs(1));
        let evicted = r.push("l", part(3, 2, 1, b"c"), t0 + Duration::from_secs(2));
        assert_eq!(evicted.len(), 1);
        assert_eq!(&evicted[0].payload[..], b"a");
        assert!(!evicted[0].complete);
        let expired = r.expire("l", t0 + Duration::from_secs(6));
        assert_eq!(expired.len(), 1);
        assert_eq!(&expired[0].payload[..], b"b");
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn parts_that_never_complete_are_surfaced_once_they_hold_too_many_octets() {
        let cfg = ReassemblyConfig {
            max_pending: 100,
            timeout: Duration::from_secs(60),
            max_bytes: 10,
        };
        let mut r = Reassembler::new(cfg);
        let t0 = Instant::now();
        assert!(r.push("l", part(1, 3, 1, b"aaaa"), t0).is_empty());
        assert!(
            r.push("l", part(2, 3, 1, b"bbbb"), t0 + Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(r.held_bytes(), 8);
        // 4 more octets exceed 10: the oldest set (1) goes out incomplete.
        let evicted = r.push("l", part(3, 3, 2, b"cccc"), t0 + Duration::from_secs(2));
        assert_eq!(evicted.len(), 1);
        assert_eq!(&evicted[0].payload[..], b"aaaa");
        assert!(!evicted[0].complete);
        assert_eq!((r.pending(), r.held_bytes()), (2, 8));
        // A resent part replaces its slot instead of adding to the count.
        assert!(r.push("l", part(2, 3, 1, b"BB"), t0).is_empty());
        assert_eq!(r.held_bytes(), 6);
        // Completing a set releases its octets.
        assert!(r.push("l", part(2, 3, 2, b"x"), t0).is_empty());
        let done = r.push("l", part(2, 3, 3, b"y"), t0);
        assert_eq!(&done[0].payload[..], b"BBxy");
        assert!(done[0].complete);
        assert_eq!((r.pending(), r.held_bytes()), (1, 4));
        // One part larger than the whole budget is surfaced at once.
        let big = r.push(
            "l",
            part(9, 2, 2, b"0123456789ab"),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(big.len(), 2, "the older set and the oversized one");
        assert_eq!((r.pending(), r.held_bytes()), (0, 0));
    }

    /// Parts 1 and 3 of 3 in `data_coding`, surfaced at the timeout.
    fn without_the_middle(
        data_coding: u8,
        first: &'static [u8],
        third: &'static [u8],
    ) -> MobileOriginated {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let t0 = Instant::now();
        for (seq, body) in [(1, first), (3, third)] {
            let p = MoPart {
                data_coding,
                ..part(9, 3, seq, body)
            };
            assert!(r.push("l", p, t0).is_empty());
        }
        let mut out = r.expire("l", t0 + Duration::from_secs(3600));
        assert_eq!(out.len(), 1);
        let mo = out.remove(0);
        assert!(!mo.complete);
        mo
    }

    #[test]
    fn a_missing_part_never_completes_a_pair_with_a_unit_of_another() {
        // GSM: the escape ending part 1 belonged to the missing part's
        // first septet; part 3's 'e' must not turn it into '€'.
        let mo = without_the_middle(0, b"ab\x1b", b"\x65c");
        assert_eq!(mo.text.as_deref(), Ok("abec"));
        assert_eq!(
            &mo.payload[..],
            b"ab\x1b\x65c",
            "the raw user data stays whole"
        );
        // Two escapes are a pair (a space): nothing is cut.
        let mo = without_the_middle(0, b"a\x1b\x1b", b"c");
        assert_eq!(mo.text.as_deref(), Ok("a c"));
        // UCS-2: a high surrogate before the gap and a low one after it
        // are halves of two different characters, not one emoji.
        let mo = without_the_middle(8, &[0, 0x41, 0xD8, 0x3D], &[0xDE, 0x00, 0, 0x42]);
        assert_eq!(mo.text.as_deref(), Ok("AB"));
        // A lone low surrogate after the gap does not cost the whole text.
        let mo = without_the_middle(8, &[0, 0x41], &[0xDC, 0x00, 0, 0x43]);
        assert_eq!(mo.text.as_deref(), Ok("AC"));
        // Whole pairs on either side stay.
        let mo = without_the_middle(8, &[0xD8, 0x3D, 0xDE, 0x00], &[0xD8, 0x3D, 0xDE, 0x01]);
        assert_eq!(mo.text.as_deref(), Ok("😀😁"));
    }

    #[test]
    fn sar_and_udh_references_of_the_same_number_are_different_sets() {
        let sar = |seq: u8, body: &[u8]| {
            let d = DeliverSm::builder()
                .short_message(rusmpp::types::OctetString::from_slice(body).unwrap())
                .tlvs(vec![
                    rusmpp::tlvs::MessageDeliveryRequestTlvValue::SarMsgRefNum(5),
                    rusmpp::tlvs::MessageDeliveryRequestTlvValue::SarTotalSegments(2),
                    rusmpp::tlvs::MessageDeliveryRequestTlvValue::SarSegmentSeqnum(seq),
                ])
                .build();
            match classify("l", &d, IdFormat::Opaque) {
                Some(Delivered::Mo(p)) => p,
                other => panic!("not MO: {other:?}"),
            }
        };
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let now = Instant::now();
        // Part 1 of a SAR message and part 2 of a UDH one, both number 5.
        assert!(r.push("l", sar(1, b"sar "), now).is_empty());
        assert!(
            r.push("l", mo_of(&[5, 0x00, 3, 5, 2, 2, b'u']), now)
                .is_empty()
        );
        assert_eq!(r.pending(), 2);
        let done = r.push("l", sar(2, b"text"), now);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].text.as_deref(), Ok("sar text"));
    }

    fn mo_of(short_message: &[u8]) -> MoPart {
        let d = DeliverSm::builder()
            .esm_class(rusmpp::values::EsmClass::from(ESM_UDHI))
            .short_message(rusmpp::types::OctetString::from_slice(short_message).unwrap())
            .build();
        match classify("l", &d, IdFormat::Opaque) {
            Some(Delivered::Mo(p)) => p,
            other => panic!("not MO: {other:?}"),
        }
    }

    #[test]
    fn udh_concat_ies_8_and_16_bit_are_recognised() {
        let p8 = mo_of(&[5u8, 0x00, 3, 0xAA, 2, 1, b'x']);
        assert_eq!(p8.concat, Some((0xAA, 2, 1)));
        assert_eq!(&p8.payload[..], b"x");
        let p16 = mo_of(&[6u8, 0x08, 4, 0x12, 0x34, 3, 2, b'y']);
        assert_eq!(p16.concat, Some((0x1_1234, 3, 2)));
        assert_eq!(&p16.payload[..], b"y");
        // Per TS 23.040 an element numbering a part beyond the total is
        // ignored: the part stands alone, its header still stripped.
        let bad = mo_of(&[5u8, 0x00, 3, 0xAA, 2, 3, b'z']);
        assert_eq!((bad.concat, &bad.payload[..]), (None, &b"z"[..]));
    }
}
