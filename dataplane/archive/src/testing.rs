//! Test helpers for this crate's and other crates' tests: an
//! S3-compatible server (s3s-fs) run in-process on a loopback port, which a
//! test can stop and restart on the same port.

use crate::{S3Config, S3Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::task::{JoinHandle, JoinSet};

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "AKIATESTTESTTEST";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "test-secret-key-not-a-real-one";
/// Bucket created at start.
pub const BUCKET: &str = "smsgw";

/// An s3s-fs server over a temporary directory, stopped on drop.
pub struct S3Server {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Directory of its buckets.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    task: Option<JoinHandle<()>>,
    requests: RequestLog,
}

/// `METHOD path?query` of every request a server received, in order.
pub type RequestLog = Arc<Mutex<Vec<String>>>;

impl S3Server {
    /// Starts on an ephemeral port with an empty root and creates the bucket.
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = S3Server {
            addr,
            root,
            _dir: dir,
            task: None,
            requests: RequestLog::default(),
        };
        s.serve(listener);
        s.store().create_bucket().await.unwrap();
        s
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        self.task = Some(serve_dir_logged(
            listener,
            &self.root,
            self.requests.clone(),
        ));
    }

    /// `METHOD path?query` of every request received so far (e.g. to see
    /// that an upload went in parts: `PUT /bucket/key?partNumber=…`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops listening and drops every connection.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port, with the same data.
    pub async fn restart(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    /// Settings of a client of [`BUCKET`], one attempt per request: the
    /// tests that stop the server watch the caller's own retries (the
    /// SDK's are tested on their own, with `max_attempts` raised).
    pub fn config(&self) -> S3Config {
        let mut c = S3Config::new(
            format!("http://{}", self.addr),
            BUCKET,
            ACCESS_KEY,
            SECRET_KEY,
        );
        c.max_attempts = 1;
        c
    }

    /// A client of [`BUCKET`].
    pub fn store(&self) -> S3Store {
        S3Store::new(&self.config()).unwrap()
    }

    /// Where an object's file lives (to write big fixtures without
    /// holding them in memory).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// Directory of the buckets.
    pub fn bucket_dir(&self) -> &Path {
        &self.root
    }
}

/// Serves the buckets under `root` (one directory each) on `listener`,
/// accepting [`ACCESS_KEY`]/[`SECRET_KEY`], until the task is aborted
/// (which drops every connection, like a server that goes away).
pub fn serve_dir(listener: tokio::net::TcpListener, root: &Path) -> JoinHandle<()> {
    serve_dir_logged(listener, root, RequestLog::default())
}

/// An S3 service that notes each request's method and URI first.
#[derive(Clone)]
struct Logged {
    inner: s3s::service::S3Service,
    log: RequestLog,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Logged {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = <s3s::service::S3Service as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Future;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{} {}", req.method(), req.uri()));
        hyper::service::Service::call(&self.inner, req)
    }
}

/// [`serve_dir`], noting every request in `log`.
pub fn serve_dir_logged(
    listener: tokio::net::TcpListener,
    root: &Path,
    log: RequestLog,
) -> JoinHandle<()> {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = Logged {
        inner: b.build(),
        log,
    };
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let svc = service.clone();
            conns.spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    })
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
