//! Tiny hand scanners over frame payloads: no JSON parser per message.
//!
//! The load generator's payload is a JSON string
//! `"rcl1 <intended_ns> <publisher> <seq> xxxx…"` padded to `--size` bytes,
//! so it is valid `data` for roomcast and a plain text message for a raw
//! broadcast server. Receivers find it with [`find_marker`].

use memchr::memmem::{self, Finder};
use std::sync::LazyLock;

/// Searchers built once (building one per call costs more than the search).
static F_MARKER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(MARKER));
static F_TYPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\""));
static F_SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(SEQ_KEY));

const SEQ_KEY: &[u8] = b"\"seq\":";
/// What follows the `seq` number in a roomcast `message` carrying a load
/// payload: `,"data":"rcl1 `.
const AFTER_SEQ: &[u8] = b",\"data\":\"rcl1 ";

/// The bytes that start every load payload (after the opening quote).
pub const MARKER: &[u8] = b"rcl1 ";

/// Fields carried in a load payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Intended send time, ns on the shared monotonic clock.
    pub intended_ns: u64,
    /// Global publisher id.
    pub publisher: u64,
    /// The tool's own per-room sequence (used by `--proto raw`).
    pub seq: u64,
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends the payload JSON string for `m`, padded with `x` so that the
/// string (quotes included) is at least `size` bytes.
pub fn push_payload(out: &mut Vec<u8>, m: Marker, size: usize) {
    let start = out.len();
    out.push(b'"');
    out.extend_from_slice(MARKER);
    push_u64(out, m.intended_ns);
    out.push(b' ');
    push_u64(out, m.publisher);
    out.push(b' ');
    push_u64(out, m.seq);
    out.push(b' ');
    let used = out.len() - start + 1;
    if size > used {
        out.resize(out.len() + (size - used), b'x');
    }
    out.push(b'"');
}

/// The value of 8 ASCII digits loaded little-endian (byte 0 is the most
/// significant digit). SWAR: three multiplies instead of eight dependent
/// steps; the receive path parses ~20 digits per delivery.
#[inline]
fn eight_digits(chunk: u64) -> u64 {
    let mut v = chunk.wrapping_sub(0x3030_3030_3030_3030);
    // Pairs, then quads, then all 8.
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    v = v.wrapping_mul(10_000) + (v >> 32);
    v & 0xFFFF_FFFF
}

/// Parses an unsigned decimal at the start of `s` (after optional spaces);
/// returns the value and the bytes consumed (`None` for no digits or a
/// value over `u64::MAX`).
#[inline]
pub fn parse_u64(s: &[u8]) -> Option<(u64, usize)> {
    let mut i = 0;
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let start = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    let digits = &s[start..i];
    if digits.is_empty() {
        return None;
    }
    if digits.len() > 19 {
        // Might not fit: the careful way.
        let mut v: u64 = 0;
        for &d in digits {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        return Some((v, i));
    }
    // At most 19 digits: below 10^19 < u64::MAX, no overflow possible.
    let mut v: u64 = 0;
    let mut chunks = digits.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        v = v * 100_000_000 + eight_digits(u64::from_le_bytes(b));
    }
    for &d in chunks.remainder() {
        v = v * 10 + u64::from(d - b'0');
    }
    Some((v, i))
}

/// Skips the digits at the start of `s` (after optional spaces): the bytes
/// consumed, `None` if there are none.
#[inline]
fn skip_u64(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let start = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    (i > start).then_some(i)
}

/// Finds the load marker anywhere in `hay` and parses its three numbers.
pub fn find_marker(hay: &[u8]) -> Option<Marker> {
    let at = F_MARKER.find(hay)? + MARKER.len();
    marker_at(hay, at)
}

/// The three numbers after a marker that ends at `at`.
fn marker_at(hay: &[u8], at: usize) -> Option<Marker> {
    let (intended_ns, a) = parse_u64(&hay[at..])?;
    let (publisher, b) = parse_u64(&hay[at + a..])?;
    let (seq, _) = parse_u64(&hay[at + a + b..])?;
    Some(Marker { intended_ns, publisher, seq })
}

/// A roomcast `message` carrying a load payload: the server's `seq` and the
/// marker (on the usual field order only its `intended_ns`: `publisher`
/// and `seq` are then 0). The receive hot path: one searcher pass for `"seq":`, and the
/// payload is normally right after the number (`,"data":"rcl1 …`), so the
/// marker costs a prefix compare instead of a second search.
pub fn find_delivery(hay: &[u8]) -> Option<(u64, Marker)> {
    let at = F_SEQ.find(hay)? + SEQ_KEY.len();
    let (seq, n) = parse_u64(&hay[at..])?;
    let rest = at + n;
    let m = if hay[rest..].starts_with(AFTER_SEQ) {
        // The hot path needs the intended time only: the publisher and
        // the tool's own seq are skipped, not parsed.
        let at = rest + AFTER_SEQ.len();
        let (intended_ns, a) = parse_u64(&hay[at..])?;
        let b = skip_u64(&hay[at + a..])?;
        skip_u64(&hay[at + a + b..])?;
        Marker { intended_ns, publisher: 0, seq: 0 }
    } else {
        // Another field order: search from the number on, then anywhere.
        match F_MARKER.find(&hay[rest..]) {
            Some(i) => marker_at(hay, rest + i + MARKER.len())?,
            None => find_marker(hay)?,
        }
    };
    Some((seq, m))
}

/// Value of the first `"key":<unsigned>` in `hay` (`key` given with its
/// quotes and colon, e.g. `b"\"seq\":"`). Whitespace after the colon is
/// allowed.
pub fn find_u64_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    // Keys are short and near the start of roomcast frames: a plain scan
    // beats building a searcher.
    let first = *key.first()?;
    let mut from = 0;
    let at = loop {
        let i = from + memchr::memchr(first, &hay[from..])?;
        if hay[i..].starts_with(key) {
            break i + key.len();
        }
        from = i + 1;
    };
    parse_u64(&hay[at..]).map(|(v, _)| v)
}

/// The string value of the first `"key":"…"` in `hay` (`key` given with
/// its quotes and colon), as raw bytes between the quotes (no unescaping).
pub fn find_str_after<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memmem::find(hay, key)? + key.len();
    let rest = &hay[at..];
    let i = rest.iter().position(|&b| b != b' ')?;
    if rest[i] != b'"' {
        return None;
    }
    let s = &rest[i + 1..];
    Some(&s[..memchr::memchr(b'"', s)?])
}

/// The value of `"type"` in a JSON object, as raw bytes between the quotes.
pub fn find_type(hay: &[u8]) -> Option<&[u8]> {
    let at = F_TYPE.find(hay)? + 6;
    let rest = &hay[at..];
    let mut i = 0;
    while i < rest.len() && (rest[i] == b' ' || rest[i] == b':') {
        i += 1;
    }
    if rest.get(i) != Some(&b'"') {
        return None;
    }
    let s = &rest[i + 1..];
    let end = memchr::memchr(b'"', s)?;
    Some(&s[..end])
}

/// Length of the JSON value at the start of `s` (after leading whitespace
/// is skipped by the caller): strings with escapes, nested objects/arrays,
/// numbers and literals. `None` if it does not end inside `s`.
pub fn json_value_len(s: &[u8]) -> Option<usize> {
    let first = *s.first()?;
    match first {
        b'"' => {
            let mut i = 1;
            while i < s.len() {
                match s[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = 0;
            while i < s.len() {
                match s[i] {
                    b'"' => {
                        i += json_value_len(&s[i..])?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut i = 0;
            while i < s.len() && !matches!(s[i], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                i += 1;
            }
            if i == 0 { None } else { Some(i) }
        }
    }
}

/// The raw JSON value of top-level-looking key `key` (with quotes and colon
/// omitted: pass `b"\"data\""`). Only for trusted, compact input (the sink's
/// clients are this tool); good enough to echo `ref` and forward `data`.
pub fn find_value<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memmem::find(hay, key)? + key.len();
    let rest = &hay[at..];
    let mut i = 0;
    while i < rest.len() && matches!(rest[i], b' ' | b':') {
        i += 1;
    }
    let n = json_value_len(&rest[i..])?;
    Some(&rest[i..i + n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_values() {
        let e = br#"{"type":"error","ref":1,"code":"forbidden","message":"no"}"#;
        assert_eq!(find_str_after(e, br#""code":"#), Some(&b"forbidden"[..]));
        assert_eq!(find_str_after(br#"{"code": "x"}"#, br#""code":"#), Some(&b"x"[..]));
        assert_eq!(find_str_after(br#"{"code":5}"#, br#""code":"#), None);
        assert_eq!(find_str_after(br#"{"code":"open"#, br#""code":"#), None);
        assert_eq!(find_str_after(b"{}", br#""code":"#), None);
    }

    #[test]
    fn payload_roundtrip_and_padding() {
        let m = Marker { intended_ns: 123_456_789_012, publisher: 7, seq: 42 };
        for size in [0usize, 10, 64, 100, 1000] {
            let mut out = b"junk".to_vec();
            push_payload(&mut out, m, size);
            let p = &out[4..];
            assert!(p.len() >= size);
            if size > 40 {
                assert_eq!(p.len(), size);
            }
            assert_eq!(p[0], b'"');
            assert_eq!(*p.last().unwrap(), b'"');
            assert_eq!(find_marker(&out), Some(m));
            // It is one valid JSON string.
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            assert!(v.is_string());
        }
    }

    #[test]
    fn marker_inside_a_roomcast_message() {
        let frame = br#"{"type":"message","room":"r-1","from":"u9","seq":1234,"data":"rcl1 99 3 5 xxxx"}"#;
        assert_eq!(find_u64_after(frame, b"\"seq\":"), Some(1234));
        assert_eq!(find_marker(frame), Some(Marker { intended_ns: 99, publisher: 3, seq: 5 }));
        assert_eq!(find_type(frame), Some(&b"message"[..]));
    }

    #[test]
    fn numbers_of_every_length() {
        for v in [0u64, 7, 42, 12_345_678, 123_456_789, 1_764_629_000_123_456, 9_999_999_999_999_999, u64::MAX] {
            for tail in ["", " ", "x", ":"] {
                let text = format!("{v}{tail}");
                assert_eq!(parse_u64(text.as_bytes()), Some((v, v.to_string().len())), "{text:?}");
            }
            let padded = format!("  {v} 1");
            assert_eq!(parse_u64(padded.as_bytes()), Some((v, v.to_string().len() + 2)));
        }
        assert_eq!(parse_u64(b"18446744073709551616"), None); // u64::MAX + 1
        assert_eq!(parse_u64(b"1234567/9"), Some((1_234_567, 7)));
        assert_eq!(parse_u64(b"12345678:"), Some((12_345_678, 8)));
        assert_eq!(parse_u64(b"x1"), None);
        for bad in 0u8..=255 {
            let mut b = *b"11111111";
            b[3] = bad;
            let want = if bad.is_ascii_digit() { 8 } else { 3 };
            assert_eq!(parse_u64(&b).map(|x| x.1), Some(want), "{bad}");
        }
    }

    #[test]
    fn delivery_fast_path_and_other_field_orders() {
        let m = Marker { intended_ns: 99, publisher: 3, seq: 5 };
        let frame = br#"{"type":"message","room":"r-1","from":"u9","seq":1234,"data":"rcl1 99 3 5 xxxx"}"#;
        let fast = Marker { intended_ns: 99, publisher: 0, seq: 0 };
        assert_eq!(find_delivery(frame), Some((1234, fast)));
        let other = br#"{"type":"message","data":"rcl1 99 3 5 xx","seq": 77,"room":"r"}"#;
        assert_eq!(find_delivery(other), Some((77, m)));
        let spaced = br#"{"type":"message","seq":8, "data":"rcl1 99 3 5 xx"}"#;
        assert_eq!(find_delivery(spaced), Some((8, m)));
        assert_eq!(find_delivery(br#"{"type":"ack","ref":1,"seq":9}"#), None);
        assert_eq!(find_delivery(br#"{"type":"message","data":"rcl1 99 3 5"}"#), None);
        assert_eq!(find_delivery(br#"{"seq":1,"data":"rcl1 99 3"}"#), None);
    }

    #[test]
    fn scanner_tolerates_spaces_and_missing_fields() {
        assert_eq!(find_u64_after(br#"{"seq": 17}"#, b"\"seq\":"), Some(17));
        assert_eq!(find_u64_after(br#"{"seq":"x"}"#, b"\"seq\":"), None);
        assert_eq!(find_u64_after(br#"{"other":1}"#, b"\"seq\":"), None);
        assert_eq!(find_marker(b"\"rcl1 12 3\""), None);
        assert_eq!(find_marker(b"rcl1 "), None);
        assert_eq!(find_type(br#"{"type" : "pong"}"#), Some(&b"pong"[..]));
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
    }

    #[test]
    fn json_values_for_the_sink() {
        let msg = br#"{"type":"publish","ref":"a\"b","data":{"x":[1,{"y":"}"}],"z":null}}"#;
        assert_eq!(find_value(msg, b"\"ref\""), Some(&br#""a\"b""#[..]));
        assert_eq!(find_value(msg, b"\"data\""), Some(&br#"{"x":[1,{"y":"}"}],"z":null}"#[..]));
        assert_eq!(find_value(br#"{"ref":17}"#, b"\"ref\""), Some(&b"17"[..]));
        assert_eq!(find_value(br#"{"ref":"#, b"\"ref\""), None);
        assert_eq!(find_value(br#"{"data":"unterminated}"#, b"\"data\""), None);
    }
}
