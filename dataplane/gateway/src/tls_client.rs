//! TLS of the gateway's clients: the admin CLI and the load tool towards a
//! gateway, and `serve` towards the operator's snapshot server. An
//! `https://` address turns TLS on; the server is verified against the
//! system roots, or only against `--ca` when given; a client certificate
//! answers servers that require mutual TLS.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The TLS settings of a client.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTls {
    /// PEM bundle of the CAs the server's certificate must chain to (TLS:
    /// `https://` addresses); default: the system's roots.
    #[arg(long = "ca", env = "SMSGW_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for servers that require mutual TLS (needs
    /// --client-key).
    #[arg(long, env = "SMSGW_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "SMSGW_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Name the server's certificate must carry, when it differs from the
    /// host of the address.
    #[arg(long = "tls-server-name", env = "SMSGW_TLS_SERVER_NAME")]
    pub server_name: Option<String>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

impl ClientTls {
    fn check_scheme(&self, url: &str) -> anyhow::Result<bool> {
        let tls = url.starts_with("https://");
        if !tls && (self.ca.is_some() || self.client_cert.is_some() || self.server_name.is_some()) {
            bail!("{url}: TLS options are set but the address is not https://");
        }
        Ok(tls)
    }

    /// A gRPC endpoint for `url` (`http://` plain, `https://` TLS).
    pub fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let tls = self.check_scheme(url)?;
        let endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("{url:?} is not a URL"))?;
        if !tls {
            return Ok(endpoint);
        }
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca, "the CA bundle")?)),
            None => config.with_native_roots(),
        };
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            config = config.identity(Identity::from_pem(
                read(cert, "the client certificate")?,
                read(key, "the client key")?,
            ));
        }
        endpoint
            .tls_config(config)
            .with_context(|| format!("TLS settings for {url}"))
    }

    /// An HTTP client for the REST base URL `url`.
    pub fn http(&self, url: &str) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder();
        if self.check_scheme(url)? {
            if let Some(name) = &self.server_name {
                anyhow::ensure!(
                    url.parse::<reqwest::Url>()
                        .ok()
                        .and_then(|u| u.host_str().map(|h| h == name))
                        == Some(true),
                    "--tls-server-name is for gRPC; over REST the address's host is the name"
                );
            }
            if let Some(ca) = &self.ca {
                let pem = read(ca, "the CA bundle")?;
                builder = builder.tls_built_in_root_certs(false);
                for cert in reqwest::Certificate::from_pem_bundle(&pem)
                    .with_context(|| format!("{} is not a PEM bundle", ca.display()))?
                {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                let mut pem = read(cert, "the client certificate")?;
                pem.extend(read(key, "the client key")?);
                builder = builder.identity(
                    reqwest::Identity::from_pem(&pem)
                        .context("the client certificate and key do not load")?,
                );
            }
        }
        builder.build().context("cannot build the HTTP client")
    }
}
