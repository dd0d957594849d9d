//! Responses the acceptor writes: complete responses with a body (the
//! connection closes after each), JSON error bodies, and the 101 that
//! completes a WebSocket handshake.

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
        505 => "HTTP Version Not Supported",
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
    fn accept_key_matches_rfc_6455_example() {
        let response = String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==")).expect("ascii");
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{response}");
    }
}
