//! HTTP/1.1 request heads and responses for the acceptor: just enough HTTP to
//! upgrade WebSocket connections and answer small API requests, with limits.

/// The parts of a request head roomcast looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
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
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode(value))
        })
    }
}

/// Decodes `%XX` and `+` in a query value; invalid escapes are kept as written.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                if let Some(byte) =
                    hex.and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete response with a body; the connection closes after it.
pub fn response(status: u16, content_type: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error response `{"error":CODE,"message":MESSAGE}`.
pub fn error_response(status: u16, code: &str, message: &str, extra_headers: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    response(status, "application/json", extra_headers, body.as_bytes())
}

/// The 101 response completing a WebSocket handshake.
pub fn switching_protocols(ws_key: &str) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
        .into_bytes()
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
    fn incomplete_malformed_and_oversize_heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: h\r\n"), Ok(None));
        assert_eq!(parse_head(b"\x00\x01garbage\r\n\r\n"), Err(HeadError::Malformed));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Err(HeadError::TooLarge));
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        let response = String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==")).expect("ascii");
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{response}");
    }
}
