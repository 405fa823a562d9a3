//! Object storage: S3 (any S3-compatible server) through presigned SigV4
//! URLs (rusty-s3) and reqwest, or a local directory (standalone mode).

use crate::ArchiveError;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, ArchiveError>>;

/// Where objects go and come from.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing any object there.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), ArchiveError>;
    /// Streams the object at `key`.
    async fn get(&self, key: &str) -> Result<ByteStream, ArchiveError>;
    /// Keys under `prefix`, in lexical order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError>;
}

/// How to reach one S3 bucket.
///
/// # Defaults
/// Region `us-east-1`, path-style URLs, request timeout 30 s.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://minio:9000`.
    pub endpoint: String,
    /// Region used in signatures.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key; never logged.
    pub secret_key: String,
    /// Path-style (`endpoint/bucket/key`, MinIO and most compatibles) or
    /// virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Bound on one request; a GET's body is bounded by the idle time
    /// between chunks instead.
    pub timeout: Duration,
}

impl S3Config {
    /// Defaults for a bucket at an endpoint with a key pair.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            path_style: true,
            timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .finish()
    }
}

const SIGN_FOR: Duration = Duration::from_secs(300);

/// One S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    http: reqwest::Client,
    bucket: Bucket,
    creds: Credentials,
    timeout: Duration,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket.name())
            .finish_non_exhaustive()
    }
}

fn s3_err(op: &'static str, e: impl fmt::Display) -> ArchiveError {
    ArchiveError::S3 {
        op,
        reason: e.to_string(),
    }
}

fn req_err(op: &'static str, e: reqwest::Error) -> ArchiveError {
    // Presigned URLs carry the signature in the query: never print them.
    s3_err(op, e.without_url())
}

impl S3Store {
    /// A client for the bucket in `config`.
    pub fn new(config: &S3Config) -> Result<Self, ArchiveError> {
        let endpoint = config
            .endpoint
            .parse()
            .map_err(|e| ArchiveError::Config(format!("S3 endpoint: {e}")))?;
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| ArchiveError::Config(format!("S3 bucket: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ArchiveError::Config(e.to_string()))?;
        Ok(Self {
            http,
            bucket,
            creds: Credentials::new(config.access_key.clone(), config.secret_key.clone()),
            timeout: config.timeout,
        })
    }

    /// Creates the bucket (tests, first start); an existing bucket is fine.
    pub async fn create_bucket(&self) -> Result<(), ArchiveError> {
        let url = self.bucket.create_bucket(&self.creds).sign(SIGN_FOR);
        let resp = self
            .http
            .put(url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| req_err("create bucket", e))?;
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            Ok(())
        } else {
            Err(s3_err("create bucket", status))
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), ArchiveError> {
        let url = self
            .bucket
            .put_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let resp = self
            .http
            .put(url)
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| req_err("put", e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(s3_err("put", resp.status()))
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream, ArchiveError> {
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| req_err("get", e))?;
        if !resp.status().is_success() {
            return Err(s3_err("get", resp.status()));
        }
        let idle = self.timeout;
        let stream = resp.bytes_stream().map_err(|e| req_err("get body", e));
        // Bound the wait for each chunk, not the whole (large) body.
        let stream = futures::stream::unfold(Box::pin(stream), move |mut s| async move {
            match tokio::time::timeout(idle, s.next()).await {
                Ok(Some(item)) => Some((item, s)),
                Ok(None) => None,
                Err(_) => Some((Err(s3_err("get body", "idle timeout")), s)),
            }
        });
        Ok(stream.boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGN_FOR);
            let resp = self
                .http
                .get(url)
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| req_err("list", e))?;
            if !resp.status().is_success() {
                return Err(s3_err("list", resp.status()));
            }
            let body = resp.text().await.map_err(|e| req_err("list", e))?;
            // Only keys and the continuation token are needed; servers
            // differ in which other fields they send (s3s-fs: no ETag), so
            // read just those elements.
            keys.extend(xml_elements(&body, "Key"));
            let truncated = xml_elements(&body, "IsTruncated").next().as_deref() == Some("true");
            match xml_elements(&body, "NextContinuationToken").next() {
                Some(t) if truncated && !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// The unescaped text of every `<name>…</name>` element of an S3 XML
/// answer (which has no nested elements of the names read here).
fn xml_elements<'a>(xml: &'a str, name: &str) -> impl Iterator<Item = String> + 'a {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let text = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(xml_unescape(text))
    })
}

fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_answers_should_yield_unescaped_keys_and_the_token() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b/c&#x20;d.csv</Key><Size>3</Size></Contents>\
                   <Contents><Key>e.csv</Key></Contents><NextContinuationToken>tok&lt;1</NextContinuationToken></ListBucketResult>";
        let keys: Vec<String> = xml_elements(xml, "Key").collect();
        assert_eq!(keys, ["a&b/c d.csv", "e.csv"]);
        assert_eq!(
            xml_elements(xml, "NextContinuationToken").next().as_deref(),
            Some("tok<1")
        );
        assert_eq!(xml_elements(xml, "Missing").next(), None);
    }
}

/// Objects as files under a directory (standalone mode): `key` is a
/// relative path.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Objects under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, ArchiveError> {
        if key.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(ArchiveError::Config(format!("object key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

fn io_err(op: &'static str, e: std::io::Error) -> ArchiveError {
    ArchiveError::Io { op, source: e }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), ArchiveError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err("create object dir", e))?;
        }
        let tmp = path.with_extension("part");
        tokio::fs::write(&tmp, &body)
            .await
            .map_err(|e| io_err("write object", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_err("rename object", e))
    }

    async fn get(&self, key: &str) -> Result<ByteStream, ArchiveError> {
        let file = tokio::fs::File::open(self.path(key)?)
            .await
            .map_err(|e| io_err("open object", e))?;
        Ok(
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map_err(|e| io_err("read object", e))
                .boxed(),
        )
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let mut keys = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list objects", e)),
            };
            while let Some(entry) = rd
                .next_entry()
                .await
                .map_err(|e| io_err("list objects", e))?
            {
                let path = entry.path();
                if entry
                    .file_type()
                    .await
                    .map_err(|e| io_err("list objects", e))?
                    .is_dir()
                {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix) && !key.ends_with(".part") {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}
