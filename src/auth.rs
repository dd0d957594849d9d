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

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Default for [`AuthSettings::token_bytes_max`].
pub const DEFAULT_TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Shortest accepted HMAC secret (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS_SECRET_BYTES: usize = 32;
/// Largest accepted clock-skew leeway, in seconds.
pub const MAX_LEEWAY_S: u64 = 3600;
/// Smallest accepted RSA modulus, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus the verifier backend (`rsa` crate) accepts, in bits.
pub const MAX_RSA_BITS: usize = 4096;
/// File name of the generated HS secret inside the data directory.
pub const SECRET_FILE_NAME: &str = "jwt-secret";
/// Name of the cookie that may carry the token.
pub const TOKEN_COOKIE: &str = "roomcast_token";
/// Name of the query parameter that may carry the token.
pub const TOKEN_QUERY_PARAM: &str = "token";
/// Longest room id (DESIGN §2: room ids are 1–128 bytes of `[A-Za-z0-9._:-]`).
pub const MAX_ROOM_ID_BYTES: usize = 128;

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

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

/// Rooms a token is limited to (claim `room`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoomScope {
    /// `"room": "demo"`: only that room.
    Exact(String),
    /// `"room": "team-*"`: rooms starting with `team-` (`"*"` alone: any room).
    Prefix(String),
}

impl RoomScope {
    /// Parses a `room` claim; `None` when it is neither a room id nor a
    /// room-id prefix followed by `*`.
    pub fn parse(claim: &str) -> Option<RoomScope> {
        match claim.strip_suffix('*') {
            Some(prefix) if prefix.len() < MAX_ROOM_ID_BYTES && is_room_chars(prefix) => {
                Some(RoomScope::Prefix(prefix.to_owned()))
            }
            Some(_) => None,
            None if !claim.is_empty() && claim.len() <= MAX_ROOM_ID_BYTES && is_room_chars(claim) => {
                Some(RoomScope::Exact(claim.to_owned()))
            }
            None => None,
        }
    }

    /// Whether `room` is within this scope.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            RoomScope::Exact(id) => id == room,
            RoomScope::Prefix(prefix) => room.starts_with(prefix.as_str()),
        }
    }
}

fn is_room_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Who a verified token (or dev mode) says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub user: String,
    /// `name`.
    pub name: Option<String>,
    /// `tenant`; `""` when absent.
    pub tenant: String,
    /// `role == "host"`.
    pub host: bool,
    /// `groups`; empty when absent.
    pub groups: Vec<String>,
    /// `room`; `None` means any room (of the tenant).
    pub room_scope: Option<RoomScope>,
    /// `perms`; `None` when absent (the server applies its default).
    pub perms: Option<Vec<String>>,
    /// `exp` in Unix seconds; `u64::MAX` for dev identities.
    pub expires_at_s: u64,
    /// `jti`.
    pub jti: Option<String>,
    /// `"use": "once"`: a single-use token (it then has a `jti`); the
    /// acceptor accepts it for one handshake.
    pub once: bool,
}

impl Identity {
    /// Identity for dev mode (`auth.mode = "none"`, `?user=NAME`): no token,
    /// no tenant, no room limit, never expires, not a host.
    pub fn dev(user: &str) -> Identity {
        Identity {
            user: user.to_owned(),
            name: None,
            tenant: String::new(),
            host: false,
            groups: Vec::new(),
            room_scope: None,
            perms: None,
            expires_at_s: u64::MAX,
            jti: None,
            once: false,
        }
    }

    /// Whether this identity may be in `room`, by URL or by `join`: a
    /// personal room (`user:{sub}`) only its own, a group room (`group:{g}`)
    /// only its groups, any other room as the `room` claim allows.
    pub fn may_join(&self, room: &str) -> bool {
        may_join(&self.user, &self.groups, self.room_scope.as_ref(), room)
    }

    /// Whether the token's `room` claim is one room id (not `prefix*`, not
    /// absent): with `may_join` checked, it names the room being entered.
    pub fn has_exact_room_claim(&self) -> bool {
        matches!(self.room_scope, Some(RoomScope::Exact(_)))
    }

    /// Whether the token's `room` claim allows entering `room`.
    pub fn may_enter(&self, room: &str) -> bool {
        self.room_scope.as_ref().is_none_or(|scope| scope.allows(room))
    }
}

/// The rule of [`Identity::may_join`], for callers that keep only the
/// identity's grants.
pub fn may_join(user: &str, groups: &[impl AsRef<str>], scope: Option<&RoomScope>, room: &str) -> bool {
    if let Some(personal) = room.strip_prefix(crate::ids::PERSONAL_PREFIX) {
        personal == user
    } else if let Some(group) = room.strip_prefix(crate::ids::GROUP_PREFIX) {
        groups.iter().any(|g| g.as_ref() == group)
    } else {
        scope.is_none_or(|scope| scope.allows(room))
    }
}

// ---------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------

/// One verification key with the `Validation` (and so the algorithm list)
/// that belongs to it. Built once, never per token.
#[derive(Debug)]
struct KeyEntry {
    key: DecodingKey,
    validation: Validation,
}

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

fn unix_now() -> u64 {
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

fn with_algorithms(base: &Validation, algorithms: &[Algorithm]) -> Validation {
    let mut v = base.clone();
    v.algorithms = algorithms.to_vec();
    v
}

fn load_public_pem(pem: &[u8], alg_name: &str, base: &Validation) -> Result<KeyEntry, AuthSetupError> {
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

fn load_jwks(json: &[u8], base: &Validation) -> Result<HashMap<String, KeyEntry>, AuthSetupError> {
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

fn claim_present(payload_b64: &str, claim: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(payload_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some_and(|claims| claims.get(claim).is_some_and(|v| !v.is_null()))
}

fn identity_from_claims(claims: &Map<String, Value>) -> Result<Identity, AuthError> {
    let user = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) => return Err(AuthError::MissingClaim),
        Some(_) => return Err(AuthError::BadClaim),
    };
    let expires_at_s = match claims.get("exp") {
        Some(Value::Number(n)) => numeric_date(n).ok_or(AuthError::BadClaim)?,
        None | Some(Value::Null) => return Err(AuthError::MissingClaim),
        Some(_) => return Err(AuthError::BadClaim),
    };
    let room_scope = match opt_str(claims, "room")? {
        Some(room) => Some(RoomScope::parse(room).ok_or(AuthError::BadClaim)?),
        None => None,
    };
    // Ids become room keys (`user:{sub}`, `group:{g}`, per tenant), where a
    // control character such as NUL would be ambiguous.
    let tenant = opt_str(claims, "tenant")?.unwrap_or_default().to_owned();
    let groups = opt_str_list(claims, "groups")?.unwrap_or_default();
    if [&user, &tenant].into_iter().chain(&groups).any(|id| id.chars().any(char::is_control)) {
        return Err(AuthError::BadClaim);
    }
    let jti = opt_str(claims, "jti")?.map(str::to_owned);
    // A single-use token is remembered by its `jti`, so it needs one.
    let once = opt_str(claims, "use")? == Some("once");
    if once && jti.as_deref().is_none_or(str::is_empty) {
        return Err(AuthError::BadClaim);
    }
    Ok(Identity {
        user,
        name: opt_str(claims, "name")?.map(str::to_owned),
        tenant,
        host: opt_str(claims, "role")? == Some("host"),
        groups,
        room_scope,
        perms: opt_str_list(claims, "perms")?,
        expires_at_s,
        jti,
        once,
    })
}

/// Same coercion as the library's `exp` check (integers, or finite
/// non-negative floats rounded).
fn numeric_date(n: &serde_json::Number) -> Option<u64> {
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f.round() as u64))
}

fn opt_str<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::BadClaim),
    }
}

fn opt_str_list(claims: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(AuthError::BadClaim))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(AuthError::BadClaim),
    }
}

// ---------------------------------------------------------------------------
// Minting
// ---------------------------------------------------------------------------

/// What to put in a minted token. `..Default::default()` leaves the rest out.
#[derive(Debug, Clone, Copy, Default)]
pub struct MintRequest<'a> {
    /// `sub` (required, non-empty).
    pub sub: &'a str,
    /// `name`.
    pub name: Option<&'a str>,
    /// `room`: a room id or a prefix ending in `*`.
    pub room: Option<&'a str>,
    /// Lifetime in seconds (required, > 0): `exp = now + ttl_s`.
    pub ttl_s: u64,
    /// Sets `role: "host"`.
    pub host: bool,
    /// `tenant`.
    pub tenant: Option<&'a str>,
    /// `groups` (omitted when empty).
    pub groups: &'a [String],
    /// `aud`.
    pub aud: Option<&'a str>,
    /// `iss`.
    pub iss: Option<&'a str>,
    /// `jti`.
    pub jti: Option<&'a str>,
    /// `perms`.
    pub perms: Option<&'a [String]>,
    /// Sets `"use": "once"` (single-use; needs `jti`).
    pub once: bool,
}

/// A fresh random `jti`: 128 bits, hex.
pub fn random_jti() -> String {
    let (a, b) = (getrandom::u64().unwrap_or_default(), getrandom::u64().unwrap_or_default());
    format!("{a:016x}{b:016x}")
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("HS secret is {len} bytes; at least {MIN_HS_SECRET_BYTES} bytes are required")]
    WeakSecret { len: usize },
    #[error("sub must not be empty")]
    EmptySub,
    #[error("ttl_s must be at least 1 and exp must fit in u64")]
    BadTtl,
    #[error("room {0:?} is neither a room id nor a room-id prefix ending in '*'")]
    BadRoom(String),
    #[error("a single-use token needs a jti")]
    OnceWithoutJti,
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    perms: Option<&'a [String]>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    use_: Option<&'static str>,
}

/// Mints an HS256 token (`iat = now_unix_s`, `exp = now_unix_s + ttl_s`, no `nbf`).
pub fn mint_hs256(secret: &[u8], req: &MintRequest<'_>, now_unix_s: u64) -> Result<String, MintError> {
    if secret.len() < MIN_HS_SECRET_BYTES {
        return Err(MintError::WeakSecret { len: secret.len() });
    }
    if req.sub.is_empty() {
        return Err(MintError::EmptySub);
    }
    let exp = match req.ttl_s {
        0 => None,
        ttl => now_unix_s.checked_add(ttl),
    }
    .ok_or(MintError::BadTtl)?;
    if let Some(room) = req.room
        && RoomScope::parse(room).is_none()
    {
        return Err(MintError::BadRoom(room.to_owned()));
    }
    if req.once && req.jti.is_none_or(str::is_empty) {
        return Err(MintError::OnceWithoutJti);
    }
    let claims = MintClaims {
        sub: req.sub,
        name: req.name,
        iat: now_unix_s,
        exp,
        room: req.room,
        role: req.host.then_some("host"),
        tenant: req.tenant,
        groups: req.groups,
        aud: req.aud,
        iss: req.iss,
        jti: req.jti,
        perms: req.perms,
        use_: req.once.then_some("once"),
    };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))?)
}

// ---------------------------------------------------------------------------
// Secret file
// ---------------------------------------------------------------------------

/// Returns the HS secret stored in `<data_dir>/jwt-secret`, creating it if
/// needed.
///
/// A new secret is 32 random bytes (getrandom) written base64url-encoded as
/// text; the secret is the file's text, trimmed (so operators may replace it
/// with any text of at least [`MIN_HS_SECRET_BYTES`] bytes). `data_dir` is
/// created (mode 0700) if missing. The file is created mode 0600: the secret is
/// written to a `create_new` temporary file which is then hard-linked into
/// place, so readers never see a partial file and, when several processes race,
/// exactly one secret wins and the others read it (`AlreadyExists` → read).
pub fn load_or_create_secret(data_dir: &Path) -> io::Result<Vec<u8>> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
    let path = data_dir.join(SECRET_FILE_NAME);
    match read_secret_file(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }

    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    let secret = URL_SAFE_NO_PAD.encode(raw);
    let nonce = getrandom::u64().map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    let tmp = data_dir.join(format!(".{SECRET_FILE_NAME}.{}.{nonce:016x}.tmp", std::process::id()));
    let result = publish_secret(&tmp, &path, &secret);
    // Best effort: the temporary name is unique and holds nothing the real file does not.
    let _ = fs::remove_file(&tmp);
    result
}

fn publish_secret(tmp: &Path, path: &Path, secret: &str) -> io::Result<Vec<u8>> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    match fs::hard_link(tmp, path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                // Persist the new directory entry; failure only weakens crash safety.
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(secret.as_bytes().to_vec())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_secret_file(path),
        Err(e) => Err(e),
    }
}

fn read_secret_file(path: &Path) -> io::Result<Vec<u8>> {
    let text = fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.len() < MIN_HS_SECRET_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: secret is {} bytes after trimming; at least {MIN_HS_SECRET_BYTES} are required",
                path.display(),
                secret.len()
            ),
        ));
    }
    Ok(secret.as_bytes().to_vec())
}

// ---------------------------------------------------------------------------
// Token extraction
// ---------------------------------------------------------------------------

/// Finds the token in a request: the `token` query parameter (percent-decoded)
/// wins, then `Authorization: Bearer …`, then the `roomcast_token` cookie.
/// Empty values count as absent. `query` is the raw query string, with or
/// without the leading `?`.
pub fn extract_token<'a>(
    query: Option<&'a str>,
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    if let Some(token) = query.and_then(token_from_query) {
        return Some(token);
    }
    if let Some(token) = authorization.and_then(token_from_authorization) {
        return Some(Cow::Borrowed(token));
    }
    cookie.and_then(token_from_cookie).map(Cow::Borrowed)
}

fn token_from_query(query: &str) -> Option<Cow<'_, str>> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let raw = query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == TOKEN_QUERY_PARAM).then_some(value)
    })?;
    let token = percent_decode(raw);
    (!token.is_empty()).then_some(token)
}

fn token_from_authorization(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

fn token_from_cookie(header: &str) -> Option<&str> {
    let value = header.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name.trim() == TOKEN_COOKIE).then(|| value.trim())
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    (!value.is_empty()).then_some(value)
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+` (space).
/// Invalid escapes are kept literally; invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    // Test-only key material, generated once with openssl (see tests/keys/README.md).
    // Paths are relative to this file, so they work from the roomcast crate and
    // from a scratch crate that includes this file with `#[path]`.
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/keys/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../tests/keys/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/keys/ec_public.pem");
    const ED_PRIVATE: &[u8] = include_bytes!("../tests/keys/ed25519_private.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../tests/keys/ed25519_public.pem");
    const JWKS: &[u8] = include_bytes!("../tests/keys/jwks.json");
    const RSA_KID: &str = "test-rsa-1";
    const EC_KID: &str = "test-ec-1";

    const SECRET: &[u8] = b"roomcast-unit-test-secret-0123456789abcdef";

    fn now() -> u64 {
        unix_now()
    }

    fn base_claims() -> Value {
        json!({ "sub": "alice", "exp": now() + 600 })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        if let Value::Object(map) = &mut claims {
            map.insert(key.to_owned(), value);
        }
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        if let Value::Object(map) = &mut claims {
            map.remove(key);
        }
        claims
    }

    fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).expect("signing a test token")
    }

    fn hs(claims: &Value) -> String {
        sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), None, claims)
    }

    fn rsa_signer() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test RSA private key")
    }

    fn ec_signer() -> EncodingKey {
        EncodingKey::from_ec_pem(EC_PRIVATE).expect("test EC private key")
    }

    fn ed_signer() -> EncodingKey {
        EncodingKey::from_ed_pem(ED_PRIVATE).expect("test Ed25519 private key")
    }

    /// A token assembled by hand, for headers the library refuses to produce.
    fn hand_built(header: &Value, claims: &Value, signature: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).expect("header json"));
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims json"));
        format!("{h}.{c}.{signature}")
    }

    fn hs_settings() -> AuthSettings {
        AuthSettings { hs_secret: Some(SECRET.to_vec()), ..AuthSettings::default() }
    }

    fn verifier(settings: AuthSettings) -> Verifier {
        Verifier::new(&settings).expect("valid test settings")
    }

    fn hs_verifier() -> Verifier {
        verifier(hs_settings())
    }

    fn pem_verifier(pem: &[u8], alg: &str) -> Verifier {
        verifier(AuthSettings { public_key_pem: Some((pem.to_vec(), alg.to_owned())), ..AuthSettings::default() })
    }

    fn jwks_verifier() -> Verifier {
        verifier(AuthSettings { jwks_json: Some(JWKS.to_vec()), ..AuthSettings::default() })
    }

    fn setup_err(settings: AuthSettings) -> AuthSetupError {
        Verifier::new(&settings).expect_err("settings should be refused")
    }

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

    // --- required claims and claim types ----------------------------------

    #[test]
    fn missing_exp() {
        let v = hs_verifier();
        assert_eq!(v.verify(&hs(&without(base_claims(), "exp"))), Err(AuthError::MissingClaim));
        assert_eq!(v.verify(&hs(&with(base_claims(), "exp", Value::Null))), Err(AuthError::MissingClaim));
        assert_eq!(v.verify(&hs(&with(base_claims(), "exp", json!("9999999999")))), Err(AuthError::BadClaim));
        assert_eq!(v.verify(&hs(&with(base_claims(), "exp", json!(-5)))), Err(AuthError::BadClaim));
    }

    #[test]
    fn missing_sub() {
        let v = hs_verifier();
        assert_eq!(v.verify(&hs(&without(base_claims(), "sub"))), Err(AuthError::MissingClaim));
        assert_eq!(v.verify(&hs(&with(base_claims(), "sub", json!(42)))), Err(AuthError::BadClaim));
        assert_eq!(v.verify(&hs(&with(base_claims(), "sub", json!("")))), Err(AuthError::BadClaim));
    }

    #[test]
    fn wrong_claim_types_are_bad_claim() {
        let v = hs_verifier();
        for (claim, value) in [
            ("name", json!({ "first": "A" })),
            ("room", json!(5)),
            ("room", json!("")),
            ("room", json!("a*b")),
            ("room", json!("has space")),
            ("room", json!(format!("{}*", "r".repeat(MAX_ROOM_ID_BYTES)))),
            ("role", json!(true)),
            ("groups", json!("admins")),
            ("groups", json!(["a", 1])),
            ("tenant", json!(7)),
            ("perms", json!("publish")),
            ("perms", json!([null])),
            ("jti", json!(1)),
        ] {
            let token = hs(&with(base_claims(), claim, value.clone()));
            assert_eq!(v.verify(&token), Err(AuthError::BadClaim), "{claim}: {value}");
        }
    }

    #[test]
    fn use_once_marks_a_single_use_token_and_needs_a_jti() {
        let once = with(with(base_claims(), "use", json!("once")), "jti", json!("j"));
        let id = hs_verifier().verify(&hs(&once)).expect("valid");
        assert!(id.once && id.jti.as_deref() == Some("j"));
        let no_jti = with(base_claims(), "use", json!("once"));
        assert_eq!(hs_verifier().verify(&hs(&no_jti)), Err(AuthError::BadClaim));
        let other = with(base_claims(), "use", json!("many"));
        assert!(!hs_verifier().verify(&hs(&other)).expect("valid").once);
        let req = MintRequest { sub: "s", ttl_s: 60, once: true, ..Default::default() };
        assert!(matches!(mint_hs256(SECRET, &req, 1_000), Err(MintError::OnceWithoutJti)));
        let token = mint_hs256(SECRET, &MintRequest { jti: Some("k"), ..req }, unix_now()).expect("mint");
        assert!(hs_verifier().verify(&token).expect("valid").once);
    }

    #[test]
    fn claims_map_to_identity() {
        let exp = now() + 600;
        let claims = json!({
            "sub": "u-1", "name": "Alice", "exp": exp, "tenant": "acme", "role": "host",
            "groups": ["eng", "ops"], "perms": ["publish"], "jti": "abc", "room": "demo",
            "iat": now(), "extra": { "ignored": true },
        });
        let id = hs_verifier().verify(&hs(&claims)).expect("valid");
        assert_eq!(
            id,
            Identity {
                user: "u-1".to_owned(),
                name: Some("Alice".to_owned()),
                tenant: "acme".to_owned(),
                host: true,
                groups: vec!["eng".to_owned(), "ops".to_owned()],
                room_scope: Some(RoomScope::Exact("demo".to_owned())),
                perms: Some(vec!["publish".to_owned()]),
                expires_at_s: exp,
                jti: Some("abc".to_owned()),
                once: false,
            }
        );
        let minimal = hs_verifier().verify(&hs(&base_claims())).expect("valid");
        assert_eq!(minimal.tenant, "");
        assert!(!minimal.host && minimal.groups.is_empty() && minimal.perms.is_none());
        assert!(minimal.room_scope.is_none() && minimal.name.is_none() && minimal.jti.is_none());
        let guest = hs_verifier().verify(&hs(&with(base_claims(), "role", json!("guest")))).expect("valid");
        assert!(!guest.host);
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

    // --- room scope ----------------------------------------------------------

    #[test]
    fn room_scope_exact_and_prefix() {
        let v = hs_verifier();
        let exact = v.verify(&hs(&with(base_claims(), "room", json!("demo")))).expect("valid");
        assert_eq!(exact.room_scope, Some(RoomScope::Exact("demo".to_owned())));
        assert!(exact.may_enter("demo"));
        assert!(!exact.may_enter("demo2") && !exact.may_enter("dem"));

        let prefix = v.verify(&hs(&with(base_claims(), "room", json!("team-*")))).expect("valid");
        assert_eq!(prefix.room_scope, Some(RoomScope::Prefix("team-".to_owned())));
        assert!(prefix.may_enter("team-a") && prefix.may_enter("team-"));
        assert!(!prefix.may_enter("team") && !prefix.may_enter("other"));

        let any = v.verify(&hs(&with(base_claims(), "room", json!("*")))).expect("valid");
        assert!(any.may_enter("anything"));
        assert!(Identity::dev("bob").may_enter("anything"));
    }

    #[test]
    fn dev_identity() {
        let id = Identity::dev("bob");
        assert_eq!(id.user, "bob");
        assert_eq!(id.tenant, "");
        assert_eq!(id.expires_at_s, u64::MAX);
        assert!(!id.host && id.room_scope.is_none() && id.perms.is_none());
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

    // --- minting ----------------------------------------------------------------

    #[test]
    fn mint_then_verify_round_trip() {
        let groups = vec!["eng".to_owned()];
        let perms = vec!["publish".to_owned(), "subscribe".to_owned()];
        let now = now();
        let req = MintRequest {
            sub: "carol",
            name: Some("Carol"),
            room: Some("team-*"),
            ttl_s: 300,
            host: true,
            tenant: Some("acme"),
            groups: &groups,
            aud: Some("roomcast"),
            iss: Some("roomcast-cli"),
            jti: Some("j-1"),
            perms: Some(&perms),
            once: false,
        };
        let token = mint_hs256(SECRET, &req, now).expect("mint");
        let v = verifier(AuthSettings {
            audience: Some("roomcast".to_owned()),
            issuer: Some("roomcast-cli".to_owned()),
            ..hs_settings()
        });
        let id = v.verify(&token).expect("minted token verifies");
        assert_eq!(
            id,
            Identity {
                user: "carol".to_owned(),
                name: Some("Carol".to_owned()),
                tenant: "acme".to_owned(),
                host: true,
                groups,
                room_scope: Some(RoomScope::Prefix("team-".to_owned())),
                perms: Some(perms),
                expires_at_s: now + 300,
                jti: Some("j-1".to_owned()),
                once: false,
            }
        );
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::HS256);

        let minimal =
            mint_hs256(SECRET, &MintRequest { sub: "dave", ttl_s: 60, ..Default::default() }, now).expect("mint");
        let id = hs_verifier().verify(&minimal).expect("verifies");
        assert_eq!((id.user.as_str(), id.host, id.tenant.as_str()), ("dave", false, ""));
        let expired =
            mint_hs256(SECRET, &MintRequest { sub: "dave", ttl_s: 60, ..Default::default() }, now - 61).expect("mint");
        assert_eq!(hs_verifier().verify(&expired), Err(AuthError::Expired));
    }

    #[test]
    fn mint_refuses_bad_requests() {
        let ok = MintRequest { sub: "a", ttl_s: 60, ..Default::default() };
        assert!(matches!(mint_hs256(b"short", &ok, 0), Err(MintError::WeakSecret { len: 5 })));
        assert!(matches!(mint_hs256(SECRET, &MintRequest { sub: "", ..ok }, 0), Err(MintError::EmptySub)));
        assert!(matches!(mint_hs256(SECRET, &MintRequest { ttl_s: 0, ..ok }, 0), Err(MintError::BadTtl)));
        assert!(matches!(mint_hs256(SECRET, &ok, u64::MAX - 10), Err(MintError::BadTtl)));
        assert!(matches!(mint_hs256(SECRET, &MintRequest { room: Some("a b"), ..ok }, 0), Err(MintError::BadRoom(_))));
    }

    // --- token extraction ------------------------------------------------------

    #[test]
    fn extract_token_precedence() {
        let q = Some("room=x&token=Q.Q.Q");
        let h = Some("Bearer H.H.H");
        let c = Some("a=1; roomcast_token=C.C.C; b=2");
        assert_eq!(extract_token(q, h, c).as_deref(), Some("Q.Q.Q"));
        assert_eq!(extract_token(None, h, c).as_deref(), Some("H.H.H"));
        assert_eq!(extract_token(None, None, c).as_deref(), Some("C.C.C"));
        assert_eq!(extract_token(None, None, None), None);
        // Empty or non-matching sources fall through.
        assert_eq!(extract_token(Some("token=&x=1"), h, c).as_deref(), Some("H.H.H"));
        assert_eq!(extract_token(Some("tokens=zzz"), None, c).as_deref(), Some("C.C.C"));
        assert_eq!(extract_token(None, Some("Basic dXNlcjpwYXNz"), c).as_deref(), Some("C.C.C"));
        assert_eq!(extract_token(None, Some("Bearer   "), c).as_deref(), Some("C.C.C"));
        assert_eq!(extract_token(None, None, Some("other=1; xroomcast_token=2")), None);
        assert_eq!(extract_token(None, None, Some("roomcast_token=")), None);
    }

    #[test]
    fn extract_token_decoding_and_forms() {
        assert!(matches!(extract_token(Some("token=a.b.c"), None, None), Some(Cow::Borrowed("a.b.c"))));
        assert_eq!(extract_token(Some("?token=a%2Eb%2ec"), None, None).as_deref(), Some("a.b.c"));
        assert_eq!(extract_token(Some("token=a+b%20c"), None, None).as_deref(), Some("a b c"));
        assert_eq!(extract_token(Some("token=bad%zz%4"), None, None).as_deref(), Some("bad%zz%4"));
        assert_eq!(extract_token(Some("token=%FF"), None, None).as_deref(), Some("\u{FFFD}"));
        assert_eq!(extract_token(Some("token=first&token=second"), None, None).as_deref(), Some("first"));
        assert_eq!(extract_token(None, Some("bearer x.y.z"), None).as_deref(), Some("x.y.z"));
        assert_eq!(extract_token(None, Some("  BEARER\tx.y.z  "), None).as_deref(), Some("x.y.z"));
        assert_eq!(extract_token(None, None, Some("roomcast_token=\"x.y.z\"")).as_deref(), Some("x.y.z"));
        // The extracted value round-trips into the verifier.
        let token = hs(&base_claims());
        let cookie = format!("theme=dark; roomcast_token={token}");
        let found = extract_token(None, None, Some(&cookie)).expect("cookie token");
        assert!(hs_verifier().verify(&found).is_ok());
    }

    // --- secret file --------------------------------------------------------------

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            TempDir(std::env::temp_dir().join(format!("roomcast-auth-{tag}-{}-{nanos}", std::process::id())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn load_or_create_secret_creates_0600_and_rereads() {
        let tmp = TempDir::new("secret");
        let dir = tmp.0.join("nested").join("data");
        let first = load_or_create_secret(&dir).expect("create");
        let path = dir.join(SECRET_FILE_NAME);
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.len(), 43, "32 bytes, base64url without padding");
        assert!(first.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&first).expect("base64url").len(), 32);
        assert_eq!(load_or_create_secret(&dir).expect("re-read"), first);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir).expect("dir").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE_NAME)]);
        // The secret is usable as-is.
        let token =
            mint_hs256(&first, &MintRequest { sub: "a", ttl_s: 60, ..Default::default() }, now()).expect("mint");
        let v = verifier(AuthSettings { hs_secret: Some(first), ..AuthSettings::default() });
        assert!(v.verify(&token).is_ok());
    }

    #[test]
    fn load_or_create_secret_reads_and_trims_existing() {
        let tmp = TempDir::new("existing");
        fs::create_dir_all(&tmp.0).expect("dir");
        let secret = "operator-provided-secret-that-is-long-enough";
        fs::write(tmp.0.join(SECRET_FILE_NAME), format!("  {secret}\n\n")).expect("write");
        assert_eq!(load_or_create_secret(&tmp.0).expect("read"), secret.as_bytes());
        fs::write(tmp.0.join(SECRET_FILE_NAME), "short\n").expect("write");
        let e = load_or_create_secret(&tmp.0).expect_err("too short");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn load_or_create_secret_concurrent_creators_agree() {
        let tmp = TempDir::new("race");
        let dir = Arc::new(tmp.0.join("data"));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dir = Arc::clone(&dir);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    load_or_create_secret(&dir)
                })
            })
            .collect();
        let secrets: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().expect("thread").expect("secret")).collect();
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read_dir(&*dir).expect("dir").count(), 1);
    }
}
