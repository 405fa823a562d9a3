//! Test harness: Redis processes (restartable on one port) and a
//! three-node Redis Cluster, all started here on free ports; and the
//! behaviour suite both the single-Redis and the cluster tests run.
#![allow(dead_code)]

pub mod suite;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a given port, killed on drop.
pub struct RedisProc {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisProc {
    /// Starts `redis-server` on `port` with `extra` arguments and waits for
    /// it to answer; `None` if it did not come up (e.g. port taken).
    pub fn start_on(port: u16, extra: &[&str]) -> Option<RedisProc> {
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test-all.sh installs it)");
        let mut p = RedisProc { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                return None;
            }
            if ping(port) {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port whose cluster-bus port (+10 000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port > 55_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Three masters (no replicas) forming one Redis Cluster, killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisProc>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts three `redis-server --cluster-enabled yes` and joins them
    /// with `redis-cli --cluster create`; waits for `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        while nodes.len() < 3 {
            let port = free_cluster_port();
            let conf = dir.path().join(format!("nodes-{port}.conf"));
            if let Some(p) = RedisProc::start_on(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    dir.path().to_str().unwrap(),
                ],
            ) {
                nodes.push(p);
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect(
                "redis-cli must be installed (Debian's redis-tools, a dependency of redis-server)",
            );
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        'wait: loop {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            for n in &nodes {
                let info = Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if !String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    std::thread::sleep(Duration::from_millis(50));
                    continue 'wait;
                }
            }
            break;
        }
        RedisCluster { nodes, _dir: dir }
    }

    /// Seed URLs of the three nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProc::url).collect()
    }
}
