//! Starting and stopping real `smsgw` processes for tests.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary Cargo built for these tests.
pub const SMSGW: &str = env!("CARGO_BIN_EXE_smsgw");

/// The example configuration shipped in the repository.
pub const EXAMPLE_CONFIG: &str = include_str!("../../examples/standalone.yaml");

/// A running gateway process, killed on drop.
pub struct Gateway {
    child: Option<Child>,
    /// Bound REST address.
    pub rest: SocketAddr,
    /// Bound gRPC address.
    pub grpc: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _config: tempfile::NamedTempFile,
    _data: Option<tempfile::TempDir>,
}

/// The admin key every test gateway is started with.
pub const ADMIN_KEY: &str = "e2e-admin-key-5f0c9a7d";

/// A user's credentials for authenticated calls.
#[derive(Clone, Debug)]
pub struct Creds {
    /// JWT.
    pub token: String,
    /// Application id.
    pub app_id: String,
    /// User id.
    pub user_id: String,
    /// App secret (shown once at registration).
    pub app_secret: String,
}

impl Creds {
    /// Adds the credentials to a gRPC request's metadata.
    pub fn grpc<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        req.metadata_mut()
            .insert("x-app-id", self.app_id.parse().unwrap());
        req
    }
}

impl Gateway {
    /// Starts `smsgw standalone` on the given configuration with ephemeral
    /// ports, and waits until both servers listen.
    pub fn standalone(config_yaml: &str) -> Gateway {
        Self::standalone_with(config_yaml, &[("ADMIN_API_KEY", ADMIN_KEY)])
    }

    /// Like [`Gateway::standalone`], with extra environment variables.
    pub fn standalone_with(config_yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::spawn(config_yaml, env, &[])
    }

    /// Like [`Gateway::standalone`], with extra command-line arguments.
    pub fn standalone_with_args(config_yaml: &str, args: &[&str]) -> Gateway {
        Self::spawn(config_yaml, &[("ADMIN_API_KEY", ADMIN_KEY)], args)
    }

    /// Like [`Gateway::standalone`], with extra environment variables (the
    /// admin key is not added) and command-line arguments.
    pub fn spawn(config_yaml: &str, env: &[(&str, &str)], extra: &[&str]) -> Gateway {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().to_owned();
        Self::spawn_in(config_yaml, env, extra, &path, Some(data))
    }

    /// Like [`Gateway::standalone_with_args`], keeping its data in `dir`
    /// (which outlives the process, e.g. to restart on the same data).
    pub fn standalone_in(config_yaml: &str, dir: &std::path::Path, args: &[&str]) -> Gateway {
        Self::spawn_in(
            config_yaml,
            &[("ADMIN_API_KEY", ADMIN_KEY)],
            args,
            dir,
            None,
        )
    }

    fn spawn_in(
        config_yaml: &str,
        env: &[(&str, &str)],
        extra: &[&str],
        data_dir: &std::path::Path,
        data: Option<tempfile::TempDir>,
    ) -> Gateway {
        let config = write_config(config_yaml);
        let child = Command::new(SMSGW)
            .args(["--log-format", "json", "standalone", "--config"])
            .arg(config.path())
            .args([
                "--rest-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            // Tests register many users from 127.0.0.1; the hardening
            // tests that check the budget set their own.
            .env("SMSGW_REGISTRATIONS_PER_ADDRESS", "1000")
            .env_remove("ADMIN_API_KEY")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smsgw");
        Self::started(child, config, data)
    }

    /// Starts `smsgw serve` against the snapshot server at `config_server`
    /// as pod `pod`, with ephemeral ports, and waits until both servers
    /// listen (it is not ready before its first snapshot).
    pub fn serve(config_server: &str, pod: &str) -> Gateway {
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(SMSGW)
            .args([
                "--log-format",
                "json",
                "serve",
                "--config-server",
                config_server,
            ])
            .args([
                "--pod-name",
                pod,
                "--config-retry-max",
                "500ms",
                "--single-proxy",
            ])
            .args(["--rest-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "info")
            .env("SMSGW_REGISTRATIONS_PER_ADDRESS", "1000")
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smsgw serve");
        Self::started(child, write_config(""), Some(data))
    }

    fn started(
        mut child: Child,
        config: tempfile::NamedTempFile,
        data: Option<tempfile::TempDir>,
    ) -> Gateway {
        let (logs, rx) = collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "smsgw did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "smsgw listening" {
                let addr = |k: &str| v[k].as_str().unwrap().parse().unwrap();
                return Gateway {
                    rest: addr("rest"),
                    grpc: addr("grpc"),
                    child: Some(child),
                    logs,
                    _config: config,
                    _data: data,
                };
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `http://<rest addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.rest, path)
    }

    /// A gRPC channel to the gateway.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .expect("connect gRPC")
    }

    /// Registers a user over REST and logs it in.
    pub async fn user(&self, email: &str) -> Creds {
        Self::user_at(&reqwest::Client::new(), &self.url(""), email).await
    }

    /// Registers a user and logs it in through `http` at the REST base URL
    /// `base` (e.g. an `https://` one with the client's TLS settings).
    pub async fn user_at(http: &reqwest::Client, base: &str, email: &str) -> Creds {
        let url = |p: &str| format!("{base}{p}");
        let password = "e2e password 123";
        let r: serde_json::Value = http
            .post(url("/api/v1/auth/register"))
            .json(&serde_json::json!({"email": email, "password": password, "app_name": "e2e"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let app_id = r["app_id"]
            .as_str()
            .unwrap_or_else(|| panic!("register failed: {r}"))
            .to_owned();
        let t: serde_json::Value = http
            .post(url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": password, "app_id": app_id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Creds {
            token: t["token"]
                .as_str()
                .unwrap_or_else(|| panic!("login failed: {t}"))
                .to_owned(),
            app_id,
            user_id: r["user_id"].as_str().unwrap().to_owned(),
            app_secret: r["app_secret"].as_str().unwrap().to_owned(),
        }
    }

    /// Logs the user of `creds` (registered by [`Gateway::user`] as
    /// `email`) in again, e.g. on a restarted gateway: fresh token.
    pub async fn login_again(&self, creds: &Creds, email: &str) -> Creds {
        let t: serde_json::Value = reqwest::Client::new()
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": "e2e password 123"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Creds {
            token: t["token"]
                .as_str()
                .unwrap_or_else(|| panic!("login failed: {t}"))
                .to_owned(),
            ..creds.clone()
        }
    }

    /// Logs in a managed user (a User resource of the configuration) by
    /// email and password; its ids come from the admin user list.
    pub async fn managed_user(&self, email: &str, password: &str) -> Creds {
        let t: serde_json::Value = reqwest::Client::new()
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let users = self.admin_get("/api/v1/admin/users").await;
        let u = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == email)
            .expect("the managed user exists");
        Creds {
            token: t["token"].as_str().expect("login").to_owned(),
            app_id: u["app_id"].as_str().unwrap().to_owned(),
            user_id: u["user_id"].as_str().unwrap().to_owned(),
            app_secret: String::new(),
        }
    }

    /// `GET /api/v1/smpp/links` as the user: `{"links": [...]}`.
    pub async fn links(&self, creds: &Creds) -> serde_json::Value {
        self.authed(creds, reqwest::Method::GET, "/api/v1/smpp/links")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET /api/v1/admin/stats` with the admin key.
    pub async fn admin_stats(&self) -> serde_json::Value {
        self.admin_get("/api/v1/admin/stats").await
    }

    /// `GET path` with the admin key, as JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.url(path))
            .header("x-admin-key", ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A REST request builder with the user's credentials.
    pub fn authed(
        &self,
        creds: &Creds,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(&creds.token)
            .header("x-app-id", &creds.app_id)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = wait_with_timeout(&mut child, Duration::from_secs(30));
        if !status.success() {
            eprintln!("gateway logs:\n{}", self.logs());
        }
        status
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `smsgw` with the given arguments to completion; returns its status
/// and its standard error.
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(SMSGW)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run smsgw");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails when `logs` contain any of `secrets`, the harness's own (the test
/// users' password, the admin key, the simulator's bind password) included.
pub fn assert_no_secrets(logs: &str, secrets: &[&str]) {
    for secret in ["e2e password 123", ADMIN_KEY, "\"secret\""]
        .iter()
        .chain(secrets)
    {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs");
    }
}

/// What a finished `smsgw` client command printed.
pub struct CliRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliRun {
    /// Standard output parsed as JSON (for `--output json`).
    pub fn json(&self) -> serde_json::Value {
        assert!(self.status.success(), "failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs a `smsgw` client command against `gw`'s gRPC port with only the
/// given credential variables in its environment.
pub fn cli(gw: &Gateway, args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let out = Command::new(SMSGW)
        .args(args)
        .args(["--server", &format!("http://{}", gw.grpc)])
        .env_remove("ADMIN_API_KEY")
        .env_remove("SMSGW_TOKEN")
        .env_remove("SMSGW_APP_ID")
        .env_remove("SMSGW_SERVER")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run smsgw");
    CliRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes a configuration to a temporary file.
pub fn write_config(yaml: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), yaml).unwrap();
    f
}

fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let l = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (logs, rx)
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `smsgw smsc-sim` process, killed on drop.
pub struct Sim {
    child: Option<Child>,
    /// Address it listens on.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Sim {
    /// Starts the simulator on `listen` (port 0 for an ephemeral one) and
    /// waits until it listens.
    pub fn start(listen: &str) -> Sim {
        Self::start_with(listen, &[])
    }

    /// Like [`Sim::start`], with extra `smsc-sim` arguments.
    pub fn start_with(listen: &str, args: &[&str]) -> Sim {
        let mut child = Command::new(SMSGW)
            .args(["--log-format", "json", "smsc-sim", "--listen", listen])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smsgw smsc-sim");
        let (logs, rx) = collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "smsc-sim did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "SMSC simulator listening" {
                let addr = v["addr"].as_str().unwrap().parse().unwrap();
                return Sim {
                    child: Some(child),
                    addr,
                    logs,
                };
            }
        }
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`, `TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{sig}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Stops the simulator with SIGTERM and returns how many submit_sm it
    /// accepted over its life.
    pub fn stop_and_count_submits(mut self) -> u64 {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        wait_with_timeout(&mut child, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["submits"].as_u64())
            .unwrap_or_else(|| {
                panic!(
                    "no submit count in the simulator's logs:\n{}",
                    logs.join("\n")
                )
            })
    }

    /// Binds the simulator accepted so far (from its logs).
    pub fn binds(&self) -> u64 {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "bind accepted")
            .count() as u64
    }

    /// Kills the process and waits for it.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A configuration with one link `sim-link` to `addr` (short keep-alive
/// timers) and a pool `default` holding it.
pub fn sim_config(addr: SocketAddr) -> String {
    format!(
        r#"apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {{name: sim-link}}
spec:
  host: "{ip}"
  port: {port}
  systemId: smsgw
  password: secret
  sessions: 2
  window: 16
  responseTimeout: 1s
  enquireLinkInterval: 1s
  reconnect: {{initial: 100ms, max: 500ms}}
  messageIdFormat: hex
---
apiVersion: smsgw.io/v1alpha1
kind: EsmePool
metadata: {{name: default}}
spec:
  members: [{{link: sim-link, weight: 1}}]
"#,
        ip = addr.ip(),
        port = addr.port()
    )
}

/// Polls `check` every 50 ms until it is true or `within` passes; returns
/// how long it took.
pub async fn eventually(
    within: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Waits (up to 10 s) until every link of the gateway has both its sessions
/// bound.
pub async fn bound(gw: &Gateway, creds: &Creds) {
    bound_sessions(gw, creds, 2).await;
}

/// Waits (up to 10 s) until every link of the gateway has `sessions`
/// sessions bound.
pub async fn bound_sessions(gw: &Gateway, creds: &Creds, sessions: u32) {
    let ok = eventually(Duration::from_secs(10), async || {
        gw.links(creds).await["links"]
            .as_array()
            .is_some_and(|l| !l.is_empty() && l.iter().all(|l| l["sessions_bound"] == sessions))
    })
    .await;
    assert!(ok.is_some(), "links never bound");
}

/// A new user `email` of `gw`, once its links are bound ([`bound`]).
pub async fn ready(gw: &Gateway, email: &str) -> Creds {
    let creds = gw.user(email).await;
    bound(gw, &creds).await;
    creds
}

/// A request a [`Receiver`] got: headers, body, whether it was accepted,
/// when it arrived (ms since the epoch).
pub type Request = (HeaderMap, String, bool, u64);

/// A webhook receiver on loopback that answers 503 while down.
pub struct Receiver {
    /// Its URL (`http://127.0.0.1:<port>/hook`).
    pub url: String,
    /// Whether it answers 200 (else 503).
    pub up: Arc<AtomicBool>,
    /// Every request: headers, body, whether it was accepted and when it
    /// arrived (ms since the epoch), refused ones included.
    pub seen: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    /// Starts it, up or down.
    pub async fn start(up: bool) -> Receiver {
        let up = Arc::new(AtomicBool::new(up));
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let (u2, s2) = (up.clone(), seen.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (up, seen) = (u2.clone(), s2.clone());
                async move {
                    let ok = up.load(Ordering::SeqCst);
                    let at = smsgw_core::messages::unix_now_ms();
                    seen.lock().unwrap().push((headers, body, ok, at));
                    if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, up, seen }
    }

    /// The events it acknowledged (a batch counts each of its events).
    pub fn accepted(&self) -> Vec<Value> {
        self.accepted_at().into_iter().map(|(e, _)| e).collect()
    }

    /// The events it acknowledged, each with when its request arrived (ms
    /// since the epoch).
    pub fn accepted_at(&self) -> Vec<(Value, u64)> {
        let mut out = Vec::new();
        for (_, body, ok, at) in self.seen.lock().unwrap().iter() {
            if !ok {
                continue;
            }
            match serde_json::from_str::<Value>(body).unwrap() {
                Value::Array(a) => out.extend(a.into_iter().map(|e| (e, *at))),
                v => out.push((v, *at)),
            }
        }
        out
    }

    /// How many requests it refused (while down).
    pub fn refused(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|r| !r.2).count()
    }
}

/// `smsgw_memory_<what>{structure="<structure>"}` in a scrape (NaN when
/// absent, so a comparison with it fails).
pub fn memory(scrape: &str, what: &str, structure: &str) -> f64 {
    let series = format!("smsgw_memory_{what}{{structure=\"{structure}\"}} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}
