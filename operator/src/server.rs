//! The `config.v1.ConfigService/Watch` server: every proxy pod keeps one
//! stream open; it gets the current snapshot at once (unless it already
//! holds that version), every new version or bind-slot change after, and
//! acknowledges or rejects each version. With [`SnapshotServer::authenticate`]
//! only proxy pods of the release get a stream ([`crate::auth`]).

use crate::auth::ProxyAuth;
use crate::hub::{Hub, PodAck};
use crate::slots::slots_of;
use futures::StreamExt;
use smsgw_proto::config::v1 as pb;
use smsgw_proto::config::v1::config_service_server::{ConfigService, ConfigServiceServer};
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The snapshot service, over a [`Hub`].
#[derive(Clone)]
pub struct SnapshotServer {
    hub: Hub,
    auth: Option<ProxyAuth>,
}

impl SnapshotServer {
    /// A server publishing what `hub` compiles to any caller.
    pub fn new(hub: Hub) -> Self {
        Self { hub, auth: None }
    }

    /// Serves only callers `auth` accepts, each as the pod its token is
    /// bound to.
    pub fn authenticate(mut self, auth: ProxyAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// As a tonic service, to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> ConfigServiceServer<Self> {
        ConfigServiceServer::new(self)
    }
}

/// The message `pod` gets for a publication (`None` before any snapshot).
pub fn message_for(published: &crate::hub::Published, pod: &str) -> Option<pb::Snapshot> {
    let snap = published.snapshot.as_ref()?;
    Some(pb::Snapshot {
        version: snap.version.clone(),
        snapshot_json: published.snapshot_json.as_ref().clone(),
        bind_slots: slots_of(&published.slots, pod)
            .into_iter()
            .map(|(link, slots)| (link.to_owned(), pb::SlotList { slots }))
            .collect(),
    })
}

type SnapshotStream = Pin<Box<dyn futures::Stream<Item = Result<pb::Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for SnapshotServer {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::PodMessage>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Before anything is read or sent: who is calling.
        let caller = match &self.auth {
            Some(auth) => Some(auth.caller(request.metadata()).await?),
            None => None,
        };
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(pb::PodMessage {
                msg: Some(pb::pod_message::Msg::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };
        if hello.pod.is_empty() {
            return Err(Status::invalid_argument("Hello.pod must name the pod"));
        }
        if let Some(caller) = &caller {
            caller.check_hello(&hello.pod)?;
        }
        let pod = hello.pod;
        tracing::info!(%pod, held = %hello.version, "pod connected");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let hub = self.hub.clone();
        let mut updates = hub.subscribe();
        let mut last_sent: Option<pb::Snapshot> = None;
        let mut held_version = Some(hello.version).filter(|v| !v.is_empty());
        tokio::spawn(async move {
            loop {
                let published = updates.borrow_and_update().clone();
                if let Some(msg) = message_for(&published, &pod) {
                    // A pod that reconnects with the current version and
                    // unchanged slots needs nothing.
                    let skip = last_sent.as_ref() == Some(&msg)
                        || (last_sent.is_none()
                            && held_version.as_deref() == Some(msg.version.as_str())
                            && msg.bind_slots.is_empty());
                    held_version = None;
                    if !skip {
                        if tx.send(Ok(msg.clone())).await.is_err() {
                            break;
                        }
                        last_sent = Some(msg);
                    }
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { break },
                    msg = inbound.next() => match msg {
                        Some(Ok(pb::PodMessage { msg: Some(pb::pod_message::Msg::Ack(ack)) })) => {
                            if ack.applied {
                                tracing::debug!(%pod, version = %ack.version, "applied");
                            } else {
                                tracing::warn!(%pod, version = %ack.version, resource = %ack.resource, error = %ack.error, "snapshot rejected");
                            }
                            hub.record_ack(&pod, PodAck {
                                version: ack.version,
                                applied: ack.applied,
                                error: ack.error,
                                resource: ack.resource,
                            });
                            // No new publication: wait again without resending.
                            updates.mark_unchanged();
                        }
                        Some(Ok(_)) => updates.mark_unchanged(),
                        Some(Err(_)) | None => break,
                    },
                }
            }
            tracing::info!(%pod, "pod disconnected");
            hub.forget_pod(&pod);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
