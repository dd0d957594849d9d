//! Request heads: parsing the bytes the acceptor read into the few header
//! values roomcast looks at, with a cap on the number of headers.

use std::borrow::Cow;

use super::params;

/// The parts of a request head roomcast looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    /// The minor version of `HTTP/1.x` (httparse reads no other major):
    /// 0 or 1. Only 1 is served (RFC 6455 §4.1 asks for HTTP/1.1 or higher).
    pub version: u8,
    pub query: Option<String>,
    pub upgrade: Option<String>,
    pub connection: Option<String>,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    pub origin: Option<String>,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    /// `Content-Length`, as written; the HTTP API reads a body of this size.
    pub content_length: Option<String>,
    /// `Transfer-Encoding`; chunked bodies are refused by the HTTP API.
    pub transfer_encoding: Option<String>,
}

/// Why a request head cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.1 we can read.
    Malformed,
    /// More headers than `HEADERS_MAX`, or a head over the byte limit.
    TooLarge,
    /// A request line with another version than `HTTP/1.0` or `HTTP/1.1`.
    Version,
}

/// Headers read per request; more is answered 431.
const HEADERS_MAX: usize = 64;

/// Parses a complete head from `buf`. `Ok(None)`: incomplete.
/// Returns the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Malformed),
    };
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    let mut head = RequestHead {
        method: request.method.unwrap_or_default().to_string(),
        path: path.to_string(),
        query,
        version: request.version.unwrap_or_default(),
        ..RequestHead::default()
    };
    for header in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else { continue };
        let slot = match header.name.to_ascii_lowercase().as_str() {
            "upgrade" => &mut head.upgrade,
            "connection" => &mut head.connection,
            "sec-websocket-key" => &mut head.ws_key,
            "sec-websocket-version" => &mut head.ws_version,
            "origin" => &mut head.origin,
            "authorization" => &mut head.authorization,
            "cookie" => &mut head.cookie,
            "content-length" => &mut head.content_length,
            "transfer-encoding" => &mut head.transfer_encoding,
            _ => continue,
        };
        *slot = Some(value.trim().to_string());
    }
    Ok(Some((head, len)))
}

impl RequestHead {
    /// Whether this asks for a WebSocket upgrade (RFC 6455 §4.2.1).
    pub fn wants_websocket(&self) -> bool {
        let upgrade = self.upgrade.as_deref().is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let connection = self
            .connection
            .as_deref()
            .is_some_and(|c| c.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")));
        upgrade && connection
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        params::query_param(self.query.as_deref()?, name).map(Cow::into_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_upgrade_request() {
        let raw = b"GET /ws/demo?token=a%2Eb&user=x+y HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://app\r\n\r\nextra";
        let (head, len) = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(len, raw.len() - 5);
        assert_eq!(head.path, "/ws/demo");
        assert!(head.wants_websocket());
        assert_eq!(head.query_param("token").as_deref(), Some("a.b"));
        assert_eq!(head.query_param("user").as_deref(), Some("x y"));
        assert_eq!(head.query_param("none"), None);
        assert_eq!(head.origin.as_deref(), Some("https://app"));
    }

    #[test]
    fn query_param_of_a_head_without_query_or_with_odd_pairs() {
        let (head, _) = parse_head(b"GET /ws/demo HTTP/1.1\r\n\r\n").expect("valid").expect("complete");
        assert_eq!(head.query, None);
        assert_eq!(head.query_param("token"), None);
        let (head, _) = parse_head(b"GET /x?a=1&a=2&flag&e=&p=%zz HTTP/1.1\r\n\r\n").expect("valid").expect("complete");
        assert_eq!(head.query_param("a").as_deref(), Some("1"), "the first of repeated keys");
        assert_eq!(head.query_param("flag").as_deref(), Some(""), "a key without = has the empty value");
        assert_eq!(head.query_param("e").as_deref(), Some(""));
        assert_eq!(head.query_param("p").as_deref(), Some("%zz"), "a bad escape is kept as written");
        // Only the first `?` separates path and query.
        let (head, _) = parse_head(b"GET /x??token=t HTTP/1.1\r\n\r\n").expect("valid").expect("complete");
        assert_eq!(head.query.as_deref(), Some("?token=t"));
        assert_eq!(head.query_param("token"), None);
    }

    #[test]
    fn incomplete_malformed_and_oversize_heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: h\r\n"), Ok(None));
        assert_eq!(parse_head(b"\x00\x01garbage\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(parse_head(b"GET / HTTP/2.0\r\n\r\n"), Err(HeadError::Version));
        let (head, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").expect("valid").expect("complete");
        assert_eq!(head.version, 0);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Err(HeadError::TooLarge));
    }
}
