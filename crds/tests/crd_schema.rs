//! The generated CRDs: committed YAML up to date, every field described,
//! and the CEL rules (`x-kubernetes-validations`) accepting and refusing
//! what the Rust-side validation does.

use kube::core::cel::validate_cel;
use serde_json::Value;
use smsgw_crds::{
    Concatenation, ContactPolicy, ContactPolicySpec, EsmePool, EsmePoolSpec, SarPartSize, SmppLink,
    SmppLinkSpec, User, UserSpec,
};
use std::path::Path;

const EXAMPLE: &str = include_str!("../../examples/standalone.yaml");

/// The `spec` of the `n`-th (0-based) document of the example.
fn example_spec<T: serde::de::DeserializeOwned>(n: usize) -> T {
    let docs: Vec<serde_yaml::Value> = EXAMPLE
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    serde_yaml::from_value(docs[n]["spec"].clone()).unwrap()
}

fn link() -> SmppLinkSpec {
    example_spec(0)
}

fn user() -> UserSpec {
    serde_json::from_value(serde_json::json!({
        "email": "alice@example.com",
        "appName": "shop",
        "passwordSecretRef": {"name": "alice", "key": "password"}
    }))
    .unwrap()
}

/// The messages of the CEL rules the object breaks.
fn cel_failures<T: kube::CustomResourceExt + serde::Serialize>(obj: &T) -> Vec<String> {
    match validate_cel(obj) {
        Ok(()) => Vec::new(),
        Err(errs) => errs.as_slice().iter().map(|e| e.message.clone()).collect(),
    }
}

#[test]
fn committed_crd_yaml_and_the_charts_copy_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.to_path_buf(), root.join("../charts/smsgw/crds")] {
        for file in smsgw_crds::crd_files() {
            let path = dir.join(&file.file_name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == file.yaml,
                "{} is stale; run `cargo run -p smsgw-crds --bin crdgen`",
                path.display()
            );
        }
    }
}

fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let p = format!("{path}.{name}");
            let described = sub
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.len() >= 10);
            // apiVersion/kind/metadata are Kubernetes' own.
            if !described && !["apiVersion", "kind", "metadata"].contains(&name.as_str()) {
                out.push(p.clone());
            }
            undescribed(sub, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undescribed(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = schema.get("additionalProperties") {
        undescribed(ap, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_field_of_every_crd_has_a_description_for_kubectl_explain() {
    for crd in smsgw_crds::crds() {
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut missing = Vec::new();
        undescribed(&schema, &crd.spec.names.kind, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}

#[test]
fn crds_are_namespaced_with_status_short_names_category_and_columns() {
    for crd in smsgw_crds::crds() {
        assert_eq!(crd.spec.group, "smsgw.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let names = &crd.spec.names;
        assert_eq!(names.categories.as_deref(), Some(&["smsgw".to_owned()][..]));
        assert!(!names.short_names.clone().unwrap_or_default().is_empty());
        let v = &crd.spec.versions[0];
        assert_eq!(
            format!("{}/{}", crd.spec.group, v.name),
            smsgw_crds::API_VERSION
        );
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let columns = v.additional_printer_columns.as_ref().unwrap();
        assert!(columns.iter().any(|c| c.name == "Ready"), "{}", names.kind);
    }
}

#[test]
fn smpp_link_sessions_are_the_scale_subresource() {
    let crd = &smsgw_crds::crds()[0];
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .unwrap()
        .scale
        .as_ref()
        .unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.sessions");
    assert_eq!(scale.status_replicas_path, ".status.boundSessions");
}

#[test]
fn the_example_resources_pass_every_cel_rule() {
    assert_eq!(
        cel_failures(&SmppLink::new("sim", link())),
        Vec::<String>::new()
    );
    assert_eq!(
        cel_failures(&EsmePool::new("default", example_spec::<EsmePoolSpec>(1))),
        Vec::<String>::new()
    );
    assert_eq!(
        cel_failures(&ContactPolicy::new(
            "cp1",
            example_spec::<ContactPolicySpec>(2)
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        cel_failures(&User::new("alice", user())),
        Vec::<String>::new()
    );
}

#[test]
fn a_link_with_both_password_forms_is_refused_by_cel() {
    let mut spec = link();
    spec.password_secret_ref = Some(smsgw_crds::SecretKeyRef {
        name: "smsc".into(),
        key: "password".into(),
    });
    assert_eq!(
        cel_failures(&SmppLink::new("sim", spec.clone())),
        ["set either password or passwordSecretRef, not both"]
    );
    spec.password = None;
    assert!(cel_failures(&SmppLink::new("sim", spec)).is_empty());
}

#[test]
fn a_burst_without_a_rate_is_refused_by_cel() {
    let mut spec = link();
    spec.rate = None;
    assert_eq!(
        cel_failures(&SmppLink::new("sim", spec)),
        ["burst needs rate"]
    );
}

#[test]
fn an_unknown_national_language_is_refused_by_cel() {
    let mut spec = link();
    spec.encoding.national_languages = vec!["turkish".into(), "klingon".into()];
    assert_eq!(
        cel_failures(&SmppLink::new("sim", spec)),
        ["supported national languages: turkish, spanish, portuguese"]
    );
}

#[test]
fn a_weekly_cap_below_the_daily_cap_is_refused_by_cel() {
    let mut spec: ContactPolicySpec = example_spec(2);
    let f = spec.frequency.as_mut().unwrap();
    f.daily = Some(5);
    f.weekly = Some(4);
    assert_eq!(
        cel_failures(&ContactPolicy::new("cp", spec.clone())),
        ["weekly must be at least the daily cap"]
    );
    spec.frequency.as_mut().unwrap().weekly = Some(5);
    assert!(cel_failures(&ContactPolicy::new("cp", spec)).is_empty());
}

#[test]
fn a_frequency_without_caps_and_an_empty_policy_are_refused_by_cel() {
    let mut spec: ContactPolicySpec = example_spec(2);
    let f = spec.frequency.as_mut().unwrap();
    f.daily = None;
    f.weekly = None;
    assert_eq!(
        cel_failures(&ContactPolicy::new("cp", spec)),
        ["set daily, weekly or both"]
    );
    assert_eq!(
        cel_failures(&ContactPolicy::new("cp", ContactPolicySpec::default())),
        ["a policy needs frequency, dedup, blacklists, quietHours or passAll"]
    );
    let blacklist_only = ContactPolicySpec {
        blacklists: vec!["optout".into()],
        ..Default::default()
    };
    assert!(cel_failures(&ContactPolicy::new("cp", blacklist_only.clone())).is_empty());
    let pass_all = ContactPolicySpec {
        pass_all: true,
        strategies: vec!["health_check".into()],
        ..Default::default()
    };
    assert!(cel_failures(&ContactPolicy::new("hc", pass_all)).is_empty());
    assert_eq!(
        cel_failures(&ContactPolicy::new(
            "cp",
            ContactPolicySpec {
                pass_all: true,
                ..blacklist_only
            }
        )),
        ["passAll excludes frequency, dedup, blacklists and quietHours"]
    );
}

#[test]
fn strategy_names_are_a_set_of_visible_ascii_names_in_the_schema() {
    let crd = serde_json::to_value(<ContactPolicy as kube::CustomResourceExt>::crd()).unwrap();
    let s = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["strategies"];
    assert_eq!(s["x-kubernetes-list-type"], "set", "{s}");
    assert_eq!(s["maxItems"], 16, "{s}");
    assert_eq!(
        (&s["items"]["minLength"], &s["items"]["maxLength"]),
        (&serde_json::json!(1), &serde_json::json!(128)),
        "{s}"
    );
    // Visible ASCII, as the Rust-side check (`is_ascii_graphic`).
    assert_eq!(s["items"]["pattern"], "^[!-~]+$", "{s}");
}

#[test]
fn a_pool_listing_a_link_twice_or_no_link_is_refused_by_cel() {
    let mut spec: EsmePoolSpec = example_spec(1);
    spec.members.push(spec.members[0].clone());
    assert_eq!(
        cel_failures(&EsmePool::new("p", spec.clone())),
        ["a link is listed twice in members"]
    );
    spec.members.clear();
    assert_eq!(
        cel_failures(&EsmePool::new("p", spec.clone())),
        ["a pool needs members or selectors"]
    );
    spec.selectors =
        vec![serde_json::from_value(serde_json::json!({"matchLabels": {"tier": "gold"}})).unwrap()];
    assert!(cel_failures(&EsmePool::new("p", spec)).is_empty());
}

#[test]
fn an_existing_credentials_secret_excludes_a_generated_one_by_cel_as_by_validate() {
    let mut spec = user();
    spec.existing_credentials_secret = Some("alice-imported".into());
    assert!(cel_failures(&User::new("u", spec.clone())).is_empty());
    assert!(spec.validate().is_empty());
    for clash in [
        |s: &mut UserSpec| s.credentials_secret = Some("alice-credentials".into()),
        |s: &mut UserSpec| {
            s.password_secret_ref = None;
            s.generate_password = true;
        },
    ] {
        let mut bad = spec.clone();
        clash(&mut bad);
        assert_eq!(
            cel_failures(&User::new("u", bad.clone())),
            ["existingCredentialsSecret excludes credentialsSecret and generatePassword"]
        );
        assert_eq!(bad.validate()[0].field, "spec.existingCredentialsSecret");
    }
}

#[test]
fn user_password_modes_are_exclusive_and_emails_checked_by_cel() {
    let mut spec = user();
    spec.generate_password = true;
    assert_eq!(
        cel_failures(&User::new("u", spec.clone())),
        ["generatePassword excludes password and passwordSecretRef"]
    );
    spec.password_secret_ref = None;
    assert!(cel_failures(&User::new("u", spec.clone())).is_empty());
    spec.email = "alice at example.com".into();
    assert_eq!(
        cel_failures(&User::new("u", spec)),
        ["must be an email address"]
    );
}

#[test]
fn the_standalone_example_reads_as_the_kubernetes_types_too() {
    let docs: Vec<&str> = EXAMPLE.split("\n---\n").skip(1).collect();
    let l: SmppLink = serde_yaml::from_str(docs[0]).unwrap();
    assert_eq!(l.spec.port, 2775);
    let p: EsmePool = serde_yaml::from_str(docs[1]).unwrap();
    assert_eq!(p.spec.members.len(), 1);
    let c: ContactPolicy = serde_yaml::from_str(docs[2]).unwrap();
    assert_eq!(c.spec.frequency.unwrap().weekly, Some(10));
}

#[test]
fn the_cluster_examples_compile_with_their_secrets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let yaml = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let snap = smsgw_crds::compile_manifests(&yaml).unwrap();
    assert_eq!(snap.links["sim"].password.as_deref(), Some("secret"));
    assert_eq!(snap.pools["default"].members[0].link, "sim");
    assert_eq!(
        snap.users["alice"].password.as_deref(),
        Some("correct-horse-battery")
    );
    assert!(snap.users["bob"].generate_password);
}

#[test]
fn tls_settings_without_tls_or_with_two_ca_forms_are_refused_by_cel() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let mut spec = link();
    spec.tls_server_name = Some("smsc.example.com".into());
    assert_eq!(
        cel_failures(&SmppLink::new("sim", spec.clone())),
        ["tlsCa, tlsCaSecretRef, tlsServerName and tlsInsecureSkipVerify need tls: true"]
    );
    spec.tls = true;
    spec.tls_ca = Some(ca.into());
    assert!(cel_failures(&SmppLink::new("sim", spec.clone())).is_empty());
    spec.tls_ca_secret_ref = Some(smsgw_crds::SecretKeyRef {
        name: "ca".into(),
        key: "ca.crt".into(),
    });
    assert_eq!(
        cel_failures(&SmppLink::new("sim", spec.clone())),
        ["set either tlsCa or tlsCaSecretRef, not both"]
    );
    spec.tls_ca = None;
    spec.tls_insecure_skip_verify = true;
    assert_eq!(
        cel_failures(&SmppLink::new("sim", spec.clone())),
        [
            "tlsInsecureSkipVerify checks no certificate, so a CA would be ignored: set one or the other"
        ]
    );
    spec.tls_ca_secret_ref = None;
    assert!(cel_failures(&SmppLink::new("sim", spec)).is_empty());
}

#[test]
fn a_sar_part_size_without_sar_concatenation_is_refused_by_cel() {
    let mut spec = link();
    spec.encoding.sar_part_size = Some(SarPartSize::Full);
    assert_eq!(
        cel_failures(&SmppLink::new("sim", spec.clone())),
        ["sarPartSize applies only to concatenation: sar"]
    );
    spec.encoding.concatenation = Concatenation::Sar;
    assert!(cel_failures(&SmppLink::new("sim", spec)).is_empty());
}

#[test]
fn a_generated_password_is_resolved_into_a_snapshot_that_passes_the_spec_rules() {
    let yaml = r#"
apiVersion: smsgw.io/v1alpha1
kind: User
metadata: {name: bob}
spec: {email: bob@example.com, appName: alerts, generatePassword: true}
---
apiVersion: v1
kind: Secret
metadata: {name: bob-credentials}
stringData: {password: generated-pw-0123456789, appId: app_1, appSecret: s3cr3t}
"#;
    let snap = smsgw_crds::compile_manifests(yaml).unwrap();
    let bob = &snap.users["bob"];
    assert_eq!(bob.password.as_deref(), Some("generated-pw-0123456789"));
    assert!(bob.validate().is_empty(), "{:?}", bob.validate());
}
