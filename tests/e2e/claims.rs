//! MO for every app (issue 18): an app registered through the API claims
//! a short code (REST) and a keyword on it (gRPC), an admin approves, and
//! the in-repo simulator's MO to the short code reaches the app's webhook,
//! its WatchEvents stream and `GET /api/v1/events`; nothing reaches it
//! before the approval; addresses a managed User or another app holds,
//! and malformed ones, are refused with their own codes.

use crate::harness::{ADMIN_KEY, Creds, Gateway, Receiver, bound, cli, eventually, sim_config};
use crate::mo::{next_mo, watch};
use reqwest::Method;
use serde_json::{Value, json};
use smsgw_proto::admin::v1::{AddressClaimRequest, admin_service_client::AdminServiceClient};
use smsgw_proto::sms::v1::{
    ClaimAddressRequest, ListAddressClaimsRequest, sms_service_client::SmsServiceClient,
};
use smsgw_smpp::Address;
use smsgw_smpp::sim::{self, MoText, SimConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The managed user's short code, from the configuration.
const MANAGED: &str = "5555";
/// The short code the API-registered app claims.
const SHORT_CODE: &str = "4444";

async fn claim(gw: &Gateway, creds: &Creds, body: Value) -> (u16, Value) {
    let r = gw
        .authed(creds, Method::POST, "/api/v1/settings/addresses")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn pulled_mo(gw: &Gateway, creds: &Creds) -> Vec<String> {
    let page: Value = gw
        .authed(creds, Method::GET, "/api/v1/events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "mobile_originated")
        .map(|e| e["event"]["message"].as_str().unwrap().to_owned())
        .collect()
}

fn hook_mo(hook: &Receiver) -> Vec<String> {
    hook.accepted()
        .iter()
        .filter(|e| e["type"] == "mobile_originated")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_app_registered_through_the_api_claims_a_short_code_and_receives_its_mo() {
    let cancel = CancellationToken::new();
    let smsc = sim::run(SimConfig::default(), cancel.clone())
        .await
        .expect("simulator starts");
    let config = format!(
        "{}---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {{name: shop}}\n\
         spec: {{email: shop@example.com, appName: shop, password: 'managed pw 12', \
         sourceAddresses: ['{MANAGED}']}}\n",
        sim_config(smsc.addr())
    );
    let gw = Gateway::standalone_with_args(&config, &["--webhook-allow-private"]);
    let a = gw.user("claimer@example.com").await;
    let b = gw.user("other@example.com").await;
    bound(&gw, &a).await;
    let hook = Receiver::start(true).await;
    let r = gw
        .authed(&a, Method::PUT, "/api/v1/settings/webhook")
        .json(&json!({"url": hook.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Refusals, each with its own code.
    for (body, status, code) in [
        (json!({"address": MANAGED}), 409, "address_managed"),
        (
            json!({"address": MANAGED, "keyword": "win"}),
            409,
            "address_managed",
        ),
        (json!({"address": "12"}), 400, "invalid_address"),
        (json!({"address": "ACME"}), 400, "invalid_address"),
        (
            json!({"address": SHORT_CODE, "keyword": "two words"}),
            400,
            "invalid_keyword",
        ),
        (json!({}), 400, "invalid_argument"),
    ] {
        let (s, v) = claim(&gw, &a, body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }

    let (s, v) = claim(&gw, &a, json!({"address": SHORT_CODE})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (
            v["claim_id"].as_str(),
            v["status"].as_str(),
            v["kind"].as_str()
        ),
        (Some(SHORT_CODE), Some("pending"), Some("short_code"))
    );
    let (s, v) = claim(&gw, &b, json!({"address": SHORT_CODE})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("address_taken")),
        "{v}"
    );
    let (s, v) = claim(&gw, &a, json!({"address": SHORT_CODE})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("already_claimed")),
        "{v}"
    );

    // The other app claims a keyword on it over gRPC.
    let mut sms_b = SmsServiceClient::new(gw.channel().await);
    let kw = sms_b
        .claim_address(b.grpc(ClaimAddressRequest {
            address: SHORT_CODE.into(),
            keyword: "stop".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (kw.claim_id.as_str(), kw.status.as_str()),
        ("4444:STOP", "pending")
    );
    let taken = sms_b
        .claim_address(b.grpc(ClaimAddressRequest {
            address: MANAGED.into(),
            keyword: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);

    let mut events = watch(&gw, &a).await;

    // Before the approval nothing reaches the app.
    let from = Address::new("905321234567", 1, 1);
    let to = Address::new(SHORT_CODE, 0, 0);
    smsc.deliver_mo_text(&from, &to, &MoText::new("before approval"))
        .unwrap();
    let dropped = eventually(Duration::from_secs(20), async || {
        gw.logs()
            .contains("mobile-originated message to an address no app owns")
    })
    .await;
    assert!(dropped.is_some(), "the gateway never handled the first MO");

    let pending = gw.admin_get("/api/v1/admin/addresses?status=pending").await;
    let ids: Vec<&str> = pending["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["claim_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [SHORT_CODE, "4444:STOP"], "{pending}");
    let r = reqwest::Client::new()
        .post(gw.url(&format!("/api/v1/admin/addresses/{SHORT_CODE}/approve")))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let approved: Value = r.json().await.unwrap();
    assert_eq!(approved["status"], "approved", "{approved}");
    let mut admin = AdminServiceClient::new(gw.channel().await);
    let mut req = tonic::Request::new(AddressClaimRequest {
        claim_id: "4444:STOP".into(),
    });
    req.metadata_mut()
        .insert("x-admin-key", ADMIN_KEY.parse().unwrap());
    let kw = admin.approve_address_claim(req).await.unwrap().into_inner();
    assert_eq!(kw.status, "approved");

    smsc.deliver_mo_text(&from, &to, &MoText::new("after approval"))
        .unwrap();
    smsc.deliver_mo_text(&from, &to, &MoText::new("STOP please"))
        .unwrap();
    assert_eq!(
        next_mo(&mut events).await.message,
        "after approval",
        "the stream"
    );
    let got = eventually(Duration::from_secs(20), async || {
        hook_mo(&hook) == ["after approval"]
    })
    .await;
    assert!(got.is_some(), "the webhook got {:?}", hook_mo(&hook));
    assert_eq!(pulled_mo(&gw, &a).await, ["after approval"], "events pull");
    let got = eventually(Duration::from_secs(10), async || {
        pulled_mo(&gw, &b).await == ["STOP please"]
    })
    .await;
    assert!(
        got.is_some(),
        "the keyword's app got {:?}",
        pulled_mo(&gw, &b).await
    );
    let own = sms_b
        .list_address_claims(b.grpc(ListAddressClaimsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.claims.len(), 1);
    assert_eq!(own.claims[0].status, "approved");

    // Released, the short code is free for another app.
    let r = gw
        .authed(
            &a,
            Method::DELETE,
            &format!("/api/v1/settings/addresses/{SHORT_CODE}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let listed: Value = gw
        .authed(&a, Method::GET, "/api/v1/settings/addresses")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["claims"], json!([]));
    let (s, v) = claim(&gw, &b, json!({"address": SHORT_CODE})).await;
    assert_eq!(s, 201, "{v}");
    cancel.cancel();
}

#[tokio::test]
async fn with_redis_a_claim_is_unique_across_gateways_and_the_mo_reaches_the_app_from_any() {
    let redis = smsgw_store::testing::RedisServer::start();
    let url = redis.url();
    let cancel = CancellationToken::new();
    // Only b's link is to the simulator that sends the MO; a's simulator
    // stays quiet, so the MO arrives on b.
    let smsc = sim::run(SimConfig::default(), cancel.clone())
        .await
        .expect("simulator starts");
    let quiet = sim::run(SimConfig::default(), cancel.clone())
        .await
        .expect("simulator starts");
    let args = ["--store", "redis", "--redis-url", url.as_str()];
    let a = Gateway::standalone_with_args(&sim_config(quiet.addr()), &args);
    let b = Gateway::standalone_with_args(&sim_config(smsc.addr()), &args);
    let on_a = a.user("claimer@example.com").await;
    let on_b = b.user("rival@example.com").await;
    bound(&b, &on_b).await;

    // Of two apps claiming one short code on two gateways at once, one
    // gets it.
    let (ra, rb) = tokio::join!(
        claim(&a, &on_a, json!({"address": SHORT_CODE})),
        claim(&b, &on_b, json!({"address": SHORT_CODE})),
    );
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{ra:?} {rb:?}");
    let (winner_gw, winner) = if ra.0 == 201 {
        (&a, &on_a)
    } else {
        (&b, &on_b)
    };
    let loser = if ra.0 == 201 { &rb.1 } else { &ra.1 };
    assert_eq!(loser["error"]["code"], "address_taken", "{loser}");

    // Approved on a; b has never looked the claim up, so it routes at once.
    let r = reqwest::Client::new()
        .post(a.url(&format!("/api/v1/admin/addresses/{SHORT_CODE}/approve")))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    smsc.deliver_mo_text(
        &Address::new("905321234567", 1, 1),
        &Address::new(SHORT_CODE, 0, 0),
        &MoText::new("to whichever pod"),
    )
    .unwrap();
    let got = eventually(Duration::from_secs(20), async || {
        pulled_mo(winner_gw, winner).await == ["to whichever pod"]
    })
    .await;
    assert!(
        got.is_some(),
        "the winner got {:?}",
        pulled_mo(winner_gw, winner).await
    );
    assert!(
        b.logs()
            .contains("mobile-originated message delivered to its app"),
        "the MO came in on b"
    );
    cancel.cancel();
}

#[tokio::test]
async fn the_cli_claims_lists_approves_and_releases_addresses() {
    let sim = crate::harness::Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("cli-claims@example.com").await;
    let admin = [("ADMIN_API_KEY", ADMIN_KEY)];
    let token = [
        ("SMSGW_TOKEN", creds.token.as_str()),
        ("SMSGW_APP_ID", creds.app_id.as_str()),
    ];
    let claimed = cli(
        &gw,
        &[
            "addresses",
            "claim",
            "+44 7700 900123",
            "--keyword",
            "win",
            "-o",
            "json",
        ],
        &token,
    )
    .json();
    assert_eq!(claimed["claim_id"], "447700900123:WIN", "{claimed}");
    assert_eq!(claimed["status"], "pending");
    let again = cli(
        &gw,
        &["addresses", "claim", "447700900123", "--keyword", "WIN"],
        &token,
    );
    assert!(!again.status.success());
    assert!(
        again.stderr.contains("AlreadyExists (6)") && again.stderr.contains("already claimed"),
        "{}",
        again.stderr
    );
    let pending = cli(&gw, &["addresses", "list", "--status", "pending"], &admin);
    assert!(pending.status.success(), "{}", pending.stderr);
    let row = pending
        .stdout
        .lines()
        .find(|l| l.starts_with("447700900123:WIN"))
        .unwrap_or_else(|| panic!("{}", pending.stdout));
    assert!(
        row.contains(&creds.app_id) && row.contains("pending"),
        "{row}"
    );
    let approved = cli(
        &gw,
        &["addresses", "approve", "447700900123:WIN", "-o", "json"],
        &admin,
    )
    .json();
    assert_eq!(approved["status"], "approved", "{approved}");
    let own = cli(&gw, &["addresses", "list", "-o", "json"], &token).json();
    assert_eq!(own[0]["status"], "approved", "{own}");
    let denied = cli(&gw, &["addresses", "approve", "447700900123:WIN"], &token);
    assert!(
        denied.stderr.contains("PermissionDenied (7)"),
        "{}",
        denied.stderr
    );
    let released = cli(&gw, &["addresses", "release", "447700900123:WIN"], &token);
    assert!(released.status.success(), "{}", released.stderr);
    let none = cli(&gw, &["addresses", "list", "-o", "json"], &admin).json();
    assert_eq!(none, json!([]));
    let gone = cli(&gw, &["addresses", "reject", "447700900123:WIN"], &admin);
    assert!(gone.stderr.contains("NotFound (5)"), "{}", gone.stderr);
}
