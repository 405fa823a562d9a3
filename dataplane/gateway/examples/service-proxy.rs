//! The cluster in a box's Services (tests/cluster/runner.py): one process
//! forwarding TCP from each Service's loopback "ClusterIP" and port to the
//! Ready pods behind it, round robin per connection, as kube-proxy does in
//! the kernel on a real node.
//!
//! Why a compiled process and not the runner's own Python forwarder: every
//! Redis command of every pod crosses a Service, and in Python that hop
//! cost half a core at 1,000 msg/s and shared the runner's GIL with its
//! probes, putting milliseconds of queueing on each round trip that a
//! real cluster does not have.
//!
//! Protocol: the runner writes one JSON object per line on stdin, the
//! whole table each time, `{"IP:PORT": ["POD_IP:PORT", …], …}`. A listen
//! address new to the table is bound (a line "listening IP:PORT" or
//! "cannot listen on IP:PORT: why" goes to stdout); one left out keeps listening with no endpoints, so a
//! connection to it is closed at once, like a Service without Ready pods.
//! Connections already forwarded are not cut when the table changes.
//! Stdin closing stops the process.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::net::{TcpListener, TcpStream};

/// One Service port: its Ready endpoints and the round-robin counter.
#[derive(Default)]
struct Service {
    endpoints: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Service {
    fn pick(&self) -> Option<SocketAddr> {
        let eps = self.endpoints.read().unwrap_or_else(|e| e.into_inner());
        if eps.is_empty() {
            return None;
        }
        Some(eps[self.next.fetch_add(1, Ordering::Relaxed) % eps.len()])
    }
}

async fn forward(mut client: TcpStream, svc: Arc<Service>) {
    let Some(to) = svc.pick() else { return };
    let Ok(Ok(mut upstream)) =
        tokio::time::timeout(std::time::Duration::from_secs(3), TcpStream::connect(to)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

async fn listen(addr: SocketAddr, svc: Arc<Service>) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener: TcpListener = socket.listen(1024)?;
    println!("listening {addr}");
    tokio::spawn(async move {
        loop {
            if let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, svc.clone()));
            }
        }
    });
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut services: HashMap<SocketAddr, Arc<Service>> = HashMap::new();
    // Stdin on a thread of its own (tokio's stdin is not among the
    // workspace's features), each line handed over as it comes.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let table: HashMap<SocketAddr, Vec<SocketAddr>> = match serde_json::from_str(&line) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("service-proxy: ignoring a table that is not valid: {e}");
                continue;
            }
        };
        for (addr, svc) in &services {
            if !table.contains_key(addr) {
                svc.endpoints
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
        }
        for (addr, eps) in table {
            let svc = match services.get(&addr) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Service::default());
                    if let Err(e) = listen(addr, s.clone()).await {
                        println!("cannot listen on {addr}: {e}");
                        continue;
                    }
                    services.insert(addr, s.clone());
                    s
                }
            };
            *svc.endpoints.write().unwrap_or_else(|e| e.into_inner()) = eps;
        }
    }
    Ok(())
}
