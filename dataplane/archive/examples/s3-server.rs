//! The S3 stand-in of the cluster in a box (`scripts/cluster.sh up --s3`):
//! the tests' s3s-fs server as a process, keys
//! `smsgw_archive::testing::{ACCESS_KEY, SECRET_KEY}`.
//!
//! `s3-server LISTEN_ADDR ROOT_DIR BUCKET...`: serves the buckets under
//! ROOT_DIR (each a directory, created when missing) until killed, and
//! prints `READY http://LISTEN_ADDR` once listening.
#![forbid(unsafe_code)]

use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: s3-server LISTEN_ADDR ROOT_DIR BUCKET...";
    let addr: std::net::SocketAddr = args.next().ok_or(usage)?.parse()?;
    let root = PathBuf::from(args.next().ok_or(usage)?);
    for bucket in args {
        std::fs::create_dir_all(root.join(bucket))?;
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("READY http://{}", listener.local_addr()?);
    smsgw_archive::testing::serve_dir(listener, &root).await?;
    Ok(())
}
