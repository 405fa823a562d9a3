//! `smsgw-operator`: leader-elected; the leader watches the smsgw kinds,
//! serves the snapshot to the proxy pods and writes status back.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use smsgw_operator::auth::ProxyAuth;
use smsgw_operator::controller::{self, ControllerConfig};
use smsgw_operator::hub::Hub;
use smsgw_operator::leader::LeaderElector;
use smsgw_operator::server::SnapshotServer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// smsgw operator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Namespace watched (the release namespace).
    #[arg(long, env = "SMSGW_OPERATOR_NAMESPACE", default_value = "default")]
    namespace: String,
    /// This pod's name (leader identity, Event reporter).
    #[arg(
        long,
        env = "SMSGW_OPERATOR_POD_NAME",
        default_value = "smsgw-operator"
    )]
    pod_name: String,
    /// Address of the config.v1 snapshot stream.
    #[arg(
        long,
        env = "SMSGW_OPERATOR_GRPC_ADDR",
        default_value = "0.0.0.0:50051"
    )]
    grpc_addr: SocketAddr,
    /// Address of /healthz, /readyz (leader only).
    #[arg(
        long,
        env = "SMSGW_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    metrics_addr: SocketAddr,
    /// Label selector of the proxy pods.
    #[arg(
        long,
        env = "SMSGW_OPERATOR_PROXY_SELECTOR",
        default_value = "app.kubernetes.io/component=proxy"
    )]
    proxy_selector: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SMSGW_OPERATOR_LEASE",
        default_value = "smsgw-operator-leader"
    )]
    leader_lease: String,
    /// Leader Lease duration, seconds.
    #[arg(long, env = "SMSGW_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Serve the snapshot stream over TLS with this PEM certificate chain,
    /// leaf first (needs --tls-key); the proxies verify it.
    #[arg(long, env = "SMSGW_OPERATOR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SMSGW_OPERATOR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve snapshots only to pods of this ServiceAccount (in the
    /// namespace): each stream must carry the pod's projected token for
    /// --token-audience, checked by TokenReview, and its Hello must name
    /// the pod the token is bound to. Unset: any caller gets the snapshot
    /// and its secrets (for development only).
    #[arg(long, env = "SMSGW_OPERATOR_PROXY_SERVICE_ACCOUNT")]
    proxy_service_account: Option<String>,
    /// Audience the proxies' tokens must be issued for.
    #[arg(
        long,
        env = "SMSGW_OPERATOR_TOKEN_AUDIENCE",
        default_value = "smsgw-config"
    )]
    token_audience: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .init();
    let leader = Arc::new(AtomicBool::new(false));
    let health = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    let l = leader.clone();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let l = l.clone();
                async move {
                    if l.load(Ordering::Relaxed) {
                        (axum::http::StatusCode::OK, "leader")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "standby")
                    }
                }
            }),
        );
    tokio::spawn(async move { axum::serve(health, app).await });

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration")?;
    let elector = LeaderElector::new(
        kube::Api::namespaced(client.clone(), &args.namespace),
        &args.leader_lease,
        &args.pod_name,
        Duration::from_secs(args.lease_seconds),
    );
    elector.acquire().await.context("leader election")?;
    leader.store(true, Ordering::Relaxed);

    let (hub, rejections) = Hub::new();
    let cancel = CancellationToken::new();
    let mut snapshots = SnapshotServer::new(hub.clone());
    match &args.proxy_service_account {
        Some(sa) => {
            snapshots = snapshots.authenticate(ProxyAuth::new(
                client.clone(),
                &args.namespace,
                sa,
                args.token_audience.clone(),
            ))
        }
        // Info, not a warning: a development setup (the chart sets it).
        None => tracing::info!(
            "--proxy-service-account is unset: any caller of the snapshot stream gets every link's bind password"
        ),
    }
    let mut server = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
            ))
            .context("--tls-cert/--tls-key")?;
    }
    let grpc = server
        .add_service(snapshots.into_service())
        .serve_with_shutdown(args.grpc_addr, cancel.clone().cancelled_owned());
    let cfg = ControllerConfig {
        namespace: args.namespace.clone(),
        proxy_selector: args.proxy_selector.clone(),
        pod_name: args.pod_name.clone(),
        resync: Duration::from_secs(10),
    };
    let ctl = controller::run(client, cfg, hub, rejections, cancel.clone());
    let result = tokio::select! {
        e = elector.keep() => Err(anyhow::Error::new(e).context("stopping: no longer the leader")),
        r = grpc => r.context("snapshot server failed"),
        () = ctl => Err(anyhow::anyhow!("controllers stopped")),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    cancel.cancel();
    result
}
