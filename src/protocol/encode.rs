//! Server frames out: every JSON message roomcast sends, written straight
//! into a `FrameBuilder`'s buffer once per message, whatever the number of
//! recipients. Bytes are written by hand (no serde) so that the output is
//! fixed to the byte and the hot `message` encoder allocates nothing;
//! values encoded into many frames (a user id) are escaped once by the
//! caller (`json_str`) and passed as JSON literals.

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xF) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `s` as a JSON string literal, for values encoded into many frames.
pub fn json_str(s: &str) -> Box<str> {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    // push_json_str copies valid UTF-8 and adds ASCII only.
    String::from_utf8(out).unwrap_or_default().into_boxed_str()
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `,"ref":R` when the request carried a ref.
fn push_ref(out: &mut Vec<u8>, reference: Option<&[u8]>) {
    if let Some(raw) = reference {
        out.extend_from_slice(b",\"ref\":");
        out.extend_from_slice(raw);
    }
}

/// `{"type":"ack","ref":R[,"seq":N]}`
pub fn encode_ack(out: &mut Vec<u8>, reference: Option<&[u8]>, seq: Option<u64>) {
    out.extend_from_slice(b"{\"type\":\"ack\"");
    push_ref(out, reference);
    if let Some(seq) = seq {
        out.extend_from_slice(b",\"seq\":");
        push_u64(out, seq);
    }
    out.push(b'}');
}

/// `{"type":"error","ref":R,"code":C,"message":M}`
pub fn encode_error(out: &mut Vec<u8>, reference: Option<&[u8]>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"type\":\"error\"");
    push_ref(out, reference);
    out.extend_from_slice(b",\"code\":");
    push_json_str(out, code);
    out.extend_from_slice(b",\"message\":");
    push_json_str(out, message);
    out.push(b'}');
}

/// `{"type":"pong","ref":R}`
pub fn encode_pong(out: &mut Vec<u8>, reference: Option<&[u8]>) {
    out.extend_from_slice(b"{\"type\":\"pong\"");
    push_ref(out, reference);
    out.push(b'}');
}

/// `{"type":"message","room":ROOM,"from":USER,"seq":N,"data":DATA}`;
/// `from_json` is already a JSON literal, `data` the publisher's bytes.
pub fn encode_message(out: &mut Vec<u8>, room: &str, from_json: &str, seq: u64, data: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"message\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"from\":");
    out.extend_from_slice(from_json.as_bytes());
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, seq);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(&*json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
        let mut out = Vec::new();
        for n in [0, 9, 10, 123456789, u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn encoders_produce_valid_json() {
        let mut out = Vec::new();
        encode_message(&mut out, "demo", "\"al\\\"ice\"", 42, br#"{"t":1}"#);
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(value["from"], "al\"ice");
        assert_eq!(value["seq"], 42);
        out.clear();
        encode_error(&mut out, Some(b"\"r1\""), "rate_limited", "slow \"down\"");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(value["ref"], "r1");
        assert_eq!(value["message"], "slow \"down\"");
    }
}
