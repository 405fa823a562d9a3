//! `smsgw users import` through the real binary: the platform's users from
//! a SQLite file, a CSV and a JSON export go into a standalone gateway's
//! store (or into manifests), keep their app_id/app_secret and argon2
//! password hashes, and work at once; bad files are refused with their
//! specific problem and import nothing.

use crate::harness::{Creds, Gateway, Sim, bound, sim_config};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `smsgw users import <args>`; status, stdout, stderr.
fn import(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(crate::harness::SMSGW)
        .args(["users", "import"])
        .args(args)
        .env_remove("SMSGW_DATA_DIR")
        .env_remove("SMSGW_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run smsgw users import");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The platform's SQLite user database: its own column names and case,
/// extra columns, an argon2id hash (alice), a bcrypt one (bob), none
/// (carol).
fn platform_db(path: &Path, alice_hash: &str) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE Users (ID INTEGER PRIMARY KEY, Email TEXT NOT NULL, App_Name TEXT, App_ID TEXT, App_Secret TEXT, Password_Hash TEXT, Is_Admin INTEGER, created_at TEXT);",
    )
    .unwrap();
    let mut insert = db
        .prepare("INSERT INTO Users (Email, App_Name, App_ID, App_Secret, Password_Hash, Is_Admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '2024-01-01')")
        .unwrap();
    insert
        .execute(rusqlite::params![
            "alice@example.com",
            "shop",
            "5f2b9c1e-legacy-alice",
            "alice-legacy-secret-0001",
            alice_hash,
            1
        ])
        .unwrap();
    insert
        .execute(rusqlite::params![
            "bob@example.com",
            "crm",
            "legacy-bob",
            "bob-legacy-secret-0002",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            0
        ])
        .unwrap();
    insert
        .execute(rusqlite::params![
            "carol@example.com",
            "ops",
            "legacy-carol",
            "carol-legacy-secret-0003",
            rusqlite::types::Null,
            0
        ])
        .unwrap();
}

const SECRETS: [&str; 5] = [
    "alice-legacy-secret-0001",
    "bob-legacy-secret-0002",
    "carol-legacy-secret-0003",
    "dave-legacy-secret-0004",
    "frank-legacy-secret-0006",
];

/// A machine token for an app from its app id and secret, or the status.
async fn app_token(gw: &Gateway, app_id: &str, app_secret: &str) -> Result<String, u16> {
    let r = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/token"))
        .json(&json!({"app_id": app_id, "app_secret": app_secret}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["token"].as_str().map(str::to_owned).ok_or(status)
}

/// Logs in with email and password; the status.
async fn login(gw: &Gateway, email: &str, password: &str, app_id: &str) -> u16 {
    reqwest::Client::new()
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password, "app_id": app_id}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends one SMS as the app; the status and answer.
async fn send(gw: &Gateway, creds: &Creds, tx: &str) -> (u16, Value) {
    let r = gw
        .authed(creds, reqwest::Method::POST, "/api/v1/sms/send")
        .json(&json!({"esme": "default", "source": "LEGACY", "destination": "+4915100000042", "message": "still works", "transaction_id": tx}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn creds(token: String, app_id: &str) -> Creds {
    Creds {
        token,
        app_id: app_id.into(),
        user_id: String::new(),
        app_secret: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_imported_from_sqlite_csv_and_json_keep_their_app_credentials_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let alice_hash = smsgw_api::auth::password::hash("alice's old password".into())
        .await
        .unwrap();
    let db = dir.path().join("platform.db");
    platform_db(&db, &alice_hash);

    let (ok, out, err) = import(&["--from", db.to_str().unwrap(), "--data-dir", data_arg]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(
            "row 1: alice@example.com (app 5f2b9c1e-legacy-alice): imported, password login kept"
        ),
        "{out}"
    );
    assert!(
        out.contains("row 2: bob@example.com (app legacy-bob): imported, without password login: its password hash is a bcrypt hash, which the gateway cannot check: it checks argon2;"),
        "{out}"
    );
    assert!(
        out.contains("row 3: carol@example.com (app legacy-carol): imported, without password login (no password hash in the file)"),
        "{out}"
    );
    assert!(
        out.contains("3 user(s) imported into the embedded user store"),
        "{out}"
    );
    for secret in SECRETS
        .iter()
        .copied()
        .chain([alice_hash.as_str(), "R9h/cIPz0gi"])
    {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed"
        );
    }

    // A CSV export, then a JSON one, into the same store.
    let csv = dir.path().join("export.csv");
    std::fs::write(
        &csv,
        "email,application,client_id,client_secret,admin\ndave@example.com,\"Dave, Ltd\",legacy-dave,dave-legacy-secret-0004,false\n",
    )
    .unwrap();
    let (ok, out, err) = import(&["--from", csv.to_str().unwrap(), "--data-dir", data_arg]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("line 2: dave@example.com (app legacy-dave): imported"),
        "{out}"
    );
    let json_file = dir.path().join("export.txt");
    std::fs::write(
        &json_file,
        json!({"users": [{"Email": "frank@example.com", "app_id": 77001, "app_secret": "frank-legacy-secret-0006", "is_admin": true, "last_login": "x"}]}).to_string(),
    )
    .unwrap();
    let (ok, out, err) = import(&[
        "--from",
        json_file.to_str().unwrap(),
        "--format",
        "json",
        "--data-dir",
        data_arg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("users[0]: frank@example.com (app 77001): imported"),
        "{out}"
    );

    // Importing the SQLite file again: refused as a whole (nothing new),
    // or with --skip-existing, every user skipped.
    let (ok, _, err) = import(&["--from", db.to_str().unwrap(), "--data-dir", data_arg]);
    assert!(!ok);
    assert!(
        err.contains("3 problem(s); nothing imported:\n  row 1: already in the store as user usr_"),
        "{err}"
    );
    let (ok, out, err) = import(&[
        "--from",
        db.to_str().unwrap(),
        "--data-dir",
        data_arg,
        "--skip-existing",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("0 user(s) imported") && out.contains("3 skipped"),
        "{out}"
    );

    // An app id taken by another user refuses the whole file: the first,
    // good row is not imported either.
    let clash = dir.path().join("clash.csv");
    std::fs::write(
        &clash,
        "email,app_id,app_secret\nzed@example.com,zed-app,zed-secret-0001\nmallory@example.com,legacy-bob,mallory-secret-0002\n",
    )
    .unwrap();
    let (ok, _, err) = import(&["--from", clash.to_str().unwrap(), "--data-dir", data_arg]);
    assert!(!ok);
    assert!(
        err.contains("1 problem(s); nothing imported:\n  line 3: app_id \"legacy-bob\" already belongs to user usr_"),
        "{err}"
    );

    // The gateway on that store: each app authenticates with the app id
    // and secret it had, and sends; alice logs in with her old password.
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone_in(&sim_config(sim.addr), &data, &[]);
    let alice_app = "5f2b9c1e-legacy-alice";
    let token = app_token(&gw, alice_app, "alice-legacy-secret-0001")
        .await
        .expect("alice's app token");
    let alice = creds(token, alice_app);
    bound(&gw, &alice).await;
    let (status, r) = send(&gw, &alice, "imported-1").await;
    assert_eq!(status, 200, "{r}");
    assert!(r["message_id"].as_str().is_some(), "{r}");
    for (app, secret, tx) in [
        ("legacy-bob", "bob-legacy-secret-0002", "imported-2"),
        ("legacy-carol", "carol-legacy-secret-0003", "imported-3"),
        ("legacy-dave", "dave-legacy-secret-0004", "imported-4"),
        ("77001", "frank-legacy-secret-0006", "imported-5"),
    ] {
        let token = app_token(&gw, app, secret)
            .await
            .unwrap_or_else(|s| panic!("{app}: {s}"));
        let (status, r) = send(&gw, &creds(token, app), tx).await;
        assert_eq!(status, 200, "{app}: {r}");
    }
    assert_eq!(
        app_token(&gw, "legacy-bob", "a wrong secret").await,
        Err(401)
    );
    assert_eq!(
        app_token(&gw, "zed-app", "zed-secret-0001").await,
        Err(401),
        "nothing of a refused file is imported"
    );
    // The running gateway holds the embedded store: an import says so.
    let (ok, _, err) = import(&["--from", csv.to_str().unwrap(), "--data-dir", data_arg]);
    assert!(!ok);
    assert!(err.contains("stop it while importing"), "{err}");
    assert_eq!(
        login(&gw, "alice@example.com", "alice's old password", alice_app).await,
        200
    );
    assert_eq!(
        login(&gw, "alice@example.com", "not her password", alice_app).await,
        401
    );
    // bob's bcrypt hash was not kept: no password logs him in.
    assert_eq!(
        login(&gw, "bob@example.com", "bob's password", "legacy-bob").await,
        401
    );
    // Admin flags came along: alice and frank are admins, dave is not.
    let users = gw.admin_get("/api/v1/admin/users").await;
    let admin_of = |email: &str| {
        users["users"]
            .as_array()
            .unwrap_or_else(|| panic!("{users}"))
            .iter()
            .find(|u| u["email"] == email)
            .map(|u| u["admin"].clone())
    };
    assert_eq!(admin_of("alice@example.com"), Some(json!(true)), "{users}");
    assert_eq!(admin_of("frank@example.com"), Some(json!(true)), "{users}");
    assert_eq!(admin_of("dave@example.com"), Some(json!(false)), "{users}");
    crate::harness::assert_no_secrets(&gw.logs(), &SECRETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_with_their_problem_and_import_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let cases = [
        (
            file("no-secret.csv", "email,app_id\na@example.com,app-a\n"),
            "the header line has no column for app_secret (or appsecret, application_secret, client_secret, secret); columns: email, app_id",
        ),
        (
            file(
                "dup.csv",
                "email,app_id,app_secret\na@example.com,app-a,s-1-secret\nb@example.com,app-a,s-2-secret\n",
            ),
            "line 3: app_id \"app-a\" repeats line 2's",
        ),
        (
            file(
                "ragged.csv",
                "email,app_id,app_secret\na@example.com,app-a,s-1-secret\nb@example.com,app-b\n",
            ),
            "line 3",
        ),
        (
            file(
                "bad-row.json",
                r#"[{"email": "a@example.com", "app_id": "app-a", "app_secret": "s-1-secret"}, {"email": "b@example.com", "app_id": "app-b", "app_secret": "s-2-secret", "is_admin": "sometimes"}]"#,
            ),
            "[1]: is_admin \"sometimes\" is not a boolean",
        ),
        (file("broken.json", "[{\"email\": "), "is not JSON"),
    ];
    for (path, expected) in &cases {
        let (ok, out, err) = import(&["--from", path, "--data-dir", data_arg]);
        assert!(!ok, "{path} was accepted: {out}");
        assert!(err.contains(expected), "{path}: {err}");
        assert!(
            !err.contains("s-1-secret") && !out.contains("s-1-secret"),
            "{err}"
        );
    }
    // A SQLite file without a users table names the tables it has.
    let db = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE accounts (email TEXT);")
        .unwrap();
    let (ok, _, err) = import(&["--from", db.to_str().unwrap(), "--data-dir", data_arg]);
    assert!(!ok);
    assert!(
        err.contains("has no table \"users\" (tables: accounts)"),
        "{err}"
    );

    // Nothing was written: the good first rows of the refused files are
    // not in the store, and importing a good file finds none of them.
    let good = file(
        "good.csv",
        "email,app_id,app_secret\na@example.com,app-a,s-1-secret\n",
    );
    let (ok, out, err) = import(&["--from", &good, "--data-dir", data_arg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("1 user(s) imported") && out.contains("0 skipped"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitted_manifests_give_a_standalone_gateway_the_imported_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let hash = smsgw_api::auth::password::hash("erin's old password".into())
        .await
        .unwrap();
    let json_file = dir.path().join("export.json");
    std::fs::write(
        &json_file,
        json!([{"email": "erin@example.com", "app_name": "erp", "app_id": "legacy-erin", "app_secret": "erin-legacy-secret-0005", "password_hash": hash}]).to_string(),
    )
    .unwrap();
    let out_dir = dir.path().join("manifests");
    let (ok, out, err) = import(&[
        "--from",
        json_file.to_str().unwrap(),
        "--emit-manifests",
        out_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("[0]: erin@example.com (app legacy-erin): written, password login kept"),
        "{out}"
    );
    assert!(!out.contains("erin-legacy-secret-0005") && !out.contains(&hash));
    let path = out_dir.join("imported-users.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let manifests = std::fs::read_to_string(&path).unwrap();
    assert!(manifests.contains("existingCredentialsSecret: erin-example-com-imported-credentials"));
    // Not written again over the first.
    let (ok, _, err) = import(&[
        "--from",
        json_file.to_str().unwrap(),
        "--emit-manifests",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("exists"), "{err}");

    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&format!("{}{manifests}", sim_config(sim.addr)));
    let token = app_token(&gw, "legacy-erin", "erin-legacy-secret-0005")
        .await
        .expect("erin's app token");
    let erin = creds(token, "legacy-erin");
    bound(&gw, &erin).await;
    let (status, r) = send(&gw, &erin, "manifest-1").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        login(
            &gw,
            "erin@example.com",
            "erin's old password",
            "legacy-erin"
        )
        .await,
        200
    );
    crate::harness::assert_no_secrets(&gw.logs(), &["erin-legacy-secret-0005", &hash]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_users_are_imported_while_the_gateway_runs_and_work_at_once() {
    let redis = smsgw_store::testing::RedisServer::start();
    let url = redis.url();
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone_with_args(&sim_config(sim.addr), &["--redis-url", url.as_str()]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    std::fs::write(
        &csv,
        "Email,App_ID,App_Secret\ngina@example.com,legacy-gina,gina-legacy-secret-0007\n",
    )
    .unwrap();
    let (ok, out, err) = import(&["--from", csv.to_str().unwrap(), "--redis-url", &url]);
    assert!(ok, "{err}");
    assert!(
        out.contains("1 user(s) imported into the Redis user store"),
        "{out}"
    );
    let token = app_token(&gw, "legacy-gina", "gina-legacy-secret-0007")
        .await
        .expect("gina's app token");
    let gina = creds(token, "legacy-gina");
    bound(&gw, &gina).await;
    let (status, r) = send(&gw, &gina, "redis-1").await;
    assert_eq!(status, 200, "{r}");
}
