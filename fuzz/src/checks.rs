//! The properties roomcast's fuzz targets check, one function per target.
//!
//! Each function takes the fuzzer's raw bytes, drives the library the way the
//! server does (the shard's frame decoder, the acceptor's head parser and token
//! lookup, the shard's request decoder) and panics when a property fails. The
//! same file is compiled into the `cargo fuzz` targets (through `fuzz/src/lib.rs`)
//! and into the stable test `tests/fuzz_corpus.rs` (through `#[path]`), so the
//! committed corpus is replayed by every `cargo test` through exactly this code.
//! Only `roomcast`, `serde` and `serde_json` may be used here: both crates have them.
//!
//! Unbounded allocation is not checked here: libFuzzer's `-malloc_limit_mb` and
//! `-rss_limit_mb` flags do that (fuzz/README.md).

use std::borrow::Cow;
use std::sync::OnceLock;

use roomcast::__private::fuzz::http::{self, RequestHead};
use roomcast::__private::fuzz::protocol::{self, MeetingRequest, Request, RequestDecoder};
use roomcast::__private::fuzz::ws::CloseCode;
use roomcast::__private::fuzz::ws::frame::{self, Event, Flow, Fragments, FrameError, Opcode};
use roomcast::__private::fuzz::{auth, http_api};
use roomcast::config::{Config, Sources};

// ---------------------------------------------------------------------------
// frame_decode: the shard's incremental WebSocket frame decoder
// ---------------------------------------------------------------------------

/// Largest client frame header: 2 bytes, 8 of extended length, 4 of mask.
const FRAME_HEADER_MAX: usize = 14;
/// Largest control frame payload (RFC 6455 §5.5); it does not count against the cap.
const CONTROL_PAYLOAD_MAX: usize = 125;
/// Most read sizes an input may script; they are used in turn, cyclically.
const SPLITS_MAX: usize = 16;

/// What the decoder handed out, owned, so two runs can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Message(Opcode, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
}

impl Seen {
    /// Records `event`, checking what the decoder promises about it.
    fn check(event: Event<'_>, cap: usize) -> Seen {
        match event {
            Event::Message { opcode, payload } => {
                assert!(payload.len() <= cap, "message of {} bytes passed the cap {cap}", payload.len());
                assert!(matches!(opcode, Opcode::Text | Opcode::Binary), "message with opcode {opcode:?}");
                if opcode == Opcode::Text {
                    assert!(std::str::from_utf8(payload).is_ok(), "text message that is not UTF-8");
                }
                Seen::Message(opcode, payload.to_vec())
            }
            Event::Ping(payload) => {
                assert!(payload.len() <= CONTROL_PAYLOAD_MAX, "ping of {} bytes", payload.len());
                Seen::Ping(payload.to_vec())
            }
            Event::Pong => Seen::Pong,
            Event::Close { code, reason } => {
                if let Some(code) = code {
                    assert!(CloseCode::is_valid_received(code), "close code {code} passed");
                }
                assert!(reason.len() + 2 <= CONTROL_PAYLOAD_MAX, "close reason of {} bytes", reason.len());
                Seen::Close(code, reason.to_string())
            }
        }
    }
}

/// Input: two bytes choosing the message cap, one byte `n`, then `n % 16`
/// read sizes (each byte + 1), then the client's byte stream. The stream is
/// fed to `frame::decode` in reads of those sizes, keeping the undecoded rest
/// and the fragments in flight between reads as the shard does. Checks:
/// no panic; after every read the kept bytes are one incomplete frame whose
/// header fits the cap (so they stay under cap + one header for data, 125 +
/// one header for a control frame) and gathered fragments stay within the
/// cap; messages are within the cap and text is UTF-8; and the
/// events and the final error are exactly those of decoding the whole stream
/// at once, whatever the split points.
pub fn frame_decode(data: &[u8]) {
    let Some((&[cap_low, cap_high, split_count], rest)) = data.split_first_chunk::<3>() else { return };
    let cap = match cap_high >> 6 {
        // Small caps, so fragments and headers run into them often.
        0 | 1 => usize::from(u16::from_le_bytes([cap_low, cap_high & 0x03])),
        // limits.message_inbound_bytes_max's default.
        2 => 32 * 1024,
        // The largest cap a config can hold (TOML integers are i64).
        _ => i64::MAX as usize,
    };
    let split_count = usize::from(split_count) % SPLITS_MAX;
    let Some((splits, stream)) = rest.split_at_checked(split_count) else { return };

    let mut whole = stream.to_vec();
    let mut whole_fragments = None;
    let mut expected = Vec::new();
    let whole_result = frame::decode(&mut whole, &mut whole_fragments, cap, &mut |event| {
        expected.push(Seen::check(event, cap));
        Flow::Continue
    });

    let mut pending: Vec<u8> = Vec::new();
    let mut fragments: Option<Box<Fragments>> = None;
    let mut seen = Vec::new();
    let mut error: Option<FrameError> = None;
    let mut offset = 0;
    for read in 0.. {
        if offset >= stream.len() {
            break;
        }
        let size = splits.get(read % splits.len().max(1)).map_or(stream.len(), |s| usize::from(*s) + 1);
        let end = stream.len().min(offset + size);
        pending.extend_from_slice(&stream[offset..end]);
        offset = end;
        let result = frame::decode(&mut pending, &mut fragments, cap, &mut |event| {
            seen.push(Seen::check(event, cap));
            Flow::Continue
        });
        match result {
            Ok(consumed) => {
                assert!(consumed <= pending.len(), "consumed {consumed} of {} bytes", pending.len());
                pending.drain(..consumed);
                check_kept(&pending, fragments.as_deref(), cap);
            }
            Err(e) => {
                // The shard closes the connection: nothing more is decoded.
                error = Some(e);
                break;
            }
        }
    }

    assert_eq!(seen, expected, "events depend on where reads split the stream");
    assert_eq!(error, whole_result.err(), "the error depends on where reads split the stream");
    if let Ok(consumed) = whole_result {
        assert_eq!(pending.len(), stream.len() - consumed, "kept bytes depend on where reads split the stream");
        assert_eq!(fragments.is_some(), whole_fragments.is_some());
    }
}

/// The bytes a connection keeps between reads stay within the cap: gathered
/// fragments never pass it, and the kept bytes are one incomplete frame whose
/// header the decoder has already checked against it, so they can only grow
/// to one header plus what the cap still allows (125 for a control frame).
fn check_kept(pending: &[u8], fragments: Option<&Fragments>, cap: usize) {
    let gathered = fragments.map_or(0, Fragments::gathered_len);
    assert!(gathered <= cap, "{gathered} bytes of fragments kept with a cap of {cap}");
    match frame::parse_client_head(pending) {
        Ok(None) => assert!(pending.len() < FRAME_HEADER_MAX, "{} bytes kept without a whole header", pending.len()),
        Ok(Some(head)) => {
            let control = matches!(head.opcode, Opcode::Close | Opcode::Ping | Opcode::Pong);
            let allowed = if control { CONTROL_PAYLOAD_MAX } else { cap - gathered };
            assert!(
                head.payload_len <= allowed as u64,
                "kept a frame declaring {} bytes when {allowed} are allowed",
                head.payload_len
            );
            assert!(
                (pending.len() as u64) < head.header_len as u64 + head.payload_len,
                "kept a whole frame of {} bytes undecoded",
                pending.len()
            );
        }
        Err(e) => panic!("kept {} bytes the decoder should have refused: {e:?}", pending.len()),
    }
}

// ---------------------------------------------------------------------------
// http_head: the acceptor's request-head parser and token lookup
// ---------------------------------------------------------------------------

/// The admin key of the config `http_head` checks `authorize` against.
pub const FUZZ_ADMIN_KEY: &str = "fuzz-admin-key-0123456789";
/// The one tenant's API key in that config.
pub const FUZZ_TENANT_KEY: &str = "fuzz-tenant-key-0123456789";

/// Input: bytes read from a client before its request head is complete.
/// The head is parsed as the acceptor does, then everything the acceptor reads
/// from it is taken: upgrade check, query parameters, the token (query, Bearer,
/// cookie), the API route, its key check and the body length. Independently,
/// the input as text is split at `\n` into query, Authorization and Cookie
/// values for the token lookup, and is percent-decoded whole. Checks: no
/// panic; the head length is within the input; decoded values are at most
/// 3 bytes per input byte (U+FFFD for a bad byte); `auth::extract_token` and
/// `RequestHead::query_param` decode a `token` query parameter alike; an
/// accepted admin key is the configured one; a body length is within its cap.
pub fn http_head(data: &[u8]) {
    if let Ok(Some((head, len))) = http::parse_head(data) {
        assert!(len <= data.len(), "head of {len} bytes in {} bytes", data.len());
        request_head(&head);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut parts = text.splitn(3, '\n');
        token_lookup(parts.next(), parts.next(), parts.next());
        let decoded = http::percent_decode(text);
        assert!(decoded.len() <= 3 * text.len(), "{} bytes decoded from {}", decoded.len(), text.len());
    }
}

fn request_head(head: &RequestHead) {
    let _ = head.wants_websocket();
    for name in ["user", "since", "epoch", "tenant", "limit", "room"] {
        if let (Some(value), Some(query)) = (head.query_param(name), &head.query) {
            assert!(value.len() <= 3 * query.len(), "query parameter longer than its query");
        }
    }
    token_lookup(head.query.as_deref(), head.authorization.as_deref(), head.cookie.as_deref());
    let Ok(endpoint) = http_api::route(&head.method, &head.path) else { return };
    let access = endpoint.access();
    if http_api::authorize(fuzz_config(), access, head).is_ok() && access != http_api::Access::Public {
        let authorization = head.authorization.as_deref().unwrap_or_default();
        assert!(
            authorization.contains(FUZZ_ADMIN_KEY) || authorization.contains(FUZZ_TENANT_KEY),
            "{access:?} granted to Authorization {authorization:?}"
        );
    }
    let cap = 1 << 16;
    if let Ok(len) = http_api::body_length(head, cap) {
        assert!(len <= cap, "body length {len} over its cap");
    }
}

/// Looks the token up as the acceptor does and checks it against the query
/// parameter reader.
fn token_lookup(query: Option<&str>, authorization: Option<&str>, cookie: Option<&str>) {
    let token = auth::extract_token(query, authorization, cookie);
    let given = [query, authorization, cookie].iter().map(|v| v.map_or(0, str::len)).sum::<usize>();
    if let Some(token) = &token {
        assert!(!token.is_empty(), "an empty token counts as none");
        assert!(token.len() <= 3 * given, "token of {} bytes from {given} bytes of headers", token.len());
    }
    // The query alone: both readers must agree on `token` (a leading `?` is
    // skipped only by `extract_token`, so such queries are not compared).
    if let Some(query) = query.filter(|q| !q.starts_with('?')) {
        let from_auth = auth::extract_token(Some(query), None, None).map(Cow::into_owned);
        let head = RequestHead { query: Some(query.to_string()), ..RequestHead::default() };
        let from_head = head.query_param("token").filter(|t| !t.is_empty());
        assert_eq!(from_auth, from_head, "the two query readers disagree on {query:?}");
    }
}

/// A config with an admin key and one tenant, loaded once.
fn fuzz_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let env = vec![
            ("ROOMCAST_ADMIN_KEY".to_string(), FUZZ_ADMIN_KEY.to_string()),
            ("ROOMCAST_TENANTS".to_string(), format!("acme:{FUZZ_TENANT_KEY}")),
        ];
        match Config::load(Sources { env, ..Sources::default() }) {
            Ok(config) => config,
            Err(e) => panic!("the fuzz config does not load: {e}"),
        }
    })
}

// ---------------------------------------------------------------------------
// client_frame: the shard's JSON request decoder
// ---------------------------------------------------------------------------

/// Input: the payload of one text frame. Like the shard, only UTF-8 payloads
/// are decoded (the frame decoder refuses others). The frame is decoded twice
/// with one `RequestDecoder`, as the shard reuses its decoder, and the answer
/// the shard would send (ack, pong or error, carrying `ref`) is encoded.
/// Checks: no panic; both decodes agree; `ref` and `data` are spans of the
/// frame holding one JSON value each; the answer is one JSON value.
pub fn client_frame(data: &[u8]) {
    if std::str::from_utf8(data).is_err() {
        return;
    }
    let mut decoder = RequestDecoder::default();
    let first = decode_and_answer(&mut decoder, data);
    let again = decode_and_answer(&mut decoder, data);
    assert_eq!(first, again, "a reused decoder decodes the same frame differently");
}

/// Decodes `frame`, checks the result, and describes it for comparison.
fn decode_and_answer(decoder: &mut RequestDecoder, frame: &[u8]) -> String {
    let (reference, request) = decoder.decode(frame);
    if let Some(reference) = reference {
        assert_json_span_of(reference, frame, "ref");
    }
    let mut answer = Vec::new();
    match &request {
        Ok(Request::Publish { data, .. } | Request::Direct { data, .. }) => {
            assert_json_span_of(data, frame, "data");
            protocol::encode_ack(&mut answer, reference, Some(u64::MAX));
        }
        Ok(Request::Meeting { request: MeetingRequest::Signal { data, .. }, .. }) => {
            // A copy of the frame's `data` span, relayed as written.
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(), "signal data is not one JSON value");
            protocol::encode_ack(&mut answer, reference, None);
        }
        Ok(Request::Ping) => protocol::encode_pong(&mut answer, reference),
        Ok(_) => protocol::encode_ack(&mut answer, reference, None),
        Err(error) => {
            assert!(!error.code().is_empty() && !error.message().is_empty(), "{error:?} has no code or message");
            protocol::encode_error(&mut answer, reference, error.code(), error.message());
        }
    }
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(&answer).is_ok(),
        "answer is not JSON: {}",
        String::from_utf8_lossy(&answer)
    );
    format!("{reference:?} {request:?}")
}

/// `span` lies within `frame` and is one JSON value (numbers of any size).
fn assert_json_span_of(span: &[u8], frame: &[u8], what: &str) {
    let frame_range = frame.as_ptr_range();
    let span_range = span.as_ptr_range();
    assert!(
        frame_range.start <= span_range.start && span_range.end <= frame_range.end,
        "{what} does not borrow the frame"
    );
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(span).is_ok(),
        "{what} is not one JSON value: {}",
        String::from_utf8_lossy(span)
    );
}
