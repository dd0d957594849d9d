//! Client frame decoding in place and server frame encoding.
//!
//! `decode` walks a buffer of bytes read from one connection, checks each
//! frame header *before* its payload is waited for or copied (so an oversize
//! message is refused from its header alone), unmasks payloads in place and
//! hands out whole messages and control frames. Fragmented messages are
//! gathered in a `Fragments` box that exists only while one is in flight, so
//! an idle connection holds no inbound buffer.
//!
//! Server frames are never masked, so one encoded frame can be shared by every
//! recipient of a broadcast (`encode_frame` builds it once).

use std::io::Cursor;
use std::sync::Arc;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::CloseCode;

/// A complete server frame, shared by every connection it is queued on.
pub type Frame = Arc<[u8]>;

/// The opcodes roomcast handles; reserved ones are refused while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn byte(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Why a client's bytes cannot be a valid frame stream; each maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    Protocol(&'static str),
    BadUtf8,
    TooBig,
}

impl FrameError {
    pub fn close_code(self) -> CloseCode {
        match self {
            FrameError::Protocol(_) => CloseCode::PROTOCOL,
            FrameError::BadUtf8 => CloseCode::BAD_UTF8,
            FrameError::TooBig => CloseCode::TOO_BIG,
        }
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: [u8; 4],
    pub header_len: usize,
    pub payload_len: u64,
}

/// Parses one client frame header. `Ok(None)`: more bytes are needed.
pub fn parse_client_head(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    let mut cursor = Cursor::new(buf);
    let (header, payload_len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(_) => return Err(FrameError::Protocol("reserved opcode")),
    };
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(FrameError::Protocol("reserved bits set without an extension"));
    }
    let Some(mask) = header.mask else {
        return Err(FrameError::Protocol("client frames must be masked"));
    };
    let opcode = match header.opcode {
        OpCode::Data(Data::Continue) => Opcode::Continuation,
        OpCode::Data(Data::Text) => Opcode::Text,
        OpCode::Data(Data::Binary) => Opcode::Binary,
        OpCode::Control(Control::Close) => Opcode::Close,
        OpCode::Control(Control::Ping) => Opcode::Ping,
        OpCode::Control(Control::Pong) => Opcode::Pong,
        _ => return Err(FrameError::Protocol("reserved opcode")),
    };
    if opcode.is_control() && (!header.is_final || payload_len > 125) {
        return Err(FrameError::Protocol("control frames are at most 125 bytes and unfragmented"));
    }
    Ok(Some(FrameHead { fin: header.is_final, opcode, mask, header_len: cursor.position() as usize, payload_len }))
}

/// XORs `payload` with the frame's mask, eight bytes at a time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mask_word = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ mask_word).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask phase is back at 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A message gathered from fragments. Boxed and optional on the connection,
/// so it costs one pointer while no fragmented message is in flight.
#[derive(Debug)]
pub struct Fragments {
    opcode: Opcode,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (text only), so a bad byte in an
    /// early fragment fails fast instead of after the whole message.
    utf8_checked: usize,
}

impl Fragments {
    /// Bytes gathered so far; the fuzz checks hold it under the message cap.
    pub fn gathered_len(&self) -> usize {
        self.data.len()
    }
}

/// What `decode` hands to its caller.
#[derive(Debug)]
pub enum Event<'a> {
    /// A whole text or binary message; text is already checked to be UTF-8.
    Message {
        opcode: Opcode,
        payload: &'a mut [u8],
    },
    Ping(&'a [u8]),
    Pong,
    /// A Close frame; `code` is `None` when the peer sent no status.
    Close {
        code: Option<u16>,
        /// Checked to be UTF-8 (RFC 6455 §7.1.6, a bad one fails with 1007);
        /// the shard does not keep it, the tests read it.
        #[cfg_attr(not(test), allow(dead_code))]
        reason: &'a str,
    },
}

/// Whether the caller wants more events from this buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Decodes whole frames from `buf`, calling `on_event` for each message or
/// control frame. Returns the number of bytes consumed; the rest is an
/// incomplete frame the caller keeps until more bytes arrive. A message whose
/// declared size would pass `message_bytes_max` is refused from its header.
pub fn decode(
    buf: &mut [u8],
    fragments: &mut Option<Box<Fragments>>,
    message_bytes_max: usize,
    on_event: &mut impl FnMut(Event<'_>) -> Flow,
) -> Result<usize, FrameError> {
    let mut pos = 0;
    while pos < buf.len() {
        let Some(head) = parse_client_head(&buf[pos..])? else { break };
        let in_flight = fragments.as_ref().map_or(0, |f| f.data.len());
        if !head.opcode.is_control() && head.payload_len.saturating_add(in_flight as u64) > message_bytes_max as u64 {
            return Err(FrameError::TooBig);
        }
        // Bounded above by message_bytes_max or 125, so the cast cannot truncate.
        let payload_len = head.payload_len as usize;
        let end = pos + head.header_len + payload_len;
        if end > buf.len() {
            break;
        }
        let payload = &mut buf[pos + head.header_len..end];
        unmask(payload, head.mask);
        pos = end;
        if dispatch(head, payload, fragments, on_event)? == Flow::Stop {
            break;
        }
    }
    Ok(pos)
}

fn dispatch(
    head: FrameHead,
    payload: &mut [u8],
    fragments: &mut Option<Box<Fragments>>,
    on_event: &mut impl FnMut(Event<'_>) -> Flow,
) -> Result<Flow, FrameError> {
    match head.opcode {
        Opcode::Ping => Ok(on_event(Event::Ping(payload))),
        Opcode::Pong => Ok(on_event(Event::Pong)),
        Opcode::Close => {
            let (code, reason) = parse_close_payload(payload)?;
            Ok(on_event(Event::Close { code, reason }))
        }
        Opcode::Text | Opcode::Binary => {
            if fragments.is_some() {
                return Err(FrameError::Protocol("new message before the fragmented one finished"));
            }
            if head.fin {
                if head.opcode == Opcode::Text && std::str::from_utf8(payload).is_err() {
                    return Err(FrameError::BadUtf8);
                }
                return Ok(on_event(Event::Message { opcode: head.opcode, payload }));
            }
            let mut started = Box::new(Fragments { opcode: head.opcode, data: payload.to_vec(), utf8_checked: 0 });
            check_utf8_prefix(&mut started)?;
            *fragments = Some(started);
            Ok(Flow::Continue)
        }
        Opcode::Continuation => {
            let Some(gathering) = fragments.as_mut() else {
                return Err(FrameError::Protocol("continuation frame without a message"));
            };
            gathering.data.extend_from_slice(payload);
            check_utf8_prefix(gathering)?;
            if !head.fin {
                return Ok(Flow::Continue);
            }
            let mut done = fragments.take().ok_or(FrameError::Protocol("continuation frame without a message"))?;
            if done.opcode == Opcode::Text && done.utf8_checked != done.data.len() {
                return Err(FrameError::BadUtf8);
            }
            Ok(on_event(Event::Message { opcode: done.opcode, payload: &mut done.data }))
        }
    }
}

/// Advances `utf8_checked` over the text gathered so far. A sequence cut at
/// the end is fine (the next fragment may finish it); a bad byte is not.
fn check_utf8_prefix(fragments: &mut Fragments) -> Result<(), FrameError> {
    if fragments.opcode != Opcode::Text {
        return Ok(());
    }
    match std::str::from_utf8(&fragments.data[fragments.utf8_checked..]) {
        Ok(_) => fragments.utf8_checked = fragments.data.len(),
        Err(e) if e.error_len().is_none() => fragments.utf8_checked += e.valid_up_to(),
        Err(_) => return Err(FrameError::BadUtf8),
    }
    Ok(())
}

fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, &str), FrameError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(FrameError::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::is_valid_received(code) {
                return Err(FrameError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::BadUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Room reserved in front of a payload for the largest server header (no mask).
pub const HEADER_ROOM: usize = 10;

/// Writes a server frame header for `payload_len` into the last bytes of
/// `room` and returns where the header starts. Lets a payload be built after
/// `HEADER_ROOM` reserved bytes and framed without moving it.
pub fn encode_header_before(room: &mut [u8; HEADER_ROOM], opcode: Opcode, payload_len: usize) -> usize {
    let first = 0x80 | opcode.byte();
    if payload_len < 126 {
        room[8] = first;
        room[9] = payload_len as u8;
        8
    } else if payload_len <= u16::MAX as usize {
        room[6] = first;
        room[7] = 126;
        room[8..10].copy_from_slice(&(payload_len as u16).to_be_bytes());
        6
    } else {
        room[0] = first;
        room[1] = 127;
        room[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        0
    }
}

/// Builds frames in one reused buffer: `begin` returns the buffer to append a
/// payload to, `finish` frames it and copies it once into a shared `Frame`.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    pub fn begin(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER_ROOM]);
        &mut self.buf
    }

    pub fn finish(&mut self, opcode: Opcode) -> Frame {
        let payload_len = self.buf.len() - HEADER_ROOM;
        let mut room = [0u8; HEADER_ROOM];
        let start = encode_header_before(&mut room, opcode, payload_len);
        self.buf[start..HEADER_ROOM].copy_from_slice(&room[start..]);
        Arc::from(&self.buf[start..])
    }
}

/// Encodes one server frame with `payload` (a copy; for frames built elsewhere).
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Frame {
    let mut out = Vec::with_capacity(HEADER_ROOM + payload.len());
    encode_frame_into(&mut out, opcode, payload);
    Arc::from(out)
}

/// Appends one server frame with `payload` to `out`.
pub fn encode_frame_into(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    let mut room = [0u8; HEADER_ROOM];
    let start = encode_header_before(&mut room, opcode, payload.len());
    out.extend_from_slice(&room[start..]);
    out.extend_from_slice(payload);
}

/// A server Close frame with `code` and its reason.
pub fn close_frame(code: CloseCode) -> Frame {
    let mut payload = Vec::with_capacity(2 + code.reason.len());
    payload.extend_from_slice(&code.code.to_be_bytes());
    payload.extend_from_slice(code.reason.as_bytes());
    encode_frame(Opcode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a masked client frame the way a browser would.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn collect(buf: &mut [u8], max: usize) -> (Result<usize, FrameError>, Vec<String>) {
        let mut fragments = None;
        let mut seen = Vec::new();
        let result = decode(buf, &mut fragments, max, &mut |event| {
            seen.push(match event {
                Event::Message { opcode, payload } => format!("{opcode:?}:{}", String::from_utf8_lossy(payload)),
                Event::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                Event::Pong => "pong".into(),
                Event::Close { code, reason } => format!("close:{code:?}:{reason}"),
            });
            Flow::Continue
        });
        (result, seen)
    }

    #[test]
    fn decodes_masked_text_binary_and_control_frames() {
        let mut buf = client_frame(0x81, b"hello");
        buf.extend(client_frame(0x82, &[1, 2, 3]));
        buf.extend(client_frame(0x89, b"p"));
        buf.extend(client_frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        let len = buf.len();
        let (result, seen) = collect(&mut buf, 1024);
        assert_eq!(result, Ok(len));
        assert_eq!(seen, ["Text:hello", "Binary:\u{1}\u{2}\u{3}", "ping:p", "close:Some(1000):bye"]);
    }

    #[test]
    fn unmask_handles_every_length_and_phase() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let mut masked: Vec<u8> = plain.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            unmask(&mut masked, mask);
            assert_eq!(masked, plain, "length {len}");
        }
    }

    #[test]
    fn incomplete_frame_consumes_nothing() {
        let full = client_frame(0x81, b"hello world");
        for cut in 0..full.len() {
            let mut part = full[..cut].to_vec();
            let (result, seen) = collect(&mut part, 1024);
            assert_eq!(result, Ok(0), "cut at {cut}");
            assert!(seen.is_empty());
        }
    }

    #[test]
    fn oversize_message_is_refused_from_its_header_alone() {
        let frame = client_frame(0x81, &vec![b'a'; 2000]);
        let mut header_only = frame[..8].to_vec();
        assert_eq!(collect(&mut header_only, 1000).0, Err(FrameError::TooBig));
    }

    #[test]
    fn fragments_are_gathered_and_size_counts_all_of_them() {
        let mut buf = client_frame(0x01, b"hel");
        buf.extend(client_frame(0x89, b"mid")); // control frames may interleave
        buf.extend(client_frame(0x80, b"lo"));
        let (result, seen) = collect(&mut buf, 1024);
        assert!(result.is_ok());
        assert_eq!(seen, ["ping:mid", "Text:hello"]);

        let mut too_big = client_frame(0x01, &[b'a'; 6]);
        too_big.extend(client_frame(0x80, &[b'a'; 6]));
        assert_eq!(collect(&mut too_big, 10).0, Err(FrameError::TooBig));
    }

    #[test]
    fn protocol_violations_are_named() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (vec![0x81, 0x00], FrameError::Protocol("client frames must be masked")),
            (client_frame(0xC1, b"x"), FrameError::Protocol("reserved bits set without an extension")),
            (client_frame(0x83, b"x"), FrameError::Protocol("reserved opcode")),
            (client_frame(0x09, b"x"), FrameError::Protocol("control frames are at most 125 bytes and unfragmented")),
            (client_frame(0x80, b"x"), FrameError::Protocol("continuation frame without a message")),
            (client_frame(0x88, &[3]), FrameError::Protocol("close payload of one byte")),
            (client_frame(0x88, &[0x03, 0xEC]), FrameError::Protocol("invalid close code")),
            (client_frame(0x81, &[0xFF]), FrameError::BadUtf8),
        ];
        for (mut bytes, expected) in cases {
            assert_eq!(collect(&mut bytes, 1024).0, Err(expected));
        }
        let mut interleaved = client_frame(0x01, b"a");
        interleaved.extend(client_frame(0x81, b"b"));
        assert!(matches!(collect(&mut interleaved, 1024).0, Err(FrameError::Protocol(_))));
    }

    #[test]
    fn utf8_split_across_fragments_is_accepted_and_bad_bytes_fail_fast() {
        let euro = "€".as_bytes(); // three bytes
        let mut buf = client_frame(0x01, &euro[..1]);
        buf.extend(client_frame(0x80, &euro[1..]));
        assert_eq!(collect(&mut buf, 64).1, ["Text:€"]);

        // The bad byte is in the first fragment; the message never finishes.
        let mut fragments = None;
        let mut first = client_frame(0x01, &[b'a', 0xFF]);
        let result = decode(&mut first, &mut fragments, 64, &mut |_| Flow::Continue);
        assert_eq!(result, Err(FrameError::BadUtf8));
    }

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        for (len, header) in [(0usize, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let frame = encode_frame(Opcode::Binary, &vec![7; len]);
            assert_eq!(frame.len(), header + len, "payload {len}");
            assert_eq!(frame[0], 0x82);
        }
        let mut builder = FrameBuilder::default();
        builder.begin().extend_from_slice(b"{\"a\":1}");
        assert_eq!(&builder.finish(Opcode::Text)[..], &encode_frame(Opcode::Text, b"{\"a\":1}")[..]);
    }
}
