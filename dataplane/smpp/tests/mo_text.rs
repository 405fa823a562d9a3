//! Mobile-originated text in national language tables, reassembled and
//! decoded: the simulator sends what a handset sends (given tables, UDH
//! with and without concatenation, SAR, parts out of order) over loopback
//! SMPP, and the link surfaces the exact text.

use std::time::Duration;

use smsgw_smpp::{
    Address, Link, LinkConfig, LinkEvent, MobileOriginated,
    sim::{self, MoText, SimConfig, SimHandle},
};
use smsgw_text::{Concat, Encoding, Language, NationalShift, TextError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

struct Fixture {
    sim: SimHandle,
    _link: Link,
    events: mpsc::Receiver<LinkEvent>,
    cancel: CancellationToken,
    from: Address,
    to: Address,
}

impl Fixture {
    async fn start() -> Fixture {
        let cancel = CancellationToken::new();
        let sim = sim::run(SimConfig::default(), cancel.clone())
            .await
            .expect("simulator starts");
        let (tx, events) = mpsc::channel(1000);
        let link =
            Link::spawn(LinkConfig::test(sim.addr()), tx, cancel.clone()).expect("link spawns");
        assert!(link.wait_bound(WAIT).await, "link binds");
        Fixture {
            sim,
            _link: link,
            events,
            cancel,
            from: Address::new("905321234567", 1, 1),
            to: Address::new("4444", 0, 0),
        }
    }

    /// Sends `mo` and returns what the link surfaces.
    async fn round_trip(&mut self, mo: &MoText) -> MobileOriginated {
        self.sim
            .deliver_mo_text(&self.from, &self.to, mo)
            .expect("simulator sends the parts");
        self.next_mo().await
    }

    async fn next_mo(&mut self) -> MobileOriginated {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Ok(Some(LinkEvent::MobileOriginated(m))) => return m,
                Ok(Some(_)) => continue,
                other => panic!("no mobile-originated message: {other:?}"),
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

const TURKISH: NationalShift = NationalShift {
    locking: Some(Language::Turkish),
    single: Some(Language::Turkish),
};
const SPANISH: NationalShift = NationalShift {
    locking: None,
    single: Some(Language::Spanish),
};
const PORTUGUESE: NationalShift = NationalShift {
    locking: Some(Language::Portuguese),
    single: Some(Language::Portuguese),
};

#[tokio::test]
async fn national_table_mo_arrives_as_the_exact_text() {
    let mut f = Fixture::start().await;
    let turkish = "Şişli'de güzel bir gün geçirdik, ığdır çok uzak: şşşşş İĞ €{}";
    let spanish = "¿Cómo estás, José? Ángel compró café en Cádiz; ¡qué día! Ú Í Ó";
    let portuguese = "Não há açúcar nem café: você está à espera? ÊÔÕÃ ª º ∞ ~";
    let long_tr = turkish.repeat(6);
    let long_es = spanish.repeat(5);
    let long_pt = portuguese.repeat(8);
    let port_ie = (0x05, vec![0x0B, 0x84, 0x23, 0xF0]);
    let cases: Vec<(&str, MoText)> = vec![
        // The example: "şşş…" once arrived as "¥%££ææææ".
        ("turkish, one part", MoText::new(turkish).shift(TURKISH)),
        (
            "turkish locking only, one part, UDH without concatenation",
            MoText::new("şşşşığ İstanbul").shift(NationalShift {
                locking: Some(Language::Turkish),
                single: None,
            }),
        ),
        (
            "turkish, 3 parts out of order",
            MoText::new(long_tr.as_str())
                .shift(TURKISH)
                .units_per_part(146)
                .order([2, 0, 1])
                .reference(0x21),
        ),
        ("spanish, one part", MoText::new(spanish).shift(SPANISH)),
        (
            "spanish, 16-bit reference, reversed",
            MoText::new(long_es.as_str())
                .shift(SPANISH)
                .units_per_part(150)
                .concat(Concat::Udh16)
                .order([2, 1, 0])
                .reference(0x5A5A),
        ),
        (
            "portuguese, one part with an application port element",
            MoText::new(portuguese)
                .shift(PORTUGUESE)
                .extra_ie(port_ie.0, port_ie.1.clone()),
        ),
        (
            "portuguese, SAR TLVs, out of order",
            MoText::new(long_pt.as_str())
                .shift(PORTUGUESE)
                .units_per_part(146)
                .concat(Concat::Sar)
                .order([1, 3, 0, 2])
                .reference(0x0BAD),
        ),
        (
            "default alphabet, UDH holding only a port element",
            MoText::new("plain hello").extra_ie(port_ie.0, port_ie.1.clone()),
        ),
        (
            "default alphabet, an escape pair cut between two parts",
            // 'a' × 4 then € (escape + 0x65): the cut falls after the escape.
            MoText::new("aaaa€bbbb")
                .units_per_part(5)
                .order([1, 0])
                .reference(0x33),
        ),
        (
            "UCS-2, a surrogate pair cut between two parts, out of order",
            MoText::new("Жжж😀ок")
                .encoding(Encoding::Ucs2)
                .units_per_part(4)
                .order([1, 0])
                .reference(0x44),
        ),
        (
            "Latin-1 with a port element",
            MoText::new("Grüße ð þ")
                .encoding(Encoding::Latin1)
                .extra_ie(port_ie.0, port_ie.1.clone()),
        ),
    ];
    for (what, mo) in &cases {
        let got = f.round_trip(mo).await;
        assert_eq!(got.text.as_deref(), Ok(mo.text()), "{what}");
        assert!(got.complete, "{what}");
    }
}

#[tokio::test]
async fn a_national_language_without_tables_is_reported_not_guessed() {
    let mut f = Fixture::start().await;
    // Hindi (identifier 6) locking shift: no tables here.
    let hindi = MoText::new("abc").extra_ie(0x25, [6]);
    let got = f.round_trip(&hindi).await;
    assert_eq!(got.text, Err(TextError::UnsupportedLanguage { id: 6 }));
    assert_eq!(&got.payload[..], b"abc", "the user data, header removed");
    // The same for parts, whatever order they come in.
    let urdu = MoText::new("a".repeat(20))
        .extra_ie(0x24, [13])
        .units_per_part(10)
        .order([1, 0])
        .reference(9);
    let got = f.round_trip(&urdu).await;
    assert_eq!(got.text, Err(TextError::UnsupportedLanguage { id: 13 }));
    assert_eq!(got.parts, 2);
    // A header that runs past the payload is malformed, not text.
    f.sim
        .deliver_mo(&f.from, &f.to, 0, 0x40, &[9, 0x00, 3, 1], None)
        .unwrap();
    let got = f.next_mo().await;
    assert!(
        matches!(got.text, Err(TextError::InvalidUdh { .. })),
        "{:?}",
        got.text
    );
}
