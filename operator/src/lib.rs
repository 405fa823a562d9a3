//! The smsgw operator: turns SmppLink, EsmePool, User and ContactPolicy
//! resources (and the Secrets they reference) into one versioned snapshot,
//! serves it to the proxy pods over `config.v1.ConfigService/Watch`,
//! spreads each link's bind slots over the ready pods, and writes status
//! conditions and Events back.
//!
//! Layout: [`hub`] (index, compile, publication, acks; no Kubernetes),
//! [`slots`] (pure slot assignment; the Leases that enforce it are
//! `smsgw-leases`, shared with the gateway), [`server`] (the gRPC stream),
//! [`auth`] (who may open it: TokenReview of the proxies' tokens),
//! [`status`] (pure status + status writes), [`credentials`] (Users'
//! Secrets), [`hashes`] (users' secrets hashed for the wire), [`leader`] (Lease-based leader election), [`controller`]
//! (watchers and the status loop).
#![warn(missing_docs)]

pub mod auth;
pub mod controller;
pub mod credentials;
pub mod hashes;
pub mod hub;
pub mod leader;
pub mod server;
pub mod slots;
pub mod status;

/// Errors of the operator's Kubernetes side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The Lease of leader election was taken by another replica.
    #[error("leadership lost to {holder}")]
    LeadershipLost {
        /// The new holder.
        holder: String,
    },
}
