//! Client requests in. A text frame is decoded in two passes over the same
//! bytes. simd-json validates the whole document and fills a typed
//! `ClientFields` from a copy (simd-json rewrites its input in place). A
//! small scanner then finds the byte spans of `data` and `ref` in the
//! *original* bytes, because DESIGN §2 fixes that `data` reaches members
//! byte-for-byte as the publisher sent it and `ref` is echoed as it came.
//! The scanner only ever walks documents that a parser has already
//! accepted, so it needs no error handling of its own.
//!
//! A frame simd-json refuses takes a slower path (`diagnose`), never taken
//! by a good frame: a lenient parse that does not decode strings tells
//! whether it is a JSON object at all; if so its `ref` is echoed and the
//! error names the field that is not of its type.

use std::ops::Range;

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{MeetingRequest, Request, Since};
use crate::refusal::RequestError;

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
    /// returned whenever the frame is a JSON object, so the error frame can
    /// carry it.
    pub fn decode<'a>(&'a mut self, frame: &'a [u8]) -> (Option<&'a [u8]>, Result<Request<'a>, RequestError>) {
        self.copy.clear();
        self.copy.extend_from_slice(frame);
        let fields: ClientFields<'a> =
            match simd_json::serde::from_slice_with_buffers(&mut self.copy, &mut self.buffers) {
                Ok(fields) => fields,
                Err(_) => {
                    let (reference, error) = diagnose(frame);
                    return (reference.map(|span| &frame[span]), Err(error));
                }
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
            Some("echo") => match spans.data {
                Some(span) => Ok(Request::Echo { data: &frame[span] }),
                None => Err(RequestError::MissingField("data")),
            },
            Some("status") => Ok(Request::Status),
            Some(kind) if is_meeting_type(kind) => meeting_request(kind, &fields, spans.data.map(|span| &frame[span]))
                .map(|request| Request::Meeting { room: fields.room, request }),
            Some("refresh") => {
                fields.token.map(|token| Request::Refresh { token }).ok_or(RequestError::MissingField("token"))
            }
            // Left to the shard: a handler may be registered for it. The
            // known types above never reach this arm, so they pay nothing.
            Some(kind) => Ok(Request::Custom { kind, room: fields.room, data: spans.data.map(|span| &frame[span]) }),
        };
        (reference, request)
    }
}

/// What a field roomcast reads must hold (`null` always reads as absent).
#[derive(Debug, Clone, Copy)]
enum FieldKind {
    Str,
    U32,
    U64,
    Bool,
}

/// A field of `ClientFields` with the messages that name it.
struct FieldRule {
    name: &'static str,
    kind: FieldKind,
    wrong_type: &'static str,
    /// For strings: an escape that is not valid Unicode (a lone surrogate).
    bad_string: &'static str,
    twice: &'static str,
}

macro_rules! field_rule {
    ($name:literal, Str) => {
        field_rule!($name, Str, "must be a string")
    };
    ($name:literal, $kind:ident, $must:literal) => {
        FieldRule {
            name: $name,
            kind: FieldKind::$kind,
            wrong_type: concat!("field \"", $name, "\" ", $must),
            bad_string: concat!(
                "field \"",
                $name,
                "\" must be a string of valid Unicode (it holds a lone surrogate escape)"
            ),
            twice: concat!("field \"", $name, "\" appears more than once"),
        }
    };
}

/// Every field `ClientFields` reads, as typed there.
const FIELD_RULES: [FieldRule; 11] = [
    field_rule!("type", Str),
    field_rule!("room", Str),
    field_rule!("token", Str),
    field_rule!("to", Str),
    field_rule!("text", Str),
    field_rule!("id", Str),
    field_rule!("user", Str),
    field_rule!("epoch", Str),
    field_rule!("limit", U32, "must be an integer from 0 to 4294967295"),
    field_rule!("since", U64, "must be an integer from 0 to 18446744073709551615"),
    field_rule!("enabled", Bool, "must be true or false"),
];

impl FieldRule {
    /// Whether `raw`, a JSON value a parser accepted, reads as this field.
    fn check(&self, raw: &[u8]) -> Result<(), RequestError> {
        if raw == b"null" {
            return Ok(());
        }
        let fits = match self.kind {
            FieldKind::Str if raw.first() != Some(&b'"') => false,
            FieldKind::Str => {
                return serde_json::from_slice::<Cow<'_, str>>(raw)
                    .map(drop)
                    .map_err(|_| RequestError::BadField(self.bad_string));
            }
            FieldKind::U32 => serde_json::from_slice::<u32>(raw).is_ok(),
            FieldKind::U64 => serde_json::from_slice::<u64>(raw).is_ok(),
            FieldKind::Bool => raw == b"true" || raw == b"false",
        };
        if fits { Ok(()) } else { Err(RequestError::BadField(self.wrong_type)) }
    }
}

/// Why simd-json refused `frame`, and the span of its `ref`; only errors
/// come here. serde_json, skipping every value without decoding strings,
/// says whether the frame is a JSON object at all (`BadJson` if not); then
/// the first field read by `ClientFields` that is not of its type, or that
/// appears twice, is named. A JSON object failing for another reason (a
/// lone surrogate in `data`, say) is `Unreadable`. Keys are matched as
/// written, as for `ref` and `data`.
fn diagnose(frame: &[u8]) -> (Option<Range<usize>>, RequestError) {
    if frame.get(skip_ws(frame, 0)) != Some(&b'{') || serde_json::from_slice::<IgnoredAny>(frame).is_err() {
        return (None, RequestError::BadJson);
    }
    let mut reference = None;
    let mut error = None;
    let mut seen = [false; FIELD_RULES.len()];
    for_each_top_level(frame, |key, span| {
        if key == b"ref" {
            reference = Some(span.clone());
        }
        let Some(at) = FIELD_RULES.iter().position(|rule| rule.name.as_bytes() == key) else { return };
        let rule = &FIELD_RULES[at];
        let verdict = if seen[at] { Err(RequestError::BadField(rule.twice)) } else { rule.check(&frame[span]) };
        seen[at] = true;
        if error.is_none() {
            error = verdict.err();
        }
    });
    (reference, error.unwrap_or(RequestError::Unreadable))
}

/// Whether `kind` is a request type roomcast reads itself, or one of its
/// meeting prefixes: such a type cannot be given to a custom handler.
pub fn is_builtin_type(kind: &str) -> bool {
    matches!(kind, "publish" | "join" | "leave" | "direct" | "ping" | "refresh" | "echo" | "status")
        || is_meeting_type(kind)
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
            Request::Echo { data } => format!("echo {}", String::from_utf8_lossy(data)),
            Request::Status => "status".into(),
            Request::Custom { kind, room, data } => {
                format!("custom {kind} {room:?} {:?}", data.map(|d| String::from_utf8_lossy(d).into_owned()))
            }
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
        assert_eq!(
            decode(r#"{"type":"dance","ref":"r"}"#),
            (Some("\"r\"".into()), Ok("custom dance None None".into()))
        );
        assert_eq!(decode(r#"{"type":"publish"}"#).1, Err(RequestError::MissingField("data")));
        assert_eq!(decode(r#"{"type":"echo"}"#).1, Err(RequestError::MissingField("data")));
        assert_eq!(decode(r#"{"type":"refresh"}"#).1, Err(RequestError::MissingField("token")));
        assert_eq!(decode(r#"{"type":5}"#).1, Err(RequestError::BadField("field \"type\" must be a string")));
        assert_eq!(decode(r#"{"type":"join"}"#).1, Err(RequestError::MissingField("room")));
        assert_eq!(decode(r#"{"type":"direct","data":1}"#).1, Err(RequestError::MissingField("to")));
        assert_eq!(decode(r#"{"type":"direct","to":"bob"}"#).1, Err(RequestError::MissingField("data")));
    }

    #[test]
    fn a_json_object_with_a_wrongly_typed_field_keeps_its_ref_and_names_the_field() {
        let cases = [
            (r#"{"type":"chat.send","text":5,"ref":"r1"}"#, r#""r1""#, r#"field "text" must be a string"#),
            (
                r#"{"type":"chat.history","limit":-1,"ref":2}"#,
                "2",
                r#"field "limit" must be an integer from 0 to 4294967295"#,
            ),
            (
                r#"{"ref":{"n": [1]},"type":"chat.send","text":"\ud800"}"#,
                r#"{"n": [1]}"#,
                r#"field "text" must be a string of valid Unicode (it holds a lone surrogate escape)"#,
            ),
            (r#"{"type":"lobby.set","enabled":"yes","ref":3}"#, "3", r#"field "enabled" must be true or false"#),
            (
                r#"{"type":"join","room":"r","since":1.5,"ref":4}"#,
                "4",
                r#"field "since" must be an integer from 0 to 18446744073709551615"#,
            ),
            (r#"{"type":"direct","to":["bob"],"data":1,"ref":5}"#, "5", r#"field "to" must be a string"#),
            (r#"{"type":"refresh","token":{},"ref":6}"#, "6", r#"field "token" must be a string"#),
            (r#"{"type":"kick","user":"a","user":"b","ref":7}"#, "7", r#"field "user" appears more than once"#),
            (r#"{"type":"join","room":4294967296,"ref":8}"#, "8", r#"field "room" must be a string"#),
        ];
        for (frame, reference, message) in cases {
            let (got_ref, got) = decode(frame);
            assert_eq!(got_ref.as_deref(), Some(reference), "{frame}");
            let error = got.expect_err(frame);
            assert_eq!((error.code(), error.message()), ("bad_request", message), "{frame}");
        }
        // A lone surrogate where roomcast reads no field: still an object, still its ref.
        let (reference, error) = decode(r#"{"type":"publish","data":"\udc00","ref":9}"#);
        assert_eq!((reference.as_deref(), error), (Some("9"), Err(RequestError::Unreadable)));
        assert_eq!(RequestError::Unreadable.code(), "bad_request");
        // Not an object, or not JSON: no ref to be had.
        for frame in [r#"[{"ref":1}]"#, r#"{"ref":1,"type":"ping""#, r#""ref""#, r#"{"ref":1} x"#] {
            assert_eq!(decode(frame), (None, Err(RequestError::BadJson)), "{frame}");
        }
        // Escapes in borrowed strings still decode on the fast path.
        assert_eq!(decode(r#"{"type":"join","room":"a\u0062"}"#).1, Ok("join ab".into()));
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
}
