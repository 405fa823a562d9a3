//! Mobile-originated text through the real binary: the in-repo simulator
//! (in this process) sends what handsets send — Turkish, Spanish and
//! Portuguese tables, one part and several, a UDH with and without
//! concatenation, SAR, parts out of order — and the owning app receives the
//! exact text on its gRPC event stream; a language the gateway has no
//! tables for arrives as a named error with the raw user data.

use crate::harness::{Creds, Gateway, bound, eventually, memory, sim_config};
use smsgw_proto::sms::v1::{
    MessageEvent, WatchEventsRequest, message_event, sms_service_client::SmsServiceClient,
};
use smsgw_smpp::{
    Address,
    sim::{self, MoText, SimConfig},
};
use smsgw_text::{Concat, Encoding, Language, NationalShift};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The app's short code: MO to it is routed to the managed user `mo`.
const SHORT_CODE: &str = "4444";

async fn managed_user(gw: &Gateway) -> Creds {
    gw.managed_user("mo@example.com", "managed pw 12").await
}

/// The next MO on an event stream (other events skipped), within 10 s.
pub(crate) async fn next_mo(
    events: &mut tonic::Streaming<MessageEvent>,
) -> smsgw_proto::sms::v1::MobileOriginated {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .expect("the stream stays up")
            .expect("the stream does not end");
        if let Some(message_event::Event::Mo(mo)) = ev.event {
            return mo;
        }
    }
}

/// The app's live WatchEvents stream, subscribed before this returns.
pub(crate) async fn watch(gw: &Gateway, creds: &Creds) -> tonic::Streaming<MessageEvent> {
    let mut sms = SmsServiceClient::new(gw.channel().await);
    let events = sms
        .watch_events(creds.grpc(WatchEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // Let the stream subscribe before anything is published.
    tokio::time::sleep(Duration::from_millis(300)).await;
    events
}

#[tokio::test]
async fn apps_receive_national_table_mo_as_the_exact_text() {
    let cancel = CancellationToken::new();
    let smsc = sim::run(SimConfig::default(), cancel.clone())
        .await
        .expect("simulator starts");
    let config = format!(
        "{}---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {{name: mo}}\n\
         spec: {{email: mo@example.com, appName: mo, password: 'managed pw 12', \
         sourceAddresses: ['{SHORT_CODE}']}}\n",
        sim_config(smsc.addr())
    );
    let gw = Gateway::standalone(&config);
    let creds = managed_user(&gw).await;
    bound(&gw, &creds).await;
    let mut events = watch(&gw, &creds).await;

    let from = Address::new("905321234567", 1, 1);
    let to = Address::new(SHORT_CODE, 0, 0);
    let turkish = NationalShift {
        locking: Some(Language::Turkish),
        single: Some(Language::Turkish),
    };
    let spanish = NationalShift {
        locking: None,
        single: Some(Language::Spanish),
    };
    let portuguese = NationalShift {
        locking: Some(Language::Portuguese),
        single: Some(Language::Portuguese),
    };
    let tr = "Şişli'de güzel bir gün geçirdik, ığdır çok uzak: şşşşş İĞ €{}";
    let es = "¿Cómo estás, José? Ángel compró café en Cádiz; ¡qué día!";
    let pt = "Não há açúcar nem café: você está à espera? ÊÔÕÃ ª º ∞";
    let port = [0x0B, 0x84, 0x23, 0xF0];
    let cases = [
        MoText::new("şşşşşşşş").shift(turkish),
        MoText::new(tr.repeat(5))
            .shift(turkish)
            .units_per_part(146)
            .order([2, 0, 1])
            .reference(0x71),
        MoText::new(es).shift(spanish).extra_ie(0x05, port),
        MoText::new(es.repeat(4))
            .shift(spanish)
            .units_per_part(150)
            .concat(Concat::Udh16)
            .order([1, 0])
            .reference(0x7272),
        MoText::new(pt).shift(portuguese),
        MoText::new(pt.repeat(8))
            .shift(portuguese)
            .units_per_part(146)
            .concat(Concat::Sar)
            .order([2, 0, 1])
            .reference(0x73),
        MoText::new("hello, no header shows").extra_ie(0x05, port),
        MoText::new("Жжж😀ок")
            .encoding(Encoding::Ucs2)
            .units_per_part(4)
            .order([1, 0])
            .reference(0x74),
    ];
    for mo in &cases {
        let parts = smsc.deliver_mo_text(&from, &to, mo).unwrap();
        let got = next_mo(&mut events).await;
        assert_eq!(got.message, mo.text(), "{parts} part(s): {mo:?}");
        assert_eq!(got.text_error, "");
        assert!(!got.incomplete, "every part arrived");
        assert_eq!(
            (got.source.as_str(), got.destination.as_str()),
            ("905321234567", SHORT_CODE)
        );
    }

    // Bengali (identifier 4): named, not guessed.
    smsc.deliver_mo_text(&from, &to, &MoText::new("abc").extra_ie(0x25, [4]))
        .unwrap();
    let got = next_mo(&mut events).await;
    assert_eq!(got.message, "");
    assert_eq!(
        got.text_error,
        "national language 4 (bengali) shift tables are not supported"
    );
    assert_eq!(got.undecoded_payload, b"abc");
    assert_eq!(got.data_coding, 0);

    // A set waiting for its last part is held, bounded and shown
    // (METRICS.md `mo_reassembly`); complete, it is gone from there.
    smsc.deliver_mo(&from, &to, 0, 0x40, b"\x05\x00\x03\x55\x02\x01held ", None)
        .unwrap();
    let held = eventually(Duration::from_secs(10), async || {
        memory(&gw.metrics().await, "entries", "mo_reassembly") == 1.0
    })
    .await;
    assert!(held.is_some(), "{}", gw.metrics().await);
    let m = gw.metrics().await;
    assert!(memory(&m, "bytes", "mo_reassembly") >= 5.0);
    assert_eq!(memory(&m, "capacity", "mo_reassembly"), 1024.0);
    smsc.deliver_mo(
        &from,
        &to,
        0,
        0x40,
        b"\x05\x00\x03\x55\x02\x02together",
        None,
    )
    .unwrap();
    assert_eq!(next_mo(&mut events).await.message, "held together");
    assert_eq!(memory(&gw.metrics().await, "entries", "mo_reassembly"), 0.0);
    // Every deliver_sm was answered OK: each MO reached its app (the
    // outbox) before the SMSC was told.
    let c = smsc.counters();
    assert_eq!(c.receipts_refused, 0, "{c:?}");
    cancel.cancel();
}
