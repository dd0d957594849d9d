//! Verification keys, loaded and checked once at startup: the HS secret's
//! algorithms, one public key in PEM (RS*/PS*, ES256/ES384, EdDSA), and the
//! keys of a JWKS file selected by `kid`. Each key carries the `Validation`
//! that lists the only algorithms it may verify.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, Validation};

use super::AuthSetupError;

/// Smallest accepted RSA modulus, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus the verifier backend (`rsa` crate) accepts, in bits.
pub const MAX_RSA_BITS: usize = 4096;

/// One verification key with the `Validation` (and so the algorithm list)
/// that belongs to it. Built once, never per token.
#[derive(Debug)]
pub(super) struct KeyEntry {
    pub(super) key: DecodingKey,
    pub(super) validation: Validation,
}

pub(super) fn with_algorithms(base: &Validation, algorithms: &[Algorithm]) -> Validation {
    let mut v = base.clone();
    v.algorithms = algorithms.to_vec();
    v
}

pub(super) fn load_public_pem(pem: &[u8], alg_name: &str, base: &Validation) -> Result<KeyEntry, AuthSetupError> {
    let err = AuthSetupError::PublicKey;
    let alg = Algorithm::from_str(alg_name.trim()).map_err(|_| err(format!("unknown algorithm {alg_name:?}")))?;
    if contains(pem, b"PRIVATE KEY-----") {
        return Err(err("contains a private key; configure the public key only".to_owned()));
    }
    let key = match alg.family() {
        AlgorithmFamily::Hmac => {
            return Err(err(format!("{alg:?} is an HMAC algorithm; use the HS secret setting instead")));
        }
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|e| err(format!("not a valid {:?} public key for {alg:?}: {e}", alg.family())))?;
    check_key(&key, alg).map_err(|reason| err(format!("{alg:?}: {reason}")))?;
    Ok(KeyEntry { key, validation: with_algorithms(base, &[alg]) })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn load_jwks(json: &[u8], base: &Validation) -> Result<HashMap<String, KeyEntry>, AuthSetupError> {
    let err = AuthSetupError::Jwks;
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| err(format!("not a JWK Set: {e}")))?;
    let mut keys = HashMap::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let label = match &jwk.common.key_id {
            Some(kid) => format!("key {kid:?}"),
            None => format!("key #{index}"),
        };
        let Some(algorithms) = jwk_algorithms(jwk).map_err(|r| err(format!("{label}: {r}")))? else {
            continue; // an encryption key: not for us
        };
        let kid = match &jwk.common.key_id {
            Some(kid) if !kid.is_empty() => kid.clone(),
            _ => {
                return Err(err(format!("{label}: no \"kid\" (tokens select JWKS keys by kid)")));
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| err(format!("{label}: {e}")))?;
        for alg in &algorithms {
            check_key(&key, *alg).map_err(|r| err(format!("{label}: {r}")))?;
        }
        match keys.entry(kid) {
            Entry::Occupied(_) => return Err(err(format!("{label}: duplicate kid"))),
            Entry::Vacant(slot) => {
                slot.insert(KeyEntry { key, validation: with_algorithms(base, &algorithms) });
            }
        }
    }
    if keys.is_empty() {
        return Err(err("contains no signature verification key".to_owned()));
    }
    Ok(keys)
}

/// The algorithms a JWK may verify: its declared `alg` when present (checked
/// against `kty` / `crv`), else everything its key type allows. `None` for
/// encryption keys, which are skipped.
fn jwk_algorithms(jwk: &Jwk) -> Result<Option<Vec<Algorithm>>, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256) => {
            return Ok(None);
        }
        Some(ka) => Some(Algorithm::from_str(&ka.to_string()).map_err(|_| format!("unsupported \"alg\" {ka:?}"))?),
    };
    let allowed: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            ref other => return Err(format!("unsupported EC curve {other:?}")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            ref other => return Err(format!("unsupported OKP curve {other:?}")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "symmetric (kty \"oct\") keys are not accepted from a JWKS; use the HS secret setting".to_owned()
            );
        }
        _ => return Err("unsupported key type".to_owned()),
    };
    match declared {
        Some(alg) if allowed.contains(&alg) => Ok(Some(vec![alg])),
        Some(alg) => Err(format!("\"alg\" {alg:?} does not match the key type / curve")),
        None => Ok(Some(allowed.to_vec())),
    }
}

/// Checks key material once, at startup, so a bad key fails configuration
/// instead of every token (or, for a short Ed25519 key, panicking).
fn check_key(key: &DecodingKey, alg: Algorithm) -> Result<(), String> {
    match alg.family() {
        AlgorithmFamily::Hmac => Ok(()),
        AlgorithmFamily::Rsa => {
            let (n, e) = match key.kind() {
                DecodingKeyKind::SecretOrDer(der) => {
                    let components = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
                        .key_utils
                        .rsa_pub_components_from_public_key;
                    components(der).map_err(|e| format!("not a valid RSA public key: {e}"))?
                }
                DecodingKeyKind::RsaModulusExponent { n, e } => (n.clone(), e.clone()),
            };
            check_rsa_components(&n, &e)
        }
        AlgorithmFamily::Ec | AlgorithmFamily::Ed => {
            if alg.family() == AlgorithmFamily::Ed {
                let len = key.try_get_as_bytes().map_err(|e| e.to_string())?.len();
                if len != 32 {
                    return Err(format!("an Ed25519 public key is 32 bytes, not {len}"));
                }
            }
            // Building the library's verifier parses the point on alg's curve;
            // verifying an empty signature then fails harmlessly.
            jsonwebtoken::crypto::verify("", b"", key, alg)
                .map(|_| ())
                .map_err(|e| format!("not a valid public key for {alg:?}: {e}"))
        }
    }
}

fn check_rsa_components(n: &[u8], e: &[u8]) -> Result<(), String> {
    let bits = bit_len(n);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!("RSA modulus is {bits} bits; {MIN_RSA_BITS}–{MAX_RSA_BITS} bits are accepted"));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err("RSA modulus is even".to_owned());
    }
    let e_value = if bit_len(e) > 64 { u64::MAX } else { e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) };
    if e_value < 3 || e_value % 2 == 0 || e_value > (1 << 33) - 1 {
        return Err(format!("RSA public exponent {e_value} is not accepted"));
    }
    Ok(())
}

fn bit_len(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::auth::test_support::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::{Value, json};

    // --- algorithms and key sources -------------------------------------

    #[test]
    fn hs256_hs384_hs512_verify() {
        let v = hs_verifier();
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign(alg, &EncodingKey::from_secret(SECRET), None, &base_claims());
            let id = v.verify(&token).expect("valid HS token");
            assert_eq!(id.user, "alice", "{alg:?}");
        }
    }

    #[test]
    fn rs256_from_pem() {
        let v = pem_verifier(RSA_PUBLIC, "RS256");
        let token = sign(Algorithm::RS256, &rsa_signer(), None, &base_claims());
        assert_eq!(v.verify(&token).expect("valid RS256").user, "alice");
    }

    #[test]
    fn es256_from_pem() {
        let v = pem_verifier(EC_PUBLIC, "ES256");
        let token = sign(Algorithm::ES256, &ec_signer(), None, &base_claims());
        assert_eq!(v.verify(&token).expect("valid ES256").user, "alice");
    }

    #[test]
    fn eddsa_from_pem() {
        let v = pem_verifier(ED_PUBLIC, "EdDSA");
        let token = sign(Algorithm::EdDSA, &ed_signer(), None, &base_claims());
        assert_eq!(v.verify(&token).expect("valid EdDSA").user, "alice");
    }

    #[test]
    fn pem_key_accepts_only_its_configured_alg() {
        let v = pem_verifier(RSA_PUBLIC, "RS256");
        for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            let token = sign(alg, &rsa_signer(), None, &base_claims());
            assert_eq!(v.verify(&token), Err(AuthError::UnsupportedAlg), "{alg:?}");
        }
        let es = sign(Algorithm::ES256, &ec_signer(), None, &base_claims());
        assert_eq!(v.verify(&es), Err(AuthError::UnsupportedAlg));
    }

    #[test]
    fn pem_signature_from_other_key_is_bad_signature() {
        let v = pem_verifier(ED_PUBLIC, "EdDSA");
        // PKCS#8 wrapping of an arbitrary Ed25519 seed: a key that is not the configured one.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&[7u8; 32]);
        let other = EncodingKey::from_ed_der(&der);
        let token = sign(Algorithm::EdDSA, &other, None, &base_claims());
        assert_eq!(v.verify(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn jwks_selects_key_by_kid() {
        let v = jwks_verifier();
        let rs = sign(Algorithm::RS256, &rsa_signer(), Some(RSA_KID), &base_claims());
        assert_eq!(v.verify(&rs).expect("RS256 via JWKS").user, "alice");
        let es = sign(Algorithm::ES256, &ec_signer(), Some(EC_KID), &base_claims());
        assert_eq!(v.verify(&es).expect("ES256 via JWKS").user, "alice");
        // The right signature under the wrong kid: the kid's key type rules.
        let swapped = sign(Algorithm::RS256, &rsa_signer(), Some(EC_KID), &base_claims());
        assert_eq!(v.verify(&swapped), Err(AuthError::UnsupportedAlg));
        // The JWK declares alg RS256; RS384 with the same key is refused.
        let rs384 = sign(Algorithm::RS384, &rsa_signer(), Some(RSA_KID), &base_claims());
        assert_eq!(v.verify(&rs384), Err(AuthError::UnsupportedAlg));
    }

    #[test]
    fn jwks_unknown_or_missing_kid() {
        let v = jwks_verifier();
        let unknown = sign(Algorithm::RS256, &rsa_signer(), Some("nope"), &base_claims());
        assert_eq!(v.verify(&unknown), Err(AuthError::UnknownKey));
        let no_kid = sign(Algorithm::RS256, &rsa_signer(), None, &base_claims());
        assert_eq!(v.verify(&no_kid), Err(AuthError::UnknownKey));
    }

    #[test]
    fn jwks_and_pem_together() {
        let v = verifier(AuthSettings {
            public_key_pem: Some((ED_PUBLIC.to_vec(), "EdDSA".to_owned())),
            jwks_json: Some(JWKS.to_vec()),
            ..AuthSettings::default()
        });
        let ed = sign(Algorithm::EdDSA, &ed_signer(), None, &base_claims());
        assert!(v.verify(&ed).is_ok(), "no kid + PEM alg → PEM key");
        let rs = sign(Algorithm::RS256, &rsa_signer(), Some(RSA_KID), &base_claims());
        assert!(v.verify(&rs).is_ok(), "kid → JWKS key");
        let rs_no_kid = sign(Algorithm::RS256, &rsa_signer(), None, &base_claims());
        assert_eq!(v.verify(&rs_no_kid), Err(AuthError::UnknownKey));
        let ed_unknown_kid = sign(Algorithm::EdDSA, &ed_signer(), Some("nope"), &base_claims());
        assert_eq!(v.verify(&ed_unknown_kid), Err(AuthError::UnknownKey));
    }

    #[test]
    fn bad_public_key_pem_is_named() {
        for (pem, alg) in [
            (&b"not a pem"[..], "RS256"),
            (RSA_PRIVATE, "RS256"), // private key where a public key belongs
            (EC_PUBLIC, "RS256"),   // wrong family
            (EC_PUBLIC, "ES384"),   // P-256 key, P-384 algorithm
            (RSA_PUBLIC, "EdDSA"),
            (ED_PUBLIC, "ES256"),
            (RSA_PUBLIC, "HS256"), // not a public-key algorithm
            (RSA_PUBLIC, "none"),
            (RSA_PUBLIC, "rs256"),
        ] {
            let e = setup_err(AuthSettings {
                public_key_pem: Some((pem.to_vec(), alg.to_owned())),
                ..AuthSettings::default()
            });
            assert!(matches!(e, AuthSetupError::PublicKey(_)), "{alg}: {e:?}");
            assert!(e.to_string().starts_with("public key PEM: "), "{e}");
        }
    }

    fn jwks_err(json: Value) -> AuthSetupError {
        let bytes = serde_json::to_vec(&json).expect("json");
        setup_err(AuthSettings { jwks_json: Some(bytes), ..AuthSettings::default() })
    }

    fn test_jwks_keys() -> Vec<Value> {
        let set: Value = serde_json::from_slice(JWKS).expect("jwks.json");
        set["keys"].as_array().cloned().unwrap_or_default()
    }

    #[test]
    fn bad_jwks_is_named() {
        let e = setup_err(AuthSettings { jwks_json: Some(b"{nope".to_vec()), ..AuthSettings::default() });
        assert!(e.to_string().starts_with("JWKS: "), "{e}");
        let keys = test_jwks_keys();
        let rsa = keys[0].clone();
        let ec = keys[1].clone();
        let big_odd = URL_SAFE_NO_PAD.encode([0xFFu8; 128]); // 1024-bit modulus
        for (what, set) in [
            ("empty", json!({ "keys": [] })),
            ("duplicate kid", json!({ "keys": [rsa.clone(), with(ec.clone(), "kid", json!(RSA_KID))] })),
            ("missing kid", json!({ "keys": [without(rsa.clone(), "kid")] })),
            (
                "oct key",
                json!({ "keys": [{ "kty": "oct", "kid": "h", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0" }] }),
            ),
            ("alg vs curve", json!({ "keys": [with(ec.clone(), "alg", json!("ES384"))] })),
            ("alg vs kty", json!({ "keys": [with(rsa.clone(), "alg", json!("ES256"))] })),
            ("small rsa", json!({ "keys": [with(rsa.clone(), "n", json!(big_odd))] })),
            ("bad ec point", json!({ "keys": [with(ec.clone(), "x", json!(URL_SAFE_NO_PAD.encode([1u8; 32])))] })),
            ("short ed25519", json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "AAAA" }] })),
            ("unknown kty", json!({ "keys": [{ "kty": "XYZ", "kid": "x" }] })),
            ("only enc keys", json!({ "keys": [with(rsa.clone(), "use", json!("enc"))] })),
        ] {
            let e = jwks_err(set);
            assert!(matches!(e, AuthSetupError::Jwks(_)), "{what}: {e:?}");
            assert!(e.to_string().starts_with("JWKS: "), "{what}: {e}");
        }
    }

    #[test]
    fn jwks_without_alg_uses_key_type() {
        let keys = test_jwks_keys();
        let rsa = without(keys[0].clone(), "alg");
        let ec = without(keys[1].clone(), "alg");
        let enc = with(with(keys[0].clone(), "use", json!("enc")), "kid", json!("enc-1"));
        let bytes = serde_json::to_vec(&json!({ "keys": [rsa, ec, enc] })).expect("json");
        let v = verifier(AuthSettings { jwks_json: Some(bytes), ..AuthSettings::default() });
        for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
            let token = sign(alg, &rsa_signer(), Some(RSA_KID), &base_claims());
            assert!(v.verify(&token).is_ok(), "{alg:?}");
        }
        let es = sign(Algorithm::ES256, &ec_signer(), Some(EC_KID), &base_claims());
        assert!(v.verify(&es).is_ok());
        let enc_kid = sign(Algorithm::RS256, &rsa_signer(), Some("enc-1"), &base_claims());
        assert_eq!(v.verify(&enc_kid), Err(AuthError::UnknownKey));
    }
}
