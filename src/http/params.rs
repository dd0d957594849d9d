//! Values inside a request head that several modules read: query
//! parameters, cookies, the `Authorization: Bearer` credential, and the
//! percent-decoding of query values and path segments. Each parser exists
//! here once. The callers (the WebSocket token lookup in `auth`, the HTTP
//! API's key check and paths) decide what an empty value means to them, so
//! these return what is written, and `None` only for what is not there.

use std::borrow::Cow;

/// The raw (still percent-encoded) value of the first pair named `name` in
/// a query string given without its `?`. A pair without `=` has the empty
/// value. Only the first pair with that name counts, even when it is empty.
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// [`query_value`], percent-decoded.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query_value(query, name).map(percent_decode)
}

/// The value of the first cookie named `name` in a `Cookie` header, trimmed,
/// and without the double quotes RFC 6265 allows around a `cookie-value`.
/// Pairs without `=` are skipped. Only the first cookie with that name
/// counts, even when it is empty (`Some("")`).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let value = header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim())
    })?;
    Some(value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value))
}

/// The credential of an `Authorization` header value of scheme `Bearer`
/// (any case), separated from it by spaces or tabs, trimmed. `None` for
/// another scheme or an empty credential.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+` (space).
/// Invalid escapes are kept literally; invalid UTF-8 becomes U+FFFD.
/// Borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
        assert_eq!(percent_decode("a%2eb%2Ec"), "a.b.c", "hex digits in either case");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%%41"), "%A", "a bad escape, then a good one");
        assert_eq!(percent_decode("%g1%1g"), "%g1%1g");
        assert_eq!(percent_decode("%2B"), "+", "an encoded plus is not a space");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}", "invalid UTF-8 is replaced");
        assert_eq!(percent_decode("%C3%A9%C3"), "é\u{FFFD}");
        assert_eq!(percent_decode("%00"), "\0");
        assert_eq!(percent_decode(""), "");
        assert!(matches!(percent_decode("plain.text"), Cow::Borrowed("plain.text")));
        assert!(matches!(percent_decode("a%41"), Cow::Owned(_)));
    }

    #[test]
    fn query_values_first_pair_wins() {
        let query = "room=x&token=a%2Eb&token=second&flag&empty=&eq=a=b&plus=x+y";
        assert_eq!(query_value(query, "token"), Some("a%2Eb"));
        assert_eq!(query_param(query, "token").as_deref(), Some("a.b"));
        assert_eq!(query_value(query, "flag"), Some(""), "a key without =");
        assert_eq!(query_value(query, "empty"), Some(""));
        assert_eq!(query_value(query, "eq"), Some("a=b"), "split at the first =");
        assert_eq!(query_param(query, "plus").as_deref(), Some("x y"));
        assert_eq!(query_value(query, "tok"), None, "names match whole");
        assert_eq!(query_value(query, "TOKEN"), None, "and with case");
        assert_eq!(query_value("token=&token=x", "token"), Some(""), "an empty first pair still wins");
        assert_eq!(query_value("", "token"), None);
        assert_eq!(query_value("", ""), Some(""), "the empty query is one empty pair");
        assert_eq!(query_value("?token=x", "token"), None, "no leading ? is stripped");
        assert_eq!(query_value("a=1&&token=x", "token"), Some("x"));
        assert_eq!(query_param("token=bad%zz%4", "token").as_deref(), Some("bad%zz%4"));
        assert_eq!(query_param("token=%FF", "token").as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn cookie_values_are_trimmed_and_unquoted() {
        let header = "a=1; roomcast_token=C.C.C; b=2";
        assert_eq!(cookie_value(header, "roomcast_token"), Some("C.C.C"));
        assert_eq!(cookie_value(header, "a"), Some("1"));
        assert_eq!(cookie_value(header, "c"), None);
        assert_eq!(cookie_value("other=1; xroomcast_token=2", "roomcast_token"), None, "names match whole");
        assert_eq!(cookie_value("  k  =  v  ", "k"), Some("v"));
        assert_eq!(cookie_value("k=\"x.y.z\"", "k"), Some("x.y.z"));
        assert_eq!(cookie_value("k=\"\"", "k"), Some(""));
        assert_eq!(cookie_value("k=\"unbalanced", "k"), Some("\"unbalanced"));
        assert_eq!(cookie_value("k=", "k"), Some(""));
        assert_eq!(cookie_value("k=; k=second", "k"), Some(""), "an empty first cookie still wins");
        assert_eq!(cookie_value("k=first; k=second", "k"), Some("first"));
        assert_eq!(cookie_value("k; k=v", "k"), Some("v"), "a pair without = is skipped");
        assert_eq!(cookie_value("k=a=b", "k"), Some("a=b"));
        assert_eq!(cookie_value("k=%41", "k"), Some("%41"), "cookies are not percent-decoded");
        assert_eq!(cookie_value("", "k"), None);
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer_token("Bearer H.H.H"), Some("H.H.H"));
        assert_eq!(bearer_token("bearer x"), Some("x"));
        assert_eq!(bearer_token("  BEARER\tx.y.z  "), Some("x.y.z"));
        assert_eq!(bearer_token("Bearer   spaced  "), Some("spaced"));
        assert_eq!(bearer_token("Bearer a b"), Some("a b"), "the rest is the credential");
        assert_eq!(bearer_token("Bearer   "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token(""), None);
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearerx y"), None);
        assert_eq!(bearer_token("Bearer%20x"), None, "not percent-decoded");
    }
}
