//! The gateway's public surfaces: REST on axum (port 8080) and gRPC on
//! tonic (port 44044).
//!
//! Both front ends call the same request logic (e.g. [`text::check_text_len`])
//! and report failures as one [`ApiError`], which is the only place errors
//! become HTTP status codes with JSON bodies or `tonic::Status` values.
#![warn(missing_docs)]

mod error;
mod grpc;
pub mod metrics;
mod rest;
pub mod server;
pub mod text;

pub use error::ApiError;
pub use grpc::SmsGrpc;
pub use rest::router;

use arc_swap::ArcSwap;
use smsgw_crds::Snapshot;
use std::sync::Arc;

/// Largest request body the REST API reads; beyond it a request gets 413.
/// A 255-segment text escaped as JSON fits well within it.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Largest gRPC message the server decodes; beyond it a call fails with
/// RESOURCE_EXHAUSTED.
pub const MAX_GRPC_MESSAGE_BYTES: usize = MAX_BODY_BYTES;

/// State shared by every request handler.
#[derive(Clone)]
pub struct ApiState {
    /// The configuration in force; swapped whole when a new one arrives.
    pub config: Arc<ArcSwap<Snapshot>>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
}

impl ApiState {
    /// State over the given configuration, with fresh metrics.
    pub fn new(config: Snapshot) -> Self {
        Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            metrics: Arc::new(metrics::Metrics::new()),
        }
    }
}
