//! TLS on the gateway's own listeners (REST and gRPC).
//!
//! The certificate chain and key come from PEM files; with a client CA
//! every client must present a certificate it signed (mTLS). The files are
//! read again every reload interval and a changed set is swapped in for
//! new connections (cert-manager and the kubelet rewrite them in place);
//! a set that does not load (a half-written rotation) keeps the previous
//! one in force and is logged once. Handshakes run beside the accept loop,
//! bounded in number and time, so a slow or plain-text client holds up
//! nobody else; a plain-text client never reaches the servers.

use arc_swap::ArcSwap;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// ALPN of the gRPC listener: HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN of the REST listener: HTTP/1.1 (axum serves it).
pub const ALPN_REST: &[&[u8]] = &[b"http/1.1"];

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; more wait to be accepted.
const MAX_HANDSHAKES: usize = 512;

/// Where a listener's certificate, key and (for mTLS) client CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of the CAs client certificates must chain to; `None`:
    /// clients present no certificate.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the set (key does not match the certificate, a CA
    /// that is not one, …).
    #[error("{what}: {reason}")]
    Refused {
        /// Which part: `certificate and key` or `client CA`.
        what: &'static str,
        /// rustls' reason.
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        ));
    }
    Ok(certs)
}

/// The contents of a [`TlsFiles`] set, as last read.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    fn read(&self) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_deref().map(read).transpose()?,
        })
    }

    fn config(&self, c: &Contents, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let chain = certs(&self.cert, &c.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&c.key).map_err(|e| TlsError::Pem {
            path: self.key.clone(),
            reason: format!("no usable PEM private key: {e}"),
        })?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Refused {
                what: "protocol versions",
                reason: e.to_string(),
            })?;
        let builder = match (&self.client_ca, &c.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for ca in certs(path, pem)? {
                    roots.add(ca).map_err(|e| TlsError::Refused {
                        what: "client CA",
                        reason: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::Refused {
                            what: "client CA",
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Refused {
                what: "certificate and key",
                reason: e.to_string(),
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A listener's TLS configuration, reloaded from its files when they
/// change.
pub struct ReloadingTls {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    current: ArcSwap<ServerConfig>,
    /// What the files held when last read (loaded or not), so a set that
    /// fails to load is reported once, not at every check.
    seen: Mutex<Contents>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Loads `files` offering `alpn` ([`ALPN_GRPC`], [`ALPN_REST`]); an
    /// error names the file or the part that is wrong.
    pub fn load(files: TlsFiles, alpn: &[&'static [u8]]) -> Result<Arc<Self>, TlsError> {
        let contents = files.read()?;
        let config = files.config(&contents, alpn)?;
        Ok(Arc::new(Self {
            files,
            alpn: alpn.to_vec(),
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(contents),
        }))
    }

    /// Reads the files again; a changed set that loads is in force for
    /// the next handshake (`Ok(true)`). A changed set that does not load
    /// leaves the previous one in force and is an error once.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let contents = self.files.read()?;
        let mut seen = self.seen.lock().expect("not poisoned");
        if *seen == contents {
            return Ok(false);
        }
        let result = self.files.config(&contents, &self.alpn);
        *seen = contents;
        drop(seen);
        self.current.store(Arc::new(result?));
        Ok(true)
    }

    /// Checks the files every `every` until `cancel` fires, logging each
    /// reload and each set that does not load (without key material).
    pub async fn watch(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "TLS files changed but do not load; the previous certificate stays in force"
                ),
            }
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// The TLS connections of one listener, handshakes done: an
/// [`axum::serve::Listener`] for REST and a stream of connections for
/// tonic's `serve_with_incoming`.
pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsIncoming {
    /// Accepts on `listener` until `cancel` fires, completing each
    /// handshake with the configuration in force when it began.
    pub fn new(listener: TcpListener, tls: Arc<ReloadingTls>, cancel: CancellationToken) -> Self {
        // A bound socket always knows its address; the fallback only
        // matters to `local_addr` callers, which the servers are not.
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, tls, tx, cancel));
        Self { rx, local }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    cancel: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => return,
            p = handshakes.clone().acquire_owned() => p.expect("never closed"),
        };
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, tx) = (tls.acceptor(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (cancelled): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl futures::Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|c| c.map(|(stream, _peer)| Ok(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: None,
        }
    }

    #[test]
    fn a_changed_pair_is_swapped_in_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let (c1, k1) = self_signed("one.test");
        std::fs::write(&f.cert, &c1).unwrap();
        std::fs::write(&f.key, &k1).unwrap();
        let tls = ReloadingTls::load(f.clone(), ALPN_GRPC).unwrap();
        assert_eq!(tls.current.load().alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");

        // Half a rotation: the new certificate beside the old key.
        let (c2, k2) = self_signed("two.test");
        std::fs::write(&f.cert, &c2).unwrap();
        let before = tls.current.load_full();
        let err = tls.reload_if_changed().unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Refused {
                    what: "certificate and key",
                    ..
                }
            ),
            "{err}"
        );
        assert!(Arc::ptr_eq(&before, &tls.current.load_full()));
        assert!(!tls.reload_if_changed().unwrap(), "reported once");

        std::fs::write(&f.key, &k2).unwrap();
        assert!(tls.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.current.load_full()));
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let err = ReloadingTls::load(f.clone(), ALPN_REST).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
        std::fs::write(&f.cert, "not pem").unwrap();
        std::fs::write(&f.key, "not pem").unwrap();
        let err = ReloadingTls::load(f.clone(), ALPN_REST).unwrap_err();
        assert!(
            err.to_string().contains("tls.crt") && err.to_string().contains("no PEM certificate"),
            "{err}"
        );
        let (c, _) = self_signed("x.test");
        std::fs::write(&f.cert, c).unwrap();
        let err = ReloadingTls::load(f, ALPN_REST).unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
    }
}
