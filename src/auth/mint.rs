//! Minting HS256 tokens (for the CLI and `POST /api/v1/tokens`), and fresh
//! random `jti`s. Minting sets no `nbf`: see the `auth` module docs.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::MIN_HS_SECRET_BYTES;
use super::identity::RoomScope;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::*;
    use crate::auth::{AuthError, AuthSettings, Identity};

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
                room_scope: Some(RoomScope::Prefix("team-".into())),
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
}
