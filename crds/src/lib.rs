//! The four smsgw resource kinds — `SmppLink`, `EsmePool`, `User`,
//! `ContactPolicy` — their validation, and their compilation into one
//! versioned [`Snapshot`].
//!
//! The same code serves both deployment modes: standalone mode reads the
//! manifests from a multi-document YAML file ([`parse_manifests`]), the
//! operator reads them from the Kubernetes API; both call [`compile`], so a
//! file that works standalone behaves the same once `kubectl apply`-ed.
#![warn(missing_docs)]

mod duration;
mod manifest;
mod snapshot;
mod spec;

pub use duration::Duration;
pub use manifest::{API_VERSION, ConfigError, Manifest, Metadata, Resource, parse_manifests};
pub use snapshot::{Snapshot, compile, compile_manifests};
pub use spec::*;
