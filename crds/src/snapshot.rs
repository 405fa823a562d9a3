//! Compiling resources into one versioned, self-contained configuration.

use crate::manifest::{ConfigError, Resource, parse_manifests};
use crate::spec::{
    ContactPolicySpec, EsmePoolSpec, FieldError, PoolMember, RouteSpec, SecretKeyRef, SmppLinkSpec,
    UserSpec,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The compiled configuration every proxy pod runs on: all references
/// checked, every secret resolved, versioned by a hash of its content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Hex SHA-256 of the content (without this field): equal content, equal
    /// version, whichever process compiled it.
    pub version: String,
    /// Links by name; `password` holds the resolved secret, `tlsCa` the
    /// resolved CA bundle.
    pub links: BTreeMap<String, SmppLinkSpec>,
    /// Pools by name.
    pub pools: BTreeMap<String, EsmePoolSpec>,
    /// Users by resource name; `password` holds the resolved secret, if
    /// any (never in the form proxies get: see [`Snapshot::for_proxies`]).
    pub users: BTreeMap<String, UserSpec>,
    /// Argon2 PHC strings of users' passwords, by user (resource) name:
    /// what [`Snapshot::for_proxies`] sends in place of
    /// `users[name].password`, or a hash imported from another platform
    /// (the `passwordHash` key of a credentials Secret, for a User whose
    /// spec sets no password). A proxy stores the hash as is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub password_hashes: BTreeMap<String, String>,
    /// Contact-policy strategies by name.
    pub policies: BTreeMap<String, ContactPolicySpec>,
    /// App credentials by user (resource) name, from each User's
    /// credentials Secret (`<name>-credentials` unless
    /// `spec.credentialsSecret` or `spec.existingCredentialsSecret` says
    /// otherwise) when it exists. Users
    /// whose Secret does not exist yet are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_credentials: BTreeMap<String, AppCredentials>,
    /// Routing rules by name (the table that picks a target for a send
    /// without `esme`: [`crate::RouteTable`]). Absent when there are none,
    /// so a snapshot without routes reads the same in older proxies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, RouteSpec>,
}

/// An application's machine credentials, from its User's credentials
/// Secret: what the app authenticates with (`POST /api/v1/auth/token`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppCredentials {
    /// Public app id (the `X-App-ID` header).
    pub app_id: String,
    /// Secret the app authenticates with, as compiled; empty in the form
    /// proxies get ([`Snapshot::for_proxies`]), which carries
    /// `app_secret_hash` instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_secret: String,
    /// Argon2id PHC string of the secret, in the form proxies get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret_hash: Option<String>,
}

/// A secret [`Snapshot::for_proxies`] asks to have hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretToHash<'a> {
    /// The User (resource name) the secret belongs to.
    pub user: &'a str,
    /// Which secret: [`CREDENTIALS_PASSWORD`] or [`CREDENTIALS_APP_SECRET`].
    pub key: &'static str,
    /// The secret itself.
    pub secret: &'a str,
}

/// Key of the app id in a User's credentials Secret.
pub const CREDENTIALS_APP_ID: &str = "appId";
/// Key of the app secret in a User's credentials Secret.
pub const CREDENTIALS_APP_SECRET: &str = "appSecret";
/// Key of the generated password in a User's credentials Secret.
pub const CREDENTIALS_PASSWORD: &str = "password";
/// Key of an imported password hash (an argon2 PHC string, see
/// [`check_password_hash`]) in a User's credentials Secret: the login
/// password's hash when the spec sets no password.
pub const CREDENTIALS_PASSWORD_HASH: &str = "passwordHash";

/// Largest argon2 memory cost (KiB) of an imported password hash: each
/// login check of it takes that much memory, so a larger one would let a
/// stream of logins exhaust a proxy (the gateway hashes with 19 MiB).
pub const MAX_IMPORTED_HASH_MEMORY_KIB: u32 = 64 * 1024;
/// Largest argon2 time cost (passes) of an imported password hash.
pub const MAX_IMPORTED_HASH_PASSES: u32 = 16;
/// Largest argon2 parallelism (lanes) of an imported password hash.
pub const MAX_IMPORTED_HASH_LANES: u32 = 16;

/// Whether `phc` is a password hash the gateway can check as it is: an
/// argon2 PHC string (`$argon2id$`, `$argon2i$` or `$argon2d$`, versions
/// 0x10 and 0x13) with a salt and an output, and costs within
/// [`MAX_IMPORTED_HASH_MEMORY_KIB`], [`MAX_IMPORTED_HASH_PASSES`] and
/// [`MAX_IMPORTED_HASH_LANES`]. The error says why not, without quoting
/// the hash.
pub fn check_password_hash(phc: &str) -> Result<(), String> {
    use argon2::password_hash::PasswordHash;
    let scheme = phc
        .strip_prefix('$')
        .and_then(|s| s.split('$').next())
        .filter(|s| !s.is_empty() && s.len() <= 16)
        .unwrap_or("");
    if !matches!(scheme, "argon2id" | "argon2i" | "argon2d") {
        return Err(
            if phc.starts_with("$2") && ["2a", "2b", "2y", "2x"].contains(&scheme) {
                "a bcrypt hash, which the gateway cannot check: it checks argon2".to_owned()
            } else if scheme.is_empty() {
                "not a PHC string ($<algorithm>$…); the gateway checks argon2 hashes".to_owned()
            } else if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                format!("a {scheme} hash, which the gateway cannot check: it checks argon2")
            } else {
                "not a PHC string ($<algorithm>$…); the gateway checks argon2 hashes".to_owned()
            },
        );
    }
    let h = PasswordHash::new(phc).map_err(|e| format!("a malformed {scheme} PHC string: {e}"))?;
    if h.salt.is_none() || h.hash.is_none() {
        return Err(format!("a {scheme} PHC string without a salt or an output"));
    }
    if let Some(v) = h.version
        && argon2::Version::try_from(v).is_err()
    {
        return Err(format!("an argon2 version ({v}) the gateway does not know"));
    }
    let params = argon2::Params::try_from(&h)
        .map_err(|e| format!("{scheme} parameters the gateway cannot use: {e}"))?;
    if params.m_cost() > MAX_IMPORTED_HASH_MEMORY_KIB
        || params.t_cost() > MAX_IMPORTED_HASH_PASSES
        || params.p_cost() > MAX_IMPORTED_HASH_LANES
    {
        return Err(format!(
            "{scheme} costs (m={}, t={}, p={}) above what the gateway accepts (m<={MAX_IMPORTED_HASH_MEMORY_KIB}, t<={MAX_IMPORTED_HASH_PASSES}, p<={MAX_IMPORTED_HASH_LANES})",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(())
}

impl UserSpec {
    /// Name of the Secret holding this user's app credentials (and
    /// generated password): `spec.existingCredentialsSecret`, else
    /// `spec.credentialsSecret`, else `<user name>-credentials`.
    pub fn credentials_secret_name(&self, user_name: &str) -> String {
        self.existing_credentials_secret
            .clone()
            .or_else(|| self.credentials_secret.clone())
            .unwrap_or_else(|| format!("{user_name}-credentials"))
    }
}

/// Placeholder that replaces secrets in [`Snapshot::redacted`].
pub const REDACTED: &str = "***";

impl Snapshot {
    /// The same snapshot with every secret replaced by `***`, for showing to
    /// admins and writing to logs.
    pub fn redacted(&self) -> Snapshot {
        let mut s = self.clone();
        for l in s.links.values_mut() {
            if l.password.is_some() {
                l.password = Some(REDACTED.to_owned());
            }
            // A CA bundle is public, but it may come from a Secret: like
            // everything resolved from one, it is not shown.
            if l.tls_ca.is_some() {
                l.tls_ca = Some(REDACTED.to_owned());
            }
        }
        for u in s.users.values_mut() {
            if u.password.is_some() {
                u.password = Some(REDACTED.to_owned());
            }
        }
        // A hash is not the secret, but it lets whoever holds it guess
        // the secret offline.
        for h in s.password_hashes.values_mut() {
            *h = REDACTED.to_owned();
        }
        for c in s.app_credentials.values_mut() {
            c.app_secret = REDACTED.to_owned();
            if c.app_secret_hash.is_some() {
                c.app_secret_hash = Some(REDACTED.to_owned());
            }
        }
        s
    }

    /// The form the operator sends to proxy pods: only the secrets a
    /// proxy needs in plain. Links keep their bind passwords and CA
    /// bundles (any pod may be handed any link's bind slot); users'
    /// passwords and apps' secrets travel as the PHC strings `hash`
    /// returns (`password_hashes`, `app_credentials[..].app_secret_hash`),
    /// which a proxy stores as they are to check logins and token
    /// requests. A user whose credentials Secret (app id and secret) does
    /// not exist yet is left out until it does: a proxy would give its app
    /// a random id, and an app id never changes. The version is that of
    /// the new content, so it depends on
    /// the hashes: `hash` should answer the same string for the same
    /// user, key and secret, in every process, or each operator restart
    /// publishes a new version.
    pub fn for_proxies(&self, mut hash: impl FnMut(SecretToHash<'_>) -> String) -> Snapshot {
        let mut s = self.clone();
        s.users
            .retain(|name, _| s.app_credentials.contains_key(name));
        let users = &s.users;
        s.password_hashes.retain(|name, _| users.contains_key(name));
        for (name, u) in &mut s.users {
            if let Some(p) = u.password.take() {
                let h = hash(SecretToHash {
                    user: name,
                    key: CREDENTIALS_PASSWORD,
                    secret: &p,
                });
                s.password_hashes.insert(name.clone(), h);
            }
        }
        for (name, c) in &mut s.app_credentials {
            let secret = std::mem::take(&mut c.app_secret);
            if !secret.is_empty() {
                c.app_secret_hash = Some(hash(SecretToHash {
                    user: name,
                    key: CREDENTIALS_APP_SECRET,
                    secret: &secret,
                }));
            }
        }
        s.version = s.compute_version();
        s
    }

    /// Whether `name` is a link or a pool.
    pub fn has_target(&self, name: &str) -> bool {
        self.links.contains_key(name) || self.pools.contains_key(name)
    }

    /// Text options of a target: a link's own; for a pool, what every
    /// member supports (Latin-1 and national tables only if all allow them,
    /// the smallest segment limit, the most restrictive concatenation — see
    /// [`smsgw_text::TextOptions::most_restrictive`]), so a text analysed and
    /// encoded for a pool fits whichever member carries it.
    pub fn text_options(&self, target: &str) -> Option<smsgw_text::TextOptions> {
        if let Some(link) = self.links.get(target) {
            return Some(link.text_options());
        }
        let pool = self.pools.get(target)?;
        pool.members
            .iter()
            .filter_map(|m| self.links.get(&m.link))
            .map(|l| l.text_options())
            .reduce(smsgw_text::TextOptions::most_restrictive)
    }

    fn compute_version(&self) -> String {
        let mut unversioned = self.clone();
        unversioned.version = String::new();
        let json = serde_json::to_vec(&unversioned).expect("snapshot serialises");
        hex::encode(&Sha256::digest(&json)[..12])
    }
}

/// Compiles resources (with their 1-based document numbers, or any stable
/// position) into a [`Snapshot`]: names unique per kind, link and pool names
/// not shared, pool members and user targets pointing at existing links and
/// pools, each contact-policy strategy name selecting one policy
/// ([`crate::strategy_owners`]), `secretKeyRef`s resolved against the given
/// Secrets. Returns every error found.
pub fn compile(resources: &[(usize, Resource)]) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut snap = Snapshot::default();
    let mut secrets: BTreeMap<&str, &BTreeMap<String, String>> = BTreeMap::new();
    for (_, r) in resources {
        if let Resource::Secret(m) = r {
            secrets.insert(&m.metadata.name, &m.spec);
        }
    }
    let resolve = |r: &SecretKeyRef, field: &str| -> Result<String, FieldError> {
        secrets
            .get(r.name.as_str())
            .and_then(|s| s.get(&r.key))
            .cloned()
            .ok_or_else(|| FieldError {
                field: field.to_owned(),
                reason: format!("Secret {:?} has no key {:?}", r.name, r.key),
            })
    };
    let mut link_labels: BTreeMap<&str, &BTreeMap<String, String>> = BTreeMap::new();
    let mut docs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (doc, r) in resources {
        if let Some(first) = docs.insert((r.kind(), r.name()), *doc) {
            errors.push(ConfigError::for_resource(
                *doc,
                r,
                FieldError {
                    field: "metadata.name".into(),
                    reason: format!(
                        "a {} of this name is already defined in document {first}",
                        r.kind()
                    ),
                },
            ));
            continue;
        }
        let mut push = |e: FieldError| errors.push(ConfigError::for_resource(*doc, r, e));
        match r {
            Resource::SmppLink(m) => {
                let mut spec = m.spec.clone();
                if let Some(sr) = spec.password_secret_ref.take() {
                    match resolve(&sr, "spec.passwordSecretRef") {
                        Ok(p) => spec.password = Some(p),
                        Err(e) => push(e),
                    }
                }
                if let Some(sr) = spec.tls_ca_secret_ref.take() {
                    match resolve(&sr, "spec.tlsCaSecretRef") {
                        Ok(pem) if !crate::spec::holds_pem_certificate(&pem) => push(FieldError {
                            field: "spec.tlsCaSecretRef".into(),
                            reason: format!(
                                "Secret {:?} key {:?} {}",
                                sr.name,
                                sr.key,
                                crate::spec::NO_PEM_CERTIFICATE
                            ),
                        }),
                        Ok(pem) => spec.tls_ca = Some(pem),
                        Err(e) => push(e),
                    }
                }
                link_labels.insert(&m.metadata.name, &m.metadata.labels);
                snap.links.insert(m.metadata.name.clone(), spec);
            }
            Resource::EsmePool(m) => {
                snap.pools.insert(m.metadata.name.clone(), m.spec.clone());
            }
            Resource::User(m) => {
                let mut spec = m.spec.clone();
                if let Some(sr) = spec.password_secret_ref.take() {
                    match resolve(&sr, "spec.passwordSecretRef") {
                        Ok(p) => spec.password = Some(p),
                        Err(e) => push(e),
                    }
                }
                let creds_name = spec.credentials_secret_name(&m.metadata.name);
                let existing = spec.existing_credentials_secret.is_some();
                let creds = secrets.get(creds_name.as_str());
                if existing {
                    // Named, not generated: it must be there, complete.
                    let missing: Vec<&str> = [CREDENTIALS_APP_ID, CREDENTIALS_APP_SECRET]
                        .into_iter()
                        .filter(|k| creds.is_none_or(|c| c.get(*k).is_none_or(|v| v.is_empty())))
                        .collect();
                    if creds.is_none() {
                        push(FieldError {
                            field: "spec.existingCredentialsSecret".into(),
                            reason: format!("Secret {creds_name:?} does not exist"),
                        });
                    } else if !missing.is_empty() {
                        push(FieldError {
                            field: "spec.existingCredentialsSecret".into(),
                            reason: format!(
                                "Secret {creds_name:?} has no key {}",
                                missing.join(", no key ")
                            ),
                        });
                    }
                }
                if let Some(creds) = creds
                    && let Some(h) = creds.get(CREDENTIALS_PASSWORD_HASH)
                    && spec.password.is_none()
                    && !spec.generate_password
                {
                    match check_password_hash(h) {
                        Ok(()) => {
                            snap.password_hashes
                                .insert(m.metadata.name.clone(), h.clone());
                        }
                        Err(why) => push(FieldError {
                            field: if existing {
                                "spec.existingCredentialsSecret".into()
                            } else {
                                "spec.credentialsSecret".into()
                            },
                            reason: format!(
                                "Secret {creds_name:?} key {CREDENTIALS_PASSWORD_HASH:?} is {why}"
                            ),
                        }),
                    }
                }
                if let Some(creds) = creds {
                    if spec.generate_password
                        && let Some(p) = creds.get(CREDENTIALS_PASSWORD)
                    {
                        // Resolved, as a passwordSecretRef is: the snapshot
                        // carries the password alone, which passes the
                        // spec rules the pods check again.
                        spec.password = Some(p.clone());
                        spec.generate_password = false;
                    }
                    if let (Some(id), Some(secret)) = (
                        creds.get(CREDENTIALS_APP_ID),
                        creds.get(CREDENTIALS_APP_SECRET),
                    ) {
                        snap.app_credentials.insert(
                            m.metadata.name.clone(),
                            AppCredentials {
                                app_id: id.clone(),
                                app_secret: secret.clone(),
                                app_secret_hash: None,
                            },
                        );
                    }
                }
                snap.users.insert(m.metadata.name.clone(), spec);
            }
            Resource::ContactPolicy(m) => {
                snap.policies
                    .insert(m.metadata.name.clone(), m.spec.clone());
            }
            Resource::Route(m) => {
                snap.routes.insert(m.metadata.name.clone(), m.spec.clone());
            }
            Resource::Secret(_) => {}
        }
    }
    // Cross-resource checks.
    let mut emails: BTreeMap<&str, &str> = BTreeMap::new();
    for (doc, r) in resources {
        let mut push = |e: FieldError| errors.push(ConfigError::for_resource(*doc, r, e));
        match r {
            Resource::EsmePool(m) => {
                if snap.links.contains_key(&m.metadata.name) {
                    push(FieldError {
                        field: "metadata.name".into(),
                        reason: "an SmppLink has the same name; links and pools share one namespace of targets".into(),
                    });
                }
                for (i, member) in m.spec.members.iter().enumerate() {
                    if !snap.links.contains_key(&member.link) {
                        push(FieldError {
                            field: format!("spec.members[{i}].link"),
                            reason: format!("no SmppLink named {:?}", member.link),
                        });
                    }
                }
                // Selected links join after the named ones, in name order.
                let mut members = m.spec.members.clone();
                for (i, sel) in m.spec.selectors.iter().enumerate() {
                    let mut matched = false;
                    for (link, labels) in &link_labels {
                        let selected = sel
                            .match_labels
                            .iter()
                            .all(|(k, v)| labels.get(k) == Some(v));
                        if !selected {
                            continue;
                        }
                        matched = true;
                        if !members.iter().any(|x| x.link == *link) {
                            members.push(PoolMember {
                                link: (*link).to_owned(),
                                weight: sel.weight,
                            });
                        }
                    }
                    if !matched {
                        push(FieldError {
                            field: format!("spec.selectors[{i}]"),
                            reason: "selects no SmppLink".into(),
                        });
                    }
                }
                if let Some(pool) = snap.pools.get_mut(&m.metadata.name)
                    && (!m.spec.selectors.is_empty())
                {
                    pool.members = members;
                    pool.selectors.clear();
                }
            }
            Resource::User(m) => {
                for (i, t) in m.spec.quotas.allowed_targets.iter().enumerate() {
                    if !snap.has_target(t) {
                        push(FieldError {
                            field: format!("spec.quotas.allowedTargets[{i}]"),
                            reason: format!("no SmppLink or EsmePool named {t:?}"),
                        });
                    }
                }
                let email = m.spec.email.as_str();
                if let Some(other) = emails.insert(email, &m.metadata.name)
                    && other != m.metadata.name
                {
                    push(FieldError {
                        field: "spec.email".into(),
                        reason: format!("User {other:?} has the same email"),
                    });
                }
            }
            Resource::Route(m) if !snap.has_target(&m.spec.target) => {
                push(FieldError {
                    field: "spec.target".into(),
                    reason: format!("no SmppLink or EsmePool named {:?}", m.spec.target),
                });
            }
            _ => {}
        }
    }
    // A strategy name selects one policy: the first in document order that
    // answers to it (a second policy of one name is in error above, and
    // left out here).
    let mut seen = std::collections::BTreeSet::new();
    let (_, conflicts) =
        crate::spec::strategy_owners(resources.iter().filter_map(|(doc, r)| match r {
            Resource::ContactPolicy(m) if seen.insert(m.metadata.name.as_str()) => {
                Some(((*doc, r), m.metadata.name.as_str(), &m.spec))
            }
            _ => None,
        }));
    for ((doc, r), e) in conflicts {
        errors.push(ConfigError::for_resource(doc, r, e));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    snap.version = snap.compute_version();
    Ok(snap)
}

/// Parses and compiles a multi-document YAML configuration.
pub fn compile_manifests(yaml: &str) -> Result<Snapshot, Vec<ConfigError>> {
    compile(&parse_manifests(yaml)?)
}

#[cfg(test)]
mod tests;
