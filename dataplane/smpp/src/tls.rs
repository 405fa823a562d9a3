//! TLS for SMPP connections (rustls with the `ring` provider).
//!
//! A link with `tls` verifies the SMSC's certificate against the system
//! roots plus an optional PEM CA bundle (`tls_ca`), for `tls_server_name`
//! (default: the host), unless `tls_insecure_skip_verify` turns checking
//! off. The simulator serves TLS from a PEM certificate chain and key.

use std::sync::{Arc, OnceLock};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tracing::{debug, warn};

use crate::{config::LinkConfig, error::Error};

/// The read half of a connection, plain or TLS.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection, plain or TLS.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The operating system's trusted roots, loaded once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            debug!(error = %e, "skipped part of the system certificate store");
        }
        debug!(roots = found.certs.len(), "system roots loaded");
        found.certs
    })
}

/// The certificates of a PEM bundle; an error when there are none or one
/// does not parse.
pub(crate) fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into());
    }
    Ok(certs)
}

/// The TLS side of a link: verifier, and the name to verify and send as SNI.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// The client for `cfg`, `None` without `tls`. Errors name the field.
    pub(crate) fn new(cfg: &LinkConfig) -> Result<Option<TlsClient>, Error> {
        let bad = |reason: String| Error::InvalidConfig {
            link: cfg.name.clone(),
            reason,
        };
        if !cfg.tls {
            for (set, field) in [
                (cfg.tls_ca.is_some(), "tls_ca"),
                (cfg.tls_server_name.is_some(), "tls_server_name"),
                (cfg.tls_insecure_skip_verify, "tls_insecure_skip_verify"),
            ] {
                if set {
                    return Err(bad(format!("{field} needs tls: true")));
                }
            }
            return Ok(None);
        }
        if cfg.tls_insecure_skip_verify && cfg.tls_ca.is_some() {
            return Err(bad(
                "tls_insecure_skip_verify checks no certificate, so tls_ca would be ignored: set one or the other".into(),
            ));
        }
        let name = cfg.tls_server_name.as_deref().unwrap_or(&cfg.host);
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| {
            let field = if cfg.tls_server_name.is_some() {
                "tls_server_name"
            } else {
                "host"
            };
            bad(format!(
                "{field}: {name:?} is not a DNS name or IP address for TLS: {e}"
            ))
        })?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS: {e}")))?;
        let config = if cfg.tls_insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(system_roots().iter().cloned());
            if let Some(pem) = &cfg.tls_ca {
                for cert in pem_certs(pem).map_err(|e| bad(format!("tls_ca: {e}")))? {
                    roots
                        .add(cert)
                        .map_err(|e| bad(format!("tls_ca: unusable CA certificate: {e}")))?;
                }
            }
            if roots.is_empty() {
                warn!(link = %cfg.name, "no trusted roots (no system roots, no tls_ca): every TLS handshake will fail");
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Some(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        }))
    }

    /// Runs the handshake over `tcp` and returns the two halves.
    pub(crate) async fn handshake(&self, tcp: TcpStream) -> std::io::Result<(BoxRead, BoxWrite)> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        let (r, w) = tokio::io::split(tls);
        Ok((Box::new(r), Box::new(w)))
    }
}

/// `tls_insecure_skip_verify`: any certificate for any name is accepted;
/// handshake signatures are still checked, so the peer holds the key of the
/// certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server configuration from a PEM certificate chain (leaf first) and a
/// PEM private key (PKCS#8, PKCS#1 or SEC1), for the simulator.
pub(crate) fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, String> {
    let certs = pem_certs(cert_pem).map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: no usable PEM private key: {e}"))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}
