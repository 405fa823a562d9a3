//! JSON Web Tokens through `jsonwebtoken`, the algorithm pinned per key.
//!
//! Two kinds of signing, never both at once:
//!
//! - **HS256** (the default): shared secret keys (`SMSGW_JWT_KEYS`). Only
//!   the gateways can verify the tokens.
//! - **EdDSA (Ed25519) or RS256**: private keys from PEM files
//!   (`SMSGW_JWT_PRIVATE_KEYS`). The public halves are served as a JWKS
//!   ([`KeySet::jwks`], `GET /.well-known/jwks.json`), so other services
//!   verify tokens without the signing key. While asymmetric keys are
//!   configured, HS256 tokens are refused (and the HMAC keys only derive
//!   other secrets, [`KeySet::derive`]).
//!
//! Every key has an id (`kid`, in the token header); the first key of a
//! list signs and all verify, so a new key is rotated in ahead of use and
//! an old one retired after its tokens expire. A token is accepted only
//! when its header names exactly the algorithm of the key its `kid`
//! names: `none`, `HS256` against an RSA public key (algorithm
//! confusion), `HS512` and the like are refused before any signature is
//! computed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// Issuer written into and required from every token.
pub const ISSUER: &str = "smsgw";

/// What a token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user id.
    pub sub: String,
    /// Application id the token is for.
    pub app_id: String,
    /// Admin flag at issue time (admin routes re-check the store).
    pub admin: bool,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// The user's token generation at issue; a token whose generation is
    /// no longer the user's is refused (absent in older tokens: 0).
    #[serde(default, rename = "gen")]
    pub generation: u64,
}

/// Why a token was refused. Messages are safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm this gateway does not accept (for
    /// the key it names).
    #[error("token algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// The key id is unknown (or missing).
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("token signature is invalid")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Claims out of shape (issuer, issue time in the future).
    #[error("token claims are invalid")]
    BadClaims,
}

/// The part of a token header read before verification: the algorithm as
/// written (so `none` is reported as such) and the key id.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// One verification (and possibly signing) key with its pinned algorithm.
#[derive(Clone)]
struct Key {
    alg: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// The public JWK (asymmetric keys only; HMAC keys are never shown).
    jwk: Option<Jwk>,
}

/// A private key for asymmetric signing, read from PEM.
#[derive(Clone)]
pub struct PrivateKey {
    kid: String,
    key: Key,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kid", &self.kid)
            .field("alg", &self.key.alg)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// An Ed25519 (PKCS#8 `PRIVATE KEY`) or RSA (PKCS#8 or PKCS#1 `RSA
    /// PRIVATE KEY`, at least 2048 bits) private key in PEM; signs EdDSA
    /// or RS256 tokens respectively.
    pub fn from_pem(kid: impl Into<String>, pem: &[u8]) -> Result<Self, KeySpecError> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(KeySpecError("a key id is empty".into()));
        }
        let key = if let Ok(encoding) = EncodingKey::from_ed_pem(pem) {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let signing = ed25519_dalek::SigningKey::from_pkcs8_der(encoding.inner())
                .map_err(|e| KeySpecError(format!("key {kid:?}: Ed25519 key: {e}")))?;
            let x = B64.encode(signing.verifying_key().as_bytes());
            let jwk = Jwk {
                common: CommonParameters::default(),
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x,
                }),
            };
            Self::asymmetric(&kid, Algorithm::EdDSA, KeyAlgorithm::EdDSA, encoding, jwk)?
        } else if let Ok(encoding) = EncodingKey::from_rsa_pem(pem) {
            let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
                .map_err(|e| KeySpecError(format!("key {kid:?}: RSA key: {e}")))?;
            if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
                let bits = B64
                    .decode(&rsa.n)
                    .map_or(0, |n| n.iter().skip_while(|b| **b == 0).count() * 8);
                if bits < 2048 {
                    return Err(KeySpecError(format!(
                        "key {kid:?}: RSA keys must have at least 2048 bits"
                    )));
                }
            }
            Self::asymmetric(&kid, Algorithm::RS256, KeyAlgorithm::RS256, encoding, jwk)?
        } else {
            return Err(KeySpecError(format!(
                "key {kid:?} is not an Ed25519 or RSA private key in PEM"
            )));
        };
        Ok(Self { kid, key })
    }

    fn asymmetric(
        kid: &str,
        alg: Algorithm,
        key_alg: KeyAlgorithm,
        encoding: EncodingKey,
        mut jwk: Jwk,
    ) -> Result<Key, KeySpecError> {
        jwk.common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(key_alg),
            key_id: Some(kid.to_owned()),
            ..CommonParameters::default()
        };
        // Verify with exactly what the JWKS publishes.
        let decoding = DecodingKey::from_jwk(&jwk)
            .map_err(|e| KeySpecError(format!("key {kid:?}: public key: {e}")))?;
        Ok(Key {
            alg,
            encoding: Some(encoding),
            decoding,
            jwk: Some(jwk),
        })
    }

    /// Reads `kid=path[,kid=path…]`: PEM files, the first signing.
    pub fn load_spec(spec: &str) -> Result<Vec<Self>, KeySpecError> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, path) = part
                .split_once('=')
                .ok_or_else(|| KeySpecError("expected kid=path/to/key.pem".into()))?;
            let path = Path::new(path.trim());
            let pem = std::fs::read(path).map_err(|e| {
                KeySpecError(format!("key {kid:?}: cannot read {}: {e}", path.display()))
            })?;
            keys.push(Self::from_pem(kid.trim(), &pem)?);
        }
        if keys.is_empty() {
            return Err(KeySpecError("no private key given".into()));
        }
        Ok(keys)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs: `EdDSA` or `RS256`.
    pub fn algorithm(&self) -> &'static str {
        alg_name(self.key.alg)
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// Token keys by id: the HMAC keys (which also derive other secrets) and,
/// optionally, asymmetric keys that then sign and verify every token.
#[derive(Clone)]
pub struct KeySet {
    /// Id of the HMAC key that derives new secrets (and signs HS256).
    hmac_signing: String,
    hmac: HashMap<String, Vec<u8>>,
    /// Id of the key that signs tokens.
    signing: String,
    /// Keys that verify tokens (the HMAC keys, or the asymmetric ones).
    verifying: HashMap<String, Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self
            .verifying
            .iter()
            .map(|(k, v)| format!("{k}:{}", alg_name(v.alg)))
            .collect();
        kids.sort();
        f.debug_struct("KeySet")
            .field("signing", &self.signing)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

/// Why a key specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JWT key specification: {0}")]
pub struct KeySpecError(String);

fn hmac_key(key: &[u8]) -> Key {
    Key {
        alg: Algorithm::HS256,
        encoding: Some(EncodingKey::from_secret(key)),
        decoding: DecodingKey::from_secret(key),
        jwk: None,
    }
}

impl KeySet {
    /// One HS256 signing key.
    pub fn single(kid: impl Into<String>, key: Vec<u8>) -> Self {
        let kid = kid.into();
        Self {
            hmac_signing: kid.clone(),
            signing: kid.clone(),
            verifying: HashMap::from([(kid.clone(), hmac_key(&key))]),
            hmac: HashMap::from([(kid, key)]),
        }
    }

    /// Parses HS256 keys `kid=base64key[,kid=base64key…]`; the first signs.
    /// Keys must be at least 32 bytes.
    pub fn parse(spec: &str) -> Result<Self, KeySpecError> {
        let mut signing = None;
        let mut hmac = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, key) = part
                .split_once('=')
                .ok_or_else(|| KeySpecError("expected kid=base64key".into()))?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(key)
                .or_else(|_| B64.decode(key))
                .map_err(|_| KeySpecError(format!("key {kid:?} is not base64")))?;
            if key.len() < 32 {
                return Err(KeySpecError(format!(
                    "key {kid:?} is shorter than 32 bytes"
                )));
            }
            signing.get_or_insert_with(|| kid.to_owned());
            hmac.insert(kid.to_owned(), key);
        }
        let signing: String = signing.ok_or_else(|| KeySpecError("no key given".into()))?;
        Ok(Self {
            hmac_signing: signing.clone(),
            signing,
            verifying: hmac.iter().map(|(k, v)| (k.clone(), hmac_key(v))).collect(),
            hmac,
        })
    }

    /// Signs and verifies tokens with `keys` (EdDSA / RS256, the first
    /// signing) instead of the HMAC keys, which from then on only derive
    /// secrets: HS256 tokens are refused.
    pub fn with_private_keys(mut self, keys: Vec<PrivateKey>) -> Result<Self, KeySpecError> {
        let Some(first) = keys.first() else {
            return Err(KeySpecError("no private key given".into()));
        };
        self.signing = first.kid.clone();
        self.verifying.clear();
        for k in keys {
            if self.verifying.insert(k.kid.clone(), k.key).is_some() {
                return Err(KeySpecError(format!("key id {:?} is given twice", k.kid)));
            }
        }
        Ok(self)
    }

    /// Id of the key that signs tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing
    }

    /// Id of the HMAC key new derived secrets come from ([`Self::derive`]).
    pub fn derivation_kid(&self) -> &str {
        &self.hmac_signing
    }

    /// The algorithm tokens are signed with: `HS256`, `EdDSA` or `RS256`.
    pub fn algorithm(&self) -> &'static str {
        alg_name(self.verifying[&self.signing].alg)
    }

    /// The public keys as a JSON Web Key Set (RFC 7517): every asymmetric
    /// verification key with its `kid`, `alg` and `use`. Empty with HS256
    /// (a shared secret is never published).
    pub fn jwks(&self) -> JwkSet {
        let mut keys: Vec<Jwk> = self
            .verifying
            .values()
            .filter_map(|k| k.jwk.clone())
            .collect();
        keys.sort_by(|a, b| a.common.key_id.cmp(&b.common.key_id));
        // The signing key first: clients that take the first key get the
        // current one.
        if let Some(i) = keys
            .iter()
            .position(|k| k.common.key_id.as_deref() == Some(&self.signing))
        {
            let k = keys.remove(i);
            keys.insert(0, k);
        }
        JwkSet { keys }
    }

    /// A 32-byte key derived from HMAC key `kid` for `purpose`
    /// (HMAC-SHA256 of the purpose under the key), or `None` if `kid` is
    /// not in the set. Lets other secrets (webhook signing keys) be
    /// recomputed instead of stored.
    pub fn derive(&self, kid: &str, purpose: &[u8]) -> Option<[u8; 32]> {
        let key = self.hmac.get(kid)?;
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"smsgw-derive-v1:");
        mac.update(purpose);
        Some(mac.finalize().into_bytes().into())
    }

    /// Signs `claims` with the signing key.
    pub fn issue(&self, claims: &Claims) -> String {
        let key = &self.verifying[&self.signing];
        let mut header = Header::new(key.alg);
        header.kid = Some(self.signing.clone());
        let encoding = key.encoding.as_ref().expect("the signing key can sign");
        jsonwebtoken::encode(&header, claims, encoding).expect("claims serialise and sign")
    }

    /// Verifies a token at time `now` (Unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: RawHeader =
            serde_json::from_slice(&B64.decode(h).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        if !self
            .verifying
            .values()
            .any(|k| alg_name(k.alg) == header.alg)
        {
            return Err(TokenError::Algorithm(header.alg));
        }
        let key = header
            .kid
            .as_ref()
            .and_then(|k| self.verifying.get(k))
            .ok_or(TokenError::UnknownKey)?;
        if alg_name(key.alg) != header.alg {
            return Err(TokenError::Algorithm(header.alg));
        }
        // One algorithm: the key's. Times are checked below against `now`.
        let mut validation = Validation::new(key.alg);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm(header.alg.clone()),
                ErrorKind::Json(_) => TokenError::BadClaims,
                _ => TokenError::Malformed,
            },
        )?;
        let claims = data.claims;
        if claims.iss != ISSUER || claims.iat > now + 60 {
            return Err(TokenError::BadClaims);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const ED_A: &str = include_str!("testdata/ed25519-a.pem");
    const ED_B: &str = include_str!("testdata/ed25519-b.pem");
    const RSA: &str = include_str!("testdata/rsa.pem");

    fn keys() -> KeySet {
        KeySet::single("k1", vec![7u8; 32])
    }

    fn ed(kid: &str, pem: &str) -> KeySet {
        keys()
            .with_private_keys(vec![PrivateKey::from_pem(kid, pem.as_bytes()).unwrap()])
            .unwrap()
    }

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            app_id: "a1".into(),
            admin: false,
            iat: NOW,
            exp: NOW + 3600,
            jti: "j1".into(),
            iss: ISSUER.into(),
            generation: 0,
        }
    }

    fn forge(header: &str, claims: &Claims, key: &[u8]) -> String {
        let h = B64.encode(header);
        let c = B64.encode(serde_json::to_vec(claims).unwrap());
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn an_issued_token_verifies_to_its_claims() {
        let t = keys().issue(&claims());
        assert_eq!(keys().verify(&t, NOW + 1), Ok(claims()));
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["kid"], "k1");
    }

    #[test]
    fn alg_none_is_refused() {
        let h = B64.encode(r#"{"alg":"none","kid":"k1"}"#);
        let c = B64.encode(serde_json::to_vec(&claims()).unwrap());
        assert_eq!(
            keys().verify(&format!("{h}.{c}."), NOW),
            Err(TokenError::Algorithm("none".into()))
        );
        assert_eq!(
            ed("e1", ED_A).verify(&format!("{h}.{c}."), NOW),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // An RS256 header signed with the HMAC key as if it were a public key.
        let t = forge(r#"{"alg":"RS256","kid":"k1"}"#, &claims(), &[7u8; 32]);
        assert_eq!(
            keys().verify(&t, NOW),
            Err(TokenError::Algorithm("RS256".into()))
        );
        let t = forge(r#"{"alg":"HS512","kid":"k1"}"#, &claims(), &[7u8; 32]);
        assert_eq!(
            keys().verify(&t, NOW),
            Err(TokenError::Algorithm("HS512".into()))
        );
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused_by_an_asymmetric_set() {
        // The classic confusion: HMAC over the token keyed with the
        // published public key.
        for (kid, pem) in [("e1", ED_A), ("r1", RSA)] {
            let set = keys()
                .with_private_keys(vec![PrivateKey::from_pem(kid, pem.as_bytes()).unwrap()])
                .unwrap();
            let jwks = serde_json::to_vec(&set.jwks()).unwrap();
            let t = forge(
                &format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
                &claims(),
                &jwks,
            );
            assert_eq!(
                set.verify(&t, NOW),
                Err(TokenError::Algorithm("HS256".into()))
            );
        }
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let t = forge(r#"{"alg":"HS256","kid":"k1"}"#, &claims(), &[8u8; 32]);
        assert_eq!(keys().verify(&t, NOW), Err(TokenError::BadSignature));
        let t = forge(r#"{"alg":"HS256","kid":"k2"}"#, &claims(), &[7u8; 32]);
        assert_eq!(keys().verify(&t, NOW), Err(TokenError::UnknownKey));
        let t = forge(r#"{"alg":"HS256"}"#, &claims(), &[7u8; 32]);
        assert_eq!(keys().verify(&t, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn a_token_of_another_ed25519_key_under_the_same_kid_is_refused() {
        let t = ed("e1", ED_B).issue(&claims());
        assert_eq!(
            ed("e1", ED_A).verify(&t, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        for set in [keys(), ed("e1", ED_A), ed("r1", RSA)] {
            let t = set.issue(&claims());
            let mut admin = claims();
            admin.admin = true;
            let parts: Vec<&str> = t.split('.').collect();
            let tampered = format!(
                "{}.{}.{}",
                parts[0],
                B64.encode(serde_json::to_vec(&admin).unwrap()),
                parts[2]
            );
            assert_eq!(set.verify(&tampered, NOW), Err(TokenError::BadSignature));
        }
    }

    #[test]
    fn an_expired_token_is_refused() {
        let t = keys().issue(&claims());
        assert_eq!(keys().verify(&t, NOW + 3600), Err(TokenError::Expired));
        let t = ed("e1", ED_A).issue(&claims());
        assert_eq!(
            ed("e1", ED_A).verify(&t, NOW + 3600),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_foreign_issuer_or_a_future_issue_time_is_refused() {
        let mut c = claims();
        c.iss = "someone-else".into();
        assert_eq!(
            keys().verify(&keys().issue(&c), NOW),
            Err(TokenError::BadClaims)
        );
        let mut c = claims();
        c.iat = NOW + 120;
        assert_eq!(
            keys().verify(&keys().issue(&c), NOW),
            Err(TokenError::BadClaims)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for t in ["", "a.b", "a.b.c.d", "!!!.???.***"] {
            assert_eq!(keys().verify(t, NOW), Err(TokenError::Malformed), "{t:?}");
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_while_new_ones_use_the_new_key() {
        let k = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let old = KeySet::parse(&format!("k1={}", k(7))).unwrap();
        let rotated = KeySet::parse(&format!("k2={},k1={}", k(9), k(7))).unwrap();
        let old_token = old.issue(&claims());
        assert!(rotated.verify(&old_token, NOW).is_ok());
        let new_token = rotated.issue(&claims());
        assert_eq!(rotated.signing_kid(), "k2");
        assert_eq!(old.verify(&new_token, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn asymmetric_rotation_publishes_both_keys_and_signs_with_the_first() {
        let pk = |kid, pem: &str| PrivateKey::from_pem(kid, pem.as_bytes()).unwrap();
        let old = keys().with_private_keys(vec![pk("e1", ED_A)]).unwrap();
        let rotated = keys()
            .with_private_keys(vec![pk("e2", ED_B), pk("e1", ED_A), pk("r1", RSA)])
            .unwrap();
        assert!(rotated.verify(&old.issue(&claims()), NOW).is_ok());
        let new_token = rotated.issue(&claims());
        assert_eq!(old.verify(&new_token, NOW), Err(TokenError::UnknownKey));
        let kids: Vec<_> = rotated
            .jwks()
            .keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, ["e2", "e1", "r1"]);
        // An EdDSA header naming the RSA key is refused whatever it carries.
        let t = old.issue(&claims());
        let (h, rest) = t.split_once('.').unwrap();
        let header = String::from_utf8(B64.decode(h).unwrap()).unwrap();
        let renamed = format!("{}.{rest}", B64.encode(header.replace("\"e1\"", "\"r1\"")));
        assert_eq!(
            rotated.verify(&renamed, NOW),
            Err(TokenError::Algorithm("EdDSA".into()))
        );
    }

    #[test]
    fn with_an_asymmetric_key_hs256_tokens_are_refused_and_vice_versa() {
        let hs = keys().issue(&claims());
        for (kid, pem, alg) in [("e1", ED_A, "EdDSA"), ("r1", RSA, "RS256")] {
            let set = keys()
                .with_private_keys(vec![PrivateKey::from_pem(kid, pem.as_bytes()).unwrap()])
                .unwrap();
            assert_eq!(set.algorithm(), alg);
            assert_eq!(
                set.verify(&hs, NOW),
                Err(TokenError::Algorithm("HS256".into()))
            );
            let asym = set.issue(&claims());
            assert_eq!(set.verify(&asym, NOW), Ok(claims()));
            assert_eq!(
                keys().verify(&asym, NOW),
                Err(TokenError::Algorithm(alg.into()))
            );
            // The HMAC keys still derive the same secrets.
            assert_eq!(set.derivation_kid(), "k1");
            assert_eq!(set.derive("k1", b"p"), keys().derive("k1", b"p"));
        }
    }

    #[test]
    fn the_jwks_holds_public_keys_only() {
        assert!(
            keys().jwks().keys.is_empty(),
            "an HMAC secret is never published"
        );
        let set = ed("e1", ED_A);
        let json = serde_json::to_value(set.jwks()).unwrap();
        let k = &json["keys"][0];
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["crv"], "Ed25519");
        assert_eq!(k["alg"], "EdDSA");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kid"], "e1");
        assert_eq!(B64.decode(k["x"].as_str().unwrap()).unwrap().len(), 32);
        assert!(k.get("d").is_none(), "{k}");
        let json = serde_json::to_value(ed("r1", RSA).jwks()).unwrap();
        let k = &json["keys"][0];
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["alg"], "RS256");
        assert_eq!(k["e"], "AQAB");
        assert!(k.get("d").is_none() && k.get("p").is_none(), "{k}");
    }

    #[test]
    fn an_ed25519_token_verifies_with_nothing_but_the_jwks_x() {
        // Independent of jsonwebtoken's verification: ed25519-dalek over
        // the signing input with the public key taken from the JWKS JSON.
        use ed25519_dalek::{Signature, VerifyingKey};
        let set = ed("e1", ED_A);
        let json = serde_json::to_value(set.jwks()).unwrap();
        let x: [u8; 32] = B64
            .decode(json["keys"][0]["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let public = VerifyingKey::from_bytes(&x).unwrap();
        let t = set.issue(&claims());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&B64.decode(sig).unwrap()).unwrap();
        public.verify_strict(input.as_bytes(), &sig).unwrap();
        let mut tampered = input.as_bytes().to_vec();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(public.verify_strict(&tampered, &sig).is_err());
    }

    #[test]
    fn short_or_malformed_key_specs_are_refused() {
        assert!(KeySet::parse("k1=c2hvcnQ=").is_err());
        assert!(KeySet::parse("nokey").is_err());
        assert!(KeySet::parse("").is_err());
        assert!(PrivateKey::from_pem("e1", b"not a pem").is_err());
        assert!(PrivateKey::from_pem("", ED_A.as_bytes()).is_err());
        assert!(PrivateKey::load_spec("").is_err());
        assert!(PrivateKey::load_spec("e1").is_err());
        let e = PrivateKey::load_spec("e1=/nonexistent/key.pem").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/key.pem"), "{e}");
        let dup = vec![
            PrivateKey::from_pem("e1", ED_A.as_bytes()).unwrap(),
            PrivateKey::from_pem("e1", ED_B.as_bytes()).unwrap(),
        ];
        assert!(keys().with_private_keys(dup).is_err());
        assert!(keys().with_private_keys(vec![]).is_err());
    }
}
