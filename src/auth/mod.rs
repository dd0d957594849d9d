//! JWT verification and minting.
//!
//! This module is a thin, opinionated layer over `jsonwebtoken` 11.1.0. The
//! library's defaults are written for "decode whatever the header says with the
//! key I hand you"; roomcast needs stricter rules. Every override below was
//! checked against the library's source (`validation.rs`, `decoding.rs`,
//! `crypto/rust_crypto/*`), and each one exists for a reason:
//!
//! * **`leeway`**: `Validation::new` sets `leeway = 60`, silently accepting
//!   tokens for a minute after `exp` (and a minute before `nbf`). We use the
//!   configured `leeway_s` (default 0) and cap it at [`MAX_LEEWAY_S`], because
//!   the library computes `now - leeway` in `u64` and would underflow.
//! * **`exp` is exclusive**: the library rejects only when `exp < now - leeway`,
//!   so a token is still accepted during its `exp` second. RFC 7519 §4.1.4
//!   says the current time must be *before* `exp`; we re-check that after the
//!   library's validation.
//! * **required claims**: the library requires only `exp`. We require `exp`
//!   and `sub` (an identity without a user id is meaningless), plus `aud` /
//!   `iss` when they are configured: the library validates `aud` / `iss` only
//!   *if present*, so a token that simply omits them would otherwise pass.
//! * **`validate_nbf`**: off by default in the library; we turn it on.
//! * **`aud` when not configured**: the library's `validate_aud` defaults to
//!   `true` with no audience set, which *rejects* every token that carries an
//!   `aud` (tokens from a shared identity provider always do). When no audience
//!   is configured we set `validate_aud = false`.
//! * **algorithm confusion**: the library picks the verifier from the token's
//!   own `alg` header and `Validation::default()` allows HS256. We never let
//!   the header choose the key: the key is selected first (HS secret for
//!   `HS*`, the configured public key for its one configured `alg`, a JWKS key
//!   by `kid`), and the [`Validation`] attached to that key, built once in
//!   [`Verifier::new`], lists only the algorithms that key may verify. So an
//!   `HS256` token "signed" with the RSA public key as the HMAC secret never
//!   reaches an HMAC verifier holding that key.
//! * **`alg: none`**: the library has no `none` variant, so such a header
//!   fails as a JSON error. We parse the header ourselves so that `none` and
//!   any other unknown algorithm is reported as [`AuthError::UnsupportedAlg`].
//! * **`crit`**: the library ignores the `crit` header; RFC 7515 §4.1.11 says a
//!   token with critical extensions the receiver does not understand must be
//!   rejected. We understand none, so any `crit` is rejected.
//! * **key checks at startup**: the library parses RSA / EC / Ed keys only
//!   when a token is verified, and its EdDSA verifier slices the key with
//!   `[..32]` (a panic for a short JWKS `x`). [`Verifier::new`] validates every
//!   key once (RSA 2048–4096 bits, EC point on the curve of its `alg`, Ed25519
//!   exactly 32 bytes), refuses private keys where a public key is expected,
//!   and refuses HS secrets shorter than [`MIN_HS_SECRET_BYTES`].
//! * **size first**: a token longer than `token_bytes_max` is rejected before
//!   any base64 or JSON work.
//! * **stable error codes**: library errors are collapsed into [`AuthError`],
//!   whose [`AuthError::code`] is part of the wire contract. The library also
//!   reports a required claim that is present with the wrong type as
//!   "missing"; we tell the two apart ([`AuthError::BadClaim`] vs
//!   [`AuthError::MissingClaim`]).
//! * **minting sets no `nbf`**: the server that mints and the server that
//!   verifies may disagree on the clock by a second; with a leeway of 0 a fresh
//!   token carrying `nbf = now` could be refused. `iat` is informational only.
//!
//! The files, one role each: `identity` (who a token says the client is, and
//! the room rules that follow), `verify` (the [`Verifier`] and the checks
//! above), `claims` (claims into an [`Identity`]), `keys` (loading and
//! checking HS / public-key / JWKS keys at startup), `mint` (HS256 minting),
//! `secret` (the generated secret file) and `extract` (the token of a
//! request, found with the parsers of [`crate::http`]). This file holds the
//! settings and the errors; everything public is re-exported here.

use std::fmt;

mod claims;
mod extract;
mod identity;
mod keys;
mod mint;
mod secret;
#[cfg(test)]
mod test_support;
mod verify;

pub use extract::extract_token;
pub use identity::{Identity, RoomScope, may_join_where};
pub use mint::{MintError, MintRequest, mint_hs256, random_jti};
pub use secret::{bad_signature_message, load_or_create_secret, read_secret, secret_path};
pub use verify::Verifier;

/// Default for [`AuthSettings::token_bytes_max`].
pub const DEFAULT_TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Shortest accepted HMAC secret (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS_SECRET_BYTES: usize = 32;
/// Largest accepted clock-skew leeway, in seconds.
pub const MAX_LEEWAY_S: u64 = 3600;

// ---------------------------------------------------------------------------
// Settings and setup errors
// ---------------------------------------------------------------------------

/// Key material and validation options for a [`Verifier`].
#[derive(Clone)]
pub struct AuthSettings {
    /// HMAC secret for HS256/384/512 tokens (at least [`MIN_HS_SECRET_BYTES`]).
    pub hs_secret: Option<Vec<u8>>,
    /// A public key in PEM (SPKI, or PKCS#1 for RSA) and the single algorithm
    /// name it verifies: `RS256`…`PS512`, `ES256`, `ES384` or `EdDSA`.
    pub public_key_pem: Option<(Vec<u8>, String)>,
    /// A JWK Set (`{"keys":[…]}`); tokens select a key with their `kid` header.
    pub jwks_json: Option<Vec<u8>>,
    /// Required `aud` when set; when unset, a token's `aud` is ignored.
    pub audience: Option<String>,
    /// Required `iss` when set; when unset, a token's `iss` is ignored.
    pub issuer: Option<String>,
    /// Clock-skew leeway for `exp` / `nbf`, in seconds (default 0).
    pub leeway_s: u64,
    /// Longest accepted token, in bytes.
    pub token_bytes_max: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            hs_secret: None,
            public_key_pem: None,
            jwks_json: None,
            audience: None,
            issuer: None,
            leeway_s: 0,
            token_bytes_max: DEFAULT_TOKEN_BYTES_MAX,
        }
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("hs_secret", &self.hs_secret.as_ref().map(|s| format!("<{} bytes>", s.len())))
            .field("public_key_pem", &self.public_key_pem.as_ref().map(|(_, alg)| alg))
            .field("jwks_json", &self.jwks_json.as_ref().map(|j| format!("<{} bytes>", j.len())))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_s", &self.leeway_s)
            .field("token_bytes_max", &self.token_bytes_max)
            .finish()
    }
}

/// Why a [`Verifier`] could not be built. Messages name the offending source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSetupError {
    #[error("no token key configured: set an HS secret, a public key PEM or a JWKS file")]
    NoKeySource,
    #[error("HS secret is {len} bytes; at least {MIN_HS_SECRET_BYTES} bytes are required")]
    WeakSecret { len: usize },
    #[error("public key PEM: {0}")]
    PublicKey(String),
    #[error("JWKS: {0}")]
    Jwks(String),
    #[error("leeway of {0} s is above the maximum of {MAX_LEEWAY_S} s")]
    Leeway(u64),
    #[error("token_bytes_max must be greater than 0")]
    TokenBytesMax,
    #[error("{0} is configured but empty")]
    EmptySetting(&'static str),
}

// ---------------------------------------------------------------------------
// Verification errors
// ---------------------------------------------------------------------------

/// Why a token was refused. [`AuthError::code`] is part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthError {
    /// No token was presented.
    Missing,
    /// The token is longer than `token_bytes_max`.
    TooLarge,
    /// Not three base64url parts, or a header / payload that is not JSON.
    Malformed,
    /// `alg` is `none`, unknown, or not allowed for the selected key.
    UnsupportedAlg,
    /// JWKS: no `kid`, or a `kid` that is not in the key set.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `aud` does not contain the configured audience.
    WrongAudience,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// A required claim (`sub`, `exp`, configured `aud` / `iss`) is absent.
    MissingClaim,
    /// A claim has the wrong type or an invalid value.
    BadClaim,
}

impl AuthError {
    /// Stable snake_case code for error frames and HTTP bodies.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::TooLarge => "token_too_large",
            AuthError::Malformed => "token_malformed",
            AuthError::UnsupportedAlg => "token_unsupported_alg",
            AuthError::UnknownKey => "token_unknown_key",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::MissingClaim => "token_missing_claim",
            AuthError::BadClaim => "token_bad_claim",
        }
    }

    /// Short human-readable message (safe to send to clients).
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "no token was presented",
            AuthError::TooLarge => "the token is too large",
            AuthError::Malformed => "the token is not a well-formed JWT",
            AuthError::UnsupportedAlg => "the token's signing algorithm is not accepted",
            AuthError::UnknownKey => "the token's key id is unknown",
            AuthError::BadSignature => "the token's signature is invalid",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token is not valid yet",
            AuthError::WrongAudience => "the token is not intended for this server",
            AuthError::WrongIssuer => "the token was issued by an unexpected issuer",
            AuthError::MissingClaim => "the token lacks a required claim",
            AuthError::BadClaim => "the token has a claim with an invalid value",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::*;

    #[test]
    fn debug_does_not_leak_secrets() {
        let s = format!("{:?} {:?}", hs_settings(), hs_verifier());
        assert!(!s.contains("roomcast-unit-test-secret"), "{s}");
    }

    // --- errors -----------------------------------------------------------------

    #[test]
    fn error_codes_are_unique_snake_case() {
        let all = [
            AuthError::Missing,
            AuthError::TooLarge,
            AuthError::Malformed,
            AuthError::UnsupportedAlg,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::MissingClaim,
            AuthError::BadClaim,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), all.len());
        for e in all {
            assert!(e.code().starts_with("token_"));
            assert!(e.code().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", e.code());
            assert!(!e.message().is_empty());
            assert_eq!(e.to_string(), e.message());
        }
        assert_eq!(AuthError::Expired.code(), "token_expired");
    }
}
