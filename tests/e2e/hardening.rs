//! The auth surface under attack (issue 20), through the real binary:
//! guessing bursts, memory under hashing load, registration, lockout
//! abuse, revocation, tenant data on `/metrics`, token timing, file
//! modes, gRPC limits, headers, and webhook SSRF.

use crate::harness::{
    ADMIN_KEY, Creds, EXAMPLE_CONFIG, Gateway, Sim, bound, eventually, run_to_end, sim_config,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A REST client whose connections come from `from` (any 127/8 address
/// reaches the gateway on loopback, so tests can be several clients).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(http: &reqwest::Client, gw: &Gateway, email: &str, password: &str) -> StatusCode {
    http.post(gw.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

/// `Vm…` field of /proc/<pid>/status in KiB.
fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test]
async fn a_parallel_burst_of_wrong_passwords_is_throttled_before_hashing() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let user = gw.user("burst@example.com").await;
    let http = client_from("127.0.0.1");
    let answers = futures::future::join_all((0..32).map(|i| {
        let http = http.clone();
        let url = gw.url("/api/v1/auth/login");
        async move {
            let r = http
                .post(url)
                .json(
                    &json!({"email": "burst@example.com", "password": format!("wrong guess {i}")}),
                )
                .send()
                .await
                .unwrap();
            (r.status(), r.headers().contains_key("retry-after"))
        }
    }))
    .await;
    let unauthorized = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        unauthorized <= 5,
        "only the 5 free attempts may reach the hash: {answers:?}"
    );
    assert_eq!(unauthorized + throttled.len(), 32, "{answers:?}");
    assert!(
        throttled.iter().all(|(_, retry)| *retry),
        "429 without Retry-After"
    );

    // Not a lockout of the owner: the same account from another address
    // logs in at once.
    let owner = client_from("127.0.0.2");
    assert_eq!(
        login(&owner, &gw, "burst@example.com", "e2e password 123").await,
        StatusCode::OK
    );
    // Failed attempts and the throttling are logged, the passwords not.
    let logs = gw.logs();
    assert!(logs.contains("authentication failed"), "{logs}");
    assert!(logs.contains("authentication throttled"), "{logs}");
    assert!(!logs.contains("wrong guess"), "a password reached the logs");
    drop(user);
}

#[tokio::test]
async fn concurrent_hashing_is_bounded_so_memory_stays_bounded() {
    // A registration hashes two secrets (~19 MiB each); 64 at once were
    // ~2.4 GiB of argon2 memory before hashing was bounded.
    let gw = Gateway::standalone_with_args(
        EXAMPLE_CONFIG,
        &[
            "--max-concurrent-hashes",
            "2",
            "--registrations-per-address",
            "1000",
        ],
    );
    // Warm up (the first hashes allocate the allocator's arenas).
    gw.user("warm@example.com").await;
    let before = vm_kib(gw.pid(), "VmRSS:");
    let answers = futures::future::join_all((0..64).map(|i| {
        let url = gw.url("/api/v1/auth/register");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"email": format!("mem{i}@example.com"), "password": "long enough pw", "app_name": "m"}))
                .send()
                .await
                .unwrap();
            (r.status(), r.headers().contains_key("retry-after"))
        }
    }))
    .await;
    let peak = vm_kib(gw.pid(), "VmHWM:");
    let grew_mib = peak.saturating_sub(before) / 1024;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let busy: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    eprintln!(
        "64 parallel registrations: {created} created, {} busy, peak RSS +{grew_mib} MiB",
        busy.len()
    );
    assert!(created >= 1, "{answers:?}");
    assert_eq!(created + busy.len(), 64, "{answers:?}");
    assert!(
        !busy.is_empty(),
        "the hashing queue never filled: {answers:?}"
    );
    assert!(busy.iter().all(|(_, r)| *r), "429 without Retry-After");
    // 2 hashes × 19 MiB at a time plus the gateway's own growth under 64
    // connections; unbounded it was 64 × 2 × 19 MiB.
    assert!(grew_mib < 160, "peak RSS grew by {grew_mib} MiB");
}

#[tokio::test]
async fn registration_has_a_per_address_budget_and_does_not_name_a_taken_email() {
    let gw = Gateway::standalone_with_args(EXAMPLE_CONFIG, &["--registrations-per-address", "3"]);
    let register = async |http: &reqwest::Client, email: &str| {
        let r = http
            .post(gw.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": "long enough pw", "app_name": "r"}))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    let a = client_from("127.0.0.1");
    for i in 0..3 {
        assert_eq!(
            register(&a, &format!("r{i}@example.com")).await.0,
            StatusCode::CREATED
        );
    }
    let (status, body) = register(&a, "r3@example.com").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Another address has its own budget; a taken email is not named.
    let b = client_from("127.0.0.2");
    let (status, body) = register(&b, "r0@example.com").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        !body.contains("r0@example.com"),
        "the answer names the email: {body}"
    );

    // Open registration off: 403 on REST and gRPC.
    let closed = Gateway::standalone_with_args(EXAMPLE_CONFIG, &["--open-registration", "false"]);
    let r = reqwest::Client::new()
        .post(closed.url("/api/v1/auth/register"))
        .json(&json!({"email": "x@example.com", "password": "long enough pw", "app_name": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut grpc =
        smsgw_proto::auth::v1::auth_service_client::AuthServiceClient::new(closed.channel().await);
    let e = grpc
        .register(smsgw_proto::auth::v1::RegisterRequest {
            email: "y@example.com".into(),
            password: "long enough pw".into(),
            app_name: "r".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let gw = Gateway::standalone_with_args(EXAMPLE_CONFIG, &["--trusted-proxies", "127.0.0.3"]);
    gw.user("proxied@example.com").await;
    // Through the trusted proxy, each forwarded client has its own
    // bucket: of 8 parallel guesses from one, 5 reach the hash.
    let proxy = client_from("127.0.0.3");
    assert_eq!(guesses(&gw, &proxy, |_| "203.0.113.1".into()).await, (5, 3));
    assert_eq!(guesses(&gw, &proxy, |_| "203.0.113.2".into()).await, (5, 3));
    // From an untrusted peer the header is ignored: changing it does not
    // buy new attempts.
    let direct = client_from("127.0.0.4");
    assert_eq!(
        guesses(&gw, &direct, |i| format!("198.51.100.{i}")).await,
        (5, 3)
    );
}

#[tokio::test]
async fn guessing_an_app_secret_does_not_lock_the_machine_client_out_of_auth_token() {
    // App ids are visible; before, five wrong secrets from anyone locked
    // the app out of `/auth/token` for 15 minutes.
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let app = gw.user("machine@example.com").await;
    let attacker = client_from("127.0.0.8");
    let answers = futures::future::join_all((0..12).map(|i| {
        attacker
            .post(gw.url("/api/v1/auth/token"))
            .json(&json!({"app_id": app.app_id, "app_secret": format!("guess {i}")}))
            .send()
    }))
    .await;
    let status: Vec<_> = answers.into_iter().map(|r| r.unwrap().status()).collect();
    let throttled = status
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(throttled >= 7, "the guesses were not throttled: {status:?}");
    assert!(
        status
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    // The real client, from its own address, gets its token at once.
    let r = client_from("127.0.0.9")
        .post(gw.url("/api/v1/auth/token"))
        .json(&json!({"app_id": app.app_id, "app_secret": app.app_secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// 8 parallel wrong logins with `X-Forwarded-For: xff(i)`: how many got
/// 401 and how many 429.
async fn guesses(
    gw: &Gateway,
    http: &reqwest::Client,
    xff: impl Fn(usize) -> String,
) -> (usize, usize) {
    let answers = futures::future::join_all((0..8).map(|i| {
        http.post(gw.url("/api/v1/auth/login"))
            .header("x-forwarded-for", xff(i))
            .json(&json!({"email": "proxied@example.com", "password": "not it at all"}))
            .send()
    }))
    .await;
    let status: Vec<_> = answers.into_iter().map(|r| r.unwrap().status()).collect();
    (
        status
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        status
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
    )
}

/// Every user route answers 401 for `creds` (REST and gRPC).
async fn refused_everywhere(gw: &Gateway, creds: &Creds) -> bool {
    for (method, path) in [
        (Method::GET, "/api/v1/smpp/links"),
        (Method::GET, "/api/v1/sms?transaction_id=x"),
        (Method::GET, "/dashboard/stats"),
        (Method::PUT, "/api/v1/settings/webhook"),
    ] {
        let r = gw
            .authed(creds, method, path)
            .json(&json!({"url": null}))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::UNAUTHORIZED {
            return false;
        }
    }
    let mut sms =
        smsgw_proto::sms::v1::sms_service_client::SmsServiceClient::new(gw.channel().await);
    let r = sms
        .check_esme(creds.grpc(smsgw_proto::sms::v1::CheckEsmeRequest {
            esme: String::new(),
        }))
        .await;
    matches!(r, Err(s) if s.code() == tonic::Code::Unauthenticated)
}

#[tokio::test]
async fn deleted_users_and_reset_secrets_end_tokens_on_every_pod_within_5_s() {
    let redis = smsgw_store::testing::RedisServer::start();
    let url = redis.url();
    let keys = "k1=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let env = [("ADMIN_API_KEY", ADMIN_KEY), ("SMSGW_JWT_KEYS", keys)];
    let args = ["--redis-url", url.as_str()];
    let a = Gateway::spawn(EXAMPLE_CONFIG, &env, &args);
    let b = Gateway::spawn(EXAMPLE_CONFIG, &env, &args);
    let doomed = a.user("doomed@example.com").await;
    let reset = a.user("reset@example.com").await;
    for gw in [&a, &b] {
        for c in [&doomed, &reset] {
            let r = gw
                .authed(c, Method::GET, "/api/v1/smpp/links")
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "the token works on both pods first"
            );
        }
    }
    let admin = reqwest::Client::new();
    let r = admin
        .delete(a.url(&format!("/api/v1/admin/users/{}", doomed.user_id)))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = admin
        .post(a.url(&format!(
            "/api/v1/admin/users/{}/reset-secret",
            reset.user_id
        )))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let changed = Instant::now();
    for gw in [&a, &b] {
        for c in [&doomed, &reset] {
            let took = eventually(Duration::from_secs(6), async || {
                refused_everywhere(gw, c).await
            })
            .await;
            assert!(took.is_some(), "a revoked token still works on a pod");
            assert!(changed.elapsed() <= Duration::from_secs(6));
        }
    }
    assert!(
        changed.elapsed() < Duration::from_secs(6),
        "took {:?}",
        changed.elapsed()
    );
}

#[test]
fn a_token_lifetime_beyond_24_hours_is_refused() {
    let (status, stderr) = run_to_end(&["standalone", "--config", "x.yaml", "--token-ttl", "48h"]);
    assert!(!status.success());
    assert!(
        stderr.contains("--token-ttl") && stderr.contains("24h"),
        "{stderr}"
    );
}

#[tokio::test]
async fn metrics_list_no_app_ids_unless_asked_to() {
    let sim = Sim::start("127.0.0.1:0");
    for (args, shown) in [(&[][..], false), (&["--metrics-per-app"][..], true)] {
        let gw = Gateway::standalone_with_args(&sim_config(sim.addr), args);
        let creds = gw.user("tenant@example.com").await;
        bound(&gw, &creds).await;
        let r = gw
            .authed(&creds, Method::POST, "/api/v1/sms/send")
            .json(&json!({"esme": "sim-link", "source": "SMSGW", "destination": "4915100000010", "message": "m"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let ok = eventually(Duration::from_secs(10), async || {
            let text = reqwest::get(gw.url("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.contains(r#"smsgw_messages_submitted_total{scope="link",name="sim-link"} 1"#)
        })
        .await;
        assert!(ok.is_some(), "the send was never counted");
        let text = reqwest::get(gw.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(text.contains(&creds.app_id), shown, "{text}");
    }
}

#[tokio::test]
async fn auth_token_takes_as_long_for_an_unknown_app_id() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let creds = gw.user("timing@example.com").await;
    let time = async |app_id: &str, from: &str| {
        let http = client_from(from);
        let start = Instant::now();
        let r = http
            .post(gw.url("/api/v1/auth/token"))
            .json(&json!({"app_id": app_id, "app_secret": "wrong secret"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        start.elapsed()
    };
    // Warm up the decoy hash.
    time("app_warmup", "127.0.0.5").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    // 4 pairs (the account's free failures are 5). The fastest of each:
    // a loaded machine only ever adds time to a call, so the minimum is
    // the hash's own cost.
    for i in 0..4 {
        known.push(time(&creds.app_id, "127.0.0.6").await);
        unknown.push(time(&format!("app_nope{i}"), "127.0.0.7").await);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[0], unknown[0]);
    eprintln!("/auth/token fastest: known app {k:?}, unknown app {u:?}");
    assert!(u * 2 >= k, "unknown app ids answer faster: {u:?} vs {k:?}");
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A file an older version left world-readable.
    std::fs::write(data.join("old.txt"), "x").unwrap();
    std::fs::set_permissions(data.join("old.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let gw = Gateway::standalone_in(EXAMPLE_CONFIG, &data, &[]);
    let creds = gw.user("modes@example.com").await;
    // A webhook is stored without its secret.
    let set: Value = gw
        .authed(&creds, Method::PUT, "/api/v1/settings/webhook")
        .json(&json!({"url": "https://hooks.example.com/x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = set["secret"].as_str().unwrap().to_owned();
    let status = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert!(status.success());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data dir");
    let mut files = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
        files += 1;
    }
    for f in ["users.redb", "messages.redb", "jwt.key", "old.txt"] {
        assert!(data.join(f).exists(), "{f} missing");
    }
    assert!(files >= 4);
    let users = std::fs::read(data.join("users.redb")).unwrap();
    assert!(
        !users.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the webhook secret is stored in clear"
    );
}

#[tokio::test]
async fn oversized_unauthenticated_grpc_calls_are_refused_and_streams_per_user_bounded() {
    let gw = Gateway::standalone_with_args(EXAMPLE_CONFIG, &["--max-streams-per-user", "3"]);
    let big = "x".repeat(1 << 20);
    let mut auth =
        smsgw_proto::auth::v1::auth_service_client::AuthServiceClient::new(gw.channel().await);
    let e = auth
        .login(smsgw_proto::auth::v1::LoginRequest {
            email: big.clone(),
            password: "p".into(),
            app_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );
    let mut admin =
        smsgw_proto::admin::v1::admin_service_client::AdminServiceClient::new(gw.channel().await);
    let e = admin
        .get_user(smsgw_proto::admin::v1::GetUserRequest { user_id: big })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );
    // A small unauthenticated call still works.
    let e = auth
        .login(smsgw_proto::auth::v1::LoginRequest {
            email: "nobody@example.com".into(),
            password: "p".into(),
            app_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    let creds = gw.user("streams@example.com").await;
    let mut sms =
        smsgw_proto::sms::v1::sms_service_client::SmsServiceClient::new(gw.channel().await);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            sms.watch_events(creds.grpc(smsgw_proto::sms::v1::WatchEventsRequest::default()))
                .await
                .expect("a stream within the bound"),
        );
    }
    let e = sms
        .watch_events(creds.grpc(smsgw_proto::sms::v1::WatchEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // Closing one frees its slot.
    drop(open.pop());
    let ok = eventually(Duration::from_secs(5), async || {
        sms.watch_events(creds.grpc(smsgw_proto::sms::v1::WatchEventsRequest::default()))
            .await
            .is_ok()
    })
    .await;
    assert!(ok.is_some(), "a closed stream's slot was not freed");
}

#[tokio::test]
async fn rest_answers_carry_security_headers_and_auth_takes_only_json() {
    let gw = Gateway::standalone_with_args(
        EXAMPLE_CONFIG,
        &["--admin-api-key", "cli-given-admin-key-123"],
    );
    let http = reqwest::Client::new();
    let r = http.get(gw.url("/healthy")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = http
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"email": "a@example.com", "password": "whatever pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = http.get(gw.url("/docs")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"integrity="sha384-"#), "{page}");
    for (ct, body) in [
        (
            "text/plain",
            r#"{"email":"a@example.com","password":"whatever pw"}"#,
        ),
        (
            "application/x-www-form-urlencoded",
            "email=a%40example.com&password=x",
        ),
    ] {
        let r = http
            .post(gw.url("/api/v1/auth/login"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
    }
    let logs = gw.logs();
    assert!(
        logs.contains("--admin-api-key"),
        "no warning about the key on the command line"
    );
    assert!(
        !logs.contains("cli-given-admin-key-123"),
        "the admin key reached the logs"
    );
}

/// A local webhook receiver: the bodies it got, and its URL.
async fn receiver(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::net::SocketAddr,
) {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let (seen, answer) = (s2.clone(), answer.clone());
            async move {
                seen.lock().unwrap().push(body);
                answer()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, addr)
}

fn ok() -> axum::response::Response {
    axum::response::IntoResponse::into_response(StatusCode::OK)
}

async fn set_hook(gw: &Gateway, creds: &Creds, url: &str) -> reqwest::Response {
    gw.authed(creds, Method::PUT, "/api/v1/settings/webhook")
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap()
}

async fn send_one(gw: &Gateway, creds: &Creds, dest: &str) {
    let r = gw
        .authed(creds, Method::POST, "/api/v1/sms/send")
        .json(
            &json!({"esme": "sim-link", "source": "SMSGW", "destination": dest, "message": "hook"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn webhooks_cannot_reach_private_addresses_by_ip_name_or_redirect() {
    let (seen, addr) = receiver(ok).await;
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("ssrf@example.com").await;
    bound(&gw, &creds).await;
    for target in [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://[fd00::1]/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://[fe80::1]/",
    ] {
        let r = set_hook(&gw, &creds, target).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{target} was accepted");
    }
    // A name that resolves to loopback passes the URL check but is
    // refused when resolved, at delivery.
    let by_name = format!("http://localhost:{}/hook", addr.port());
    assert_eq!(
        set_hook(&gw, &creds, &by_name).await.status(),
        StatusCode::OK
    );
    send_one(&gw, &creds, "4915100000020").await;
    let refused = eventually(Duration::from_secs(10), async || {
        gw.logs().contains("webhook target refused")
    })
    .await;
    assert!(refused.is_some(), "no refusal logged: {}", gw.logs());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "an event reached a loopback receiver"
    );

    // An admin may allow one app to use private targets.
    let r = reqwest::Client::new()
        .patch(gw.url(&format!("/api/v1/admin/users/{}", creds.user_id)))
        .header("x-admin-key", ADMIN_KEY)
        .json(&json!({"webhook_allow_private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let loopback = format!("http://{addr}/hook");
    // The dispatcher re-reads an app's webhook at most every 5 s.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(
        set_hook(&gw, &creds, &loopback).await.status(),
        StatusCode::OK
    );
    send_one(&gw, &creds, "4915100000021").await;
    let got = eventually(Duration::from_secs(15), async || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    assert!(got.is_some(), "the allowed app's webhook got nothing");
}

#[tokio::test]
async fn webhook_redirects_are_not_followed() {
    let (inner, inner_addr) = receiver(ok).await;
    let location = format!("http://{inner_addr}/hook");
    let (outer, outer_addr) = receiver(move || {
        axum::response::IntoResponse::into_response((
            StatusCode::TEMPORARY_REDIRECT,
            [("location", location.clone())],
        ))
    })
    .await;
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone_with_args(&sim_config(sim.addr), &["--webhook-allow-private"]);
    let creds = gw.user("redirect@example.com").await;
    bound(&gw, &creds).await;
    let hook = format!("http://{outer_addr}/hook");
    assert_eq!(set_hook(&gw, &creds, &hook).await.status(), StatusCode::OK);
    send_one(&gw, &creds, "4915100000022").await;
    let got = eventually(Duration::from_secs(10), async || {
        !outer.lock().unwrap().is_empty()
    })
    .await;
    assert!(got.is_some(), "the webhook was never called");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        inner.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}
