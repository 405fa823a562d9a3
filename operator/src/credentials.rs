//! Users' credentials Secrets: `appId`, `appSecret` and, for
//! `generatePassword`, `password`, in a Secret owned by the User (deleted
//! with it). Values are generated once and never logged.

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

/// Makes sure `user`'s credentials Secret exists and holds what its spec
/// asks for; creates it (owned by the User) or adds a missing generated
/// password. Returns the Secret's name.
pub async fn ensure_credentials(secrets: &Api<Secret>, user: &User) -> Result<String, kube::Error> {
    let name = user.spec.credentials_secret_name(&user.name_any());
    match secrets.get_opt(&name).await? {
        Some(existing) => {
            let has = |k: &str| {
                existing.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || existing
                        .string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(k))
            };
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
    Ok(name)
}

fn new_app_id() -> String {
    format!("app-{}", random_token(16).to_lowercase())
}
