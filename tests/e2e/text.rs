//! CheckTextLen through the real binary (issue 25): over REST and gRPC the
//! same answer, field for field, naming the national tables chosen,
//! counting graphemes and UTF-16 units, giving each part's counts, sizing
//! SAR parts for the SMSC's header unless the link says otherwise, saying
//! when a `message_payload` link leaves the splitting to the SMSC, and
//! taking a pool's most restrictive member.

use crate::harness::{Creds, Gateway};
use serde_json::{Value, json};
use smsgw_proto::sms::v1::{
    CheckTextLenRequest, CheckTextLenResponse, sms_service_client::SmsServiceClient,
};
use smsgw_smpp::sim::{self, SimConfig};
use tokio_util::sync::CancellationToken;

/// A link named `name` to the simulator at `addr` with `encoding`.
fn link(name: &str, addr: std::net::SocketAddr, encoding: &str) -> String {
    format!(
        "apiVersion: smsgw.io/v1alpha1\nkind: SmppLink\nmetadata: {{name: {name}}}\nspec:\n  \
         host: \"{ip}\"\n  port: {port}\n  systemId: smsgw\n  password: secret\n  \
         sessions: 1\n  reconnect: {{initial: 100ms, max: 500ms}}\n  encoding: {encoding}\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// The gRPC answer in the REST answer's JSON form (absent tables as null).
fn as_json(g: &CheckTextLenResponse) -> Value {
    let table = |t: &str| (!t.is_empty()).then(|| t.to_owned());
    json!({
        "encoding": g.encoding,
        "characters": g.characters,
        "units": g.units,
        "segments": g.segments,
        "per_segment": g.per_segment,
        "utf16_units": g.utf16_units,
        "graphemes": g.graphemes,
        "national_locking": table(&g.national_locking),
        "national_single": table(&g.national_single),
        "concatenation": g.concatenation,
        "split_by_smsc": g.split_by_smsc,
        "parts": g.parts.iter().map(|p| json!({
            "characters": p.characters, "graphemes": p.graphemes, "units": p.units,
        })).collect::<Vec<_>>(),
    })
}

/// Asks both APIs; asserts they agree and returns the answer.
async fn check(
    gw: &Gateway,
    grpc: &mut SmsServiceClient<tonic::transport::Channel>,
    creds: &Creds,
    esme: &str,
    message: &str,
) -> Value {
    let rest: Value = gw
        .authed(creds, reqwest::Method::POST, "/api/v1/sms/check-text-len")
        .json(&json!({ "message": message, "esme": esme }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let g = grpc
        .check_text_len(creds.grpc(CheckTextLenRequest {
            message: message.to_owned(),
            esme: esme.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest, as_json(&g), "REST and gRPC differ on {esme}");
    // The parts cover the text.
    let parts = rest["parts"].as_array().unwrap();
    assert_eq!(parts.len() as u64, rest["segments"].as_u64().unwrap());
    let sum = |k: &str| parts.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("units"), rest["units"].as_u64().unwrap());
    assert_eq!(sum("characters"), rest["characters"].as_u64().unwrap());
    rest
}

/// (characters, graphemes, units) of each part.
fn parts(r: &Value) -> Vec<(u64, u64, u64)> {
    r["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap();
            (n("characters"), n("graphemes"), n("units"))
        })
        .collect()
}

#[tokio::test]
async fn check_text_len_names_tables_counts_graphemes_and_parts_alike_over_rest_and_grpc() {
    let cancel = CancellationToken::new();
    let smsc = sim::run(SimConfig::default(), cancel.clone())
        .await
        .expect("simulator starts");
    let a = smsc.addr();
    let config = [
        link("tr", a, "{nationalLanguages: [turkish, portuguese]}"),
        link("payload", a, "{concatenation: messagePayload}"),
        link("sar", a, "{concatenation: sar}"),
        link("sar-full", a, "{concatenation: sar, sarPartSize: full}"),
        link("wide", a, "{concatenation: udh16}"),
        "apiVersion: smsgw.io/v1alpha1\nkind: EsmePool\nmetadata: {name: mixed}\nspec:\n  \
         members: [{link: tr, weight: 1}, {link: payload, weight: 1}, {link: wide, weight: 1}]\n"
            .to_owned(),
    ]
    .join("---\n");
    let gw = Gateway::standalone(&config);
    let creds = gw.user("text-len@example.com").await;
    let mut grpc = SmsServiceClient::new(gw.channel().await);

    // Turkish tables save segments on a Turkish link, and are named.
    let tr = "Şişli'de güzel bir gün geçirdik, ığdır çok uzak. ".repeat(4);
    let r = check(&gw, &mut grpc, &creds, "tr", &tr).await;
    assert_eq!(r["encoding"], "GSM7");
    assert_eq!(r["national_locking"], "turkish");
    assert_eq!(r["concatenation"], "udh8");
    assert_eq!(r["split_by_smsc"], false);
    let per = r["per_segment"].as_u64().unwrap();
    assert!(parts(&r).iter().all(|p| p.2 <= per));
    // A pool of that link with others uses only what all support: no
    // national tables, the 16-bit reference header of `wide`.
    let r = check(&gw, &mut grpc, &creds, "mixed", &tr).await;
    assert_eq!(r["encoding"], "UCS2");
    assert_eq!(r["national_locking"], Value::Null);
    assert_eq!(r["concatenation"], "udh16");
    assert_eq!(r["per_segment"], 66);

    // A ZWJ family (5 scalar values, 8 UTF-16 units, 1 grapheme) that
    // would straddle two parts moves whole into the second.
    let family = "👨\u{200D}👩\u{200D}👧";
    let text = format!("{}{family}{}", "Ж".repeat(62), "Ж".repeat(10));
    let r = check(&gw, &mut grpc, &creds, "wide", &text).await;
    assert_eq!(
        (&r["characters"], &r["utf16_units"], &r["graphemes"]),
        (&json!(77), &json!(80), &json!(73))
    );
    assert_eq!(parts(&r), [(62, 62, 62), (15, 11, 18)]);

    // SAR parts leave room for the header the SMSC adds, unless the link
    // documents otherwise.
    let long = "a".repeat(300);
    let r = check(&gw, &mut grpc, &creds, "sar", &long).await;
    assert_eq!(
        (&r["concatenation"], &r["per_segment"]),
        (&json!("sar"), &json!(153))
    );
    assert_eq!(parts(&r), [(153, 153, 153), (147, 147, 147)]);
    let r = check(&gw, &mut grpc, &creds, "sar-full", &long).await;
    assert_eq!(parts(&r), [(160, 160, 160), (140, 140, 140)]);

    // A message_payload link sends one submit_sm; the answer says the SMSC
    // splits it and estimates how.
    let r = check(&gw, &mut grpc, &creds, "payload", &"a".repeat(200)).await;
    assert_eq!(r["concatenation"], "message_payload");
    assert_eq!(r["split_by_smsc"], true);
    assert_eq!(
        (&r["segments"], &r["per_segment"]),
        (&json!(2), &json!(153))
    );
    cancel.cancel();
}
