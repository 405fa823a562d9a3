//! The snapshot JSON a proxy pod accepts from the operator, fed arbitrary
//! octets: decoding, the gateway's checks before applying (every spec's
//! field rules, pool members naming links of the snapshot), text options
//! per target and the contact policies' compilation never panic; what
//! decodes re-encodes to an equal snapshot.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smsgw_crds::Snapshot;

/// The checks `smsgw serve` runs before it applies a snapshot
/// (dataplane/gateway/src/config_watch.rs `validate`, which lives in the
/// binary crate): the first refusal, if any.
fn validate(snap: &Snapshot) -> Option<String> {
    for spec in snap.links.values() {
        if let Some(e) = spec.validate().into_iter().next() {
            return Some(e.reason);
        }
    }
    for spec in snap.pools.values() {
        if let Some(e) = spec.validate().into_iter().next() {
            return Some(e.reason);
        }
        if let Some(m) = spec
            .members
            .iter()
            .find(|m| !snap.links.contains_key(&m.link))
        {
            return Some(format!("no SmppLink {:?}", m.link));
        }
    }
    for spec in snap.users.values() {
        if let Some(e) = spec.validate().into_iter().next() {
            return Some(e.reason);
        }
    }
    for spec in snap.policies.values() {
        if let Some(e) = spec.validate().into_iter().next() {
            return Some(e.reason);
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = serde_json::from_slice::<Snapshot>(data) else {
        return;
    };
    let json = serde_json::to_vec(&snap).expect("serialises");
    let back: Snapshot = serde_json::from_slice(&json).expect("decodes again");
    assert_eq!(back, snap);
    if let Some(reason) = validate(&snap) {
        assert!(!reason.is_empty());
        return;
    }
    for target in snap.links.keys() {
        assert!(snap.text_options(target).is_some());
    }
    for target in snap.pools.keys() {
        let _ = snap.text_options(target);
    }
    let (policies, errors) = smsgw_contact::Policies::compile(&snap.policies);
    for e in errors {
        assert!(!e.to_string().is_empty());
    }
    drop(policies);
    let _ = snap.redacted();
});
