//! The hashes users' secrets travel to the proxies as: a proxy needs a
//! user's password and an app's secret only to check logins and token
//! requests, so the operator sends their argon2id PHC strings
//! ([`smsgw_crds::Snapshot::for_proxies`]) and the proxies store them as
//! they are.
//!
//! A hash costs ~50 ms and 19 MiB, and the snapshot is compiled on every
//! change, so [`SecretHashes`] keeps each hash for as long as its user and
//! secret stay the same: one computation per secret per process. The salt
//! is derived from the User's identity (namespace, name, UID) and which
//! secret it is, never from the secret: equal secrets give equal hashes in
//! every operator process (the snapshot version survives a restart), and
//! the salt tells nothing about the secret.

use argon2::password_hash::{PasswordHasher, SaltString};
use sha2::{Digest, Sha256};
use smsgw_crds::{Metadata, SecretToHash, Snapshot};
use std::collections::BTreeMap;

/// One hash kept: the salt and the digest of the secret it was made from.
struct Kept {
    salt: [u8; 16],
    secret_digest: [u8; 32],
    phc: String,
}

/// The hashes of the last publication, by user and secret key.
#[derive(Default)]
pub struct SecretHashes {
    kept: BTreeMap<(String, &'static str), Kept>,
    computed: u64,
}

impl SecretHashes {
    /// `snap` as proxies get it: every user's password and app secret
    /// replaced by its hash (computed only when new), salted by the
    /// metadata `user` finds for the User of that name. Hashes of users or
    /// secrets no longer in `snap` are forgotten.
    pub fn proxies_form<'a>(
        &mut self,
        snap: &Snapshot,
        user: impl Fn(&str) -> Option<&'a Metadata>,
    ) -> Snapshot {
        let mut kept = BTreeMap::new();
        let wire = snap.for_proxies(|s| {
            let user = user(s.user);
            let salt = salt(
                user.and_then(|m| m.namespace.as_deref()).unwrap_or(""),
                s.user,
                user.and_then(|m| m.uid.as_deref()).unwrap_or(""),
                s.key,
            );
            let secret_digest: [u8; 32] = Sha256::digest(s.secret.as_bytes()).into();
            let k = match self.kept.remove(&(s.user.to_owned(), s.key)) {
                Some(k) if k.salt == salt && k.secret_digest == secret_digest => k,
                _ => {
                    self.computed += 1;
                    Kept {
                        salt,
                        secret_digest,
                        phc: phc(s, &salt),
                    }
                }
            };
            let phc = k.phc.clone();
            kept.insert((s.user.to_owned(), s.key), k);
            phc
        });
        self.kept = kept;
        wire
    }

    /// How many hashes this process computed (for tests and the log).
    pub fn computed(&self) -> u64 {
        self.computed
    }
}

/// 16 bytes of SHA-256 over the User's identity and the secret's key.
fn salt(namespace: &str, user: &str, uid: &str, key: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in ["smsgw.io/secret-salt/v1", namespace, user, uid, key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&digest[..16]);
    salt
}

/// The argon2id PHC string of the secret (default parameters: 19 MiB, 2
/// passes, as the proxies hash).
fn phc(s: SecretToHash<'_>, salt: &[u8; 16]) -> String {
    let salt = SaltString::encode_b64(salt).expect("16 bytes make a valid salt");
    argon2::Argon2::default()
        .hash_password(s.secret.as_bytes(), &salt)
        .expect("argon2id with default parameters hashes any secret")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    use smsgw_crds::Resource;

    const USERS: &str = "apiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: bob, namespace: ns, uid: u-1}\nspec: {email: bob@example.com, appName: b, password: 'bob password 1'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: bob-credentials}\nstringData: {appId: app-1, appSecret: app secret of bob}\n";

    fn compiled(yaml: &str) -> (Snapshot, Vec<Resource>) {
        let resources = smsgw_crds::parse_manifests(yaml).unwrap();
        let snap = smsgw_crds::compile(&resources).unwrap();
        (snap, resources.into_iter().map(|(_, r)| r).collect())
    }

    fn users<'a>(resources: &'a [Resource]) -> impl Fn(&str) -> Option<&'a Metadata> {
        move |name: &str| {
            resources
                .iter()
                .find(|r| r.kind() == "User" && r.name() == name)
                .map(Resource::metadata)
        }
    }

    fn verifies(secret: &str, phc: &str) -> bool {
        argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &PasswordHash::new(phc).unwrap())
            .is_ok()
    }

    #[test]
    fn secrets_become_verifiable_hashes_computed_once_and_equal_in_every_process() {
        let (snap, resources) = compiled(USERS);
        let mut hashes = SecretHashes::default();
        let wire = hashes.proxies_form(&snap, users(&resources));
        let json = serde_json::to_string(&wire).unwrap();
        assert!(
            !json.contains("bob password 1") && !json.contains("app secret of bob"),
            "{json}"
        );
        let password = &wire.password_hashes["bob"];
        let secret = wire.app_credentials["bob"]
            .app_secret_hash
            .as_ref()
            .unwrap();
        assert!(
            password.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{password}"
        );
        assert!(verifies("bob password 1", password));
        assert!(verifies("app secret of bob", secret));
        assert!(!verifies("bob password 2", password));
        assert_eq!(hashes.computed(), 2);

        // Compiled again: nothing hashed again, same version.
        assert_eq!(hashes.proxies_form(&snap, users(&resources)), wire);
        assert_eq!(hashes.computed(), 2);
        // Another process: the same hashes, so the same version.
        let mut other = SecretHashes::default();
        assert_eq!(
            other.proxies_form(&snap, users(&resources)).version,
            wire.version
        );

        // A new password: one new hash; another UID (the User re-created):
        // another salt.
        let (changed, resources2) = compiled(&USERS.replace("bob password 1", "bob password 2"));
        let wire2 = hashes.proxies_form(&changed, users(&resources2));
        assert_eq!(hashes.computed(), 3);
        assert!(verifies("bob password 2", &wire2.password_hashes["bob"]));
        assert_ne!(wire2.version, wire.version);
        let (_, recreated) = compiled(&USERS.replace("uid: u-1", "uid: u-2"));
        let wire3 = SecretHashes::default().proxies_form(&snap, users(&recreated));
        assert_ne!(wire3.password_hashes["bob"], *password);
    }
}
