//! Link behaviour against the in-repo simulator over loopback TCP.

mod common;

use std::time::Duration;

use smsgw_smpp::{
    Address, BindMode, Error, IdFormat, Link, LinkConfig, LinkEvent, LinkState, MobileOriginated,
    Pool, Receipt, ReceiptState, Sar, Segment, SegmentOutcome, SubmitRequest, SubmitTag, Target,
    UnknownPolicy, UnknownReason,
    sim::{ReceiptMix, SimConfig, SimIdFormat},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::{WAIT, eventually, fixture, msg, start_sim};

fn multipart(parts: &[&str]) -> SubmitRequest {
    let mut m = msg("");
    m.esm_class = 0x40;
    m.segments = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut payload = vec![5, 0x00, 3, 0x42, parts.len() as u8, i as u8 + 1];
            payload.extend_from_slice(p.as_bytes());
            Segment::new(payload)
        })
        .collect();
    m
}

fn accepted_id(o: &SegmentOutcome) -> String {
    match o {
        SegmentOutcome::Accepted {
            smsc_message_id, ..
        } => smsc_message_id.normalized.clone(),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

async fn next_receipt(events: &mut mpsc::Receiver<LinkEvent>) -> Receipt {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(LinkEvent::Receipt(r))) => return r,
            Ok(Some(_)) => continue,
            other => panic!("no receipt: {other:?}"),
        }
    }
}

async fn next_mo(events: &mut mpsc::Receiver<LinkEvent>) -> MobileOriginated {
    match next_event(events, |e| matches!(e, LinkEvent::MobileOriginated(_))).await {
        LinkEvent::MobileOriginated(mo) => mo,
        _ => unreachable!(),
    }
}

async fn next_event(
    events: &mut mpsc::Receiver<LinkEvent>,
    want: impl Fn(&LinkEvent) -> bool,
) -> LinkEvent {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(_)) => continue,
            other => panic!("event not seen: {other:?}"),
        }
    }
}

#[tokio::test]
async fn link_binds_submits_and_correlates_the_receipt() {
    let mut f = fixture(SimConfig::default(), |c| c).await;
    let out = f.link.submit(msg("hello")).await.unwrap();
    assert_eq!(out.len(), 1);
    let id = accepted_id(&out[0]);
    let r = next_receipt(&mut f.events).await;
    assert_eq!(r.smsc_message_id.normalized, id);
    assert_eq!(r.state, ReceiptState::Delivered);
    assert_eq!(r.link, "test");
    assert!(r.done_at.is_some());
    assert_eq!(f.sim.binds(), 1);
    assert_eq!(f.sim.submits(), 1);
    // The SMSC is answered only once the receipt is stored.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.sim.counters().deliver_sm_resps,
        0,
        "not answered before stored"
    );
    r.ack.stored();
    eventually("deliver_sm answered", || {
        f.sim.counters().deliver_sm_resps == 1
    })
    .await;
    assert_eq!(f.sim.counters().receipts_refused, 0);
    f.cancel.cancel();
}

#[tokio::test]
async fn hex_response_ids_and_decimal_receipt_ids_meet_at_the_same_key() {
    let sim_cfg = SimConfig::default()
        .id_format(SimIdFormat::Hex)
        .receipt_id_format(SimIdFormat::Decimal)
        .receipt_tlvs(false);
    let mut f = fixture(sim_cfg, |c| {
        c.message_id_format(IdFormat::Hex)
            .receipt_id_format(Some(IdFormat::Decimal))
    })
    .await;
    let out = f.link.submit(msg("hex")).await.unwrap();
    let SegmentOutcome::Accepted {
        smsc_message_id, ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        smsc_message_id.raw.len(),
        8,
        "zero-padded hex from the SMSC"
    );
    let r = next_receipt(&mut f.events).await;
    assert_ne!(r.smsc_message_id.raw, smsc_message_id.raw);
    assert_eq!(r.smsc_message_id.normalized, smsc_message_id.normalized);
    f.cancel.cancel();
}

#[tokio::test]
async fn uuid_like_ids_correlate_regardless_of_case() {
    let mut f = fixture(SimConfig::default().id_format(SimIdFormat::Uuid), |c| c).await;
    let out = f.link.submit(msg("uuid")).await.unwrap();
    let id = accepted_id(&out[0]);
    let r = next_receipt(&mut f.events).await;
    assert_eq!(r.smsc_message_id.normalized, id);
    f.cancel.cancel();
}

#[tokio::test]
async fn text_only_receipts_are_parsed_with_state_and_error() {
    let sim_cfg = SimConfig::default()
        .receipt_tlvs(false)
        .receipt_mix(ReceiptMix {
            delivered: 0,
            undeliverable: 1,
            expired: 0,
            rejected: 0,
        });
    let mut f = fixture(sim_cfg, |c| c).await;
    let id = accepted_id(&f.link.submit(msg("x")).await.unwrap()[0]);
    let r = next_receipt(&mut f.events).await;
    assert_eq!(r.smsc_message_id.normalized, id);
    assert_eq!(r.state, ReceiptState::Undeliverable);
    assert_eq!(r.error_code, Some(1));
    f.cancel.cancel();
}

#[tokio::test]
async fn receipt_tlvs_give_the_state_for_every_outcome_in_the_mix() {
    for (mix, want) in [
        ((0, 0, 1, 0), ReceiptState::Expired),
        ((0, 0, 0, 1), ReceiptState::Rejected),
    ] {
        let sim_cfg = SimConfig::default().receipt_mix(ReceiptMix {
            delivered: mix.0,
            undeliverable: mix.1,
            expired: mix.2,
            rejected: mix.3,
        });
        let mut f = fixture(sim_cfg, |c| c).await;
        f.link.submit(msg("x")).await.unwrap();
        assert_eq!(next_receipt(&mut f.events).await.state, want);
        f.cancel.cancel();
    }
}

#[tokio::test]
async fn wrong_password_is_reported_and_the_link_stays_down() {
    let cancel = CancellationToken::new();
    let sim = start_sim(SimConfig::default(), &cancel).await;
    let (tx, _rx) = mpsc::channel(100);
    let link = Link::spawn(
        LinkConfig::test(sim.addr()).password(smsgw_smpp::Password::new("wrong")),
        tx,
        cancel.clone(),
    )
    .unwrap();
    eventually("bind refused", || sim.counters().binds_refused >= 1).await;
    assert!(!link.wait_bound(Duration::from_millis(200)).await);
    let st = link.status();
    assert_eq!(st.sessions_bound, 0);
    let err = st.last_error.expect("error recorded").message;
    assert!(err.contains("0x0000000e"), "{err}");
    assert!(!err.contains("wrong"), "password must not leak: {err}");
    assert!(matches!(
        link.submit(msg("x")).await,
        Err(Error::LinkDown { .. })
    ));
    cancel.cancel();
}

#[tokio::test]
async fn refused_binds_are_retried_with_backoff_until_accepted() {
    let cancel = CancellationToken::new();
    let sim = start_sim(SimConfig::default(), &cancel).await;
    sim.set_refuse_binds(true);
    let (tx, _rx) = mpsc::channel(100);
    let link = Link::spawn(LinkConfig::test(sim.addr()), tx, cancel.clone()).unwrap();
    eventually("two refusals", || sim.counters().binds_refused >= 2).await;
    sim.set_refuse_binds(false);
    assert!(link.wait_bound(WAIT).await);
    cancel.cancel();
}

#[tokio::test]
async fn dropped_connections_are_noticed_and_rebound() {
    let f = fixture(SimConfig::default(), |c| c.sessions(2)).await;
    assert!(f.link.wait_all_bound(WAIT).await);
    f.sim.drop_connections();
    eventually("rebound", || {
        f.sim.binds() >= 4 && f.link.status().sessions_bound == 2
    })
    .await;
    f.link.submit(msg("after")).await.unwrap();
    f.cancel.cancel();
}

#[tokio::test]
async fn a_silent_peer_is_declared_dead_within_one_interval_plus_timeout() {
    let mut f = fixture(SimConfig::default(), |c| {
        c.enquire_link_interval(Duration::from_millis(200))
            .response_timeout(Duration::from_millis(200))
    })
    .await;
    f.sim.set_ignore_enquire_link(true);
    let t0 = tokio::time::Instant::now();
    next_event(&mut f.events, |e| {
        matches!(
            e,
            LinkEvent::StateChanged {
                state: LinkState::Down,
                ..
            }
        )
    })
    .await;
    let took = t0.elapsed();
    assert!(took <= Duration::from_millis(800), "took {took:?}");
    let err = f.link.status().last_error.unwrap().message;
    assert!(err.contains("no response"), "{err}");
    f.sim.set_ignore_enquire_link(false);
    assert!(f.link.wait_bound(WAIT).await, "rebinds");
    f.cancel.cancel();
}

#[tokio::test]
async fn smsc_enquire_link_is_answered() {
    let f = fixture(SimConfig::default(), |c| c).await;
    f.sim.enquire_link_all();
    eventually("enquire_link_resp", || {
        f.sim.counters().enquire_link_resps == 1
    })
    .await;
    f.cancel.cancel();
}

#[tokio::test]
async fn our_enquire_link_measures_the_round_trip() {
    let f = fixture(SimConfig::default(), |c| {
        c.enquire_link_interval(Duration::from_millis(50))
    })
    .await;
    eventually("rtt measured", || {
        f.link.status().last_enquire_link_rtt.is_some()
    })
    .await;
    assert!(f.sim.counters().enquire_links >= 1);
    f.cancel.cancel();
}

#[tokio::test]
async fn smsc_initiated_unbind_is_answered_and_the_link_rebinds() {
    let mut f = fixture(SimConfig::default(), |c| c).await;
    f.sim.unbind_all();
    next_event(&mut f.events, |e| {
        matches!(e, LinkEvent::StateChanged { state: LinkState::Down, reason: Some(r), .. } if r.contains("unbind"))
    })
    .await;
    eventually("rebound", || f.sim.binds() >= 2).await;
    assert!(f.link.wait_bound(WAIT).await);
    f.link.submit(msg("after unbind")).await.unwrap();
    f.cancel.cancel();
}

#[tokio::test]
async fn generic_nack_for_a_submit_is_a_rejection() {
    let f = fixture(SimConfig::default(), |c| c).await;
    f.sim.nack_next(1);
    let out = f.link.submit(msg("nack")).await.unwrap();
    assert_eq!(out, vec![SegmentOutcome::Rejected { command_status: 8 }]);
    accepted_id(&f.link.submit(msg("ok")).await.unwrap()[0]);
    f.cancel.cancel();
}

#[tokio::test]
async fn a_full_window_makes_senders_wait_then_fail_with_window_full() {
    let f = fixture(SimConfig::default(), |c| {
        c.window(4)
            .window_wait(Duration::from_millis(200))
            .response_timeout(Duration::from_millis(800))
            .unknown_policy(UnknownPolicy::Hold)
    })
    .await;
    f.sim.set_drop_responses(true);
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let l = f.link.clone();
        stuck.push(tokio::spawn(async move { l.submit(msg("x")).await }));
    }
    eventually("window full", || f.link.status().in_flight == 4).await;
    let t0 = tokio::time::Instant::now();
    let err = f.link.submit(msg("fifth")).await.unwrap_err();
    match err {
        Error::WindowFull { link, waited } => {
            assert_eq!(link, "test");
            assert!(waited >= Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_millis(600));
    assert_eq!(f.sim.submits(), 4, "the fifth was never sent");
    for s in stuck {
        let out = s.await.unwrap().unwrap();
        assert!(matches!(out[0], SegmentOutcome::Unknown { .. }), "{out:?}");
    }
    f.cancel.cancel();
}

#[tokio::test]
async fn response_timeout_is_unknown_never_resent_and_a_late_response_settles_it() {
    let mut f = fixture(SimConfig::default(), |c| {
        c.response_timeout(Duration::from_millis(300))
            .stall_after_timeouts(0)
    })
    .await;
    f.sim.set_response_delay(Some(Duration::from_millis(700)));
    let mut m = msg("slow");
    m.tag = Some("message-7".into());
    let out = f.link.submit(m).await.unwrap();
    let SegmentOutcome::Unknown {
        session,
        reason: UnknownReason::ResponseTimeout {
            sequence_number, ..
        },
    } = out[0].clone()
    else {
        panic!("{out:?}")
    };
    let late = next_event(&mut f.events, |e| {
        matches!(e, LinkEvent::LateResponse { .. })
    })
    .await;
    let LinkEvent::LateResponse {
        session: s,
        sequence_number: seq,
        command_status,
        smsc_message_id,
        tag,
        ..
    } = late
    else {
        unreachable!()
    };
    assert_eq!((s, seq, command_status), (session, sequence_number, 0));
    // It comes back with the request's tag and the segment's index, so the
    // caller needs no map of its own.
    assert_eq!(
        tag,
        Some(SubmitTag {
            tag: "message-7".into(),
            segment: 0
        })
    );
    let id = smsc_message_id.expect("id in late response");
    let r = next_receipt(&mut f.events).await;
    assert_eq!(r.smsc_message_id.normalized, id.normalized);
    assert_eq!(f.sim.submits(), 1, "never resent");
    f.cancel.cancel();
}

#[tokio::test]
async fn throttled_submit_is_retried_in_order_and_keeps_its_id() {
    let mut f = fixture(SimConfig::default(), |c| c).await;
    f.sim.throttle_next(4);
    let out = f
        .link
        .submit(multipart(&["part one ", "part two ", "part three"]))
        .await
        .unwrap();
    let ids: Vec<String> = out.iter().map(accepted_id).collect();
    let n: Vec<u64> = ids.iter().map(|i| i.parse().unwrap()).collect();
    assert_eq!(n.len(), 3);
    assert!(n[0] < n[1] && n[1] < n[2], "resent in order: {ids:?}");
    assert_eq!(f.sim.counters().throttled, 4);
    assert_eq!(f.sim.submits(), 7);
    assert!(
        f.link.status().sessions[0].throttled_rate.is_some(),
        "AIMD engaged"
    );
    let mut got: Vec<String> = Vec::new();
    for _ in 0..3 {
        got.push(next_receipt(&mut f.events).await.smsc_message_id.normalized);
    }
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every final id gets its receipt");
    f.cancel.cancel();
}

#[tokio::test]
async fn throttling_beyond_the_retry_budget_is_a_rejection() {
    let f = fixture(SimConfig::default(), |c| c.throttle_retries(2)).await;
    f.sim.throttle_next(10);
    let out = f.link.submit(msg("x")).await.unwrap();
    assert_eq!(
        out,
        vec![SegmentOutcome::Rejected {
            command_status: 0x58
        }]
    );
    assert_eq!(f.sim.submits(), 3);
    f.cancel.cancel();
}

#[tokio::test]
async fn sar_and_message_payload_segments_are_sent() {
    let f = fixture(SimConfig::default(), |c| c).await;
    let mut m = msg("");
    m.segments = vec![
        Segment {
            payload: vec![b'a'; 300].into(),
            sar: Some(Sar {
                ref_num: 7,
                total: 2,
                seq: 1,
            }),
            use_message_payload: true,
        },
        Segment {
            payload: b"tail".to_vec().into(),
            sar: Some(Sar {
                ref_num: 7,
                total: 2,
                seq: 2,
            }),
            use_message_payload: false,
        },
    ];
    let out = f.link.submit(m).await.unwrap();
    assert_eq!(out.len(), 2);
    out.iter().for_each(|o| {
        accepted_id(o);
    });
    f.cancel.cancel();
}

#[tokio::test]
async fn late_answers_carry_each_segments_tag_up_to_the_bound() {
    // One session remembering at most 2 timed-out submits: of a 3-part
    // message that times out whole, the third is not remembered, and its
    // late answer comes back without a tag.
    let mut f = fixture(SimConfig::default(), |c| {
        c.response_timeout(Duration::from_millis(300))
            .stall_after_timeouts(0)
            .late_responses(2)
    })
    .await;
    // Each segment's timeout runs from when the link awaits it (0.3, 0.6,
    // 0.9 s); every answer comes well after.
    f.sim.set_response_delay(Some(Duration::from_millis(2_500)));
    let mut m = multipart(&["a", "b", "c"]);
    m.tag = Some("message-9".into());
    let out = f.link.submit(m).await.unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, SegmentOutcome::Unknown { .. })),
        "{out:?}"
    );
    let held = f.link.late_memory();
    assert_eq!(held.structure, "late_responses");
    assert_eq!((held.entries, held.capacity, held.evicted), (2, 2, 1));
    assert!(held.bytes > 0);
    let mut tags = Vec::new();
    for _ in 0..3 {
        let LinkEvent::LateResponse { tag, .. } = next_event(&mut f.events, |e| {
            matches!(e, LinkEvent::LateResponse { .. })
        })
        .await
        else {
            unreachable!()
        };
        tags.push(tag.map(|t| (t.tag.to_string(), t.segment)));
    }
    tags.sort();
    assert_eq!(
        tags,
        vec![
            None,
            Some(("message-9".to_owned(), 0)),
            Some(("message-9".to_owned(), 1)),
        ]
    );
    // Answered: nothing is held any more.
    assert_eq!(f.link.late_memory().entries, 0);
    f.cancel.cancel();
}

#[tokio::test]
async fn invalid_requests_are_refused_before_sending() {
    let f = fixture(SimConfig::default(), |c| c).await;
    let mut m = msg("x");
    m.destination.addr = "1".repeat(30);
    assert!(matches!(
        f.link.submit(m).await,
        Err(Error::InvalidRequest {
            command_status: smsgw_smpp::ESME_RINVDSTADR,
            ..
        })
    ));
    let mut m = msg("x");
    m.source.addr = "s".repeat(21);
    assert!(matches!(
        f.link.submit(m).await,
        Err(Error::InvalidRequest {
            command_status: smsgw_smpp::ESME_RINVSRCADR,
            ..
        })
    ));
    let mut m = msg("x");
    m.priority = 4;
    assert!(matches!(
        f.link.submit(m).await,
        Err(Error::InvalidRequest {
            command_status: smsgw_smpp::ESME_RINVPRTFLG,
            ..
        })
    ));
    let mut m = msg("x");
    m.segments.clear();
    assert!(matches!(
        f.link.submit(m).await,
        Err(Error::InvalidRequest {
            command_status: smsgw_smpp::ESME_RINVMSGLEN,
            ..
        })
    ));
    assert_eq!(f.sim.submits(), 0);
    f.cancel.cancel();
}

#[tokio::test]
async fn concatenated_mo_is_reassembled_before_it_is_surfaced() {
    let mut f = fixture(SimConfig::default(), |c| c).await;
    let from = Address::new("4917099", 1, 1);
    let to = Address::new("12345", 0, 0);
    // UDH (8-bit reference), parts out of order.
    for (seq, body) in [(2u8, &b"world"[..]), (1, b"hello ")] {
        let mut p = vec![5, 0x00, 3, 0x11, 2, seq];
        p.extend_from_slice(body);
        f.sim.deliver_mo(&from, &to, 0, 0x40, &p, None).unwrap();
    }
    let mo = next_mo(&mut f.events).await;
    assert_eq!(&mo.payload[..], b"hello world");
    assert!(mo.complete);
    assert_eq!(mo.parts, 2);
    assert_eq!(mo.source, from);
    mo.ack.stored();
    // SAR TLVs, UCS-2.
    for seq in [1u8, 2, 3] {
        let sar = Sar {
            ref_num: 0x1234,
            total: 3,
            seq,
        };
        f.sim
            .deliver_mo(&from, &to, 8, 0, &[0, b'0' + seq], Some(sar))
            .unwrap();
    }
    let mo = next_mo(&mut f.events).await;
    assert_eq!(&mo.payload[..], &[0, b'1', 0, b'2', 0, b'3']);
    assert_eq!(mo.data_coding, 8);
    mo.ack.stored();
    // A single-part MO is surfaced as is.
    f.sim.deliver_mo(&from, &to, 0, 0, b"single", None).unwrap();
    let mo = next_mo(&mut f.events).await;
    assert_eq!(&mo.payload[..], b"single");
    mo.ack.stored();
    eventually("every deliver_sm answered", || {
        f.sim.counters().deliver_sm_resps == 6
    })
    .await;
    assert_eq!(f.sim.counters().receipts_refused, 0);
    f.cancel.cancel();
}

// The deliver_sm that completes an MO is answered only once the consumer
// kept it, like a receipt (issue 18); the parts before it at once, or the
// SMSC's window would wait on a set that needs them all.
#[tokio::test]
async fn an_mo_is_answered_once_kept_and_refused_when_dropped_unkept() {
    let mut f = fixture(SimConfig::default(), |c| c).await;
    let from = Address::new("4917099", 1, 1);
    let to = Address::new("12345", 0, 0);
    let mut first = vec![5, 0x00, 3, 0x22, 2, 1];
    first.extend_from_slice(b"hello ");
    f.sim.deliver_mo(&from, &to, 0, 0x40, &first, None).unwrap();
    eventually("the first part answered at once", || {
        f.sim.counters().deliver_sm_resps == 1
    })
    .await;
    let mut last = vec![5, 0x00, 3, 0x22, 2, 2];
    last.extend_from_slice(b"world");
    f.sim.deliver_mo(&from, &to, 0, 0x40, &last, None).unwrap();
    let mo = next_mo(&mut f.events).await;
    assert_eq!(&mo.payload[..], b"hello world");
    assert!(mo.ack.is_pending());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.sim.counters().deliver_sm_resps,
        1,
        "the completing part waits until the message is kept"
    );
    mo.ack.stored();
    eventually("the kept MO answered", || {
        f.sim.counters().deliver_sm_resps == 2
    })
    .await;
    assert_eq!(f.sim.counters().receipts_refused, 0);
    // One the consumer could not keep: every copy dropped unanswered.
    f.sim.deliver_mo(&from, &to, 0, 0, b"single", None).unwrap();
    let mo = next_mo(&mut f.events).await;
    assert!(mo.ack.is_pending());
    drop(mo);
    eventually("the unkept MO refused with a temporary error", || {
        let c = f.sim.counters();
        c.deliver_sm_resps == 3 && c.receipts_refused == 1
    })
    .await;
    f.cancel.cancel();
}

#[tokio::test]
async fn an_incomplete_mo_is_surfaced_after_the_reassembly_timeout() {
    let mut f = fixture(SimConfig::default(), |c| {
        c.enquire_link_interval(Duration::from_millis(50))
            .reassembly(smsgw_smpp::ReassemblyConfig {
                max_pending: 16,
                timeout: Duration::from_millis(100),
                ..Default::default()
            })
    })
    .await;
    let mut p = vec![6, 0x08, 4, 0x01, 0x02, 2, 1];
    p.extend_from_slice(b"half");
    f.sim
        .deliver_mo(
            &Address::new("1", 1, 1),
            &Address::new("2", 1, 1),
            0,
            0x40,
            &p,
            None,
        )
        .unwrap();
    let mo = next_mo(&mut f.events).await;
    assert!(!mo.complete);
    assert_eq!(&mo.payload[..], b"half");
    f.cancel.cancel();
}

#[tokio::test]
async fn stop_drains_the_window_and_unbinds_then_start_rebinds() {
    let f = fixture(SimConfig::default(), |c| c).await;
    f.sim.set_response_delay(Some(Duration::from_millis(300)));
    let l = f.link.clone();
    let pending = tokio::spawn(async move { l.submit(msg("in flight")).await });
    eventually("in flight", || f.link.status().in_flight == 1).await;
    f.link.stop().await;
    let out = pending.await.unwrap().unwrap();
    accepted_id(&out[0]);
    assert_eq!(f.sim.counters().unbinds, 1);
    assert_eq!(f.link.status().state, LinkState::Down);
    assert!(matches!(
        f.link.submit(msg("x")).await,
        Err(Error::LinkStopped { .. })
    ));
    f.sim.set_response_delay(None);
    f.link.start();
    assert!(f.link.wait_bound(WAIT).await);
    f.link.submit(msg("again")).await.unwrap();
    f.link.restart().await;
    assert_eq!(f.sim.counters().unbinds, 2);
    assert!(f.link.wait_bound(WAIT).await);
    f.cancel.cancel();
}

#[tokio::test]
async fn shutdown_drains_every_session_and_unbinds() {
    let f = fixture(SimConfig::default(), |c| c.sessions(3)).await;
    assert!(f.link.wait_all_bound(WAIT).await);
    f.sim.set_response_delay(Some(Duration::from_millis(200)));
    let mut sends = Vec::new();
    for _ in 0..6 {
        let l = f.link.clone();
        sends.push(tokio::spawn(async move { l.submit(msg("x")).await }));
    }
    eventually("in flight", || f.link.status().in_flight == 6).await;
    let link = f.link.clone();
    f.link.shutdown().await;
    for s in sends {
        accepted_id(&s.await.unwrap().unwrap()[0]);
    }
    assert_eq!(f.sim.counters().unbinds, 3);
    assert_eq!(link.status().state, LinkState::Down);
    f.cancel.cancel();
}

#[tokio::test]
async fn transmitter_receiver_mode_binds_both_and_receipts_arrive_on_the_receiver() {
    let mut f = fixture(SimConfig::default(), |c| {
        c.bind_mode(BindMode::TransmitterReceiver).sessions(2)
    })
    .await;
    assert!(f.link.wait_all_bound(WAIT).await);
    let st = f.link.status();
    assert_eq!(st.sessions_total, 4);
    assert_eq!(f.sim.binds(), 4);
    let id = accepted_id(&f.link.submit(msg("txrx")).await.unwrap()[0]);
    assert_eq!(
        next_receipt(&mut f.events).await.smsc_message_id.normalized,
        id
    );
    f.cancel.cancel();
}

#[tokio::test]
async fn smpp_5_0_binds_too() {
    let f = fixture(SimConfig::default(), |c| {
        c.interface_version(smsgw_smpp::InterfaceVersion::V50)
    })
    .await;
    f.link.submit(msg("v5")).await.unwrap();
    f.cancel.cancel();
}

#[tokio::test]
async fn many_concurrent_senders_share_the_window_without_loss() {
    let mut f = fixture(SimConfig::default().receipt_delay(Duration::ZERO), |c| {
        c.sessions(2).window(8)
    })
    .await;
    assert!(f.link.wait_all_bound(WAIT).await);
    let mut tasks = Vec::new();
    for t in 0..50 {
        let l = f.link.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let out = l.submit(msg(&format!("{t}-{i}"))).await.unwrap();
                ids.push(accepted_id(&out[0]));
            }
            ids
        }));
    }
    let mut max_in_flight = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        max_in_flight = max_in_flight.max(f.link.status().in_flight);
        ids.extend(t.await.unwrap());
    }
    assert!(max_in_flight <= 16, "{max_in_flight}");
    assert_eq!(ids.len(), 2000);
    let mut receipts = 0;
    while receipts < 2000 {
        next_receipt(&mut f.events).await;
        receipts += 1;
    }
    let st = f.link.status();
    assert!(st.sessions.iter().all(|s| s.last_error.is_none()), "{st:?}");
    f.cancel.cancel();
}

#[tokio::test]
async fn status_reports_rates_and_per_session_details() {
    let mut f = fixture(SimConfig::default().receipt_delay(Duration::ZERO), |c| {
        c.sessions(2)
    })
    .await;
    assert!(f.link.wait_all_bound(WAIT).await);
    let _ = f.link.status();
    for _ in 0..50 {
        f.link.submit(msg("r")).await.unwrap();
    }
    for _ in 0..50 {
        next_receipt(&mut f.events).await;
    }
    eventually("submit and receipt rates reported", || {
        let st = f.link.status();
        st.submit_rate > 0.0 && st.receipt_rate > 0.0
    })
    .await;
    let st = f.link.status();
    assert_eq!(st.state, LinkState::Bound);
    assert_eq!((st.sessions_bound, st.sessions_total), (2, 2));
    assert_eq!(st.sessions.len(), 2);
    assert!(st.submit_rate > 0.0, "{st:?}");
    assert!(st.receipt_rate > 0.0, "{st:?}");
    f.cancel.cancel();
}

#[tokio::test]
async fn pool_spreads_by_weight_and_fails_over_when_a_link_goes_down() {
    let cancel = CancellationToken::new();
    let sim_a = start_sim(SimConfig::default(), &cancel).await;
    let sim_b = start_sim(SimConfig::default(), &cancel).await;
    let (tx, _rx) = mpsc::channel(10_000);
    let a = Link::spawn(
        LinkConfig::test(sim_a.addr()).name("a".into()),
        tx.clone(),
        cancel.clone(),
    )
    .unwrap();
    let b = Link::spawn(
        LinkConfig::test(sim_b.addr()).name("b".into()),
        tx,
        cancel.clone(),
    )
    .unwrap();
    assert!(a.wait_bound(WAIT).await && b.wait_bound(WAIT).await);
    let pool = std::sync::Arc::new(Pool::new("p", vec![(a.clone(), 3), (b.clone(), 1)]).unwrap());
    let target = Target::Pool(pool.clone());
    for _ in 0..8 {
        target.submit(msg("w")).await.unwrap();
    }
    assert_eq!((sim_a.submits(), sim_b.submits()), (6, 2));
    a.stop().await;
    for _ in 0..4 {
        target.submit(msg("f")).await.unwrap();
    }
    assert_eq!((sim_a.submits(), sim_b.submits()), (6, 6));
    b.stop().await;
    assert!(matches!(
        target.submit(msg("none")).await,
        Err(Error::NoLinkAvailable { .. })
    ));
    assert!(!target.is_up());
    // A link answers to the same interface.
    a.start();
    assert!(a.wait_bound(WAIT).await);
    Target::Link(a).submit(msg("direct")).await.unwrap();
    cancel.cancel();
}

#[tokio::test]
async fn connection_loss_with_submits_in_flight_reports_them_unknown_without_resending() {
    // With the hold policy (resubmission: faults.rs).
    let f = fixture(SimConfig::default(), |c| {
        c.unknown_policy(UnknownPolicy::Hold)
    })
    .await;
    f.sim.set_drop_responses(true);
    let mut sends = Vec::new();
    for _ in 0..3 {
        let l = f.link.clone();
        sends.push(tokio::spawn(async move { l.submit(msg("x")).await }));
    }
    eventually("in flight", || f.link.status().in_flight == 3).await;
    f.sim.drop_connections();
    for s in sends {
        let out = s.await.unwrap().unwrap();
        assert!(
            matches!(
                out[0],
                SegmentOutcome::Unknown {
                    reason: UnknownReason::ConnectionLost { .. },
                    ..
                }
            ),
            "{out:?}"
        );
    }
    f.sim.set_drop_responses(false);
    assert!(f.link.wait_bound(WAIT).await);
    assert_eq!(f.sim.submits(), 3, "nothing resent");
    f.cancel.cancel();
}

#[tokio::test]
async fn link_rate_limits_submits_per_second() {
    let f = fixture(SimConfig::default(), |c| c.rate(Some(50.0)).burst(5)).await;
    let t0 = tokio::time::Instant::now();
    for _ in 0..20 {
        f.link.submit(msg("r")).await.unwrap();
    }
    // 5 in the burst, then 15 at 20 ms spacing.
    assert!(
        t0.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t0.elapsed()
    );
    f.cancel.cancel();
}

#[tokio::test]
async fn a_submit_sm_resp_without_nul_terminator_still_yields_the_id() {
    use bytes::{BufMut, BytesMut};
    use futures::StreamExt;
    use smsgw_smpp::codec::{Frame, SmppCodec};
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut frames = tokio_util::codec::FramedRead::new(r, SmppCodec::default());
        while let Some(Ok(Frame::Command(c))) = frames.next().await {
            let mut out = BytesMut::new();
            let seq = c.sequence_number();
            let (id, body): (u32, &[u8]) = match u32::from(c.id()) {
                0x09 => (0x8000_0009, b"raw\0"),
                0x04 => (0x8000_0004, b"ABC123"), // no NUL
                0x15 => (0x8000_0015, b""),
                _ => continue,
            };
            out.put_u32(16 + body.len() as u32);
            out.put_u32(id);
            out.put_u32(0);
            out.put_u32(seq);
            out.put_slice(body);
            w.write_all(&out).await.unwrap();
        }
    });
    let (tx, _rx) = mpsc::channel(10);
    let cancel = CancellationToken::new();
    let link = Link::spawn(LinkConfig::test(addr), tx, cancel.clone()).unwrap();
    assert!(link.wait_bound(WAIT).await);
    let out = link.submit(msg("x")).await.unwrap();
    assert_eq!(accepted_id(&out[0]), "abc123");
    cancel.cancel();
}

#[tokio::test]
async fn a_gated_link_binds_only_its_open_slots_and_unbinds_a_closed_one() {
    let cancel = CancellationToken::new();
    let sim = start_sim(SimConfig::default(), &cancel).await;
    let (tx, _events) = mpsc::channel(10_000);
    let link = Link::spawn_gated(
        LinkConfig::test(sim.addr()).sessions(3),
        tx,
        cancel.clone(),
        Some(&[1].into()),
    )
    .expect("link spawns");
    assert!(link.wait_bound(WAIT).await, "slot 1 binds");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(link.status().sessions_bound, 1);
    assert_eq!(sim.binds(), 1, "closed slots never bind");
    assert!(link.slot_is_down(0) && !link.slot_is_down(1));

    link.set_open_slots(&[0, 2].into());
    eventually("slot 1 unbinds", || link.slot_is_down(1)).await;
    eventually("slots 0 and 2 bind", || link.status().sessions_bound == 2).await;
    assert_eq!(sim.counters().unbinds, 1, "slot 1 unbound cleanly");
    assert_eq!(sim.binds(), 3);

    // Stopped and started, the link keeps to its open slots.
    link.restart().await;
    eventually("rebound", || link.status().sessions_bound == 2).await;
    assert!(link.slot_is_down(1));
    link.set_open_slots(&Default::default());
    eventually("all down", || (0..3).all(|s| link.slot_is_down(s))).await;
    cancel.cancel();
}

#[tokio::test]
async fn the_simulator_keeps_the_peak_of_binds_and_counts_repeated_submissions() {
    let cfg = SimConfig {
        track_submits: true,
        ..SimConfig::default()
    };
    let f = fixture(cfg, |c| c.sessions(3)).await;
    assert!(f.link.wait_all_bound(WAIT).await);
    assert_eq!(f.sim.counters().peak_bound, 3);
    f.sim.drop_connections();
    // The link may still report the dropped sessions for a moment: wait for
    // the simulator to have taken the three rebinds, then for the link.
    eventually("rebound", || {
        f.sim.counters().binds == 6 && f.link.status().sessions_bound == 3
    })
    .await;
    assert_eq!(
        f.sim.counters().peak_bound,
        3,
        "a rebind is not a fourth bind"
    );
    f.sim.reset_peak_bound();
    assert_eq!(
        f.sim.counters().peak_bound,
        3,
        "reset starts from those bound now"
    );

    f.link.submit(msg("once")).await.unwrap();
    f.link.submit(msg("twice")).await.unwrap();
    f.link.submit(msg("twice")).await.unwrap();
    let s = f.sim.submissions();
    assert_eq!(s.distinct, 2);
    assert_eq!(s.repeated, [("4917012345".into(), "twice".into(), 2)]);
    assert_eq!(
        f.sim.counters().peak_submits_per_second,
        3,
        "three submits within a second"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    f.link.submit(msg("later")).await.unwrap();
    assert_eq!(
        f.sim.counters().peak_submits_per_second,
        3,
        "the window slides: one more a second later is not a fourth"
    );
    f.sim.reset_peak_bound();
    assert_eq!(f.sim.counters().peak_submits_per_second, 0);
    f.cancel.cancel();
}

#[tokio::test]
async fn the_simulators_ledger_file_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.txt");
    let cfg = SimConfig {
        track_submits: true,
        ledger: Some(path.clone()),
        ..SimConfig::default()
    };
    let f = fixture(cfg.clone(), |c| c).await;
    assert!(f.link.wait_all_bound(WAIT).await);
    f.link.submit(msg("once")).await.unwrap();
    f.link.submit(msg("twice")).await.unwrap();
    f.link.submit(msg("twice")).await.unwrap();
    f.cancel.cancel();
    // A line cut short by a kill mid-write counts for nothing.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, b"34393137"))
        .unwrap();
    // The next simulator on the same ledger starts from its counts.
    let again = smsgw_smpp::sim::run(cfg, CancellationToken::new())
        .await
        .unwrap();
    let s = again.submissions();
    assert_eq!(s.distinct, 2);
    assert_eq!(s.repeated, [("4917012345".into(), "twice".into(), 2)]);
}

// A receipt's `deliver_sm_resp` goes out only once the consumer says it is
// stored (issue 21), against the simulator redelivering what it got no
// ESME_ROK for, as SMSCs do.

#[tokio::test]
async fn a_receipt_not_stored_is_refused_and_delivered_again_until_stored() {
    let mut f = fixture(SimConfig::default().redeliver_receipts(true), |c| c).await;
    let out = f.link.submit(msg("again")).await.unwrap();
    let id = accepted_id(&out[0]);
    let first = next_receipt(&mut f.events).await;
    assert_eq!(first.smsc_message_id.normalized, id);
    assert!(first.ack.is_pending());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.sim.counters().deliver_sm_resps,
        0,
        "no answer while the receipt is not stored"
    );
    // The consumer could not store it: every copy dropped unanswered.
    drop(first);
    let second = next_receipt(&mut f.events).await;
    assert_eq!(second.smsc_message_id.normalized, id, "the same receipt");
    let c = f.sim.counters();
    assert_eq!(
        (c.receipts_refused, c.receipts_redelivered),
        (1, 1),
        "{c:?}"
    );
    second.ack.stored();
    assert!(!second.ack.is_pending());
    eventually("the stored receipt answered", || {
        f.sim.counters().deliver_sm_resps == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = f.sim.counters();
    assert_eq!(
        (c.receipts_refused, c.receipts_redelivered),
        (1, 1),
        "an ESME_ROK ends it: {c:?}"
    );
    assert!(f.events.try_recv().is_err(), "not delivered a third time");
}

#[tokio::test]
async fn receipts_unanswered_when_the_connection_dies_are_replayed_on_the_next_bind() {
    let mut f = fixture(SimConfig::default().redeliver_receipts(true), |c| {
        c.sessions(1)
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(accepted_id(
            &f.link.submit(msg(&format!("m{i}"))).await.unwrap()[0],
        ));
    }
    // Received, not yet stored, when the connection drops (a gateway
    // killed between reading a receipt and storing it).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next_receipt(&mut f.events).await);
    }
    let binds = f.sim.binds();
    f.sim.drop_connections();
    eventually("rebound", || f.sim.binds() > binds).await;
    let mut again: Vec<String> = Vec::new();
    for _ in 0..3 {
        let r = next_receipt(&mut f.events).await;
        r.ack.stored();
        again.push(r.smsc_message_id.normalized.clone());
    }
    again.sort();
    ids.sort();
    assert_eq!(again, ids, "every receipt replayed on the new bind");
    // Storing the first copies now answers nothing: their session is gone.
    for r in &held {
        r.ack.stored();
    }
    eventually("the replayed receipts answered", || {
        f.sim.counters().deliver_sm_resps == 3
    })
    .await;
    assert_eq!(f.sim.counters().receipts_redelivered, 3);
}

#[tokio::test]
async fn receipts_read_before_an_smsc_unbind_are_answered_before_the_unbind_resp() {
    let mut f = fixture(SimConfig::default().redeliver_receipts(true), |c| {
        c.sessions(1)
    })
    .await;
    for i in 0..3 {
        f.link.submit(msg(&format!("u{i}"))).await.unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next_receipt(&mut f.events).await);
    }
    // The SMSC unbinds while the three are being stored; they are stored
    // a moment later, still within the response timeout.
    f.sim.unbind_all();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for r in &held {
        r.ack.stored();
    }
    eventually("the held receipts answered", || {
        f.sim.counters().deliver_sm_resps == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = f.sim.counters();
    assert_eq!(
        (c.receipts_refused, c.receipts_redelivered),
        (0, 0),
        "answered on the unbinding session, not delivered again: {c:?}"
    );
    while let Ok(e) = f.events.try_recv() {
        assert!(
            !matches!(e, LinkEvent::Receipt(_)),
            "no receipt delivered twice: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_receipt_stored_at_once_is_answered_at_once() {
    let mut f = fixture(SimConfig::default().redeliver_receipts(true), |c| c).await;
    for i in 0..20 {
        f.link.submit(msg(&format!("n{i}"))).await.unwrap();
    }
    for _ in 0..20 {
        next_receipt(&mut f.events).await.ack.stored();
    }
    eventually("all answered", || f.sim.counters().deliver_sm_resps == 20).await;
    let c = f.sim.counters();
    assert_eq!(
        (c.receipts_refused, c.receipts_redelivered),
        (0, 0),
        "{c:?}"
    );
}

#[tokio::test]
async fn a_link_spawned_stopped_binds_nothing_until_started() {
    let cancel = CancellationToken::new();
    let sim = start_sim(SimConfig::default(), &cancel).await;
    let (tx, _events) = mpsc::channel(100);
    let link = Link::spawn(
        LinkConfig::test(sim.addr()).sessions(2).start_stopped(true),
        tx,
        cancel.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.counters().connections,
        0,
        "a suspended link does not even connect"
    );
    assert!(matches!(
        link.submit(msg("x")).await,
        Err(Error::LinkStopped { .. })
    ));
    link.start();
    assert!(link.wait_all_bound(WAIT).await);
    assert_eq!(sim.counters().binds, 2);
    cancel.cancel();
}

#[tokio::test]
async fn pacing_and_timeouts_change_in_place_and_a_new_window_needs_new_binds() {
    let f = fixture(SimConfig::default(), |c| c.sessions(2)).await;
    assert!(f.link.wait_all_bound(WAIT).await);
    let binds = f.sim.binds();
    // 5 submits a second, no burst: six in a row take at least a second.
    let mut cfg = (*f.link.config()).clone();
    cfg.rate = Some(5.0);
    cfg.burst = 1;
    cfg.response_timeout = Duration::from_secs(3);
    assert!(f.link.retune(cfg.clone()));
    assert_eq!(
        (f.link.config().rate, f.link.config().response_timeout),
        (Some(5.0), Duration::from_secs(3))
    );
    let start = std::time::Instant::now();
    for i in 0..6 {
        f.link.submit(msg(&format!("paced {i}"))).await.unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "six submits at 5/s took {:?}",
        start.elapsed()
    );
    assert_eq!(f.sim.binds(), binds, "a new rate must not rebind");
    assert_eq!(f.link.status().sessions_bound, 2);
    // What a session is made of is not retuned: nothing changes.
    for change in [
        |c: &mut LinkConfig| c.window += 1,
        |c: &mut LinkConfig| c.system_id = "other".into(),
        |c: &mut LinkConfig| c.sessions = 1,
    ] {
        let mut other = cfg.clone();
        change(&mut other);
        assert!(!f.link.retune(other));
        assert_eq!(*f.link.config(), cfg);
    }
    // An invalid setting is refused whole.
    let mut bad = cfg.clone();
    bad.rate = Some(-1.0);
    assert!(!f.link.retune(bad));
    assert_eq!(f.link.config().rate, Some(5.0));
    // Unpaced again: twenty submits no longer take four seconds.
    cfg.rate = None;
    assert!(f.link.retune(cfg));
    let start = std::time::Instant::now();
    for i in 0..20 {
        f.link.submit(msg(&format!("free {i}"))).await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "still paced: {:?}",
        start.elapsed()
    );
    assert_eq!(f.sim.binds(), binds);
    f.cancel.cancel();
}
