//! Generated protobuf types, tonic clients and servers for the smsgw APIs.
//!
//! Public: `sms.v1` (sending, tracking, analysis), `auth.v1` (registration and
//! tokens), `admin.v1` (administration). Internal: `config.v1` (snapshot push
//! from the operator to the proxy pods) and `dispatch.v1` (hand-off between
//! proxy pods). The `.proto` files under `proto/`
//! are the source of truth; this crate only includes what `build.rs`
//! generates from them.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `sms.v1`: sending, tracking and analysing messages.
pub mod sms {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("sms.v1");
    }
}

/// `auth.v1`: registration, login and machine tokens.
pub mod auth {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("auth.v1");
    }
}

/// `admin.v1`: users, links, configuration and statistics.
pub mod admin {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("admin.v1");
    }
}

/// `config.v1`: the compiled configuration snapshot pushed to proxy pods.
pub mod config {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("config.v1");
    }
}

/// `dispatch.v1`: hand-off of a message to the proxy pod holding its bind
/// (internal, between pods of one gateway).
pub mod dispatch {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("dispatch.v1");
    }
}

/// Encoded `FileDescriptorSet` of every API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("smsgw_descriptor");
