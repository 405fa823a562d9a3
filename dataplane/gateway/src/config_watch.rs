//! `smsgw serve`: the gateway in a cluster. Its configuration comes from the
//! operator's snapshot server (`config.v1.ConfigService/Watch`): the pod
//! says Hello, applies every snapshot pushed (at most once per version) and
//! acknowledges or rejects it. When the operator is away, the gateway keeps
//! serving with the last snapshot it applied and reconnects with backoff.
//!
//! Applying a snapshot syncs the managed users, swaps the configuration the
//! API reads and starts the links the first time; later, links whose spec
//! changed are replaced, removed ones stop, added ones start, and pools are
//! rebuilt ([`crate::links::Links::update`]). With `--bind-leases` the bind slots the
//! operator assigns to the pod go to the Lease keeper ([`crate::bind_slots`]):
//! a link binds only the sessions of the slots whose Lease the pod holds;
//! without it every pod binds every session of each link.

use crate::cli::ServeArgs;
use crate::runtime::Gateway;
use crate::validate::Rejection;
use smsgw_crds::Snapshot;
use smsgw_leases::SlotId;
use smsgw_proto::config::v1 as pb;
use smsgw_proto::config::v1::config_service_client::ConfigServiceClient;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Gateway {
    /// The version in force, if any.
    fn held_version(&self) -> String {
        if self.state.ready.load(Ordering::Acquire) {
            self.state.config.load().version.clone()
        } else {
            String::new()
        }
    }
}

/// `smsgw serve`: starts the servers at once (not ready), follows the
/// operator's snapshots until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.check_shared_state()?;
    let gateway = Arc::new(Gateway::build(&args.gateway).await?);
    let endpoint = config_endpoint(&args)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    tracing::info!(server = %args.config_server, pod = %gateway.pod, "waiting for a configuration snapshot");
    let wanted = if args.bind_leases {
        let gates = Arc::new(crate::bind_slots::Gates::default());
        gateway.links.gate(gates.clone());
        let (tx, rx) = tokio::sync::watch::channel(Default::default());
        crate::bind_slots::start(
            &gateway.pod,
            &args.pod_namespace,
            args.bind_lease_duration,
            gates,
            rx,
            gateway.cancel.clone(),
            &gateway.tracker,
        )
        .await?;
        Some(tx)
    } else {
        None
    };
    let watch = Watch {
        gateway: gateway.clone(),
        endpoint,
        namespace: args.pod_namespace.clone(),
        retry_max: args.config_retry_max,
        token_file: args.config_token_file.clone(),
        wanted,
    };
    gateway.tracker.spawn(watch.run(gateway.cancel.clone()));
    gateway.run().await
}

/// The snapshot server's endpoint: plain, or TLS verified against
/// `--config-server-ca` for `--config-server-name`.
fn config_endpoint(args: &ServeArgs) -> anyhow::Result<tonic::transport::Endpoint> {
    use anyhow::Context;
    crate::tls_client::ClientTls {
        ca: args.config_server_ca.clone(),
        server_name: args.config_server_name.clone(),
        ..Default::default()
    }
    .endpoint(&args.config_server)
    .context("--config-server")
}

/// The pod's token from `path`, as a metadata value (never logged).
fn bearer(
    path: &std::path::Path,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, tonic::Status> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        tonic::Status::unauthenticated(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    format!("Bearer {}", token.trim()).parse().map_err(|_| {
        tonic::Status::unauthenticated(format!("{} does not hold a token", path.display()))
    })
}

struct Watch {
    gateway: Arc<Gateway>,
    endpoint: tonic::transport::Endpoint,
    namespace: String,
    retry_max: Duration,
    /// The projected ServiceAccount token sent with each stream.
    token_file: Option<std::path::PathBuf>,
    /// The bind slots assigned to the pod, for the Lease keeper
    /// (`--bind-leases`).
    wanted: Option<tokio::sync::watch::Sender<BTreeSet<SlotId>>>,
}

impl Watch {
    /// Keeps a Watch stream open until `cancel`, reconnecting with
    /// exponential backoff (reset once a stream delivered a snapshot).
    async fn run(self, cancel: CancellationToken) {
        let initial = Duration::from_millis(200).min(self.retry_max);
        let mut backoff = initial;
        loop {
            let mut received = false;
            let outcome = tokio::select! {
                r = self.session(&mut received) => r,
                () = cancel.cancelled() => return,
            };
            if received {
                backoff = initial;
            }
            let held = self.gateway.held_version();
            match outcome {
                Ok(()) => {
                    tracing::warn!(retry_in = ?backoff, held = %held, "the snapshot server closed the stream; serving with the last snapshot")
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, held = %held, "snapshot server unreachable; serving with the last snapshot")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = cancel.cancelled() => return,
            }
            backoff = (backoff * 2).min(self.retry_max);
        }
    }

    /// One stream: Hello, then apply and ack each snapshot until it ends.
    async fn session(&self, received: &mut bool) -> Result<(), tonic::Status> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
        let mut client = ConfigServiceClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let hello = pb::Hello {
            pod: self.gateway.pod.clone(),
            version: self.gateway.held_version(),
        };
        let _ = tx
            .send(pb::PodMessage {
                msg: Some(pb::pod_message::Msg::Hello(hello)),
            })
            .await;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(path) = &self.token_file {
            request
                .metadata_mut()
                .insert("authorization", bearer(path)?);
        }
        let mut stream = client.watch(request).await?.into_inner();
        tracing::info!("connected to the snapshot server");
        while let Some(msg) = stream.message().await? {
            *received = true;
            let ack = self.handle(msg).await;
            if tx
                .send(pb::PodMessage {
                    msg: Some(pb::pod_message::Msg::Ack(ack)),
                })
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }

    /// Applies one pushed snapshot (unless its version is in force already)
    /// and says how it went.
    async fn handle(&self, msg: pb::Snapshot) -> pb::Ack {
        let assigned: BTreeMap<String, Vec<u32>> = msg
            .bind_slots
            .iter()
            .map(|(l, s)| (l.clone(), s.slots.clone()))
            .collect();
        let outcome = if msg.version == self.gateway.held_version() {
            Ok(())
        } else {
            match decode(&msg.snapshot_json) {
                Ok(snap) => self.gateway.apply(snap, &self.namespace).await,
                Err(e) => Err(e),
            }
        };
        self.assign(&msg.version, &assigned);
        match outcome {
            Ok(()) => pb::Ack {
                version: msg.version,
                applied: true,
                ..Default::default()
            },
            Err(r) => {
                tracing::warn!(version = %msg.version, resource = %r.resource, error = %r.error, "snapshot rejected; keeping the configuration in force");
                pb::Ack {
                    version: msg.version,
                    applied: false,
                    error: r.error,
                    resource: r.resource,
                }
            }
        }
    }
}

impl Watch {
    /// Hands the slots assigned to the pod (those of links in force) to the
    /// Lease keeper; without `--bind-leases` they are only logged.
    fn assign(&self, version: &str, assigned: &BTreeMap<String, Vec<u32>>) {
        let Some(tx) = &self.wanted else {
            if !assigned.is_empty() {
                tracing::debug!(%version, bind_slots = ?assigned, "bind slots assigned (not gated: every link runs all its sessions)");
            }
            return;
        };
        let sessions: BTreeMap<String, u32> = if self.gateway.held_version().is_empty() {
            BTreeMap::new()
        } else {
            let snap = self.gateway.state.config.load();
            snap.links
                .iter()
                .map(|(n, s)| (n.clone(), s.sessions))
                .collect()
        };
        let wanted = crate::bind_slots::wanted(assigned, &sessions);
        tx.send_if_modified(|w| {
            let changed = *w != wanted;
            if changed {
                tracing::info!(%version, bind_slots = ?assigned, "bind slots assigned");
                *w = wanted;
            }
            changed
        });
    }
}

/// Parses a snapshot's JSON. The error names only the position and class,
/// never the content (the snapshot holds SMSC passwords).
fn decode(json: &[u8]) -> Result<Snapshot, Rejection> {
    serde_json::from_slice(json).map_err(|e| Rejection {
        error: format!(
            "snapshot JSON does not parse ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
        resource: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Snapshot {
        smsgw_crds::compile_manifests(include_str!("../../../examples/standalone.yaml"))
            .expect("the example compiles")
    }

    #[test]
    fn decode_errors_do_not_echo_the_content() {
        let mut v = serde_json::to_value(example()).unwrap();
        v["links"]["local-sim"]["port"] = serde_json::json!("hunter2-secret");
        let r = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(!r.error.contains("hunter2"), "{}", r.error);
        assert!(decode(&serde_json::to_vec(&example()).unwrap()).is_ok());
    }
}
