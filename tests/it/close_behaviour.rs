//! Failing the connection (RFC 6455 §7.1.7): after a protocol error or an
//! invalid Close from the client, the server writes its Close and closes TCP
//! without waiting for a Close reply; after a valid Close it echoes it and
//! closes TCP first.
//!
//! Each case sends the bytes of the Autobahn|Testsuite case of the same
//! number (autobahntestsuite 25.10.1, `autobahntestsuite/case/`) over a raw
//! socket to the echo listener, with a fixed mask key instead of Autobahn's
//! random one, and one `write` per octet where the case sends "octet-wise
//! chops". These 15 cases were reported `FAILED BY CLIENT` by wstest while
//! the server waited `limits.close_timeout_ms` for a Close that never came.
//!
//! No clock decides a pass: the server runs with a close timeout of 30 s and
//! the socket's read timeout is 10 s, so an EOF that arrives at all arrived
//! without the server waiting for the close timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::harness::{Server, upgrade_request};

/// Far past `READ_TIMEOUT`: a server that waits for it fails the test.
const CLOSE_TIMEOUT_MS: &str = "limits.close_timeout_ms=30000";
/// How long the test waits for the server's Close and EOF.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const HELLO: &[u8] = b"Hello, world!";

/// A masked client frame: `first` is the FIN/RSV/opcode byte as sent.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A Close frame's payload: `code` then `reason`.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// How a case's bytes are written.
#[derive(Clone, Copy)]
enum Chops {
    /// One write per frame (Autobahn's `sendFrame` without `chopsize`).
    Frames,
    /// One write per octet (`chopsize = 1`).
    Octets,
}

struct Case {
    id: &'static str,
    frames: Vec<Vec<u8>>,
    chops: Chops,
    /// Text the server echoes before its Close.
    echo: Option<&'static [u8]>,
    /// Close codes the case accepts from the server.
    close_codes: &'static [u16],
}

/// The 15 cases, as their Autobahn case files send them.
fn autobahn_cases() -> Vec<Case> {
    let ping = client_frame(0x89, b"");
    let mut cases = vec![
        // 3.4: text, then text with RSV = 4 (RSV1), then a Ping; octet-wise.
        Case {
            id: "3.4",
            frames: vec![client_frame(0x81, HELLO), client_frame(0x81 | 0x40, HELLO), ping.clone()],
            chops: Chops::Octets,
            echo: Some(HELLO),
            close_codes: &[1002],
        },
        // 4.1.5: text, then reserved non-control opcode 7 with a payload, then a Ping.
        Case {
            id: "4.1.5",
            frames: vec![client_frame(0x81, HELLO), client_frame(0x87, HELLO), ping.clone()],
            chops: Chops::Octets,
            echo: Some(HELLO),
            close_codes: &[1002],
        },
        // 4.2.5: text, then reserved control opcode 15 with a payload, then a Ping.
        Case {
            id: "4.2.5",
            frames: vec![client_frame(0x81, HELLO), client_frame(0x8F, HELLO), ping],
            chops: Chops::Octets,
            echo: Some(HELLO),
            close_codes: &[1002],
        },
        // 7.3.2: a Close whose payload is one octet ("a").
        Case {
            id: "7.3.2",
            frames: vec![client_frame(0x88, b"a")],
            chops: Chops::Frames,
            echo: None,
            close_codes: &[1002],
        },
        // 7.3.6: a Close with 1000 and a 124-octet reason: 126 octets, over the 125 of a control frame.
        Case {
            id: "7.3.6",
            frames: vec![client_frame(0x88, &close_payload(1000, &[b'*'; 124]))],
            chops: Chops::Frames,
            echo: None,
            close_codes: &[1002],
        },
        // 7.5.1: a Close with 1000 and a reason that is not UTF-8 (a UTF-16 surrogate).
        Case {
            id: "7.5.1",
            frames: vec![client_frame(
                0x88,
                &close_payload(
                    1000,
                    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
                ),
            )],
            chops: Chops::Frames,
            echo: None,
            close_codes: &[1002, 1007],
        },
    ];
    // 7.9.1–7.9.9: a Close with an invalid close code and no reason.
    let invalid_codes: [(&'static str, u16); 9] = [
        ("7.9.1", 0),
        ("7.9.2", 999),
        ("7.9.3", 1004),
        ("7.9.4", 1005),
        ("7.9.5", 1006),
        ("7.9.6", 1016),
        ("7.9.7", 1100),
        ("7.9.8", 2000),
        ("7.9.9", 2999),
    ];
    for (id, code) in invalid_codes {
        cases.push(Case {
            id,
            frames: vec![client_frame(0x88, &code.to_be_bytes())],
            chops: Chops::Frames,
            echo: None,
            close_codes: &[1002],
        });
    }
    cases
}

/// Opens a WebSocket on the echo listener and reads the 101 head.
fn open_echo(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect to the echo listener");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
    stream.write_all(&upgrade_request("/", "")).expect("write the upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so no frame after the head is taken with it.
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read the 101 head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgrade refused: {}", String::from_utf8_lossy(&head));
    stream
}

/// Writes `frames` as `chops` says. Writes may fail once the server has
/// closed (the rest of a bad frame, the Ping after it): that is allowed.
fn send(stream: &mut TcpStream, frames: &[Vec<u8>], chops: Chops) {
    for frame in frames {
        let result = match chops {
            Chops::Frames => stream.write_all(frame),
            Chops::Octets => frame.iter().try_for_each(|octet| stream.write_all(std::slice::from_ref(octet))),
        };
        if result.is_err() {
            return;
        }
    }
}

/// Everything the server sends until EOF; `Err` names what came instead.
fn read_to_eof(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "no EOF within {READ_TIMEOUT:?} (the server waited for the peer); got {received:02x?}"
                ));
            }
            Err(e) => return Err(format!("{e} instead of EOF; got {received:02x?}")),
        }
    }
}

/// Splits unmasked server frames into (first byte, payload).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => panic!("no large frames expected"),
            n => (n as usize, 2),
        };
        assert!(bytes.len() >= header + len, "truncated frame in {bytes:02x?}");
        frames.push((bytes[0], bytes[header..header + len].to_vec()));
        bytes = &bytes[header + len..];
    }
    assert!(bytes.is_empty(), "trailing bytes {bytes:02x?}");
    frames
}

/// Runs one case; `Err` says how the server's answer differed.
fn run_case(addr: SocketAddr, case: &Case) -> Result<(), String> {
    let mut stream = open_echo(addr);
    send(&mut stream, &case.frames, case.chops);
    let received = read_to_eof(&mut stream)?;
    let mut frames = server_frames(&received).into_iter();
    if let Some(echo) = case.echo {
        match frames.next() {
            Some((0x81, payload)) if payload == echo => {}
            other => return Err(format!("expected the echo of {echo:?} first, got {other:02x?}")),
        }
    }
    let Some((0x88, close)) = frames.next() else {
        return Err(format!("expected a Close frame, got {received:02x?}"));
    };
    let code = match close.as_slice() {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => return Err(format!("Close without a code: {close:02x?}")),
    };
    if !case.close_codes.contains(&code) {
        return Err(format!("Close code {code}, expected one of {:?}", case.close_codes));
    }
    match frames.next() {
        None => Ok(()),
        Some(frame) => Err(format!("a frame after the Close: {frame:02x?}")),
    }
}

#[test]
fn a_failed_connection_is_closed_without_waiting_for_the_peer() {
    let server = Server::start(&["--echo-listen", "127.0.0.1:0", "--set", CLOSE_TIMEOUT_MS]);
    let echo = server.echo_addr.expect("echo listener address");
    let failures: Vec<String> = autobahn_cases()
        .iter()
        .filter_map(|case| run_case(echo, case).err().map(|why| format!("case {}: {why}", case.id)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_valid_close_is_echoed_and_the_server_closes_tcp_first() {
    let server = Server::start(&["--echo-listen", "127.0.0.1:0", "--set", CLOSE_TIMEOUT_MS]);
    let echo = server.echo_addr.expect("echo listener address");
    let mut stream = open_echo(echo);
    // Autobahn 7.1.1: a message, its echo, then a Close 1000. (A Close sent
    // before the echo is written would drop it: frames not yet started when
    // the client's Close arrives are not sent, docs/protocol.md §7.)
    send(&mut stream, &[client_frame(0x81, HELLO)], Chops::Frames);
    let mut echoed = [0u8; 2 + HELLO.len()];
    stream.read_exact(&mut echoed).expect("the echo");
    assert_eq!(server_frames(&echoed), [(0x81, HELLO.to_vec())]);
    send(&mut stream, &[client_frame(0x88, &close_payload(1000, b""))], Chops::Frames);
    let received = read_to_eof(&mut stream).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(server_frames(&received), [(0x88, close_payload(1000, b""))], "the Close echoed, then EOF");
}
