//! The JSON wire protocol: client requests in, server frames out.
//!
//! A text frame is decoded in two passes over the same bytes. simd-json
//! validates the whole document and fills a typed `ClientFields` from a copy
//! (simd-json rewrites its input in place). A small scanner then finds the
//! byte spans of `data` and `ref` in the *original* bytes, because DESIGN §2
//! fixes that `data` reaches members byte-for-byte as the publisher sent it
//! and `ref` is echoed as it came. The scanner only ever walks documents that
//! simd-json has already accepted, so it needs no error handling of its own.
//!
//! Encoders write server messages straight into a `FrameBuilder`, once per
//! message, whatever the number of recipients.

use std::ops::Range;

use std::borrow::Cow;

use serde::Deserialize;

use crate::room::{MeetingRequest, Since};

/// The fields roomcast reads from any client request. Unknown fields are
/// ignored so that clients may carry their own.
#[derive(Debug, Deserialize)]
struct ClientFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    room: Option<&'a str>,
    #[serde(borrow)]
    token: Option<&'a str>,
    #[serde(borrow)]
    to: Option<&'a str>,
    // Meeting requests (`chat.*`, `hand.*`, `screenshare.*`, `lobby.*`, `kick`, `signal`).
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    limit: Option<u32>,
    enabled: Option<bool>,
    // `join` with recovery.
    since: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Cow<'a, str>>,
}

/// A decoded client request. Raw spans (`data`, `ref`) borrow the frame's
/// original bytes; strings borrow the decoder's copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Publish {
        room: Option<&'a str>,
        data: &'a [u8],
    },
    Join {
        room: &'a str,
        /// `since` (with `epoch`): recover the messages after it.
        since: Option<Since>,
    },
    Leave {
        room: &'a str,
    },
    Direct {
        to: &'a str,
        data: &'a [u8],
    },
    /// A meeting request for `room` (the home room when absent).
    Meeting {
        room: Option<&'a str>,
        request: MeetingRequest,
    },
    Ping,
    Refresh {
        token: &'a str,
    },
}

/// Why a text frame is not a request; each has a wire `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    BadJson,
    MissingType,
    UnknownType,
    MissingField(&'static str),
}

impl RequestError {
    pub fn code(self) -> &'static str {
        match self {
            RequestError::BadJson => "bad_json",
            RequestError::MissingType | RequestError::MissingField(_) => "bad_request",
            RequestError::UnknownType => "unknown_type",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            RequestError::BadJson => "the frame is not a JSON object",
            RequestError::MissingType => "the request has no string field \"type\"",
            RequestError::UnknownType => "unknown request type",
            RequestError::MissingField("data") => "publish and direct need a \"data\" field",
            RequestError::MissingField("room") => "join and leave need a string \"room\" field",
            RequestError::MissingField("to") => "direct and signal need a string \"to\" field (a user id)",
            RequestError::MissingField("user") => "this request needs a string \"user\" field (a user id)",
            RequestError::MissingField("text") => "chat.send needs a string \"text\" field",
            RequestError::MissingField("id") => "chat.delete needs a string \"id\" field",
            RequestError::MissingField("enabled") => "lobby.set needs a boolean \"enabled\" field",
            RequestError::MissingField("token") => "refresh needs a string \"token\" field",
            RequestError::MissingField(_) => "a required field is missing",
        }
    }
}

/// Per-shard decoding state: the copy simd-json may rewrite and its buffers,
/// reused for every frame so decoding allocates nothing in steady state.
#[derive(Default)]
pub struct RequestDecoder {
    copy: Vec<u8>,
    buffers: simd_json::Buffers,
}

impl std::fmt::Debug for RequestDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestDecoder").field("copy_capacity", &self.copy.capacity()).finish()
    }
}

impl RequestDecoder {
    /// Decodes one text frame. On error, `reference` of the failure is
    /// returned where it could be found, so the error frame can carry it.
    pub fn decode<'a>(&'a mut self, frame: &'a [u8]) -> (Option<&'a [u8]>, Result<Request<'a>, RequestError>) {
        self.copy.clear();
        self.copy.extend_from_slice(frame);
        let fields: ClientFields<'a> =
            match simd_json::serde::from_slice_with_buffers(&mut self.copy, &mut self.buffers) {
                Ok(fields) => fields,
                Err(_) => return (None, Err(RequestError::BadJson)),
            };
        // `data` and `ref` may be JSON null, which serde reads as absent, so
        // presence is the scanner's word, not the typed struct's.
        let spans = scan_top_level(frame);
        let reference = spans.reference.map(|r| &frame[r]);
        let request = match fields.kind {
            None => Err(RequestError::MissingType),
            Some("publish") => match spans.data {
                Some(span) => Ok(Request::Publish { room: fields.room, data: &frame[span] }),
                None => Err(RequestError::MissingField("data")),
            },
            Some("join") => {
                let since = fields.since.map(|seq| Since { seq, epoch: fields.epoch.as_deref().map(Into::into) });
                fields.room.map(|room| Request::Join { room, since }).ok_or(RequestError::MissingField("room"))
            }
            Some("leave") => fields.room.map(|room| Request::Leave { room }).ok_or(RequestError::MissingField("room")),
            Some("direct") => match (fields.to, spans.data) {
                (Some(to), Some(span)) => Ok(Request::Direct { to, data: &frame[span] }),
                (None, _) => Err(RequestError::MissingField("to")),
                (_, None) => Err(RequestError::MissingField("data")),
            },
            Some("ping") => Ok(Request::Ping),
            Some(kind) if is_meeting_type(kind) => meeting_request(kind, &fields, spans.data.map(|span| &frame[span]))
                .map(|request| Request::Meeting { room: fields.room, request }),
            Some("refresh") => {
                fields.token.map(|token| Request::Refresh { token }).ok_or(RequestError::MissingField("token"))
            }
            Some(_) => Err(RequestError::UnknownType),
        };
        (reference, request)
    }
}

fn is_meeting_type(kind: &str) -> bool {
    kind.starts_with("chat.")
        || kind.starts_with("hand.")
        || kind.starts_with("screenshare.")
        || kind.starts_with("lobby.")
        || kind == "kick"
        || kind == "signal"
}

/// The meeting request of type `kind`, with its fields checked.
fn meeting_request(kind: &str, fields: &ClientFields<'_>, data: Option<&[u8]>) -> Result<MeetingRequest, RequestError> {
    let owned = |field: &Option<Cow<'_, str>>| field.as_deref().map(Box::<str>::from);
    let user = || owned(&fields.user).ok_or(RequestError::MissingField("user"));
    Ok(match kind {
        "chat.send" => MeetingRequest::ChatSend {
            text: owned(&fields.text).ok_or(RequestError::MissingField("text"))?,
            id: owned(&fields.id),
        },
        "chat.delete" => MeetingRequest::ChatDelete { id: owned(&fields.id).ok_or(RequestError::MissingField("id"))? },
        "chat.history" => MeetingRequest::ChatHistory { limit: fields.limit },
        "hand.raise" => MeetingRequest::HandRaise,
        "hand.lower" => MeetingRequest::HandLower { user: owned(&fields.user) },
        "screenshare.request" => MeetingRequest::ScreenshareRequest,
        "screenshare.grant" => MeetingRequest::ScreenshareGrant { user: user()? },
        "screenshare.deny" => MeetingRequest::ScreenshareDeny { user: user()? },
        "screenshare.stop" => MeetingRequest::ScreenshareStop { user: owned(&fields.user) },
        "lobby.admit" => MeetingRequest::LobbyAdmit { user: user()? },
        "lobby.deny" => MeetingRequest::LobbyDeny { user: user()? },
        "lobby.set" => {
            MeetingRequest::LobbySet { enabled: fields.enabled.ok_or(RequestError::MissingField("enabled"))? }
        }
        "kick" => MeetingRequest::Kick { user: user()? },
        "signal" => MeetingRequest::Signal {
            to: fields.to.map(Box::<str>::from).ok_or(RequestError::MissingField("to"))?,
            data: data.map(Box::<[u8]>::from).ok_or(RequestError::MissingField("data"))?,
        },
        _ => return Err(RequestError::UnknownType),
    })
}

/// Byte ranges of the top-level `data` and `ref` values.
#[derive(Debug, Default, PartialEq, Eq)]
struct Spans {
    data: Option<Range<usize>>,
    reference: Option<Range<usize>>,
}

/// Finds the top-level `data` and `ref` values of a document simd-json has
/// validated. Keys written with escapes are not matched; such a `data` then
/// reads as missing, which the caller reports as a bad request.
fn scan_top_level(doc: &[u8]) -> Spans {
    let mut spans = Spans::default();
    for_each_top_level(doc, |key, span| match key {
        b"data" => spans.data = Some(span),
        b"ref" => spans.reference = Some(span),
        _ => {}
    });
    spans
}

/// The byte range of the top-level value of `key` in a JSON object that a
/// parser has already accepted; the last one wins, as in serde_json. Keys
/// written with escapes are not matched.
pub fn top_level_span(doc: &[u8], key: &[u8]) -> Option<Range<usize>> {
    let mut found = None;
    for_each_top_level(doc, |this, span| {
        if this == key {
            found = Some(span);
        }
    });
    found
}

/// Calls `visit(raw key, value span)` for each member of the top-level
/// object of a validated document, in order. The scan trusts the document's
/// structure, so it has no error paths.
fn for_each_top_level(doc: &[u8], mut visit: impl FnMut(&[u8], Range<usize>)) {
    let mut pos = skip_ws(doc, 0);
    if doc.get(pos) != Some(&b'{') {
        return;
    }
    pos += 1;
    loop {
        pos = skip_ws(doc, pos);
        if doc.get(pos) != Some(&b'"') {
            return; // '}' of an empty object
        }
        let key_end = skip_string(doc, pos);
        let key = &doc[pos + 1..key_end - 1];
        pos = skip_ws(doc, key_end) + 1; // the ':'
        let value_start = skip_ws(doc, pos);
        let value_end = skip_value(doc, value_start);
        visit(key, value_start..value_end);
        pos = skip_ws(doc, value_end);
        if doc.get(pos) != Some(&b',') {
            return;
        }
        pos += 1;
    }
}

fn skip_ws(doc: &[u8], mut pos: usize) -> usize {
    while matches!(doc.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// `pos` is at an opening quote; returns the index after the closing one.
fn skip_string(doc: &[u8], mut pos: usize) -> usize {
    pos += 1;
    while pos < doc.len() {
        match doc[pos] {
            b'\\' => pos += 2,
            b'"' => return pos + 1,
            _ => pos += 1,
        }
    }
    doc.len()
}

fn skip_value(doc: &[u8], pos: usize) -> usize {
    match doc.get(pos) {
        Some(b'"') => skip_string(doc, pos),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut at = pos;
            while at < doc.len() {
                match doc[at] {
                    b'"' => {
                        at = skip_string(doc, at);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return at + 1;
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
            doc.len()
        }
        _ => {
            let mut at = pos;
            while at < doc.len() && !matches!(doc[at], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                at += 1;
            }
            at
        }
    }
}

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

    fn decode(text: &str) -> (Option<String>, Result<String, RequestError>) {
        let mut decoder = RequestDecoder::default();
        let (reference, request) = decoder.decode(text.as_bytes());
        let reference = reference.map(|r| String::from_utf8_lossy(r).into_owned());
        let request = request.map(|r| match r {
            Request::Publish { room, data } => format!("publish {room:?} {}", String::from_utf8_lossy(data)),
            Request::Ping => "ping".into(),
            Request::Refresh { token } => format!("refresh {token}"),
            Request::Join { room, .. } => format!("join {room}"),
            Request::Leave { room } => format!("leave {room}"),
            Request::Direct { to, data } => format!("direct {to} {}", String::from_utf8_lossy(data)),
            Request::Meeting { room, request } => format!("meeting {room:?} {request:?}"),
        });
        (reference, request)
    }

    #[test]
    fn publish_data_and_ref_are_byte_for_byte() {
        let (reference, request) =
            decode(r#"{ "type" : "publish", "ref": "a\"b", "data" : {"x": [1, "}", {"y":"\\"}], "z" : 1.50 } }"#);
        assert_eq!(reference.as_deref(), Some(r#""a\"b""#));
        assert_eq!(request, Ok(r#"publish None {"x": [1, "}", {"y":"\\"}], "z" : 1.50 }"#.to_string()));
        assert_eq!(
            decode(r#"{"data":12,"type":"publish","room":"r1","ref":7}"#).1,
            Ok("publish Some(\"r1\") 12".into())
        );
        assert_eq!(decode(r#"{"type":"publish","data":"s"}"#).1, Ok("publish None \"s\"".into()));
        assert_eq!(decode(r#"{"type":"publish","data":null}"#).1, Ok("publish None null".into()));
    }

    #[test]
    fn bad_requests_get_their_codes() {
        assert_eq!(decode("not json").1, Err(RequestError::BadJson));
        assert_eq!(decode("[1,2]").1, Err(RequestError::BadJson));
        assert_eq!(decode(r#"{"type":"publish","data":}"#).1, Err(RequestError::BadJson));
        assert_eq!(decode(r#"{"ref":1}"#), (Some("1".into()), Err(RequestError::MissingType)));
        assert_eq!(decode(r#"{"type":"dance","ref":"r"}"#), (Some("\"r\"".into()), Err(RequestError::UnknownType)));
        assert_eq!(decode(r#"{"type":"publish"}"#).1, Err(RequestError::MissingField("data")));
        assert_eq!(decode(r#"{"type":"refresh"}"#).1, Err(RequestError::MissingField("token")));
        assert_eq!(decode(r#"{"type":5}"#).1, Err(RequestError::BadJson));
        assert_eq!(decode(r#"{"type":"join"}"#).1, Err(RequestError::MissingField("room")));
        assert_eq!(decode(r#"{"type":"direct","data":1}"#).1, Err(RequestError::MissingField("to")));
        assert_eq!(decode(r#"{"type":"direct","to":"bob"}"#).1, Err(RequestError::MissingField("data")));
    }

    #[test]
    fn meeting_requests_decode_with_their_fields() {
        assert_eq!(
            decode(r#"{"type":"chat.send","text":"hi \"you\"","id":"c1"}"#).1,
            Ok(r#"meeting None ChatSend { text: "hi \"you\"", id: Some("c1") }"#.into())
        );
        assert_eq!(
            decode(r#"{"type":"lobby.admit","user":"bob","room":"r"}"#).1,
            Ok(r#"meeting Some("r") LobbyAdmit { user: "bob" }"#.into())
        );
        assert_eq!(decode(r#"{"type":"hand.lower"}"#).1, Ok("meeting None HandLower { user: None }".into()));
        assert_eq!(
            decode(r#"{"type":"chat.history","limit":5}"#).1,
            Ok("meeting None ChatHistory { limit: Some(5) }".into())
        );
        assert_eq!(decode(r#"{"type":"lobby.set"}"#).1, Err(RequestError::MissingField("enabled")));
        assert_eq!(decode(r#"{"type":"kick"}"#).1, Err(RequestError::MissingField("user")));
        assert_eq!(decode(r#"{"type":"chat.send"}"#).1, Err(RequestError::MissingField("text")));
        assert_eq!(decode(r#"{"type":"signal","to":"b"}"#).1, Err(RequestError::MissingField("data")));
        assert_eq!(decode(r#"{"type":"chat.dance"}"#).1, Err(RequestError::UnknownType));
        let (_, signal) = decode(r#"{"type":"signal","to":"b","data":{"sdp":"v=0"}}"#);
        assert!(signal.is_ok_and(|s| s.contains("Signal")));
    }

    #[test]
    fn join_leave_and_direct_decode() {
        assert_eq!(decode(r#"{"type":"join","room":"r1","ref":1}"#), (Some("1".into()), Ok("join r1".into())));
        assert_eq!(decode(r#"{"type":"leave","room":"r1"}"#).1, Ok("leave r1".into()));
        assert_eq!(decode(r#"{"type":"direct","to":"bob","data":{"x":[1]}}"#).1, Ok(r#"direct bob {"x":[1]}"#.into()));
    }

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
