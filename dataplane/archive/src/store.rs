//! Object storage: S3 (AWS or any S3-compatible server) through the AWS
//! SDK (`aws-sdk-s3`: the standard credential chain, the SDK's retries,
//! multipart upload of large objects), or a local directory (standalone
//! mode).

use crate::ArchiveError;
use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
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

/// Smallest multipart part S3 accepts (except the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// How to reach one S3 bucket.
///
/// # Defaults
/// Region `us-east-1`, path-style URLs, credentials from the standard AWS
/// chain (no static keys), each attempt bounded by 30 s, 3 attempts (the
/// SDK's standard retry: exponential backoff with jitter on throttling,
/// 5xx and transport errors), objects over 16 MiB uploaded in 8 MiB parts,
/// 4 at once.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://minio:9000`.
    pub endpoint: String,
    /// Region used in signatures.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Access key id; empty: the standard credential chain.
    pub access_key: String,
    /// Secret access key; never logged.
    pub secret_key: String,
    /// Path-style (`endpoint/bucket/key`, MinIO and most compatibles) or
    /// virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Bound on one attempt of a request; a GET's body is bounded by the
    /// idle time between chunks instead.
    pub timeout: Duration,
    /// Attempts per request (1: no retry).
    pub max_attempts: u32,
    /// Objects larger than this go up in parts (multipart upload).
    pub multipart_threshold: usize,
    /// Size of each part but the last, at least [`MIN_PART_SIZE`].
    pub part_size: usize,
    /// Parts uploaded at once.
    pub part_concurrency: usize,
}

impl S3Config {
    /// Defaults for a bucket at an endpoint with a key pair (both empty:
    /// the standard AWS credential chain: `AWS_ACCESS_KEY_ID`…, web
    /// identity (IRSA), the shared config/credentials files, ECS/EKS
    /// container credentials, EC2 instance metadata).
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
            max_attempts: 3,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            part_concurrency: 4,
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
            .field("max_attempts", &self.max_attempts)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

/// One S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    timeout: Duration,
    multipart_threshold: usize,
    part_size: usize,
    part_concurrency: usize,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

fn s3_err(op: &'static str, e: impl fmt::Display) -> ArchiveError {
    ArchiveError::S3 {
        op,
        reason: e.to_string(),
    }
}

/// An SDK error with its causes (never credentials or signatures).
fn sdk_err<E: std::error::Error>(op: &'static str, e: E) -> ArchiveError {
    s3_err(op, DisplayErrorContext(e))
}

/// The standard AWS credential chain, built on first use (building it
/// reads the environment and files, and is asynchronous; `S3Store::new`
/// is not). The SDK caches what it provides until shortly before expiry.
#[derive(Debug)]
struct DefaultChain {
    region: Region,
    http: aws_smithy_runtime_api::client::http::SharedHttpClient,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| async {
                    let conf = ProviderConfig::without_region()
                        .with_region(Some(self.region.clone()))
                        .with_http_client(self.http.clone());
                    DefaultCredentialsChain::builder()
                        .configure(conf)
                        .region(self.region.clone())
                        .build()
                        .await
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

impl S3Store {
    /// A client for the bucket in `config`.
    pub fn new(config: &S3Config) -> Result<Self, ArchiveError> {
        let endpoint: http::Uri = config
            .endpoint
            .parse()
            .map_err(|e| ArchiveError::Config(format!("S3 endpoint: {e}")))?;
        if !matches!(endpoint.scheme_str(), Some("http" | "https")) || endpoint.host().is_none() {
            return Err(ArchiveError::Config(format!(
                "S3 endpoint {endpoint}: expected http(s)://host[:port]"
            )));
        }
        if config.bucket.is_empty() {
            return Err(ArchiveError::Config("S3 bucket: empty name".into()));
        }
        if config.access_key.is_empty() != config.secret_key.is_empty() {
            return Err(ArchiveError::Config(
                "S3 credentials: give both the access key and the secret key, or neither (the standard AWS credential chain)".into(),
            ));
        }
        if config.part_size < MIN_PART_SIZE {
            return Err(ArchiveError::Config(format!(
                "S3 part size {} is below the 5 MiB S3 accepts",
                config.part_size
            )));
        }
        // rustls with ring, as everywhere in the workspace: the SDK's
        // default (aws-lc-rs) needs cmake and a C toolchain to build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let region = Region::new(config.region.clone());
        // Pinned: each SDK release deprecates the previous dated version
        // and `latest()` changes retry and timeout defaults under us (its
        // retry behaviour 2.1 hid an outage from the journal's tests).
        #[allow(deprecated)]
        let behavior = BehaviorVersion::v2026_01_12();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(behavior)
            .region(region.clone())
            .endpoint_url(config.endpoint.trim_end_matches('/'))
            .force_path_style(config.path_style)
            .http_client(http.clone())
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(config.timeout)
                    .build(),
            )
            // Body integrity is TCP/TLS's and the server's MD5/ETag; the
            // SDK's default CRC trailers (aws-chunked) are not understood
            // by every S3-compatible server.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // `get` bounds the idle time between chunks itself.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if config.access_key.is_empty() {
            b = b.credentials_provider(DefaultChain {
                region,
                http,
                chain: tokio::sync::OnceCell::new(),
            });
        } else {
            b = b.credentials_provider(Credentials::new(
                config.access_key.clone(),
                config.secret_key.clone(),
                None,
                None,
                "smsgw-static",
            ));
        }
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: config.bucket.clone(),
            timeout: config.timeout,
            multipart_threshold: config.multipart_threshold,
            part_size: config.part_size,
            part_concurrency: config.part_concurrency.max(1),
        })
    }

    /// Creates the bucket (tests, first start); an existing bucket is fine.
    pub async fn create_bucket(&self) -> Result<(), ArchiveError> {
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let service = e.as_service_error();
                if service.is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) || e.raw_response().is_some_and(|r| r.status().as_u16() == 409)
                {
                    Ok(())
                } else {
                    Err(sdk_err("create bucket", e))
                }
            }
        }
    }

    /// Uploads `body` in parts of `part_size` (at most `part_concurrency`
    /// at once) and completes the upload; aborts it on failure so no parts
    /// are left behind.
    async fn put_multipart(&self, key: &str, body: Bytes) -> Result<(), ArchiveError> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_err("create multipart upload", e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| s3_err("create multipart upload", "no upload id in the answer"))?
            .to_owned();
        let parts = (0..body.len().div_ceil(self.part_size)).map(|i| {
            let chunk = body.slice(i * self.part_size..((i + 1) * self.part_size).min(body.len()));
            let number = i as i32 + 1;
            let upload_id = upload_id.clone();
            async move {
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(SdkBody::from(chunk))
                    .send()
                    .await
                    .map_err(|e| sdk_err("upload part", e))?;
                Ok::<_, ArchiveError>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build(),
                )
            }
        });
        let uploaded: Result<Vec<CompletedPart>, ArchiveError> = futures::stream::iter(parts)
            .buffered(self.part_concurrency)
            .try_collect()
            .await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_err("complete multipart upload", e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Best effort: a lifecycle rule cleans up what this misses.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), ArchiveError> {
        if body.len() > self.multipart_threshold {
            return self.put_multipart(key, body).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(SdkBody::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_err("put", e))
    }

    async fn get(&self, key: &str) -> Result<ByteStream, ArchiveError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_err("get", e))?;
        let idle = self.timeout;
        // Bound the wait for each chunk, not the whole (large) body.
        let stream = futures::stream::unfold(out.body, move |mut body| async move {
            match tokio::time::timeout(idle, body.try_next()).await {
                Ok(Ok(Some(chunk))) => Some((Ok(chunk), body)),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some((Err(sdk_err("get body", e)), body)),
                Err(_) => Some((Err(s3_err("get body", "idle timeout")), body)),
            }
        });
        Ok(stream.boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(|e| sdk_err("list", e))? {
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
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
