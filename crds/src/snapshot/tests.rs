use super::*;

const EXAMPLE: &str = include_str!("../../../examples/standalone.yaml");

fn errors_of(yaml: &str) -> Vec<ConfigError> {
    compile_manifests(yaml).expect_err("configuration should be refused")
}

#[test]
fn the_shipped_example_compiles_into_link_pool_and_policy() {
    let snap = compile_manifests(EXAMPLE).unwrap();
    let link = &snap.links["local-sim"];
    assert_eq!((link.host.as_str(), link.port), ("127.0.0.1", 2775));
    assert_eq!(link.system_id, "smsgw");
    assert_eq!(link.password.as_deref(), Some("secret"));
    assert_eq!(snap.pools["default"].members[0].link, "local-sim");
    assert!(snap.policies.contains_key("cp1"));
    assert_eq!(snap.version.len(), 24);
}

#[test]
fn equal_content_gives_equal_versions_and_changes_change_it() {
    let a = compile_manifests(EXAMPLE).unwrap();
    let b = compile_manifests(EXAMPLE).unwrap();
    assert_eq!(a.version, b.version);
    let c = compile_manifests(&EXAMPLE.replace("window: 64", "window: 32")).unwrap();
    assert_ne!(a.version, c.version);
}

#[test]
fn redaction_hides_every_password() {
    let snap = compile_manifests(EXAMPLE).unwrap().redacted();
    let json = serde_json::to_string(&snap).unwrap();
    assert!(!json.contains("\"secret\""), "{json}");
    assert_eq!(snap.links["local-sim"].password.as_deref(), Some(REDACTED));
}

#[test]
fn a_bad_port_is_refused_naming_document_field_and_reason() {
    let errs = errors_of(&EXAMPLE.replace("port: 2775", "port: seventy"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert_eq!(e.document, 1);
    assert_eq!(e.kind.as_deref(), Some("SmppLink"));
    assert_eq!(e.name.as_deref(), Some("local-sim"));
    assert_eq!(e.field, "spec.port");
    let text = e.to_string();
    assert!(
        text.starts_with("document 1 (SmppLink \"local-sim\"), field spec.port: invalid type"),
        "{text}"
    );
}

#[test]
fn an_unknown_field_is_refused_rather_than_ignored() {
    let errs = errors_of(&EXAMPLE.replace("window: 64", "windw: 64"));
    assert_eq!(errs[0].field, "spec.windw");
    assert!(
        errs[0].reason.contains("unknown field `windw`"),
        "{:?}",
        errs[0]
    );
}

#[test]
fn a_pool_member_must_name_an_existing_link() {
    let errs = errors_of(&EXAMPLE.replace("- link: local-sim", "- link: nowhere"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].document, 2);
    assert_eq!(errs[0].field, "spec.members[0].link");
    assert!(errs[0].reason.contains("no SmppLink named \"nowhere\""));
}

#[test]
fn field_rules_are_checked_and_all_errors_reported() {
    let yaml = EXAMPLE
        .replace("sessions: 2", "sessions: 0")
        .replace("window: 64", "window: 5000");
    let errs = errors_of(&yaml);
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.sessions", "spec.window"]);
}

#[test]
fn a_bad_duration_names_the_field() {
    let errs = errors_of(&EXAMPLE.replace("responseTimeout: 5s", "responseTimeout: soon"));
    assert_eq!(errs[0].field, "spec.responseTimeout");
    assert!(errs[0].reason.contains("invalid duration"));
}

#[test]
fn unknown_kind_wrong_api_version_and_bad_names_are_refused() {
    let errs =
        errors_of("apiVersion: smsgw.io/v1alpha1\nkind: Gadget\nmetadata: {name: x}\nspec: {}\n");
    assert_eq!(
        (errs[0].field.as_str(), errs[0].kind.as_deref()),
        ("kind", Some("Gadget"))
    );
    let errs = errors_of(&EXAMPLE.replacen("smsgw.io/v1alpha1", "smsgw.io/v9", 1));
    assert_eq!(errs[0].field, "apiVersion");
    let errs = errors_of(&EXAMPLE.replace("name: local-sim", "name: Local_Sim"));
    assert_eq!(errs[0].field, "metadata.name");
}

#[test]
fn broken_yaml_is_refused_with_its_location() {
    let errs = errors_of("kind: SmppLink\nmetadata: [unclosed\n");
    assert_eq!(errs[0].document, 1);
    assert!(
        errs[0].reason.starts_with("not valid YAML"),
        "{:?}",
        errs[0]
    );
}

#[test]
fn duplicate_names_are_refused() {
    let doc = EXAMPLE.split("---").nth(2).unwrap(); // the pool document
    let errs = errors_of(&format!("{EXAMPLE}---{doc}"));
    let last = EXAMPLE.matches("\n---\n").count() + 1;
    assert_eq!(errs[0].document, last);
    assert!(
        errs[0].reason.contains("already defined in document 2"),
        "{:?}",
        errs[0]
    );
}

#[test]
fn secret_key_refs_resolve_from_secrets_in_the_file() {
    let yaml = EXAMPLE.replace(
        "password: secret",
        "passwordSecretRef: {name: smsc, key: password}",
    ) + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: smsc}\ndata:\n  password: czNjcjN0\n";
    let snap = compile_manifests(&yaml).unwrap();
    assert_eq!(snap.links["local-sim"].password.as_deref(), Some("s3cr3t"));

    let missing = yaml.replace("key: password", "key: nope");
    let errs = errors_of(&missing);
    assert_eq!(errs[0].field, "spec.passwordSecretRef");
}

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn a_tls_ca_secret_ref_resolves_into_the_snapshot_and_is_redacted() {
    let yaml = EXAMPLE.replace(
        "password: secret",
        "password: secret\n  tls: true\n  tlsServerName: smsc.example.com\n  tlsCaSecretRef: {name: smsc-ca, key: ca.crt}",
    ) + &format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: smsc-ca}}\nstringData:\n  ca.crt: {CA:?}\n"
    );
    let snap = compile_manifests(&yaml).unwrap();
    let link = &snap.links["local-sim"];
    assert_eq!(link.tls_ca.as_deref(), Some(CA));
    assert_eq!(link.tls_ca_secret_ref, None);
    assert_eq!(link.tls_server_name.as_deref(), Some("smsc.example.com"));
    assert!(link.validate().is_empty(), "{:?}", link.validate());
    let shown = serde_json::to_string(&snap.redacted()).unwrap();
    assert!(!shown.contains("BEGIN CERTIFICATE"), "{shown}");

    let missing = yaml.replace("key: ca.crt", "key: tls.crt");
    assert_eq!(errors_of(&missing)[0].field, "spec.tlsCaSecretRef");
    let not_pem = yaml
        .replace("MIIB", "")
        .replace("-----END CERTIFICATE-----", "");
    let errs = errors_of(&not_pem);
    assert_eq!(errs[0].field, "spec.tlsCaSecretRef", "{errs:?}");
    assert!(errs[0].reason.contains("PEM certificates"), "{errs:?}");
}

#[test]
fn tls_settings_are_checked_naming_the_field() {
    let with = |extra: &str| {
        compile_manifests(
            &EXAMPLE.replace("password: secret", &format!("password: secret\n{extra}")),
        )
        .err()
        .unwrap_or_default()
    };
    let fields =
        |extra: &str| -> Vec<String> { with(extra).into_iter().map(|e| e.field).collect() };
    assert_eq!(
        fields("  tlsServerName: smsc.example.com"),
        ["spec.tlsServerName"]
    );
    assert_eq!(
        with("  tlsInsecureSkipVerify: true")[0].reason,
        "needs spec.tls: true"
    );
    assert_eq!(
        fields("  tls: true\n  tlsServerName: \"bad name\""),
        ["spec.tlsServerName"]
    );
    assert_eq!(fields("  tls: true\n  tlsCa: hello"), ["spec.tlsCa"]);
    assert_eq!(
        fields(&format!(
            "  tls: true\n  tlsInsecureSkipVerify: true\n  tlsCa: {CA:?}"
        )),
        ["spec.tlsInsecureSkipVerify"]
    );
    assert_eq!(
        fields(&format!(
            "  tls: true\n  tlsCa: {CA:?}\n  tlsCaSecretRef: {{name: a, key: b}}"
        )),
        ["spec.tlsCa"]
    );
    assert!(fields("  tls: true\n  tlsServerName: 10.0.0.1").is_empty());
    assert!(fields("  tls: true\n  tlsInsecureSkipVerify: true").is_empty());
}

#[test]
fn users_need_an_email_and_unique_addresses() {
    let user = "---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: alice}\nspec: {email: alice@example.com, appName: a, quotas: {allowedTargets: [default, ghost]}}\n";
    let errs = errors_of(&format!("{EXAMPLE}{user}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "spec.quotas.allowedTargets[1]");
    let bad = user.replace("alice@example.com", "not-an-email");
    let errs = errors_of(&format!("{EXAMPLE}{bad}"));
    assert_eq!(errs[0].field, "spec.email");
}

#[test]
fn policies_must_say_something() {
    let policy = "---\napiVersion: smsgw.io/v1alpha1\nkind: ContactPolicy\nmetadata: {name: empty}\nspec: {}\n";
    let errs = errors_of(&format!("{EXAMPLE}{policy}"));
    let last = EXAMPLE.matches("\n---\n").count() + 1;
    assert_eq!((errs[0].document, errs[0].field.as_str()), (last, "spec"));
    // passAll says something (pass), and nothing else.
    let pass = "---\napiVersion: smsgw.io/v1alpha1\nkind: ContactPolicy\nmetadata: {name: probe}\nspec: {passAll: true}\n";
    assert!(
        compile_manifests(&format!("{EXAMPLE}{pass}"))
            .unwrap()
            .policies["probe"]
            .pass_all
    );
    let both = pass.replace("{passAll: true}", "{passAll: true, blacklists: [x]}");
    let errs = errors_of(&format!("{EXAMPLE}{both}"));
    assert_eq!(errs[0].field, "spec.passAll", "{errs:?}");
}

fn policy(name: &str, strategies: &str) -> String {
    format!(
        "---\napiVersion: smsgw.io/v1alpha1\nkind: ContactPolicy\nmetadata: {{name: {name}}}\nspec: {{frequency: {{daily: 1}}, strategies: {strategies}}}\n"
    )
}

#[test]
fn a_policy_answers_to_the_strategy_names_it_declares_each_held_by_one_policy() {
    let ok = format!(
        "{}{}{}",
        sim_links(),
        policy("onbuild-cp1", "[onbuild_cp1, 'Health:Check/1']"),
        policy("cp9", "[cp9]")
    );
    let snap = compile_manifests(&ok).unwrap();
    let names: Vec<&str> = snap.policies["onbuild-cp1"]
        .strategy_names("onbuild-cp1")
        .collect();
    assert_eq!(names, ["onbuild-cp1", "onbuild_cp1", "Health:Check/1"]);
    assert_eq!(
        snap.policies["cp9"]
            .strategy_names("cp9")
            .collect::<Vec<_>>(),
        ["cp9"],
        "its own name again is no second name"
    );

    // A name another policy answers to: the later document is in error,
    // naming the holder.
    let dup = format!(
        "{}{}{}",
        sim_links(),
        policy("a-policy", "[shared_name]"),
        policy("b-policy", "[other, shared_name]")
    );
    let errs = errors_of(&dup);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].name.as_deref(), errs[0].field.as_str()),
        (Some("b-policy"), "spec.strategies[1]")
    );
    assert!(
        errs[0].reason.contains("\"shared_name\"") && errs[0].reason.contains("\"a-policy\""),
        "{errs:?}"
    );
    // A resource name another policy declares as a strategy.
    let taken = format!(
        "{}{}{}",
        sim_links(),
        policy("first", "[cp7]"),
        policy("cp7", "[]")
    );
    let errs = errors_of(&taken);
    assert_eq!(
        (errs[0].name.as_deref(), errs[0].field.as_str()),
        (Some("cp7"), "metadata.name")
    );

    // Names are checked one by one: blank, spaces, too long, twice.
    let long = format!("[{}]", "x".repeat(129));
    for (list, field) in [
        ("['']", "spec.strategies[0]"),
        ("[ok, 'has space']", "spec.strategies[1]"),
        (long.as_str(), "spec.strategies[0]"),
        ("[twice, twice]", "spec.strategies[1]"),
    ] {
        let errs = errors_of(&format!("{}{}", sim_links(), policy("p", list)));
        assert_eq!(errs[0].field, field, "{list}: {errs:?}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let errs = errors_of(&format!(
        "{}{}",
        sim_links(),
        policy("p", &format!("[{}]", many.join(", ")))
    ));
    assert_eq!(errs[0].field, "spec.strategies", "{errs:?}");
}

/// The example's link and pool alone (no policy).
fn sim_links() -> String {
    EXAMPLE
        .split("\n---\n")
        .take(3)
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

#[test]
fn pool_selectors_expand_into_the_links_carrying_their_labels() {
    let yaml = EXAMPLE.replacen(
        "  name: local-sim\n",
        "  name: local-sim\n  labels: {tier: gold}\n",
        1,
    ) + "---\napiVersion: smsgw.io/v1alpha1\nkind: EsmePool\nmetadata: {name: gold}\nspec:\n  members: []\n  selectors: [{matchLabels: {tier: gold}, weight: 3}]\n";
    let snap = compile_manifests(&yaml).unwrap();
    let gold = &snap.pools["gold"];
    assert_eq!(gold.members.len(), 1);
    assert_eq!(
        (gold.members[0].link.as_str(), gold.members[0].weight),
        ("local-sim", 3)
    );
    assert!(
        gold.selectors.is_empty(),
        "selectors are resolved in the snapshot"
    );

    let errs = errors_of(&yaml.replace("tier: gold}, weight", "tier: silver}, weight"));
    assert_eq!(errs[0].field, "spec.selectors[0]");
    assert_eq!(errs[0].reason, "selects no SmppLink");
}

#[test]
fn user_credentials_secret_supplies_app_credentials_and_generated_password() {
    let user = "---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: bob}\nspec: {email: bob@example.com, appName: b, generatePassword: true}\n";
    let snap = compile_manifests(&format!("{EXAMPLE}{user}")).unwrap();
    assert_eq!(
        snap.users["bob"].password, None,
        "no Secret yet: no password"
    );
    assert!(snap.app_credentials.is_empty());

    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: bob-credentials}\nstringData: {appId: app-1, appSecret: topsecret, password: generated-pw}\n";
    let snap = compile_manifests(&format!("{EXAMPLE}{user}{secret}")).unwrap();
    assert_eq!(snap.users["bob"].password.as_deref(), Some("generated-pw"));
    assert_eq!(snap.app_credentials["bob"].app_id, "app-1");
    let redacted = serde_json::to_string(&snap.redacted()).unwrap();
    assert!(!redacted.contains("topsecret") && !redacted.contains("generated-pw"));
}

/// What the operator sends to proxies: links keep their secrets (any pod
/// may bind any link), users' passwords and app secrets travel as the
/// hashes the hasher gives, users wait for their credentials Secret, and
/// the version follows the hashes.
#[test]
fn the_proxies_form_carries_hashes_of_user_secrets_and_link_secrets_as_they_are() {
    let user = "---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: bob}\nspec: {email: bob@example.com, appName: b, generatePassword: true}\n---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: eve}\nspec: {email: eve@example.com, appName: e}\n";
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: bob-credentials}\nstringData: {appId: app-1, appSecret: topsecret, password: generated-pw}\n";
    let snap = compile_manifests(&format!("{EXAMPLE}{user}{secret}")).unwrap();
    let mut asked = Vec::new();
    let fake = |s: SecretToHash<'_>| format!("$fake${}${}${}", s.user, s.key, s.secret.len());
    let wire = snap.for_proxies(|s| {
        asked.push((s.user.to_owned(), s.key, s.secret.to_owned()));
        fake(s)
    });
    assert_eq!(
        asked,
        [
            (
                "bob".to_owned(),
                CREDENTIALS_PASSWORD,
                "generated-pw".to_owned()
            ),
            (
                "bob".to_owned(),
                CREDENTIALS_APP_SECRET,
                "topsecret".to_owned()
            ),
        ]
    );
    let json = serde_json::to_string(&wire).unwrap();
    assert!(
        !json.contains("topsecret") && !json.contains("generated-pw"),
        "{json}"
    );
    assert!(
        json.contains("\"secret\""),
        "the link's bind password travels"
    );
    assert_eq!(wire.users["bob"].password, None);
    assert_eq!(wire.password_hashes["bob"], "$fake$bob$password$12");
    assert!(
        !wire.users.contains_key("eve") && !wire.password_hashes.contains_key("eve"),
        "eve waits for her credentials Secret"
    );
    let creds = &wire.app_credentials["bob"];
    assert_eq!(creds.app_id, "app-1");
    assert_eq!(creds.app_secret, "");
    assert_eq!(
        creds.app_secret_hash.as_deref(),
        Some("$fake$bob$appSecret$9")
    );
    // The JSON round-trips; the version is the wire content's and stable.
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, wire);
    assert_ne!(wire.version, snap.version);
    assert_eq!(snap.for_proxies(fake).version, wire.version);
    let other = compile_manifests(&format!(
        "{EXAMPLE}{user}{}",
        secret.replace("topsecret", "topsecreT")
    ))
    .unwrap()
    .for_proxies(|s| format!("$h${}", s.secret));
    assert_ne!(
        other.version,
        snap.for_proxies(|s| format!("$h${}", s.secret)).version
    );
    // The admin view hides the hashes too.
    let shown = wire.redacted();
    assert_eq!(shown.password_hashes["bob"], REDACTED);
    assert_eq!(
        shown.app_credentials["bob"].app_secret_hash.as_deref(),
        Some(REDACTED)
    );
}

/// The example with a second link `other` (encoding `encoding`, a YAML
/// flow mapping) as a member of the pool `default` after `local-sim`.
fn example_with_second_member(encoding: &str) -> String {
    let link = EXAMPLE.split("---").nth(1).unwrap();
    let other = link
        .replacen("name: local-sim", "name: other", 1)
        .replace(
            "  encoding:\n    latin1: false\n    nationalLanguages: []\n    concatenation: udh8\n    maxSegments: 10\n",
            &format!("  encoding: {encoding}\n"),
        );
    assert!(other.contains(encoding), "example link layout changed");
    EXAMPLE.replacen(
        "    - link: local-sim\n",
        "    - link: local-sim\n    - link: other\n",
        1,
    ) + "---"
        + &other
}

#[test]
fn a_pool_takes_the_most_restrictive_concatenation_of_its_members() {
    use smsgw_text::{Concat, SarParts};
    for (encoding, concat, sar_parts) in [
        // udh16 parts are smaller than udh8 ones, wherever it is listed.
        ("{concatenation: udh16}", Concat::Udh16, SarParts::UdhSized),
        // A UDH beats SAR TLVs and message_payload.
        ("{concatenation: sar}", Concat::Udh8, SarParts::UdhSized),
        (
            "{concatenation: messagePayload}",
            Concat::Udh8,
            SarParts::UdhSized,
        ),
    ] {
        let snap = compile_manifests(&example_with_second_member(encoding)).unwrap();
        assert_eq!(snap.pools["default"].members.len(), 2);
        let o = snap.text_options("default").unwrap();
        assert_eq!((o.concat, o.sar_parts), (concat, sar_parts), "{encoding}");
    }
    let snap = compile_manifests(&example_with_second_member(
        "{concatenation: sar, sarPartSize: full, maxSegments: 3, latin1: true}",
    ))
    .unwrap();
    let other = snap.text_options("other").unwrap();
    assert_eq!(
        (
            other.concat,
            other.sar_parts,
            other.max_segments,
            other.allow_latin1
        ),
        (Concat::Sar, SarParts::Full, Some(3), true)
    );
    let pool = snap.text_options("default").unwrap();
    assert_eq!(
        (pool.concat, pool.max_segments, pool.allow_latin1),
        (Concat::Udh8, Some(3), false)
    );
}

#[test]
fn sar_part_size_defaults_to_udh_and_needs_sar_concatenation() {
    use smsgw_text::SarParts;
    let snap = compile_manifests(&example_with_second_member("{concatenation: sar}")).unwrap();
    assert_eq!(
        snap.text_options("other").unwrap().sar_parts,
        SarParts::UdhSized
    );
    let errs = errors_of(&example_with_second_member(
        "{concatenation: udh8, sarPartSize: full}",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "spec.encoding.sarPartSize");
    assert_eq!(errs[0].reason, "applies only to concatenation: sar");
    let errs = errors_of(&example_with_second_member(
        "{concatenation: sar, sarPartSize: half}",
    ));
    assert!(errs[0].reason.contains("half"), "{errs:?}");
}

/// An argon2id PHC string of `password` with the given costs.
fn argon2_phc(password: &str, m: u32, t: u32, p: u32) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(m, t, p, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(
            password.as_bytes(),
            &SaltString::encode_b64(b"0123456789abcdef").unwrap(),
        )
        .unwrap()
        .to_string()
}

#[test]
fn password_hashes_the_gateway_can_check_are_argon2_within_bounds_and_others_say_why() {
    assert_eq!(check_password_hash(&argon2_phc("pw", 19456, 2, 1)), Ok(()));
    assert_eq!(
        check_password_hash(&argon2_phc("pw", 1024, 1, 1).replace("argon2id", "argon2i")),
        Ok(())
    );
    let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
    let why = check_password_hash(bcrypt).unwrap_err();
    assert!(why.contains("bcrypt") && !why.contains("R9h"), "{why}");
    let why = check_password_hash("$pbkdf2-sha256$29000$N2bM$abc").unwrap_err();
    assert!(why.contains("pbkdf2-sha256 hash"), "{why}");
    let why = check_password_hash("5f4dcc3b5aa765d61d8327deb882cf99").unwrap_err();
    assert!(why.contains("not a PHC string"), "{why}");
    let why = check_password_hash("$argon2id$v=19$m=19456,t=2,p=1$broken").unwrap_err();
    assert!(
        why.contains("without a salt") || why.contains("malformed"),
        "{why}"
    );
    let why = check_password_hash(&argon2_phc("pw", 128 * 1024, 1, 1)).unwrap_err();
    assert!(why.contains("m=131072") && why.contains("above"), "{why}");
}

const IMPORTED: &str = "---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: carol}\nspec: {email: carol@example.com, appName: c, existingCredentialsSecret: carol-imported}\n";

fn imported_secret(extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: carol-imported}}\nstringData: {{appId: legacy-app-7, appSecret: legacy secret{extra}}}\n"
    )
}

#[test]
fn an_existing_credentials_secret_supplies_app_credentials_and_an_imported_password_hash() {
    let phc = argon2_phc("carol password", 19456, 2, 1);
    let yaml = format!(
        "{EXAMPLE}{IMPORTED}{}",
        imported_secret(&format!(", passwordHash: '{phc}'"))
    );
    let snap = compile_manifests(&yaml).unwrap();
    assert_eq!(snap.app_credentials["carol"].app_id, "legacy-app-7");
    assert_eq!(snap.app_credentials["carol"].app_secret, "legacy secret");
    assert_eq!(snap.password_hashes["carol"], phc);
    assert_eq!(snap.users["carol"].password, None);
    // To the proxies: the imported hash as it is, the app secret hashed.
    let wire = snap.for_proxies(|s| format!("$h${}", s.key));
    assert_eq!(wire.password_hashes["carol"], phc);
    assert_eq!(
        wire.app_credentials["carol"].app_secret_hash.as_deref(),
        Some("$h$appSecret")
    );
    assert_eq!(snap.redacted().password_hashes["carol"], REDACTED);

    // A password in the spec wins over the imported hash.
    let with_pw = yaml.replace(
        "existingCredentialsSecret: carol-imported}",
        "existingCredentialsSecret: carol-imported, password: 'a new password'}",
    );
    let snap = compile_manifests(&with_pw).unwrap();
    assert!(!snap.password_hashes.contains_key("carol"));
    assert_eq!(
        snap.users["carol"].password.as_deref(),
        Some("a new password")
    );
}

#[test]
fn an_existing_credentials_secret_that_is_missing_incomplete_or_holds_a_foreign_hash_is_refused() {
    let errs = errors_of(&format!("{EXAMPLE}{IMPORTED}"));
    assert_eq!(errs[0].field, "spec.existingCredentialsSecret");
    assert_eq!(errs[0].reason, "Secret \"carol-imported\" does not exist");
    assert_eq!(errs[0].name.as_deref(), Some("carol"));

    let no_secret = imported_secret("").replace(", appSecret: legacy secret", "");
    let errs = errors_of(&format!("{EXAMPLE}{IMPORTED}{no_secret}"));
    assert_eq!(
        errs[0].reason,
        "Secret \"carol-imported\" has no key appSecret"
    );

    let bcrypt = ", passwordHash: '$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW'";
    let errs = errors_of(&format!("{EXAMPLE}{IMPORTED}{}", imported_secret(bcrypt)));
    assert!(
        errs[0]
            .reason
            .contains("key \"passwordHash\" is a bcrypt hash"),
        "{}",
        errs[0].reason
    );

    for clash in ["credentialsSecret: other", "generatePassword: true"] {
        let yaml = format!(
            "{EXAMPLE}{}{}",
            IMPORTED.replace("carol-imported}", &format!("carol-imported, {clash}}}")),
            imported_secret("")
        );
        let errs = errors_of(&yaml);
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.existingCredentialsSecret"
                    && e.reason
                        .contains("excludes credentialsSecret and generatePassword")),
            "{clash}: {errs:?}"
        );
    }
}
