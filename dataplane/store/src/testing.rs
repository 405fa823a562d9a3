//! Test helpers: a throwaway `redis-server` on an ephemeral port; a child
//! test process killed at a known point (the crash tests).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process started for one test and killed on drop.
/// Fails loudly (panics) when `redis-server` is not installed: the README's
/// test command installs it.
pub struct RedisServer {
    child: Child,
    /// TCP port it listens on (127.0.0.1).
    pub port: u16,
}

impl RedisServer {
    /// Starts a server without persistence and waits until it answers.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test-all.sh installs it)");
            let mut server = RedisServer { child, port };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            let _ = server.child.kill();
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited, e.g. port taken
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record in the stores' binary encoding, as the Redis and Aerospike
/// stores write it: for tests that lay out keys by hand (a layout of a
/// version before).
pub fn record_bytes(rec: &smsgw_core::messages::MessageRecord) -> Vec<u8> {
    crate::messages::record_codec::encode(rec)
}

/// `s` packed as the Redis store packs the parts of its keys and index
/// values (a hex or UUID id as its bytes, a decimal as a number).
pub fn packed(s: &str) -> Vec<u8> {
    let mut v = Vec::new();
    crate::messages::record_codec::put_str(&mut v, s);
    v
}

/// Crashes a writer at a known point: runs this test binary's ignored test
/// `child` with the environment variable `env` set to `dir`, waits until it
/// prints a line `acked` (its writes were acknowledged), and kills it with
/// SIGKILL — no destructor, no checkpoint. Panics if it stopped before
/// saying so.
pub fn kill_child_once_acked(child: &str, env: &str, dir: &std::path::Path) {
    use std::io::{BufRead, BufReader};
    let mut c = Command::new(std::env::current_exe().expect("the test binary"))
        .args([child, "--exact", "--include-ignored", "--nocapture"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the child test starts");
    let out = BufReader::new(c.stdout.take().expect("piped"));
    let said = out
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim() == "acked");
    c.kill().expect("kill the child");
    let status = c.wait().expect("the child is reaped");
    assert!(
        said,
        "the child stopped before its writes were acknowledged"
    );
    assert!(!status.success());
}
