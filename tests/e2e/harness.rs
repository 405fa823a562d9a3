//! Starting and stopping real `smsgw` processes for tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
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
}

impl Gateway {
    /// Starts `smsgw standalone` on the given configuration with ephemeral
    /// ports, and waits until both servers listen.
    pub fn standalone(config_yaml: &str) -> Gateway {
        let config = write_config(config_yaml);
        let mut child = Command::new(SMSGW)
            .args(["--log-format", "json", "standalone", "--config"])
            .arg(config.path())
            .args(["--rest-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smsgw");
        let (logs, rx) = collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "smsgw did not start; logs:\n{}",
                        logs.lock().unwrap().join("\n")
                    )
                });
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
                };
            }
        }
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
        wait_with_timeout(&mut child, Duration::from_secs(30))
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
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
