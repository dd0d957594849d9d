//! Test fixtures shared by the tests of every `auth` file: key material,
//! claims, signing helpers and verifiers built from them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::verify::unix_now;
use super::{AuthSettings, AuthSetupError, Verifier};

// Test-only key material, generated once with openssl (see tests/keys/README.md).
// Paths are relative to this file.
pub(crate) const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");
pub(crate) const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
pub(crate) const EC_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ec_private.pem");
pub(crate) const EC_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ec_public.pem");
pub(crate) const ED_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ed25519_private.pem");
pub(crate) const ED_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ed25519_public.pem");
pub(crate) const JWKS: &[u8] = include_bytes!("../../tests/keys/jwks.json");
pub(crate) const RSA_KID: &str = "test-rsa-1";
pub(crate) const EC_KID: &str = "test-ec-1";

pub(crate) const SECRET: &[u8] = b"roomcast-unit-test-secret-0123456789abcdef";

pub(crate) fn now() -> u64 {
    unix_now()
}

pub(crate) fn base_claims() -> Value {
    json!({ "sub": "alice", "exp": now() + 600 })
}

pub(crate) fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if let Value::Object(map) = &mut claims {
        map.insert(key.to_owned(), value);
    }
    claims
}

pub(crate) fn without(mut claims: Value, key: &str) -> Value {
    if let Value::Object(map) = &mut claims {
        map.remove(key);
    }
    claims
}

pub(crate) fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing a test token")
}

pub(crate) fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), None, claims)
}

pub(crate) fn rsa_signer() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test RSA private key")
}

pub(crate) fn ec_signer() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE).expect("test EC private key")
}

pub(crate) fn ed_signer() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_PRIVATE).expect("test Ed25519 private key")
}

/// A token assembled by hand, for headers the library refuses to produce.
pub(crate) fn hand_built(header: &Value, claims: &Value, signature: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).expect("header json"));
    let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims json"));
    format!("{h}.{c}.{signature}")
}

pub(crate) fn hs_settings() -> AuthSettings {
    AuthSettings { hs_secret: Some(SECRET.to_vec()), ..AuthSettings::default() }
}

pub(crate) fn verifier(settings: AuthSettings) -> Verifier {
    Verifier::new(&settings).expect("valid test settings")
}

pub(crate) fn hs_verifier() -> Verifier {
    verifier(hs_settings())
}

pub(crate) fn pem_verifier(pem: &[u8], alg: &str) -> Verifier {
    verifier(AuthSettings { public_key_pem: Some((pem.to_vec(), alg.to_owned())), ..AuthSettings::default() })
}

pub(crate) fn jwks_verifier() -> Verifier {
    verifier(AuthSettings { jwks_json: Some(JWKS.to_vec()), ..AuthSettings::default() })
}

pub(crate) fn setup_err(settings: AuthSettings) -> AuthSetupError {
    Verifier::new(&settings).expect_err("settings should be refused")
}
