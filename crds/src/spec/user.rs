//! `User`: a user and its application, managed from configuration.

// `#[kube(printcolumn(..), printcolumn(..))]` repeats `type_ = ..` by
// design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::shared::{FieldError, SecretKeyRef};
use crate::status::UserStatus;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a user's application may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Messages (segments) per second the app may send, all pods
    /// together, at least 1. Absent means no app-level cap (link and pool
    /// rates still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate: Option<u32>,
    /// Names of the SmppLinks and EsmePools the app may send to, at most
    /// 64. Empty means all. Default empty.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub allowed_targets: Vec<String>,
    /// Sender ids (source addresses: alphanumeric names, short codes,
    /// numbers) the app may send from, at most 256. Empty means any.
    /// Default empty.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub allowed_sender_ids: Vec<String>,
    /// Messages the app may send per calendar day (UTC, resetting at
    /// 00:00), at least 1; a message of several segments counts once.
    /// Over it a send is refused with 403 `quota_exceeded`. Absent means
    /// no daily quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub daily: Option<u64>,
    /// Messages the app may send per calendar month (UTC, resetting on
    /// the first at 00:00), at least 1; counted like `daily`. Absent means
    /// no monthly quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub monthly: Option<u64>,
    /// The app is prepaid: each message takes its segments from the app's
    /// balance, and a send the balance does not cover is refused with 402
    /// `insufficient_balance`. The balance itself is not configuration:
    /// admins top it up through `POST
    /// /api/v1/admin/apps/{app_id}/balance`, and it is kept in the user
    /// store. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepaid: bool,
}

/// A user and its application, managed from configuration. In a cluster
/// the operator writes the app's `appId` and `appSecret` (and a generated
/// password) into a Secret owned by the User, named by
/// `credentialsSecret`; or, with `existingCredentialsSecret`, reads them
/// from a Secret the User does not own (credentials imported from another
/// platform), which it never writes.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "smsgw.io",
    version = "v1alpha1",
    kind = "User",
    namespaced,
    status = "UserStatus",
    shortname = "smsuser",
    category = "smsgw",
    doc = "A user of the gateway and its application: login, admin flag, quotas; its app credentials land in a Secret owned by the User.",
    printcolumn(
        name = "Email",
        type_ = "string",
        json_path = ".spec.email",
        description = "Login email"
    ),
    printcolumn(
        name = "App",
        type_ = "string",
        json_path = ".spec.appName",
        description = "Application name"
    ),
    printcolumn(
        name = "Admin",
        type_ = "boolean",
        json_path = ".spec.admin",
        description = "Admin rights"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretName",
        description = "Secret holding appId and appSecret"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the user is configured"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.password) && has(self.passwordSecretRef))",
        "message": "set either password or passwordSecretRef, not both",
        "fieldPath": ".password"
    },
    {
        "rule": "!(has(self.generatePassword) && self.generatePassword) || (!has(self.password) && !has(self.passwordSecretRef))",
        "message": "generatePassword excludes password and passwordSecretRef",
        "fieldPath": ".generatePassword"
    },
    {
        "rule": "!has(self.existingCredentialsSecret) || (!has(self.credentialsSecret) && !(has(self.generatePassword) && self.generatePassword))",
        "message": "existingCredentialsSecret excludes credentialsSecret and generatePassword",
        "fieldPath": ".existingCredentialsSecret"
    }
]))]
pub struct UserSpec {
    /// Login email, unique among Users.
    #[schemars(length(min = 3, max = 254), extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[^@ ]+@[^@ ]+[.][^@ ]+$')",
        "message": "must be an email address"
    }]))]
    pub email: String,
    /// Name of the user's application, shown in statistics. Must not be
    /// empty.
    #[schemars(length(min = 1, max = 128))]
    pub app_name: String,
    /// Whether the user may use the admin API (users, links, statistics
    /// of every app). Default false.
    #[serde(default)]
    pub admin: bool,
    /// Login password inline, at least 10 characters. Meant for
    /// standalone files; in a cluster use `passwordSecretRef` or
    /// `generatePassword`. With none of the three the user has no password
    /// login (the app authenticates with its appId/appSecret only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 10, max = 256))]
    pub password: Option<String>,
    /// Secret key holding the login password (at least 10 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Have the operator generate a random login password and store it
    /// under the key `password` of the credentials Secret. Excludes
    /// `password` and `passwordSecretRef`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_password: bool,
    /// Name of the Secret the operator creates, owned by this User (and
    /// deleted with it), holding the keys `appId` and `appSecret` (and
    /// `password` when generated). Default `<user name>-credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Name of an existing Secret, not owned by this User, holding the
    /// app's `appId` and `appSecret` (e.g. credentials kept from another
    /// platform: `smsgw users import --emit-manifests` writes such
    /// Secrets), and optionally `passwordHash`, an argon2 PHC string used
    /// as the login password's hash when the spec sets no password. The
    /// operator only reads it: it never creates, completes, overwrites or
    /// deletes it, and reports a missing Secret or key in the User's
    /// status. Excludes `credentialsSecret` and `generatePassword`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub existing_credentials_secret: Option<String>,
    /// What the app may send. Default no cap, every target, any sender
    /// id.
    #[serde(default)]
    pub quotas: Quotas,
    /// Destination addresses (short codes, long numbers) whose inbound
    /// messages (deliver_sm that are not receipts) are routed to this app,
    /// at most 256. Default none.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub source_addresses: Vec<String>,
    /// Let the app's webhook and its messages' callback URLs target
    /// private, loopback and link-local addresses (a receiver inside the
    /// cluster); the chart's `proxy.webhookAllowPrivate` allows that for
    /// every app. Default false: public addresses only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub webhook_allow_private: bool,
}

impl UserSpec {
    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if !is_plausible_email(&self.email) {
            errs.push(FieldError::new(
                "spec.email",
                format!("{:?} is not an email address", self.email),
            ));
        }
        if self.app_name.trim().is_empty() {
            errs.push(FieldError::new("spec.appName", "must not be empty"));
        }
        if self.password.is_some() && self.password_secret_ref.is_some() {
            errs.push(FieldError::new(
                "spec.password",
                "set either password or passwordSecretRef, not both",
            ));
        }
        if self.generate_password && (self.password.is_some() || self.password_secret_ref.is_some())
        {
            errs.push(FieldError::new(
                "spec.generatePassword",
                "generatePassword excludes password and passwordSecretRef",
            ));
        }
        if self.existing_credentials_secret.is_some()
            && (self.credentials_secret.is_some() || self.generate_password)
        {
            errs.push(FieldError::new(
                "spec.existingCredentialsSecret",
                "existingCredentialsSecret excludes credentialsSecret and generatePassword",
            ));
        }
        if self
            .existing_credentials_secret
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            errs.push(FieldError::new(
                "spec.existingCredentialsSecret",
                "must not be empty",
            ));
        }
        if let Some(p) = &self.password
            && p.chars().count() < 10
        {
            errs.push(FieldError::new(
                "spec.password",
                "must be at least 10 characters",
            ));
        }
        if self.quotas.rate == Some(0) {
            errs.push(FieldError::new(
                "spec.quotas.rate",
                "must be at least 1 (leave it out for no cap)",
            ));
        }
        for (field, v) in [
            ("spec.quotas.daily", self.quotas.daily),
            ("spec.quotas.monthly", self.quotas.monthly),
        ] {
            if v == Some(0) {
                errs.push(FieldError::new(
                    field,
                    "must be at least 1 (leave it out for no quota)",
                ));
            }
        }
        errs
    }
}

/// `local@domain.tld`, without spaces: the check every signup form makes.
pub fn is_plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
        && s.len() <= 254
}
