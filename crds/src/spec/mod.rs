//! Specs of the five resource kinds, as written in manifests (camelCase),
//! with their field-level validation: one module per kind, and what they
//! share. Everything is re-exported here (and from the crate root), so the
//! paths stay `smsgw_crds::SmppLinkSpec` etc.

mod contact_policy;
mod esme_pool;
mod route;
mod shared;
mod smpp_link;
mod user;

pub use contact_policy::*;
pub use esme_pool::*;
pub use route::*;
pub use shared::{FieldError, SecretKeyRef};
pub use smpp_link::*;
pub(crate) use smpp_link::{NO_PEM_CERTIFICATE, holds_pem_certificate};
pub use user::*;
