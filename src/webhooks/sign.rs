//! The `X-Roomcast-Signature` value: `sha256=` and the lowercase hex
//! HMAC-SHA256 of the exact request body, keyed with the webhook's secret.
//! The body carries `sent_at_ms`, so the signature covers the send time too
//! and a receiver can refuse an old, replayed request.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of the header value, naming the algorithm (room for another later).
pub const SIGNATURE_PREFIX: &str = "sha256=";

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length (long keys are hashed first), so this
    // cannot fail; the fallback only keeps a panic out of the thread.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(SIGNATURE_PREFIX.len() + digest.len() * 2);
    out.push_str(SIGNATURE_PREFIX);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `header` is the signature of `body` under `secret`, compared in
/// constant time (what a receiver does; used by the tests and tools).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let expected = signature(secret, body);
    let (a, b) = (expected.as_bytes(), header.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (a short key) and the well-known
    /// "quick brown fox" vector.
    #[test]
    fn known_hmac_sha256_vectors() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn verify_accepts_only_the_exact_body_and_secret() {
        let header = signature(b"0123456789abcdef", b"{\"events\":[]}");
        assert!(verify(b"0123456789abcdef", b"{\"events\":[]}", &header));
        assert!(!verify(b"0123456789abcdeF", b"{\"events\":[]}", &header));
        assert!(!verify(b"0123456789abcdef", b"{\"events\":[] }", &header));
        assert!(!verify(b"0123456789abcdef", b"{\"events\":[]}", "sha256=00"));
    }
}
