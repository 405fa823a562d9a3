//! What the specs of several kinds share: field errors, Secret references
//! and the defaults of omitted fields.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A field that failed validation: its path under the resource
/// (`spec.port`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.members[1].link`.
    pub field: String,
    /// Why the value is refused.
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Reference to one key of a Kubernetes Secret in the same namespace as
/// the resource that holds the reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace as this resource). The operator
    /// watches it: changing the Secret recompiles the configuration.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data`/`stringData` whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Defaults of omitted fields (`#[serde(default = "defaults::…")]`).
pub(crate) mod defaults {
    use crate::Duration;
    pub fn one() -> u8 {
        1
    }
    pub fn one_u32() -> u32 {
        1
    }
    pub fn window() -> u32 {
        10
    }
    pub fn max_segments() -> u16 {
        10
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn enquire_link_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn backoff_initial() -> Duration {
        Duration::from_secs(1)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn utc() -> String {
        "UTC".to_owned()
    }
}
