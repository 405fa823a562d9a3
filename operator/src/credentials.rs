//! Users' credentials Secrets: `appId`, `appSecret` and, for
//! `generatePassword`, `password`, in a Secret owned by the User (deleted
//! with it). Values are generated once and never logged. A User with
//! `spec.existingCredentialsSecret` names a Secret it does not own
//! (credentials imported from another platform): that one is only read,
//! never created, completed or deleted.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use rand::Rng;
use smsgw_crds::{CREDENTIALS_APP_ID, CREDENTIALS_APP_SECRET, CREDENTIALS_PASSWORD, User};
use std::collections::BTreeMap;

/// Label put on the Secrets the operator creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "smsgw-operator");

/// A random string of `len` letters and digits.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Where a User's credentials stand: the Secret's name when it holds the
/// app's id and secret, else the reason (a condition reason) and message
/// the User's status reports.
pub type CredentialsState = Result<String, (&'static str, String)>;

/// Makes sure `user`'s credentials Secret exists and holds what its spec
/// asks for; creates it (owned by the User) or adds a missing generated
/// password. Returns the Secret's name. A Secret named by
/// `spec.existingCredentialsSecret` is only read: missing, or without
/// `appId` or `appSecret`, it is reported (`CredentialsSecretNotFound`,
/// `CredentialsKeyMissing`), never created or completed.
pub async fn ensure_credentials(
    secrets: &Api<Secret>,
    user: &User,
) -> Result<CredentialsState, kube::Error> {
    let name = user.spec.credentials_secret_name(&user.name_any());
    if user.spec.existing_credentials_secret.is_some() {
        return Ok(match secrets.get_opt(&name).await? {
            None => Err((
                "CredentialsSecretNotFound",
                format!("Secret {name} named by spec.existingCredentialsSecret does not exist"),
            )),
            Some(existing) => {
                let missing: Vec<&str> = [CREDENTIALS_APP_ID, CREDENTIALS_APP_SECRET]
                    .into_iter()
                    .filter(|k| !has_key(&existing, k))
                    .collect();
                if missing.is_empty() {
                    Ok(name)
                } else {
                    Err((
                        "CredentialsKeyMissing",
                        format!(
                            "Secret {name} named by spec.existingCredentialsSecret has no key {}",
                            missing.join(", no key ")
                        ),
                    ))
                }
            }
        });
    }
    match secrets.get_opt(&name).await? {
        Some(existing) => {
            let has = |k: &str| has_key(&existing, k);
            let mut missing = BTreeMap::new();
            if !has(CREDENTIALS_APP_ID) {
                missing.insert(CREDENTIALS_APP_ID, new_app_id());
            }
            if !has(CREDENTIALS_APP_SECRET) {
                missing.insert(CREDENTIALS_APP_SECRET, random_token(40));
            }
            if user.spec.generate_password && !has(CREDENTIALS_PASSWORD) {
                missing.insert(CREDENTIALS_PASSWORD, random_token(24));
            }
            if !missing.is_empty() {
                let patch = serde_json::json!({ "stringData": missing });
                secrets
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                tracing::info!(user = %user.name_any(), secret = %name, "credentials completed");
            }
        }
        None => {
            let mut data = BTreeMap::from([
                (CREDENTIALS_APP_ID.to_owned(), new_app_id()),
                (CREDENTIALS_APP_SECRET.to_owned(), random_token(40)),
            ]);
            if user.spec.generate_password {
                data.insert(CREDENTIALS_PASSWORD.to_owned(), random_token(24));
            }
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: user.namespace(),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY.0.to_owned(),
                        MANAGED_BY.1.to_owned(),
                    )])),
                    owner_references: user.controller_owner_ref(&()).map(|o| vec![o]),
                    ..Default::default()
                },
                type_: Some("Opaque".to_owned()),
                string_data: Some(data),
                ..Default::default()
            };
            secrets.create(&PostParams::default(), &secret).await?;
            tracing::info!(user = %user.name_any(), secret = %name, "credentials created");
        }
    }
    Ok(Ok(name))
}

/// Whether `secret` holds a non-empty value under `key`.
fn has_key(secret: &Secret, key: &str) -> bool {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .is_some_and(|v| !v.0.is_empty())
        || secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .is_some_and(|v| !v.is_empty())
}

fn new_app_id() -> String {
    format!("app-{}", random_token(16).to_lowercase())
}
