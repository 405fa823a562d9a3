//! The gateway's public surfaces: REST on axum (port 8080) and gRPC on
//! tonic (port 44044).
//!
//! Both front ends call the same request logic (e.g. [`text::check_text_len`])
//! and report failures as one [`ApiError`], which is the only place errors
//! become HTTP status codes with JSON bodies or `tonic::Status` values.
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod claims;
pub mod cluster;
pub mod dashboard;
mod error;
pub mod events;
mod grpc;
pub mod links;
pub mod metrics;
pub mod net;
mod rest;
pub mod send;
pub mod server;
pub mod text;
pub mod tls;
pub mod trace;
pub mod webhook;

/// Every state change of a message, for an observer (the journal).
pub use smsgw_messaging::lifecycle;
/// Message counters per link, pool, app and campaign.
pub use smsgw_messaging::stats;

pub use error::ApiError;
pub use grpc::{AdminGrpc, AuthGrpc, SmsGrpc, StreamSlots};
pub use rest::doc::{openapi, openapi_json};
pub use rest::router;

use arc_swap::ArcSwap;
use smsgw_crds::Snapshot;
use smsgw_messaging::Messaging;
use std::sync::Arc;

/// Largest request body the REST API reads; beyond it a request gets 413.
/// A 255-segment text escaped as JSON fits well within it.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Largest gRPC message the server decodes; beyond it a call fails with
/// RESOURCE_EXHAUSTED.
pub const MAX_GRPC_MESSAGE_BYTES: usize = MAX_BODY_BYTES;

/// Largest message `auth.v1`, `grpc.health.v1` and reflection decode:
/// they are reached without credentials and their messages are small.
pub const MAX_UNAUTHENTICATED_GRPC_MESSAGE_BYTES: usize = 16 * 1024;

/// Open gRPC server streams per user unless configured.
pub const DEFAULT_STREAMS_PER_USER: usize = 16;

/// State shared by every request handler.
#[derive(Clone)]
pub struct ApiState {
    /// The configuration in force; swapped whole when a new one arrives
    /// (the same one the message service reads).
    pub config: Arc<ArcSwap<Snapshot>>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Users and credentials.
    pub auth: Arc<auth::Auth>,
    /// The message lifecycle, and the links, rate limiter and contact
    /// policies it uses.
    pub messages: Arc<Messaging>,
    /// Whether a configuration is in force (`/ready`); a gateway waiting
    /// for its first snapshot from the operator is not ready.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// `/dashboard/stats`: the data directory and CPU samples.
    pub dashboard: Arc<dashboard::Dashboard>,
    /// Blacklists the admin API can reload; `None` when none is configured.
    pub blacklists: Option<Arc<dyn smsgw_core::policy::BlacklistReloader>>,
    /// Open gRPC server streams per user.
    pub streams: Arc<grpc::StreamSlots>,
    /// Webhooks may target private and loopback addresses
    /// (`--webhook-allow-private`).
    pub webhook_allow_private: bool,
    /// The other pods' numbers, in a cluster: the admin statistics and the
    /// dashboard then answer for the whole cluster.
    pub cluster: Option<Arc<dyn cluster::Peers>>,
    /// Answer as the platform smsgw replaces did
    /// (`--compat-platform-responses`): a refused unary `SendMessage` is an
    /// `SmsResponse` with `success: false` and status OK, not a gRPC error,
    /// and a refused REST send answers that `SmsResponse` in JSON (with its
    /// HTTP status).
    pub compat_platform_responses: bool,
    /// `/dashboard/stats` answers without credentials, as it did on the
    /// platform (`--public-dashboard`).
    pub public_dashboard: bool,
}

impl ApiState {
    /// State over the given metrics, authenticator and message service
    /// (whose configuration it shares). The message service's series are
    /// registered in `metrics`.
    pub fn new(metrics: metrics::Metrics, auth: auth::Auth, messages: Arc<Messaging>) -> Self {
        metrics.with_registry(|r| messages.register_metrics(r));
        let auth = Arc::new(auth);
        metrics.with_registry(|r| {
            r.register_collector(Box::new(metrics::MemoryGauges::new(
                &metrics, &auth, &messages,
            )));
        });
        Self {
            config: messages.config().clone(),
            metrics: Arc::new(metrics),
            auth,
            messages,
            dashboard: Arc::new(dashboard::Dashboard::default()),
            blacklists: None,
            streams: Arc::new(grpc::StreamSlots::new(DEFAULT_STREAMS_PER_USER)),
            webhook_allow_private: false,
            cluster: None,
            compat_platform_responses: false,
            public_dashboard: false,
            ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// The same state, reporting the disk of `data_dir` on the dashboard.
    pub fn with_data_dir(mut self, data_dir: std::path::PathBuf) -> Self {
        self.dashboard = Arc::new(dashboard::Dashboard::new(Some(data_dir)));
        self
    }

    /// The same state, answering the admin statistics and the dashboard for
    /// the whole cluster `peers` belongs to.
    pub fn with_cluster(mut self, peers: Arc<dyn cluster::Peers>) -> Self {
        self.cluster = Some(peers);
        self
    }

    /// This pod's numbers, as it publishes them for the other pods of a
    /// cluster.
    pub fn pod_numbers(&self) -> cluster::PodNumbers {
        cluster::PodNumbers {
            stats: self.own_stats(),
            requests: dashboard::request_stats(self),
            campaigns: self
                .messages
                .stats
                .top_campaigns(None, cluster::PUBLISHED_CAMPAIGNS),
            memory_rss_bytes: dashboard::memory().0,
        }
    }

    /// Message counters per link, pool and app: this pod's, or in a
    /// cluster every pod's summed with a per-pod breakdown.
    pub fn stats_view(&self) -> stats::StatsView {
        let v = self.own_stats();
        match &self.cluster {
            None => v,
            Some(c) => v.merged(
                &c.pod(),
                c.peers()
                    .into_iter()
                    .map(|(pod, n)| (pod, n.stats))
                    .collect(),
            ),
        }
    }

    /// This pod's counters with its rate limiter's status: what it
    /// publishes to its peers and what it answers alone.
    fn own_stats(&self) -> stats::StatsView {
        let mut v = self.messages.stats.view();
        v.limiter = self.messages.limiter().status().into();
        v
    }

    /// The same state with blacklists the admin API can reload.
    pub fn with_blacklists(
        mut self,
        blacklists: Arc<dyn smsgw_core::policy::BlacklistReloader>,
    ) -> Self {
        self.blacklists = Some(blacklists);
        self
    }

    /// The same state, allowing each user at most `max` open gRPC server
    /// streams.
    pub fn with_max_streams_per_user(mut self, max: usize) -> Self {
        self.streams = Arc::new(grpc::StreamSlots::new(max));
        self
    }

    /// The same state, letting webhooks target private, loopback and
    /// link-local addresses (local development and tests).
    pub fn with_webhook_allow_private(mut self, allow: bool) -> Self {
        self.webhook_allow_private = allow;
        self
    }

    /// The same state, answering refused unary gRPC sends as the platform
    /// did: `SmsResponse{success: false, error, esme}` with status OK.
    pub fn with_compat_platform_responses(mut self, on: bool) -> Self {
        self.compat_platform_responses = on;
        self
    }

    /// The same state, serving `/dashboard/stats` without credentials
    /// (callers who send credentials are still authenticated).
    pub fn with_public_dashboard(mut self, on: bool) -> Self {
        self.public_dashboard = on;
        self
    }
}

/// Fixtures for this crate's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::auth::{Auth, AuthConfig, jwt::KeySet};

    /// The admin key the fixture state accepts.
    pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

    /// API state over `config`, an embedded user store in a temporary
    /// directory (kept alive by the returned guard) and a fixed JWT key.
    pub fn state(config: Snapshot, admin_key: Option<&str>) -> (tempfile::TempDir, ApiState) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn smsgw_core::users::UserStore> =
            Arc::new(smsgw_store::EmbeddedUserStore::open(&dir.path().join("users.redb")).unwrap());
        let auth = Auth::new(
            AuthConfig::new(
                KeySet::single("test", vec![42u8; 32]),
                admin_key.map(str::to_owned),
            ),
            store.clone(),
        );
        let messages = smsgw_store::messages::EmbeddedMessageStore::open(
            &dir.path().join("messages.redb"),
            Default::default(),
        )
        .unwrap();
        let messaging = Messaging::builder(
            Arc::new(messages),
            store,
            Arc::new(ArcSwap::from_pointee(config)),
        )
        .build();
        (
            dir,
            ApiState::new(metrics::Metrics::new(), auth, Arc::new(messaging)),
        )
    }
}
