//! Asymmetric tokens (issue 20, "the libraries the design names"): a
//! gateway signing with an Ed25519 or RSA private key publishes the public
//! halves at `/.well-known/jwks.json`, and a verifier holding nothing but
//! that JSON checks its tokens; HS256 tokens are refused by such a gateway
//! and its tokens by an HS256 one; keys rotate by `kid`.

use crate::harness::{ADMIN_KEY, Creds, EXAMPLE_CONFIG, Gateway, run_to_end, write_config};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Test-only keys (the API crate's unit-test fixtures).
fn key(name: &str) -> String {
    format!(
        "{}/../api/src/auth/testdata/{name}.pem",
        env!("CARGO_MANIFEST_DIR")
    )
}

const HMAC_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const HMAC_SPEC: &str = "k1=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn with_keys(private: &str) -> Gateway {
    Gateway::spawn(
        EXAMPLE_CONFIG,
        &[
            ("ADMIN_API_KEY", ADMIN_KEY),
            ("SMSGW_JWT_KEYS", HMAC_SPEC),
            ("SMSGW_JWT_PRIVATE_KEYS", private),
        ],
        &[],
    )
}

fn header(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

fn claims(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

/// `GET /.well-known/jwks.json` without any credentials.
async fn jwks(gw: &Gateway) -> Value {
    let r = reqwest::get(gw.url("/.well-known/jwks.json"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn status_with(gw: &Gateway, creds: &Creds, token: &str) -> (StatusCode, String) {
    let r = reqwest::Client::new()
        .get(gw.url("/api/v1/smpp/links"))
        .bearer_auth(token)
        .header("x-app-id", &creds.app_id)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Verifies an EdDSA token with ed25519-dalek and the `x` of the JWKS
/// entry its `kid` names: no gateway code involved.
fn verify_ed25519_with_jwks(token: &str, jwks: &Value) -> bool {
    use ed25519_dalek::{Signature, VerifyingKey};
    let kid = header(token)["kid"].as_str().unwrap().to_owned();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(
        (&jwk["kty"], &jwk["crv"]),
        (&json!("OKP"), &json!("Ed25519"))
    );
    let x: [u8; 32] = B64
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = Signature::from_slice(&B64.decode(sig).unwrap()).unwrap();
    VerifyingKey::from_bytes(&x)
        .unwrap()
        .verify_strict(input.as_bytes(), &sig)
        .is_ok()
}

/// An HS256 token with the user's real claims, signed with the gateway's
/// own HMAC key: what an HS256 gateway would have issued.
fn hs256_token_for(token: &str) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("k1".into());
    jsonwebtoken::encode(
        &h,
        &claims(token),
        &jsonwebtoken::EncodingKey::from_secret(HMAC_KEY),
    )
    .unwrap()
}

#[tokio::test]
async fn an_ed25519_token_verifies_against_the_jwks_alone_and_hs256_is_refused() {
    let gw = with_keys(&format!("e1={}", key("ed25519-a")));
    let user = gw.user("ed@example.com").await;
    assert_eq!(header(&user.token)["alg"], "EdDSA");
    assert_eq!(header(&user.token)["kid"], "e1");
    let set = jwks(&gw).await;
    assert_eq!(set["keys"].as_array().unwrap().len(), 1, "{set}");
    let k = &set["keys"][0];
    assert_eq!(
        (&k["alg"], &k["use"], &k["kid"]),
        (&json!("EdDSA"), &json!("sig"), &json!("e1"))
    );
    assert!(k.get("d").is_none(), "a private part is published: {k}");
    assert!(verify_ed25519_with_jwks(&user.token, &set));
    let mut tampered = user.token.clone();
    let flip = tampered.rfind('.').unwrap() - 2;
    tampered.replace_range(
        flip..flip + 1,
        if &tampered[flip..=flip] == "A" {
            "B"
        } else {
            "A"
        },
    );
    assert!(!verify_ed25519_with_jwks(&tampered, &set));

    assert_eq!(status_with(&gw, &user, &user.token).await.0, StatusCode::OK);
    let (status, body) = status_with(&gw, &user, &hs256_token_for(&user.token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("HS256"), "{body}");

    // ...and the other way round: an HS256 gateway with the same HMAC key
    // refuses the EdDSA token (and publishes no key).
    let hs = Gateway::spawn(
        EXAMPLE_CONFIG,
        &[("ADMIN_API_KEY", ADMIN_KEY), ("SMSGW_JWT_KEYS", HMAC_SPEC)],
        &[],
    );
    assert_eq!(jwks(&hs).await, json!({"keys": []}));
    let (status, body) = status_with(&hs, &user, &user.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("EdDSA"), "{body}");

    // Machine tokens (`/auth/token`) are signed the same way.
    let r: Value = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/token"))
        .json(&json!({"app_id": user.app_id, "app_secret": user.app_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let machine = r["token"].as_str().unwrap();
    assert!(verify_ed25519_with_jwks(machine, &set));
}

#[tokio::test]
async fn an_rs256_token_verifies_with_the_published_modulus_and_exponent() {
    let gw = with_keys(&format!("r1={}", key("rsa")));
    let user = gw.user("rsa@example.com").await;
    assert_eq!(header(&user.token)["alg"], "RS256");
    let set = jwks(&gw).await;
    let k = &set["keys"][0];
    assert_eq!(
        (&k["kty"], &k["alg"], &k["kid"]),
        (&json!("RSA"), &json!("RS256"), &json!("r1"))
    );
    assert!(k.get("d").is_none() && k.get("p").is_none(), "{k}");
    let public = jsonwebtoken::DecodingKey::from_rsa_components(
        k["n"].as_str().unwrap(),
        k["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_issuer(&["smsgw"]);
    let data = jsonwebtoken::decode::<Value>(&user.token, &public, &v).unwrap();
    assert_eq!(data.claims["app_id"], user.app_id.as_str());
    let (status, body) = status_with(&gw, &user, &hs256_token_for(&user.token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_new_key_signs_after_rotation_while_tokens_of_the_old_one_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let old = format!("e1={}", key("ed25519-a"));
    let gw = Gateway::standalone_in(EXAMPLE_CONFIG, dir.path(), &["--jwt-private-keys", &old]);
    let user = gw.user("rotate@example.com").await;
    assert!(gw.terminate().success());

    let rotated = format!("e2={},e1={}", key("ed25519-b"), key("ed25519-a"));
    let gw = Gateway::standalone_in(
        EXAMPLE_CONFIG,
        dir.path(),
        &["--jwt-private-keys", &rotated],
    );
    let set = jwks(&gw).await;
    let kids: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["e2", "e1"], "the signing key first");
    assert_eq!(status_with(&gw, &user, &user.token).await.0, StatusCode::OK);
    let fresh = gw.login_again(&user, "rotate@example.com").await;
    assert_eq!(header(&fresh.token)["kid"], "e2");
    assert!(verify_ed25519_with_jwks(&fresh.token, &set));
    assert!(verify_ed25519_with_jwks(&user.token, &set));
    let r = gw
        .authed(&fresh, Method::GET, "/api/v1/smpp/links")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn an_unreadable_or_unusable_private_key_stops_the_gateway_with_the_reason() {
    let config = write_config(EXAMPLE_CONFIG);
    let data = tempfile::tempdir().unwrap();
    let run = |spec: &str| {
        run_to_end(&[
            "standalone",
            "--config",
            config.path().to_str().unwrap(),
            "--data-dir",
            data.path().to_str().unwrap(),
            "--rest-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--jwt-private-keys",
            spec,
        ])
    };
    let (status, stderr) = run("e1=/nonexistent/jwt.pem");
    assert!(!status.success());
    assert!(stderr.contains("/nonexistent/jwt.pem"), "{stderr}");
    let not_a_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_a_key.path(), "hello").unwrap();
    let (status, stderr) = run(&format!("e1={}", not_a_key.path().display()));
    assert!(!status.success());
    assert!(
        stderr.contains("not an Ed25519 or RSA private key"),
        "{stderr}"
    );
}
