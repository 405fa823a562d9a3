//! Property tests of the configuration loader and the snapshot a pod
//! applies: a link written in any of the spellings the loader accepts
//! (password inline, from a Secret's `stringData` or base64 `data`) comes
//! out of `compile` with the values written; its compiled spec written back
//! as a manifest compiles to the same spec; a snapshot survives the JSON
//! round trip to the pods unchanged and its version follows its content.
//! The fuzz targets `config` and `snapshot` (FUZZING.md) feed the same code
//! arbitrary input.

use proptest::prelude::*;
use smsgw_crds::{MessageIdFormat, SmppLinkSpec, Snapshot, compile_manifests};

fn config() -> ProptestConfig {
    // Each case parses YAML and compiles: 64 cases run in well under a second.
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where the bind password comes from.
#[derive(Debug, Clone)]
enum PasswordSource {
    Inline,
    StringData,
    Base64Data,
}

#[derive(Debug, Clone)]
struct LinkCase {
    name: String,
    host: String,
    port: u16,
    system_id: String,
    password: String,
    source: PasswordSource,
    sessions: u32,
    window: u32,
    rate: Option<(u32, Option<u32>)>,
    timeout_ms: u64,
    ids: MessageIdFormat,
}

fn link_case() -> impl Strategy<Value = LinkCase> {
    (
        "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        "[a-z][a-z0-9.-]{0,30}[a-z]",
        1u16..=65535,
        "[A-Za-z0-9_]{1,15}",
        "[!-~]{1,8}",
        prop_oneof![
            Just(PasswordSource::Inline),
            Just(PasswordSource::StringData),
            Just(PasswordSource::Base64Data)
        ],
        (1u32..=64, 1u32..=1024),
        proptest::option::of((1u32..100_000, proptest::option::of(1u32..1000))),
        1u64..20_000,
        prop_oneof![
            Just(MessageIdFormat::String),
            Just(MessageIdFormat::Hex),
            Just(MessageIdFormat::Decimal)
        ],
    )
        .prop_map(
            |(
                name,
                host,
                port,
                system_id,
                password,
                source,
                (sessions, window),
                rate,
                timeout_ms,
                ids,
            )| {
                LinkCase {
                    name,
                    host,
                    port,
                    system_id,
                    password,
                    source,
                    sessions,
                    window,
                    rate,
                    timeout_ms,
                    ids,
                }
            },
        )
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl LinkCase {
    fn yaml(&self) -> String {
        let password = match self.source {
            PasswordSource::Inline => format!("  password: {}\n", quoted(&self.password)),
            _ => "  passwordSecretRef:\n    name: bind-secret\n    key: pw\n".to_owned(),
        };
        let secret = match self.source {
            PasswordSource::Inline => String::new(),
            PasswordSource::StringData => format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bind-secret\nstringData:\n  pw: {}\n",
                quoted(&self.password)
            ),
            PasswordSource::Base64Data => format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bind-secret\ndata:\n  pw: {}\n",
                base64(self.password.as_bytes())
            ),
        };
        let rate = match self.rate {
            None => String::new(),
            Some((r, None)) => format!("  rate: {r}\n"),
            Some((r, Some(b))) => format!("  rate: {r}\n  burst: {b}\n"),
        };
        let ids = match self.ids {
            MessageIdFormat::String => "string",
            MessageIdFormat::Hex => "hex",
            MessageIdFormat::Decimal => "decimal",
        };
        format!(
            "apiVersion: smsgw.io/v1alpha1\nkind: SmppLink\nmetadata:\n  name: {}\nspec:\n  host: {}\n  port: {}\n  systemId: {}\n{password}  sessions: {}\n  window: {}\n{rate}  responseTimeout: {}ms\n  messageIdFormat: {ids}\n{secret}",
            self.name,
            quoted(&self.host),
            self.port,
            quoted(&self.system_id),
            self.sessions,
            self.window,
            self.timeout_ms,
        )
    }
}

fn link_manifest(name: &str, spec: &SmppLinkSpec) -> String {
    let spec = serde_yaml::to_string(spec).unwrap();
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: smsgw.io/v1alpha1\nkind: SmppLink\nmetadata:\n  name: {name}\nspec:\n{indented}"
    )
}

proptest! {
    #![proptest_config(config())]

    /// A link compiles to the values written, the password resolved from
    /// wherever it was written; written back as a manifest it compiles to
    /// the same spec and the same snapshot version.
    #[test]
    fn a_link_compiles_to_what_was_written_and_back(case in link_case()) {
        let yaml = case.yaml();
        let snap = compile_manifests(&yaml).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"));
        let link = &snap.links[&case.name];
        prop_assert_eq!(&link.host, &case.host);
        prop_assert_eq!(link.port, case.port);
        prop_assert_eq!(&link.system_id, &case.system_id);
        prop_assert_eq!(link.password.as_deref(), Some(case.password.as_str()));
        prop_assert!(link.password_secret_ref.is_none(), "resolved into the snapshot");
        prop_assert_eq!((link.sessions, link.window), (case.sessions, case.window));
        prop_assert_eq!(link.rate, case.rate.map(|r| r.0));
        prop_assert_eq!(link.burst, case.rate.and_then(|r| r.1));
        prop_assert_eq!(link.message_id_format, case.ids);
        let again = compile_manifests(&link_manifest(&case.name, link)).unwrap();
        prop_assert_eq!(&again.links[&case.name], link);
        prop_assert_eq!(again.version, snap.version);
    }

    /// What a pod receives decodes to exactly what the operator compiled;
    /// the version changes with the content and only with it.
    #[test]
    fn snapshot_json_round_trips_and_versions_follow_content(case in link_case(), window in 1u32..=1024) {
        let snap = compile_manifests(&case.yaml()).unwrap();
        let json = serde_json::to_vec(&snap).unwrap();
        let back: Snapshot = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(&back, &snap);
        let other = compile_manifests(&case.yaml().replace(
            &format!("  window: {}\n", case.window),
            &format!("  window: {window}\n"),
        ))
        .unwrap();
        prop_assert_eq!(other.version == snap.version, window == case.window);
        let redacted = snap.redacted();
        prop_assert_eq!(redacted.links[&case.name].password.as_deref(), Some("***"));
    }

    /// A Secret's base64 `data` decodes to the bytes encoded, whatever
    /// their length (padding or none).
    #[test]
    fn secret_data_is_base64_decoded(value in "[ -~]{1,40}", pad in any::<bool>()) {
        let mut b64 = base64(value.as_bytes());
        if !pad {
            b64 = b64.trim_end_matches('=').to_owned();
        }
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  k: {b64}\n---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata:\n  name: u\nspec:\n  email: u@example.com\n  appName: a\n  passwordSecretRef:\n    name: s\n    key: k\n"
        );
        match compile_manifests(&yaml) {
            Ok(snap) => prop_assert_eq!(snap.users["u"].password.as_deref(), Some(value.as_str())),
            // The user's own rules (password length) may refuse it, but
            // never because the base64 did not decode.
            Err(e) => prop_assert!(e.iter().all(|e| !e.reason.contains("base64")), "{:?}", e),
        }
    }
}

/// The committed seeds of the `snapshot` fuzz target are the snapshots of
/// the examples, in today's format (`SMSGW_WRITE_FUZZ_SEEDS=1 cargo test
/// -p smsgw-crds --test properties` rewrites them after a format change).
#[test]
fn snapshot_fuzz_seeds_are_the_examples_snapshots() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let cluster: Vec<String> = [
        "00-secrets",
        "10-links",
        "20-pools",
        "30-users",
        "40-policies",
        "50-routes",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(format!("{root}/examples/cluster/{f}.yaml")).unwrap())
    .collect();
    let examples = [
        (
            "standalone",
            std::fs::read_to_string(format!("{root}/examples/standalone.yaml")).unwrap(),
        ),
        ("cluster", cluster.join("---\n")),
    ];
    for (name, yaml) in examples {
        let snap = compile_manifests(&yaml).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let path = format!("{root}/fuzz/seeds/snapshot/{name}.json");
        if std::env::var_os("SMSGW_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(format!("{root}/fuzz/seeds/snapshot")).unwrap();
            std::fs::write(&path, serde_json::to_vec_pretty(&snap).unwrap()).unwrap();
        }
        let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let decoded: Snapshot = serde_json::from_slice(&seed).expect("the seed decodes");
        assert_eq!(decoded, snap, "{path} is stale");
    }
}

/// Found by the `config` fuzz target: quiet hours with an hour past 1092
/// overflowed `h * 60` (a panic in debug builds) before the range check
/// refused it.
#[test]
fn quiet_hours_with_a_huge_hour_are_refused_not_a_panic() {
    assert_eq!(smsgw_crds::parse_hh_mm("1121:00"), None);
    assert_eq!(smsgw_crds::parse_hh_mm("65535:59"), None);
    assert_eq!(smsgw_crds::parse_hh_mm("23:59"), Some(23 * 60 + 59));
    let yaml = include_str!("../../fuzz/seeds/config/quiet_hours_overflow.yaml");
    let errors = compile_manifests(yaml).expect_err("refused");
    assert!(
        errors
            .iter()
            .any(|e| e.field == "spec.quietHours.start" && e.reason.contains("1121:00")),
        "{errors:?}"
    );
}

proptest! {
    #![proptest_config(config())]

    /// Any `HH:MM` parses to its minutes when it is a time of day and is
    /// refused otherwise, whatever the numbers.
    #[test]
    fn hh_mm_parses_times_of_day_only(h in 0u32..70_000, m in 0u32..70_000) {
        let s = format!("{h:02}:{m:02}");
        let want = (h < 24 && m < 60).then(|| (h * 60 + m) as u16);
        prop_assert_eq!(smsgw_crds::parse_hh_mm(&s), want);
    }
}
