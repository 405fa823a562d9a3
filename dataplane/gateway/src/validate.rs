//! What a gateway checks before it applies a snapshot ([`validate`]), and
//! the [`Rejection`] it answers when the snapshot does not pass: shared by
//! the wiring that applies a snapshot (`runtime`) and the operator watch
//! that acknowledges it (`config_watch`).

use smsgw_crds::Snapshot;

/// Why a snapshot was not applied: what goes into a negative Ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub error: String,
    /// The resource concerned, `Kind/namespace/name`, or empty.
    pub resource: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.resource.is_empty() {
            write!(f, "cannot apply the configuration: {}", self.error)
        } else {
            write!(
                f,
                "cannot apply the configuration: {}: {}",
                self.resource, self.error
            )
        }
    }
}

impl Rejection {
    fn of(kind: &str, namespace: &str, name: &str, error: String) -> Self {
        Self {
            error,
            resource: format!("{kind}/{namespace}/{name}"),
        }
    }
}

/// Checks what the gateway relies on when it applies a snapshot: every
/// spec's field rules, pools naming only links of the snapshot, and each
/// contact-policy strategy name selecting one policy.
pub fn validate(snap: &Snapshot, namespace: &str) -> Result<(), Rejection> {
    let first = |kind: &str, name: &str, errs: Vec<smsgw_crds::FieldError>| match errs.first() {
        Some(e) => Err(Rejection::of(
            kind,
            namespace,
            name,
            format!("{}: {}", e.field, e.reason),
        )),
        None => Ok(()),
    };
    for (name, spec) in &snap.links {
        first("SmppLink", name, spec.validate())?;
    }
    for (name, spec) in &snap.pools {
        first("EsmePool", name, spec.validate())?;
        if let Some((i, m)) = spec
            .members
            .iter()
            .enumerate()
            .find(|(_, m)| !snap.links.contains_key(&m.link))
        {
            return Err(Rejection::of(
                "EsmePool",
                namespace,
                name,
                format!("spec.members[{i}].link: no SmppLink {:?}", m.link),
            ));
        }
    }
    for (name, spec) in &snap.users {
        first("User", name, spec.validate())?;
    }
    for (name, spec) in &snap.policies {
        first("ContactPolicy", name, spec.validate())?;
    }
    let (_, taken) = smsgw_crds::strategy_owners(
        snap.policies
            .iter()
            .map(|(name, spec)| (name.as_str(), name.as_str(), spec)),
    );
    if let Some((name, e)) = taken.into_iter().next() {
        first("ContactPolicy", name, vec![e])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Snapshot {
        smsgw_crds::compile_manifests(include_str!("../../../examples/standalone.yaml"))
            .expect("the example compiles")
    }

    #[test]
    fn the_example_snapshot_is_valid_and_a_pool_of_an_unknown_link_is_not() {
        let mut snap = example();
        assert_eq!(validate(&snap, "ns"), Ok(()));
        snap.links.remove("local-sim");
        let r = validate(&snap, "ns").unwrap_err();
        assert_eq!(r.resource, "EsmePool/ns/default");
        assert!(r.error.contains("local-sim"), "{r:?}");
    }

    #[test]
    fn a_strategy_name_two_policies_answer_to_is_refused() {
        let mut snap = example();
        let mut other = snap.policies["cp1"].clone();
        other.strategies = vec!["cp1".into()];
        snap.policies.insert("zz-copy".into(), other);
        let r = validate(&snap, "ns").unwrap_err();
        assert_eq!(r.resource, "ContactPolicy/ns/zz-copy");
        assert!(r.error.starts_with("spec.strategies[0]: "), "{r:?}");
    }

    #[test]
    fn a_link_that_breaks_a_field_rule_is_named() {
        let mut snap = example();
        snap.links.get_mut("local-sim").unwrap().sessions = 0;
        let r = validate(&snap, "").unwrap_err();
        assert_eq!(r.resource, "SmppLink//local-sim");
    }
}
