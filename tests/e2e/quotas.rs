//! Per-app quotas and prepaid balances through the real binary: the daily
//! quota refuses with 403 `quota_exceeded`, the balance is charged per
//! segment and refuses with 402 `insufficient_balance`, a repeat is not
//! charged twice, `GET /api/v1/account` shows it all, the balance survives
//! a restart, and with Redis two gateways share one quota.

use crate::harness::{ADMIN_KEY, Creds, EXAMPLE_CONFIG, Gateway, Sim, bound, sim_config};
use serde_json::{Value, json};

async fn send(gw: &Gateway, creds: &Creds, message: &str, tx: &str) -> (u16, Value) {
    let r = gw
        .authed(creds, reqwest::Method::POST, "/api/v1/sms/send")
        .json(&json!({"esme": "default", "source": "SMSGW", "destination": "4915100000042", "message": message, "transaction_id": tx}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn account(gw: &Gateway, creds: &Creds) -> Value {
    let r = gw
        .authed(creds, reqwest::Method::GET, "/api/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The status of `GET /api/v1/sms?transaction_id=…` (404: not stored).
async fn stored(gw: &Gateway, creds: &Creds, tx: &str) -> u16 {
    gw.authed(
        creds,
        reqwest::Method::GET,
        &format!("/api/v1/sms?transaction_id={tx}"),
    )
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

async fn admin(gw: &Gateway, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, gw.url(path))
        .header("x-admin-key", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn top_up(gw: &Gateway, app_id: &str, body: Value) -> (u16, Value) {
    admin(
        gw,
        reqwest::Method::POST,
        &format!("/api/v1/admin/apps/{app_id}/balance"),
        body,
    )
    .await
}

/// Two segments in GSM 7-bit (161..=306 characters).
fn two_segments() -> String {
    "a".repeat(200)
}

#[tokio::test]
async fn a_prepaid_app_with_a_daily_quota_is_charged_per_segment_and_refused_with_402_then_403() {
    let sim = Sim::start("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(sim.addr);
    let gw = Gateway::standalone_in(&config, dir.path(), &[]);
    let creds = gw.user("prepaid@example.com").await;
    bound(&gw, &creds).await;

    // No quotas: nothing is counted or shown.
    let a = account(&gw, &creds).await;
    assert_eq!(
        (&a["daily"], &a["monthly"], &a["balance"], &a["prepaid"]),
        (&Value::Null, &Value::Null, &Value::Null, &json!(false)),
        "{a}"
    );

    let (s, u) = admin(
        &gw,
        reqwest::Method::PATCH,
        &format!("/api/v1/admin/users/{}", creds.user_id),
        json!({"daily_quota": 3, "monthly_quota": 100, "prepaid": true}),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (&u["daily_quota"], &u["prepaid"]),
        (&json!(3), &json!(true))
    );

    // Refused input: a zero or negative top-up, an unknown app.
    let (s, v) = top_up(&gw, &creds.app_id, json!({"add": 0})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    assert_eq!(v["error"]["field"], "add");
    let (s, v) = top_up(&gw, &creds.app_id, json!({"add": -5})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = top_up(&gw, "app-nobody", json!({"add": 5})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );

    // Prepaid with nothing on the balance: 402, nothing stored.
    let (s, v) = send(&gw, &creds, "hello", "p-0").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (402, Some("insufficient_balance")),
        "{v}"
    );
    assert_eq!(stored(&gw, &creds, "p-0").await, 404);

    // A top-up with an id is applied once.
    let (s, v) = top_up(&gw, &creds.app_id, json!({"add": 4, "top_up_id": "inv-1"})).await;
    assert_eq!(
        (s, &v["balance"], &v["applied"]),
        (200, &json!(4), &json!(true)),
        "{v}"
    );
    let (s, v) = top_up(&gw, &creds.app_id, json!({"add": 4, "top_up_id": "inv-1"})).await;
    assert_eq!(
        (s, &v["balance"], &v["applied"]),
        (200, &json!(4), &json!(false)),
        "{v}"
    );

    // 1 segment, then 2: balance 4 → 1.
    let (s, v) = send(&gw, &creds, "hello", "p-1").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&gw, &creds, &two_segments(), "p-2").await;
    assert_eq!(s, 200, "{v}");
    // A repeat of p-1 is answered as a duplicate and charged nothing.
    let (s, v) = send(&gw, &creds, "hello", "p-1").await;
    assert_eq!((s, &v["duplicate"]), (200, &json!(true)), "{v}");
    let a = account(&gw, &creds).await;
    assert_eq!(a["balance"], 1, "{a}");
    assert_eq!(
        (
            &a["daily"]["used"],
            &a["daily"]["remaining"],
            &a["daily"]["limit"]
        ),
        (&json!(2), &json!(1), &json!(3)),
        "{a}"
    );
    assert_eq!(a["monthly"]["used"], 2, "{a}");
    assert!(
        a["daily"]["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z"),
        "{a}"
    );

    // Two segments on a balance of one: 402, nothing stored or counted.
    let (s, v) = send(&gw, &creds, &two_segments(), "p-3").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (402, Some("insufficient_balance")),
        "{v}"
    );
    assert_eq!(stored(&gw, &creds, "p-3").await, 404);
    // One segment fits and uses the day's last message.
    let (s, v) = send(&gw, &creds, "last one", "p-4").await;
    assert_eq!(s, 200, "{v}");
    // Over the daily quota: 403 saying which period and when it resets.
    let (s, v) = send(&gw, &creds, "one too many", "p-5").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("quota_exceeded")),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("daily") && msg.contains("resets at"), "{msg}");
    assert_eq!(stored(&gw, &creds, "p-5").await, 404);
    let a = account(&gw, &creds).await;
    assert_eq!(
        (&a["balance"], &a["daily"]["used"]),
        (&json!(0), &json!(3)),
        "{a}"
    );
    // Admins see the same account.
    let by_admin = gw
        .admin_get(&format!("/api/v1/admin/apps/{}/balance", creds.app_id))
        .await;
    assert_eq!(by_admin, a);

    // The balance and counts survive a restart (embedded store).
    assert!(
        tokio::task::spawn_blocking(move || gw.terminate())
            .await
            .unwrap()
            .success()
    );
    let gw = Gateway::standalone_in(&config, dir.path(), &[]);
    let creds = gw.login_again(&creds, "prepaid@example.com").await;
    let a = account(&gw, &creds).await;
    assert_eq!(
        (&a["balance"], &a["daily"]["used"], &a["monthly"]["used"]),
        (&json!(0), &json!(3), &json!(3)),
        "{a}"
    );
    let (s, v) = top_up(&gw, &creds.app_id, json!({"add": 10})).await;
    assert_eq!((s, &v["balance"]), (200, &json!(10)), "{v}");
    // The repeated id is still known after the restart.
    let (_, v) = top_up(&gw, &creds.app_id, json!({"add": 4, "top_up_id": "inv-1"})).await;
    assert_eq!(
        (&v["balance"], &v["applied"]),
        (&json!(4), &json!(false)),
        "{v}"
    );
}

#[tokio::test]
async fn the_account_is_an_apps_and_the_admin_key_is_refused() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let r = reqwest::Client::new()
        .get(gw.url("/api/v1/account"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
}

#[tokio::test]
async fn with_redis_two_gateways_share_one_daily_quota_of_a_managed_user() {
    let redis = smsgw_store::testing::RedisServer::start();
    let url = redis.url();
    let sim = Sim::start("127.0.0.1:0");
    let config = format!(
        "{}---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {{name: quota}}\nspec: {{email: quota@example.com, appName: quota, password: 'managed pw 12', quotas: {{daily: 3}}}}\n",
        sim_config(sim.addr)
    );
    let args = ["--store", "redis", "--redis-url", url.as_str()];
    let a = Gateway::standalone_with_args(&config, &args);
    let b = Gateway::standalone_with_args(&config, &args);
    let login = async |gw: &Gateway| {
        let creds = gw.managed_user("quota@example.com", "managed pw 12").await;
        let u = gw
            .admin_get(&format!("/api/v1/admin/users/{}", creds.user_id))
            .await;
        assert_eq!(u["daily_quota"], 3, "{u}");
        creds
    };
    let (on_a, on_b) = (login(&a).await, login(&b).await);
    assert_eq!(on_a.app_id, on_b.app_id);
    bound(&a, &on_a).await;
    bound(&b, &on_b).await;

    assert_eq!(send(&a, &on_a, "one", "r-1").await.0, 200);
    assert_eq!(send(&b, &on_b, "two", "r-2").await.0, 200);
    // A repeat through the other gateway counts nothing.
    let (s, v) = send(&b, &on_b, "one", "r-1").await;
    assert_eq!((s, &v["duplicate"]), (200, &json!(true)), "{v}");
    assert_eq!(send(&a, &on_a, "three", "r-3").await.0, 200);
    for (gw, creds, tx) in [(&a, &on_a, "r-4"), (&b, &on_b, "r-5")] {
        let (s, v) = send(gw, creds, "four", tx).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("quota_exceeded")),
            "{v}"
        );
        assert_eq!(stored(gw, creds, tx).await, 404);
    }
    for (gw, creds) in [(&a, &on_a), (&b, &on_b)] {
        let acc = account(gw, creds).await;
        assert_eq!(
            (&acc["daily"]["used"], &acc["daily"]["remaining"]),
            (&json!(3), &json!(0)),
            "{acc}"
        );
        assert_eq!(acc["monthly"], Value::Null, "{acc}");
    }
}

#[tokio::test]
async fn admins_set_quotas_and_top_up_over_grpc_too() {
    use smsgw_proto::admin::v1::{
        TopUpBalanceRequest, UpdateUserRequest, admin_service_client::AdminServiceClient,
    };
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let creds = gw.user("grpc-quota@example.com").await;
    let mut admin = AdminServiceClient::new(gw.channel().await);
    fn keyed<T>(msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert("x-admin-key", ADMIN_KEY.parse().unwrap());
        req
    }
    let u = admin
        .update_user(keyed(UpdateUserRequest {
            user_id: creds.user_id.clone(),
            daily_quota: Some(5),
            prepaid: Some(true),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.daily_quota, u.monthly_quota, u.prepaid), (5, 0, true));
    let topped = |add, id: &str| TopUpBalanceRequest {
        app_id: creds.app_id.clone(),
        add,
        top_up_id: id.into(),
    };
    let r = admin
        .top_up_balance(keyed(topped(7, "g-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.balance, r.applied), (7, true));
    let r = admin
        .top_up_balance(keyed(topped(7, "g-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.balance, r.applied), (7, false));
    let e = admin
        .top_up_balance(keyed(topped(0, "")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let a = account(&gw, &creds).await;
    assert_eq!(
        (&a["balance"], &a["daily"]["limit"]),
        (&json!(7), &json!(5)),
        "{a}"
    );
}
