//! HS256 JSON Web Tokens with key ids, verified with the algorithm pinned.
//!
//! Written out rather than taken from a general JWT library so that exactly
//! one algorithm exists: a header naming anything but `HS256` (`none`,
//! `RS256` for key confusion, …) is refused before any key is touched.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;

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
    /// The header names an algorithm other than HS256.
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

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Signing keys by id. The first key signs; all verify, so a key can be
/// rotated in ahead of use and retired after its tokens expire.
#[derive(Clone)]
pub struct KeySet {
    signing: String,
    keys: HashMap<String, Vec<u8>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
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

impl KeySet {
    /// One signing key.
    pub fn single(kid: impl Into<String>, key: Vec<u8>) -> Self {
        let kid = kid.into();
        Self {
            signing: kid.clone(),
            keys: HashMap::from([(kid, key)]),
        }
    }

    /// Parses `kid=base64key[,kid=base64key…]`; the first signs. Keys must
    /// be at least 32 bytes.
    pub fn parse(spec: &str) -> Result<Self, KeySpecError> {
        let mut signing = None;
        let mut keys = HashMap::new();
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
            keys.insert(kid.to_owned(), key);
        }
        let signing = signing.ok_or_else(|| KeySpecError("no key given".into()))?;
        Ok(Self { signing, keys })
    }

    /// Id of the signing key.
    pub fn signing_kid(&self) -> &str {
        &self.signing
    }

    /// A 32-byte key derived from key `kid` for `purpose` (HMAC-SHA256 of
    /// the purpose under the key), or `None` if `kid` is not in the set.
    /// Lets other secrets (webhook signing keys) be recomputed instead of
    /// stored.
    pub fn derive(&self, kid: &str, purpose: &[u8]) -> Option<[u8; 32]> {
        let key = self.keys.get(kid)?;
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"smsgw-derive-v1:");
        mac.update(purpose);
        Some(mac.finalize().into_bytes().into())
    }

    /// Signs `claims` with the signing key.
    pub fn issue(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
            kid: Some(self.signing.clone()),
        };
        let h = B64.encode(serde_json::to_vec(&header).expect("header serialises"));
        let c = B64.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signing_input = format!("{h}.{c}");
        let mut mac = HmacSha256::new_from_slice(&self.keys[&self.signing])
            .expect("HMAC takes any key length");
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            B64.encode(mac.finalize().into_bytes())
        )
    }

    /// Verifies a token at time `now` (Unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header =
            serde_json::from_slice(&B64.decode(h).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let key = header
            .kid
            .as_ref()
            .and_then(|k| self.keys.get(k))
            .ok_or(TokenError::UnknownKey)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(c.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?; // constant time
        let claims: Claims =
            serde_json::from_slice(&B64.decode(c).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::BadClaims)?;
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

    fn keys() -> KeySet {
        KeySet::single("k1", vec![7u8; 32])
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
    }

    #[test]
    fn alg_none_is_refused() {
        let h = B64.encode(r#"{"alg":"none","kid":"k1"}"#);
        let c = B64.encode(serde_json::to_vec(&claims()).unwrap());
        assert_eq!(
            keys().verify(&format!("{h}.{c}."), NOW),
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
    fn a_wrong_key_is_refused() {
        let t = forge(r#"{"alg":"HS256","kid":"k1"}"#, &claims(), &[8u8; 32]);
        assert_eq!(keys().verify(&t, NOW), Err(TokenError::BadSignature));
        let t = forge(r#"{"alg":"HS256","kid":"k2"}"#, &claims(), &[7u8; 32]);
        assert_eq!(keys().verify(&t, NOW), Err(TokenError::UnknownKey));
        let t = forge(r#"{"alg":"HS256"}"#, &claims(), &[7u8; 32]);
        assert_eq!(keys().verify(&t, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let t = keys().issue(&claims());
        let mut admin = claims();
        admin.admin = true;
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&admin).unwrap()),
            parts[2]
        );
        assert_eq!(keys().verify(&tampered, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let t = keys().issue(&claims());
        assert_eq!(keys().verify(&t, NOW + 3600), Err(TokenError::Expired));
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
    fn short_or_malformed_key_specs_are_refused() {
        assert!(KeySet::parse("k1=c2hvcnQ=").is_err());
        assert!(KeySet::parse("nokey").is_err());
        assert!(KeySet::parse("").is_err());
    }
}
