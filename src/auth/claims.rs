//! From a verified token's claims to an [`Identity`]: `sub` and `exp`
//! required, every optional claim of the right type, ids free of control
//! characters, `"use": "once"` only with a `jti`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::AuthError;
use super::identity::{Identity, RoomScope};

pub(super) fn claim_present(payload_b64: &str, claim: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(payload_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some_and(|claims| claims.get(claim).is_some_and(|v| !v.is_null()))
}

pub(super) fn identity_from_claims(claims: &Map<String, Value>) -> Result<Identity, AuthError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::MAX_ROOM_ID_BYTES;
    use crate::auth::test_support::*;
    use crate::auth::verify::unix_now;
    use crate::auth::{MintError, MintRequest, mint_hs256};
    use serde_json::json;

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
                room_scope: Some(RoomScope::Exact("demo".into())),
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
}
