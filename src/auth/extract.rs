//! Finding the token in a WebSocket request: `?token=`, then
//! `Authorization: Bearer`, then the `roomcast_token` cookie. The parsing
//! itself is [`crate::http`]'s; this file only says where to look, in which
//! order, and that an empty value counts as absent.

use std::borrow::Cow;

use crate::http;

/// Name of the cookie that may carry the token.
pub const TOKEN_COOKIE: &str = "roomcast_token";
/// Name of the query parameter that may carry the token.
pub const TOKEN_QUERY_PARAM: &str = "token";

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
    // The query may be given with its `?`.
    let query = query.strip_prefix('?').unwrap_or(query);
    let token = http::query_param(query, TOKEN_QUERY_PARAM)?;
    (!token.is_empty()).then_some(token)
}

fn token_from_authorization(header: &str) -> Option<&str> {
    http::bearer_token(header)
}

fn token_from_cookie(header: &str) -> Option<&str> {
    http::cookie_value(header, TOKEN_COOKIE).filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::*;

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
}
