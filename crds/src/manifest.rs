//! Reading resources from multi-document YAML, the way `kubectl apply -f`
//! would take the same file.

use crate::spec::{ContactPolicySpec, EsmePoolSpec, FieldError, RouteSpec, SmppLinkSpec, UserSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// API group and version of the smsgw kinds.
pub const API_VERSION: &str = "smsgw.io/v1alpha1";

/// Object metadata (the parts smsgw reads).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Resource name (DNS-1123 label).
    pub name: String,
    /// Namespace; standalone mode ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The object's UID in a cluster (unique to this incarnation of the
    /// resource); absent in standalone files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One resource with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest<S> {
    /// Metadata.
    pub metadata: Metadata,
    /// Spec.
    pub spec: S,
}

/// Any resource a configuration file may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resource {
    /// An SMSC account.
    SmppLink(Manifest<SmppLinkSpec>),
    /// A weighted set of links.
    EsmePool(Manifest<EsmePoolSpec>),
    /// A managed user.
    User(Manifest<UserSpec>),
    /// A contact-policy strategy.
    ContactPolicy(Manifest<ContactPolicySpec>),
    /// A routing rule.
    Route(Manifest<RouteSpec>),
    /// A core/v1 Secret, for `secretKeyRef`s (its `stringData`/`data`).
    Secret(Manifest<BTreeMap<String, String>>),
}

impl Resource {
    /// Kind name, as in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::SmppLink(_) => "SmppLink",
            Resource::EsmePool(_) => "EsmePool",
            Resource::User(_) => "User",
            Resource::ContactPolicy(_) => "ContactPolicy",
            Resource::Route(_) => "Route",
            Resource::Secret(_) => "Secret",
        }
    }

    /// Field-level checks of the spec that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        match self {
            Resource::SmppLink(m) => m.spec.validate(),
            Resource::EsmePool(m) => m.spec.validate(),
            Resource::User(m) => m.spec.validate(),
            Resource::ContactPolicy(m) => m.spec.validate(),
            Resource::Route(m) => m.spec.validate(),
            Resource::Secret(_) => Vec::new(),
        }
    }

    /// Resource name.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Resource metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            Resource::SmppLink(m) => &m.metadata,
            Resource::EsmePool(m) => &m.metadata,
            Resource::User(m) => &m.metadata,
            Resource::ContactPolicy(m) => &m.metadata,
            Resource::Route(m) => &m.metadata,
            Resource::Secret(m) => &m.metadata,
        }
    }
}

impl Metadata {
    /// The parts smsgw reads of a Kubernetes object's metadata.
    pub fn from_object_meta(
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> Self {
        Self {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
        }
    }
}

impl From<&crate::SmppLink> for Resource {
    fn from(o: &crate::SmppLink) -> Self {
        Resource::SmppLink(Manifest {
            metadata: Metadata::from_object_meta(&o.metadata),
            spec: o.spec.clone(),
        })
    }
}

impl From<&crate::EsmePool> for Resource {
    fn from(o: &crate::EsmePool) -> Self {
        Resource::EsmePool(Manifest {
            metadata: Metadata::from_object_meta(&o.metadata),
            spec: o.spec.clone(),
        })
    }
}

impl From<&crate::User> for Resource {
    fn from(o: &crate::User) -> Self {
        Resource::User(Manifest {
            metadata: Metadata::from_object_meta(&o.metadata),
            spec: o.spec.clone(),
        })
    }
}

impl From<&crate::ContactPolicy> for Resource {
    fn from(o: &crate::ContactPolicy) -> Self {
        Resource::ContactPolicy(Manifest {
            metadata: Metadata::from_object_meta(&o.metadata),
            spec: o.spec.clone(),
        })
    }
}

impl From<&crate::Route> for Resource {
    fn from(o: &crate::Route) -> Self {
        Resource::Route(Manifest {
            metadata: Metadata::from_object_meta(&o.metadata),
            spec: o.spec.clone(),
        })
    }
}

/// A core/v1 Secret's `data` (keys whose value is not UTF-8 are left out:
/// every value smsgw reads from a Secret is text) and `stringData`.
impl From<&k8s_openapi::api::core::v1::Secret> for Resource {
    fn from(o: &k8s_openapi::api::core::v1::Secret) -> Self {
        let mut data = BTreeMap::new();
        for (k, v) in o.data.iter().flatten() {
            if let Ok(s) = String::from_utf8(v.0.clone()) {
                data.insert(k.clone(), s);
            }
        }
        for (k, v) in o.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone());
        }
        Resource::Secret(Manifest {
            metadata: Metadata::from_object_meta(&o.metadata),
            spec: data,
        })
    }
}

/// A configuration refused: which document, which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// 1-based position of the document in the file; 0 when the error is not
    /// tied to one document (e.g. the YAML stream itself is broken).
    pub document: usize,
    /// Kind of the resource, when known.
    pub kind: Option<String>,
    /// Name of the resource, when known.
    pub name: Option<String>,
    /// Dotted path of the offending field (`spec.port`), or empty.
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document > 0 {
            write!(f, "document {}", self.document)?;
        } else {
            write!(f, "configuration")?;
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " ({k} {n:?})")?,
            (Some(k), None) => write!(f, " ({k})")?,
            _ => {}
        }
        if !self.field.is_empty() {
            write!(f, ", field {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl ConfigError {
    pub(crate) fn for_resource(document: usize, r: &Resource, e: FieldError) -> Self {
        Self {
            document,
            kind: Some(r.kind().to_owned()),
            name: Some(r.name().to_owned()),
            field: e.field,
            reason: e.reason,
        }
    }
}

/// Parses a multi-document YAML stream into resources, in file order, each
/// paired with its 1-based document number. Empty documents are skipped.
/// Every document is checked on its own (shape and field rules); references
/// between resources are checked by [`crate::compile`]. All errors found
/// are returned, not just the first.
pub fn parse_manifests(yaml: &str) -> Result<Vec<(usize, Resource)>, Vec<ConfigError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let document = i + 1;
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(ConfigError {
                    document,
                    kind: None,
                    name: None,
                    field: String::new(),
                    reason: format!("not valid YAML: {e}"),
                });
                // A broken stream cannot be resynchronised reliably.
                break;
            }
        };
        match parse_document(document, value) {
            Ok(r) => {
                let field_errors = r.validate();
                errors.extend(
                    field_errors
                        .into_iter()
                        .map(|e| ConfigError::for_resource(document, &r, e)),
                );
                out.push((document, r));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_document(document: usize, value: serde_yaml::Value) -> Result<Resource, ConfigError> {
    let err = |kind: Option<&str>, name: Option<&str>, field: &str, reason: String| ConfigError {
        document,
        kind: kind.map(str::to_owned),
        name: name.map(str::to_owned),
        field: field.to_owned(),
        reason,
    };
    let serde_yaml::Value::Mapping(mut map) = value else {
        return Err(err(
            None,
            None,
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    let kind = match map.remove("kind") {
        Some(serde_yaml::Value::String(k)) => k,
        _ => return Err(err(None, None, "kind", "missing or not a string".into())),
    };
    let metadata: Metadata = match map.remove("metadata") {
        Some(v) => serde_path_to_error::deserialize(v).map_err(|e| {
            err(
                Some(&kind),
                None,
                &prefixed("metadata", e.path()),
                e.inner().to_string(),
            )
        })?,
        None => return Err(err(Some(&kind), None, "metadata", "missing".into())),
    };
    let name = metadata.name.clone();
    if let Some(reason) = dns_label_problem(&name) {
        return Err(err(Some(&kind), Some(&name), "metadata.name", reason));
    }
    let api_version = match map.remove("apiVersion") {
        Some(serde_yaml::Value::String(v)) => v,
        _ => {
            return Err(err(
                Some(&kind),
                Some(&name),
                "apiVersion",
                "missing or not a string".into(),
            ));
        }
    };
    let expected = if kind == "Secret" { "v1" } else { API_VERSION };
    if api_version != expected {
        return Err(err(
            Some(&kind),
            Some(&name),
            "apiVersion",
            format!("expected {expected:?}, found {api_version:?}"),
        ));
    }
    fn spec<S: DeserializeOwned>(map: &mut serde_yaml::Mapping) -> Result<S, (String, String)> {
        let v = map
            .remove("spec")
            .ok_or_else(|| ("spec".to_owned(), "missing".to_owned()))?;
        serde_path_to_error::deserialize(v)
            .map_err(|e| (prefixed("spec", e.path()), e.inner().to_string()))
    }
    let wrap = |r: Result<Resource, (String, String)>| {
        r.map_err(|(field, reason)| err(Some(&kind), Some(&name), &field, reason))
    };
    let md = metadata.clone();
    match kind.as_str() {
        "SmppLink" => {
            wrap(spec(&mut map).map(|spec| Resource::SmppLink(Manifest { metadata: md, spec })))
        }
        "EsmePool" => {
            wrap(spec(&mut map).map(|spec| Resource::EsmePool(Manifest { metadata: md, spec })))
        }
        "User" => wrap(spec(&mut map).map(|spec| Resource::User(Manifest { metadata: md, spec }))),
        "ContactPolicy" => wrap(
            spec(&mut map).map(|spec| Resource::ContactPolicy(Manifest { metadata: md, spec })),
        ),
        "Route" => {
            wrap(spec(&mut map).map(|spec| Resource::Route(Manifest { metadata: md, spec })))
        }
        "Secret" => wrap(
            secret_data(&mut map).map(|spec| Resource::Secret(Manifest { metadata: md, spec })),
        ),
        other => Err(err(
            Some(other),
            Some(&name),
            "kind",
            "unknown kind; expected SmppLink, EsmePool, User, ContactPolicy, Route or Secret"
                .into(),
        )),
    }
}

/// A Secret's `stringData`, plus its `data` (base64) decoded.
fn secret_data(
    map: &mut serde_yaml::Mapping,
) -> Result<BTreeMap<String, String>, (String, String)> {
    let mut out = BTreeMap::new();
    if let Some(v) = map.remove("data") {
        let data: BTreeMap<String, String> = serde_path_to_error::deserialize(v)
            .map_err(|e| (prefixed("data", e.path()), e.inner().to_string()))?;
        for (k, v) in data {
            let bytes = base64_decode(&v)
                .ok_or_else(|| (format!("data.{k}"), "not valid base64".to_owned()))?;
            let s = String::from_utf8(bytes)
                .map_err(|_| (format!("data.{k}"), "not UTF-8".to_owned()))?;
            out.insert(k, s);
        }
    }
    if let Some(v) = map.remove("stringData") {
        let data: BTreeMap<String, String> = serde_path_to_error::deserialize(v)
            .map_err(|e| (prefixed("stringData", e.path()), e.inner().to_string()))?;
        out.extend(data);
    }
    Ok(out)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn prefixed(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." || p.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}.{p}")
    }
}

/// Why `name` is not a DNS-1123 label (what Kubernetes requires), if it isn't.
fn dns_label_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!ok).then(|| format!("{name:?} must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"))
}
