//! The configuration loader (multi-document YAML with Secrets, as
//! `smsgw standalone --config` and `smsgw check-config` read it) fed
//! arbitrary text: nothing panics; every refusal names a document that
//! exists and says why; what compiles is deterministic (same version twice),
//! survives a JSON round trip unchanged (the form the operator sends to
//! pods), and its redacted form shows no secret.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smsgw_crds::{REDACTED, Snapshot, compile, parse_manifests};

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    // A document takes at least one line (`\n`, `\r` or both end one in
    // YAML; the parser may count one past the last `---` when the stream
    // breaks).
    let documents = yaml.bytes().filter(|&b| b == b'\n' || b == b'\r').count() + 2;
    let resources = match parse_manifests(yaml) {
        Ok(r) => r,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(e.document <= documents, "{e}");
                assert!(!e.reason.is_empty(), "{e:?}");
            }
            return;
        }
    };
    let snap = match compile(&resources) {
        Ok(s) => s,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(!e.reason.is_empty(), "{e:?}");
            }
            return;
        }
    };
    assert_eq!(
        compile(&resources).expect("compiles again").version,
        snap.version
    );
    let json = serde_json::to_vec(&snap).expect("serialises");
    let back: Snapshot = serde_json::from_slice(&json).expect("decodes");
    assert_eq!(back, snap);
    let red = snap.redacted();
    for l in red.links.values() {
        assert!(l.password.as_deref().is_none_or(|p| p == REDACTED));
        assert!(l.tls_ca.as_deref().is_none_or(|p| p == REDACTED));
    }
    for u in red.users.values() {
        assert!(u.password.as_deref().is_none_or(|p| p == REDACTED));
    }
    for c in red.app_credentials.values() {
        assert_eq!(c.app_secret, REDACTED);
        assert!(c.app_secret_hash.as_deref().is_none_or(|h| h == REDACTED));
    }
    assert!(red.password_hashes.values().all(|h| h == REDACTED));
    let wire = snap.for_proxies(|s| format!("hash of {}", s.user));
    for u in wire.users.values() {
        assert!(u.password.is_none());
    }
    for c in wire.app_credentials.values() {
        assert!(c.app_secret.is_empty());
    }
    for target in snap.links.keys().chain(snap.pools.keys()) {
        assert!(snap.text_options(target).is_some() || snap.pools.contains_key(target));
    }
});
