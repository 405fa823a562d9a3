//! Imported users as manifests: per user a Secret holding its `appId`,
//! `appSecret` and (when kept) `passwordHash`, and a User naming it with
//! `spec.existingCredentialsSecret`, so the operator (or a standalone
//! gateway reading the same file) uses those credentials and never
//! replaces them.

use super::{ImportArgs, Imported};
use anyhow::{Context, bail};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;

/// The file written into the `--emit-manifests` directory.
pub const FILE_NAME: &str = "imported-users.yaml";

/// Longest User name chosen (its Secret adds [`SECRET_SUFFIX`] and must
/// stay a DNS-1123 label).
const MAX_NAME: usize = 40;
/// Suffix of the Secret's name.
const SECRET_SUFFIX: &str = "-imported-credentials";

/// A DNS-1123 label from an email: lower-cased, every run of other
/// characters a `-`, at most [`MAX_NAME`] characters.
fn name_of(email: &str) -> String {
    let mut out = String::new();
    for c in email.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut name: String = out.trim_matches('-').chars().take(MAX_NAME).collect();
    while name.ends_with('-') {
        name.pop();
    }
    if name.is_empty() {
        "user".to_owned()
    } else {
        name
    }
}

/// The YAML documents: per user its Secret, then its User.
pub fn render(users: &[Imported], namespace: Option<&str>) -> anyhow::Result<String> {
    let mut taken = BTreeSet::new();
    let mut out = String::from(
        "# Users imported from the platform by `smsgw users import`: each app keeps\n# its appId and appSecret. Holds secrets: keep this file private.\n",
    );
    for u in users {
        let base = name_of(&u.email);
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let secret_name = format!("{name}{SECRET_SUFFIX}");
        let metadata = |name: &str| {
            let mut m = json!({
                "name": name,
                "labels": {"app.kubernetes.io/part-of": "smsgw", "smsgw.io/imported": "true"},
            });
            if let Some(ns) = namespace {
                m["namespace"] = json!(ns);
            }
            m
        };
        let mut data = json!({"appId": u.app_id, "appSecret": u.app_secret});
        if let Some(h) = &u.password_hash {
            data["passwordHash"] = json!(h);
        }
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata(&secret_name),
            "stringData": data,
        });
        let user = json!({
            "apiVersion": smsgw_crds::API_VERSION,
            "kind": "User",
            "metadata": metadata(&name),
            "spec": {
                "email": u.email,
                "appName": u.app_name,
                "admin": u.admin,
                "existingCredentialsSecret": secret_name,
            },
        });
        for doc in [secret, user] {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&doc).context("cannot write YAML")?);
        }
    }
    Ok(out)
}

/// Writes the manifests of `users` into `dir` (or to standard output for
/// `-`) and reports each user (never its secrets) on standard error when
/// the manifests go to standard output, else on standard output.
pub fn emit(args: &ImportArgs, dir: &Path, users: &[Imported]) -> anyhow::Result<()> {
    let yaml = render(users, args.namespace.as_deref())?;
    let to_stdout = dir.as_os_str() == "-";
    let report = |line: String| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if args.dry_run {
        for u in users {
            report(format!("{}: would be written, {}", u.who(), u.login()));
        }
        report(format!(
            "dry run: {} user(s) would be written as manifests; nothing written",
            users.len()
        ));
        return Ok(());
    }
    let target = if to_stdout {
        use std::io::Write;
        std::io::stdout()
            .write_all(yaml.as_bytes())
            .context("cannot write to standard output")?;
        "standard output".to_owned()
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        if path.exists() {
            bail!(
                "{} exists; move it away or choose another directory (nothing written)",
                path.display()
            );
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        use std::io::Write;
        opts.open(&path)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        path.display().to_string()
    };
    for u in users {
        report(format!("{}: written, {}", u.who(), u.login()));
    }
    let kept = users
        .iter()
        .filter(|u| u.password == super::Password::Kept)
        .count();
    report(format!(
        "{} user(s) written as User resources with their credentials Secrets to {target} ({kept} with password login, {} without); apply them with kubectl apply -f, or add them to a standalone configuration file",
        users.len(),
        users.len() - kept
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users_import::Password;

    fn user(email: &str, app_id: &str, hash: Option<&str>) -> Imported {
        Imported {
            at: "row 1".into(),
            email: email.into(),
            app_name: "shop".into(),
            app_id: app_id.into(),
            app_secret: "the secret".into(),
            password_hash: hash.map(str::to_owned),
            password: if hash.is_some() {
                Password::Kept
            } else {
                Password::Absent
            },
            admin: true,
        }
    }

    #[test]
    fn names_are_dns_labels_made_unique() {
        assert_eq!(
            name_of("Alice.Smith+sms@Example.COM"),
            "alice-smith-sms-example-com"
        );
        assert_eq!(name_of("@@@"), "user");
        assert!(name_of(&format!("{}@example.com", "x".repeat(80))).len() <= MAX_NAME);
    }

    #[test]
    fn the_manifests_compile_into_users_with_their_imported_credentials() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$eLs7GUHxnSL0bz6M0vNJU1JQ4OvwTzX2xSr2uGYzCxk";
        let yaml = render(
            &[
                user("a.b@example.com", "legacy-1", Some(phc)),
                user("a+b@example.com", "legacy-2", None),
            ],
            Some("sms"),
        )
        .unwrap();
        let resources = smsgw_crds::parse_manifests(&yaml).unwrap();
        assert_eq!(resources[1].1.metadata().namespace.as_deref(), Some("sms"));
        let snap = smsgw_crds::compile(&resources).unwrap();
        let first = "a-b-example-com";
        assert_eq!(snap.app_credentials[first].app_id, "legacy-1");
        assert_eq!(snap.app_credentials[first].app_secret, "the secret");
        assert_eq!(snap.password_hashes[first], phc);
        assert!(snap.users[first].admin);
        assert_eq!(
            snap.users[first].existing_credentials_secret.as_deref(),
            Some("a-b-example-com-imported-credentials")
        );
        assert_eq!(snap.app_credentials["a-b-example-com-2"].app_id, "legacy-2");
        assert!(!snap.password_hashes.contains_key("a-b-example-com-2"));
    }
}
