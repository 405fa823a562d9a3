//! Test helpers for this crate's and other crates' tests: an
//! S3-compatible server (s3s-fs) run in-process on a loopback port, which a
//! test can stop and restart on the same port.

use crate::{S3Config, S3Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
}

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
        };
        s.serve(listener);
        s.store().create_bucket().await.unwrap();
        s
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        self.task = Some(serve_dir(listener, &self.root));
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

    /// Settings of a client of [`BUCKET`].
    pub fn config(&self) -> S3Config {
        S3Config::new(
            format!("http://{}", self.addr),
            BUCKET,
            ACCESS_KEY,
            SECRET_KEY,
        )
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
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = b.build();
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
