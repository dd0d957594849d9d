//! The [`Verifier`]: checks a token's size and shape, parses its header
//! ourselves (no `none`, no `crit`), selects the key before the header's
//! `alg` can matter, lets `jsonwebtoken` check the signature and times with
//! our `Validation`, and collapses the library's errors into [`AuthError`].
//! The rules and why each one exists are listed in the `auth` module docs.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::claims::{claim_present, identity_from_claims};
use super::identity::Identity;
use super::keys::{KeyEntry, load_jwks, load_public_pem, with_algorithms};
use super::{AuthError, AuthSettings, AuthSetupError, MAX_LEEWAY_S, MIN_HS_SECRET_BYTES};

/// Verifies tokens. Immutable after construction; share it in an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    hs: Option<KeyEntry>,
    public_key: Option<KeyEntry>,
    jwks: Option<HashMap<String, KeyEntry>>,
    leeway_s: u64,
    token_bytes_max: usize,
}

/// The parts of the JOSE header we act on.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl Verifier {
    /// Builds the verifier, checking every key once.
    pub fn new(settings: &AuthSettings) -> Result<Verifier, AuthSetupError> {
        if settings.hs_secret.is_none() && settings.public_key_pem.is_none() && settings.jwks_json.is_none() {
            return Err(AuthSetupError::NoKeySource);
        }
        if settings.token_bytes_max == 0 {
            return Err(AuthSetupError::TokenBytesMax);
        }
        if settings.leeway_s > MAX_LEEWAY_S {
            return Err(AuthSetupError::Leeway(settings.leeway_s));
        }
        if settings.audience.as_deref() == Some("") {
            return Err(AuthSetupError::EmptySetting("audience"));
        }
        if settings.issuer.as_deref() == Some("") {
            return Err(AuthSetupError::EmptySetting("issuer"));
        }
        let base = base_validation(settings);

        let hs = match &settings.hs_secret {
            Some(secret) if secret.len() < MIN_HS_SECRET_BYTES => {
                return Err(AuthSetupError::WeakSecret { len: secret.len() });
            }
            Some(secret) => Some(KeyEntry {
                key: DecodingKey::from_secret(secret),
                validation: with_algorithms(&base, AlgorithmFamily::Hmac.algorithms()),
            }),
            None => None,
        };
        let public_key = match &settings.public_key_pem {
            Some((pem, alg)) => Some(load_public_pem(pem, alg, &base)?),
            None => None,
        };
        let jwks = match &settings.jwks_json {
            Some(json) => Some(load_jwks(json, &base)?),
            None => None,
        };
        Ok(Verifier { hs, public_key, jwks, leeway_s: settings.leeway_s, token_bytes_max: settings.token_bytes_max })
    }

    /// Verifies `token` (the bare JWT) and returns who it identifies.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > self.token_bytes_max {
            return Err(AuthError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header = parse_header(header_b64)?;
        let entry = self.select_key(&header)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &entry.key, &entry.validation)
            .map_err(|e| map_library_error(e.kind(), payload_b64))?;
        let identity = identity_from_claims(&data.claims)?;
        // RFC 7519 §4.1.4: valid only *before* exp (the library also accepts exp == now).
        if identity.expires_at_s.saturating_add(self.leeway_s) <= unix_now() {
            return Err(AuthError::Expired);
        }
        Ok(identity)
    }

    /// Picks the key for this header. The header's `alg` may only select
    /// among keys of its own family; it never changes how a key is used.
    fn select_key(&self, header: &RawHeader) -> Result<&KeyEntry, AuthError> {
        let alg = Algorithm::from_str(&header.alg).map_err(|_| AuthError::UnsupportedAlg)?;
        if alg.family() == AlgorithmFamily::Hmac {
            return self.hs.as_ref().ok_or(AuthError::UnsupportedAlg);
        }
        if let (Some(jwks), Some(kid)) = (&self.jwks, &header.kid) {
            let entry = jwks.get(kid).ok_or(AuthError::UnknownKey)?;
            return if entry.validation.algorithms.contains(&alg) { Ok(entry) } else { Err(AuthError::UnsupportedAlg) };
        }
        if let Some(entry) = &self.public_key
            && entry.validation.algorithms.contains(&alg)
        {
            return Ok(entry);
        }
        if self.jwks.is_some() { Err(AuthError::UnknownKey) } else { Err(AuthError::UnsupportedAlg) }
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn parse_header(header_b64: &str) -> Result<RawHeader, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| AuthError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    if header.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    Ok(header)
}

/// The `Validation` shared by all keys, before the per-key algorithm list.
fn base_validation(settings: &AuthSettings) -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    let mut required = vec!["exp", "sub"];
    v.leeway = settings.leeway_s; // library default: 60
    v.validate_exp = true;
    v.validate_nbf = true; // library default: false
    v.reject_tokens_expiring_in_less_than = 0;
    v.sub = None;
    match &settings.audience {
        Some(aud) => {
            v.set_audience(&[aud.as_str()]);
            v.validate_aud = true;
            required.push("aud");
        }
        None => {
            // Library default (validate_aud = true, aud = None) rejects any token
            // that carries an `aud`.
            v.aud = None;
            v.validate_aud = false;
        }
    }
    match &settings.issuer {
        Some(iss) => {
            v.set_issuer(&[iss.as_str()]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    v.set_required_spec_claims(&required);
    v.algorithms = Vec::new();
    v
}

/// Maps library errors onto [`AuthError`]. `payload_b64` is only inspected
/// for `MissingRequiredClaim`, which the library raises after the signature
/// has been verified.
fn map_library_error(kind: &ErrorKind, payload_b64: &str) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::UnsupportedAlg,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidSubject | ErrorKind::InvalidClaimFormat(_) => AuthError::BadClaim,
        // The library also says "missing" when the claim is there with the wrong type.
        ErrorKind::MissingRequiredClaim(claim) => {
            if claim_present(payload_b64, claim) {
                AuthError::BadClaim
            } else {
                AuthError::MissingClaim
            }
        }
        // Keys are checked in `Verifier::new`; if one still fails, nothing verifies.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::DEFAULT_TOKEN_BYTES_MAX;
    use crate::auth::test_support::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;
    use std::sync::Arc;

    // --- algorithm confusion --------------------------------------------

    #[test]
    fn alg_none_is_never_accepted() {
        let v = verifier(AuthSettings {
            hs_secret: Some(SECRET.to_vec()),
            jwks_json: Some(JWKS.to_vec()),
            public_key_pem: Some((RSA_PUBLIC.to_vec(), "RS256".to_owned())),
            ..AuthSettings::default()
        });
        for alg in ["none", "None", "NONE", "nOnE"] {
            for sig in ["", "AAAA"] {
                let header = json!({ "alg": alg, "typ": "JWT" });
                let token = hand_built(&header, &base_claims(), sig);
                assert_eq!(v.verify(&token), Err(AuthError::UnsupportedAlg), "{alg} / {sig:?}");
                let with_kid = json!({ "alg": alg, "kid": RSA_KID });
                let token = hand_built(&with_kid, &base_claims(), sig);
                assert_eq!(v.verify(&token), Err(AuthError::UnsupportedAlg), "{alg} + kid");
            }
        }
        let unknown = hand_built(&json!({ "alg": "HS1024" }), &base_claims(), "AAAA");
        assert_eq!(v.verify(&unknown), Err(AuthError::UnsupportedAlg));
        let no_alg = hand_built(&json!({ "typ": "JWT" }), &base_claims(), "AAAA");
        assert_eq!(v.verify(&no_alg), Err(AuthError::Malformed));
        let number_alg = hand_built(&json!({ "alg": 256 }), &base_claims(), "AAAA");
        assert_eq!(v.verify(&number_alg), Err(AuthError::Malformed));
    }

    #[test]
    fn hs_token_rejected_by_public_key_only_verifiers() {
        let token = hs(&base_claims());
        assert_eq!(pem_verifier(RSA_PUBLIC, "RS256").verify(&token), Err(AuthError::UnsupportedAlg));
        assert_eq!(pem_verifier(EC_PUBLIC, "ES256").verify(&token), Err(AuthError::UnsupportedAlg));
        let with_kid = sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), Some(RSA_KID), &base_claims());
        assert_eq!(jwks_verifier().verify(&with_kid), Err(AuthError::UnsupportedAlg));
    }

    #[test]
    fn rsa_public_key_used_as_hs_secret_is_rejected() {
        // The classic confusion attack: HMAC keyed with the (public) PEM bytes.
        let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(RSA_PUBLIC), None, &base_claims());
        assert_eq!(pem_verifier(RSA_PUBLIC, "RS256").verify(&forged), Err(AuthError::UnsupportedAlg));
        let forged_kid = sign(Algorithm::HS256, &EncodingKey::from_secret(RSA_PUBLIC), Some(RSA_KID), &base_claims());
        assert_eq!(jwks_verifier().verify(&forged_kid), Err(AuthError::UnsupportedAlg));
        // With an HS secret also configured, HS tokens go to that secret only.
        let both = verifier(AuthSettings {
            hs_secret: Some(SECRET.to_vec()),
            public_key_pem: Some((RSA_PUBLIC.to_vec(), "RS256".to_owned())),
            ..AuthSettings::default()
        });
        assert_eq!(both.verify(&forged), Err(AuthError::BadSignature));
        assert!(both.verify(&hs(&base_claims())).is_ok());
    }

    #[test]
    fn crit_header_is_rejected() {
        let header = json!({ "alg": "HS256", "crit": ["exp"] });
        let unsigned = hand_built(&header, &base_claims(), "");
        let (message, _) = unsigned.rsplit_once('.').expect("three parts");
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256)
            .expect("hmac");
        assert_eq!(hs_verifier().verify(&format!("{message}.{sig}")), Err(AuthError::Malformed));
    }

    // --- signature and shape ---------------------------------------------

    #[test]
    fn bad_signature() {
        let v = hs_verifier();
        let other = sign(Algorithm::HS256, &EncodingKey::from_secret(&[b'x'; 32]), None, &base_claims());
        assert_eq!(v.verify(&other), Err(AuthError::BadSignature));
        // Payload swapped under a valid signature.
        let good = hs(&base_claims());
        let evil = hs(&with(base_claims(), "sub", json!("mallory")));
        let mut g = good.split('.');
        let mut e = evil.split('.');
        let spliced = format!(
            "{}.{}.{}",
            g.next().unwrap_or_default(),
            e.nth(1).unwrap_or_default(),
            g.nth(1).unwrap_or_default()
        );
        assert_eq!(v.verify(&spliced), Err(AuthError::BadSignature));
        // One signature character changed (still valid base64url).
        let mut flipped = good.clone().into_bytes();
        let i = flipped.len() - 5;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert_eq!(v.verify(&flipped), Err(AuthError::BadSignature));
    }

    #[test]
    fn malformed_tokens() {
        let v = hs_verifier();
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        for bad in ["abc", "a.b", "a.b.c.d", "!!.e30.AAAA", "e30.e30.AAAA", "bm90IGpzb24.e30.AAAA"] {
            let result = v.verify(bad);
            assert!(matches!(result, Err(AuthError::Malformed | AuthError::UnsupportedAlg)), "{bad}: {result:?}");
        }
        let good = hs(&base_claims());
        assert_eq!(v.verify(&format!("{good}.x")), Err(AuthError::Malformed));
        assert_eq!(v.verify(&format!(" {good}")), Err(AuthError::Malformed));
        let bad_sig_b64 = format!("{}!!", &good[..good.rfind('.').unwrap_or(0) + 1]);
        assert_eq!(v.verify(&bad_sig_b64), Err(AuthError::Malformed));
        // A payload that is JSON but not an object.
        let array = sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), None, &json!([1, 2]));
        assert_eq!(v.verify(&array), Err(AuthError::Malformed));
    }

    #[test]
    fn oversize_token_is_rejected_before_decoding() {
        let token = hs(&base_claims());
        let exact = verifier(AuthSettings { token_bytes_max: token.len(), ..hs_settings() });
        assert!(exact.verify(&token).is_ok());
        let small = verifier(AuthSettings { token_bytes_max: token.len() - 1, ..hs_settings() });
        assert_eq!(small.verify(&token), Err(AuthError::TooLarge));
        let garbage = "%".repeat(DEFAULT_TOKEN_BYTES_MAX + 1);
        assert_eq!(hs_verifier().verify(&garbage), Err(AuthError::TooLarge));
    }

    // --- time --------------------------------------------------------------

    #[test]
    fn expired_by_one_second_with_zero_leeway() {
        let v = hs_verifier();
        let token = hs(&with(base_claims(), "exp", json!(now() - 1)));
        assert_eq!(v.verify(&token), Err(AuthError::Expired));
        // RFC 7519: valid only *before* exp (the library alone would accept this).
        let token = hs(&with(base_claims(), "exp", json!(now())));
        assert_eq!(v.verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn leeway_accepts_recently_expired() {
        let v = verifier(AuthSettings { leeway_s: 30, ..hs_settings() });
        let recent = hs(&with(base_claims(), "exp", json!(now() - 10)));
        assert!(v.verify(&recent).is_ok());
        let old = hs(&with(base_claims(), "exp", json!(now() - 40)));
        assert_eq!(v.verify(&old), Err(AuthError::Expired));
    }

    #[test]
    fn nbf_is_validated() {
        let v = hs_verifier();
        let future = hs(&with(base_claims(), "nbf", json!(now() + 60)));
        assert_eq!(v.verify(&future), Err(AuthError::NotYetValid));
        let past = hs(&with(base_claims(), "nbf", json!(now() - 1)));
        assert!(v.verify(&past).is_ok());
        let lenient = verifier(AuthSettings { leeway_s: 120, ..hs_settings() });
        assert!(lenient.verify(&future).is_ok());
        let bad = hs(&with(base_claims(), "nbf", json!("soon")));
        assert_eq!(v.verify(&bad), Err(AuthError::BadClaim));
    }

    // --- audience / issuer -----------------------------------------------

    #[test]
    fn aud_and_iss_enforced_when_configured() {
        let v = verifier(AuthSettings {
            audience: Some("roomcast".to_owned()),
            issuer: Some("https://idp.example".to_owned()),
            ..hs_settings()
        });
        let ok = json!({ "sub": "a", "exp": now() + 60, "aud": "roomcast", "iss": "https://idp.example" });
        assert!(v.verify(&hs(&ok)).is_ok());
        assert!(v.verify(&hs(&with(ok.clone(), "aud", json!(["other", "roomcast"])))).is_ok());
        assert_eq!(v.verify(&hs(&with(ok.clone(), "aud", json!("other")))), Err(AuthError::WrongAudience));
        assert_eq!(v.verify(&hs(&with(ok.clone(), "aud", json!(["x", "y"])))), Err(AuthError::WrongAudience));
        assert_eq!(v.verify(&hs(&with(ok.clone(), "iss", json!("https://evil")))), Err(AuthError::WrongIssuer));
        assert_eq!(v.verify(&hs(&without(ok.clone(), "aud"))), Err(AuthError::MissingClaim));
        assert_eq!(v.verify(&hs(&without(ok.clone(), "iss"))), Err(AuthError::MissingClaim));
        assert_eq!(v.verify(&hs(&with(ok, "aud", json!(5)))), Err(AuthError::BadClaim));
    }

    #[test]
    fn aud_and_iss_ignored_when_not_configured() {
        let v = hs_verifier();
        let claims = json!({ "sub": "a", "exp": now() + 60, "aud": "someone-else", "iss": "anyone" });
        assert!(v.verify(&hs(&claims)).is_ok());
        assert!(v.verify(&hs(&with(claims, "aud", json!(["x", "y"])))).is_ok());
    }

    // --- setup ------------------------------------------------------------------

    #[test]
    fn setup_errors() {
        assert_eq!(setup_err(AuthSettings::default()), AuthSetupError::NoKeySource);
        for len in [0, 1, MIN_HS_SECRET_BYTES - 1] {
            let e = setup_err(AuthSettings { hs_secret: Some(vec![b'k'; len]), ..AuthSettings::default() });
            assert_eq!(e, AuthSetupError::WeakSecret { len });
        }
        assert_eq!(
            setup_err(AuthSettings { leeway_s: MAX_LEEWAY_S + 1, ..hs_settings() }),
            AuthSetupError::Leeway(MAX_LEEWAY_S + 1)
        );
        assert_eq!(setup_err(AuthSettings { token_bytes_max: 0, ..hs_settings() }), AuthSetupError::TokenBytesMax);
        assert_eq!(
            setup_err(AuthSettings { audience: Some(String::new()), ..hs_settings() }),
            AuthSetupError::EmptySetting("audience")
        );
        assert_eq!(
            setup_err(AuthSettings { issuer: Some(String::new()), ..hs_settings() }),
            AuthSetupError::EmptySetting("issuer")
        );
    }

    #[test]
    fn verifier_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Verifier>();
        let v = Arc::new(hs_verifier());
        let token = hs(&base_claims());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let v = Arc::clone(&v);
                let token = token.clone();
                std::thread::spawn(move || v.verify(&token).map(|id| id.user))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("thread"), Ok("alice".to_owned()));
        }
    }
}
