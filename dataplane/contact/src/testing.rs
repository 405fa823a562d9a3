//! Test helpers for this crate's and other crates' tests: the Node-RED 4
//! flow of `mcp/` (installed from npm with `npm ci` when missing) run as a
//! child process on an ephemeral port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's `mcp/` directory.
pub fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../mcp")
        .canonicalize()
        .expect("mcp/ exists")
}

/// `npm ci` into mcp/node_modules unless node-red is there already.
fn install(dir: &Path) {
    if dir.join("node_modules/node-red/red.js").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .expect("npm must be installed (scripts/test-all.sh installs node)");
    assert!(status.success(), "npm ci in mcp/ failed");
}

/// A free TCP port on 127.0.0.1 (nothing listens on it when returned).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Node-RED 4 process running the MCP flow, killed on drop.
pub struct NodeRed {
    child: Option<Child>,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    _user_dir: tempfile::TempDir,
}

impl NodeRed {
    /// Starts the flow on a free port with bearer token `token`, reading
    /// and writing contact-policy state in the Redis at `redis_url`;
    /// `strategies` (JSON, `MCP_STRATEGIES`) overrides or adds strategies.
    /// Waits (up to 60 s) until its health endpoint answers.
    pub async fn start(redis_url: &str, token: &str, strategies: &str) -> NodeRed {
        let dir = mcp_dir();
        install(&dir);
        let user_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("node")
            .arg(dir.join("node_modules/node-red/red.js"))
            .args(["--settings", "settings.js"])
            .current_dir(&dir)
            .env("MCP_PORT", port.to_string())
            .env("MCP_HOST", "127.0.0.1")
            .env("MCP_USER_DIR", user_dir.path())
            .env("MCP_TOKEN", token)
            .env("MCP_REDIS_URL", redis_url)
            .env("MCP_STRATEGIES", strategies)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed");
        let nr = NodeRed {
            child: Some(child),
            port,
            _user_dir: user_dir,
        };
        let health = format!("http://127.0.0.1:{port}/api/v1/health");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(&health).send().await
                && r.status().is_success()
            {
                return nr;
            }
            assert!(Instant::now() < deadline, "Node-RED did not become healthy");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `http://127.0.0.1:<port>/api/v1/check`, the endpoint of the check.
    pub fn check_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/check", self.port)
    }

    /// Kills the process and waits for it (the MCP goes down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NodeRed {
    fn drop(&mut self) {
        self.stop();
    }
}
