//! Refused handshakes: what a server said when it answered the upgrade
//! with an HTTP error instead of `101`. roomcast sends a JSON body
//! `{"error": CODE, "message": TEXT}` (and may add a `"hint"`); the tool
//! keeps that reason so that a run in which every connection was refused
//! can say why (a wrong `--jwt-secret` is `401 token_bad_signature`)
//! instead of asking whether the server is running.

use crate::scan;

/// Longest reason kept from a body: enough for a code, a message and a
/// hint, while a server that sends a page of HTML cannot fill the report.
const REASON_MAX: usize = 300;

/// The `Content-Length` of a response head (the bytes up to the blank
/// line), if it has one.
pub fn content_length(head: &[u8]) -> Option<usize> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = memchr::memchr(b':', line)?;
        if !line[..colon].trim_ascii().eq_ignore_ascii_case(b"content-length") {
            return None;
        }
        std::str::from_utf8(&line[colon + 1..]).ok()?.trim().parse().ok()
    })
}

/// Is the body of a refused handshake all here (`buf` holds the head,
/// ending at `body_start`, and what followed)? Without a
/// `Content-Length`, whatever came with the head is all there will be.
pub fn body_complete(buf: &[u8], body_start: usize) -> bool {
    match content_length(&buf[..body_start]) {
        Some(len) => buf.len() >= body_start.saturating_add(len),
        None => true,
    }
}

/// One line for a refused handshake: `HTTP STATUS [CODE][: MESSAGE][
/// (hint: HINT)]` from a roomcast-style JSON body (any other body adds
/// nothing).
pub fn describe(status: u64, body: &[u8]) -> String {
    let field = |key: &[u8]| scan::find_str_after(body, key).map(String::from_utf8_lossy);
    let mut reason = format!("HTTP {status}");
    if let Some(code) = field(b"\"error\":") {
        reason.push(' ');
        reason.push_str(&code);
    }
    if let Some(message) = field(b"\"message\":") {
        reason.push_str(": ");
        reason.push_str(&message);
    }
    if let Some(hint) = field(b"\"hint\":") {
        reason.push_str(" (hint: ");
        reason.push_str(&hint);
        reason.push(')');
    }
    if reason.len() > REASON_MAX {
        let mut end = REASON_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// Was the token refused (the status roomcast gives a bad, expired or
/// missing token)?
pub fn is_token_refusal(reason: &str) -> bool {
    reason.starts_with("HTTP 401")
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\ncontent-length: 76\r\nConnection: close\r\n\r\n{\"error\":\"token_bad_signature\",\"message\":\"the token's signature is invalid\"}";

    #[test]
    fn reads_roomcasts_error_body() {
        let start = memchr::memmem::find(REFUSED, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(content_length(&REFUSED[..start]), Some(REFUSED.len() - start));
        assert!(body_complete(REFUSED, start));
        assert!(!body_complete(&REFUSED[..REFUSED.len() - 1], start));
        let reason = describe(401, &REFUSED[start..]);
        assert_eq!(reason, "HTTP 401 token_bad_signature: the token's signature is invalid");
        assert!(is_token_refusal(&reason));
    }

    #[test]
    fn other_bodies_give_the_status_alone() {
        assert_eq!(describe(503, b""), "HTTP 503");
        assert_eq!(describe(404, b"<html>not found</html>"), "HTTP 404");
        assert!(!is_token_refusal(&describe(503, b"")));
        let hinted = describe(403, br#"{"error":"room_not_allowed","message":"no","hint":"claim ROOM*"}"#);
        assert_eq!(hinted, "HTTP 403 room_not_allowed: no (hint: claim ROOM*)");
        let long = format!(r#"{{"error":"x","message":"{}"}}"#, "é".repeat(400));
        assert!(describe(400, long.as_bytes()).chars().count() <= REASON_MAX);
        assert!(body_complete(b"HTTP/1.1 503 x\r\n\r\n", 18));
    }
}
