//! The four smsgw resource kinds — `SmppLink`, `EsmePool`, `User`,
//! `ContactPolicy` — their validation, and their compilation into one
//! versioned [`Snapshot`].
//!
//! The same code serves both deployment modes: standalone mode reads the
//! manifests from a multi-document YAML file ([`parse_manifests`]), the
//! operator reads them from the Kubernetes API; both call [`compile`], so a
//! file that works standalone behaves the same once `kubectl apply`-ed.
//!
//! In a cluster the kinds are CustomResourceDefinitions derived here
//! ([`SmppLink`], [`EsmePool`], [`User`], [`ContactPolicy`]; [`crds`]);
//! their schemas carry the same rules as CEL `x-kubernetes-validations`,
//! so the API server refuses what [`parse_manifests`] would refuse.
#![warn(missing_docs)]

mod crdgen;
mod duration;
mod manifest;
mod routes;
mod snapshot;
mod spec;
mod status;

pub use crdgen::{CrdFile, crd_files, crds};
pub use duration::{DURATION_PATTERN, Duration};
pub use manifest::{API_VERSION, ConfigError, Manifest, Metadata, Resource, parse_manifests};
pub use routes::{RouteChoice, RouteQuery, RouteTable};
pub use snapshot::{
    AppCredentials, CREDENTIALS_APP_ID, CREDENTIALS_APP_SECRET, CREDENTIALS_PASSWORD,
    CREDENTIALS_PASSWORD_HASH, MAX_IMPORTED_HASH_LANES, MAX_IMPORTED_HASH_MEMORY_KIB,
    MAX_IMPORTED_HASH_PASSES, REDACTED, SecretToHash, Snapshot, check_password_hash, compile,
    compile_manifests,
};
pub use spec::*;
pub use status::*;
