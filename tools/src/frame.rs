//! WebSocket frame header parsing (in place, no allocation) and frame
//! building for the load generator's client side and the sink's server side.

/// Opcodes the tool cares about (RFC 6455 §5.2).
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A parsed frame header. `payload` is the byte range of the payload inside
/// the buffer that was parsed; it is still masked if `mask` is `Some`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_start: usize,
    pub payload_len: usize,
}

impl Frame {
    /// Total bytes the frame occupies in the buffer (header + payload).
    pub fn total_len(&self) -> usize {
        self.payload_start + self.payload_len
    }
}

/// Result of trying to parse one frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A complete frame is present.
    Frame(Frame),
    /// More bytes are needed; the value is the total frame size if known.
    Partial(Option<usize>),
    /// The header announces a payload over `max_payload`, or uses the
    /// reserved 64-bit high bit.
    TooBig,
}

/// Parses one frame header at the start of `buf`; does not copy.
pub fn parse(buf: &[u8], max_payload: usize) -> Parse {
    if buf.len() < 2 {
        return Parse::Partial(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let masked = b1 & 0x80 != 0;
    let len7 = (b1 & 0x7f) as usize;
    let (len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Parse::Partial(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Parse::Partial(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 || l > max_payload as u64 {
                return Parse::TooBig;
            }
            (l as usize, 10)
        }
        n => (n, 2),
    };
    if len > max_payload {
        return Parse::TooBig;
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Parse::Partial(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < pos + len {
        return Parse::Partial(Some(pos + len));
    }
    Parse::Frame(Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, mask, payload_start: pos, payload_len: len })
}

/// XORs `data` with the 4-byte mask, 8 bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ m8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    let rem = chunks.into_remainder();
    for (i, b) in rem.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, masked: bool) {
    out.push(0x80 | opcode);
    let mbit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(mbit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mbit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a masked client frame with the given payload.
pub fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    push_header(out, opcode, payload.len(), true);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends an unmasked server frame with the given payload.
pub fn push_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_header(out, opcode, payload.len(), false);
    out.extend_from_slice(payload);
}

/// Appends the header of an unmasked server frame whose payload the caller
/// writes next (lets the caller build the payload in place).
pub fn push_server_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    push_header(out, opcode, len, false);
}

/// A tiny xorshift generator for mask keys (masking needs unpredictability
/// only against intermediaries, which a loopback bench does not have).
#[derive(Debug, Clone)]
pub struct MaskGen(u64);

impl MaskGen {
    pub fn new(seed: u64) -> Self {
        MaskGen(seed | 1)
    }
    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_client_frames_of_each_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            push_client_frame(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            match parse(&out, 1 << 20) {
                Parse::Frame(f) => {
                    assert!(f.fin);
                    assert_eq!(f.opcode, OP_TEXT);
                    assert_eq!(f.payload_len, len);
                    assert_eq!(f.total_len(), out.len());
                    let mut p = out[f.payload_start..f.total_len()].to_vec();
                    apply_mask(&mut p, f.mask.unwrap());
                    assert_eq!(p, payload);
                }
                other => panic!("len {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn server_frame_parses_unmasked() {
        let mut out = Vec::new();
        push_server_frame(&mut out, OP_PING, b"hi");
        assert_eq!(out, [0x89, 2, b'h', b'i']);
        let f = match parse(&out, 100) {
            Parse::Frame(f) => f,
            p => panic!("{p:?}"),
        };
        assert_eq!((f.opcode, f.mask, f.payload_start, f.payload_len), (OP_PING, None, 2, 2));
    }

    #[test]
    fn partial_at_every_split_point() {
        let mut out = Vec::new();
        push_server_frame(&mut out, OP_TEXT, &[b'x'; 300]);
        for cut in 0..out.len() {
            match parse(&out[..cut], 1 << 20) {
                Parse::Partial(_) => {}
                p => panic!("cut {cut}: {p:?}"),
            }
        }
        assert!(matches!(parse(&out, 1 << 20), Parse::Frame(_)));
        // Once the header is complete the total size is known.
        assert_eq!(parse(&out[..10], 1 << 20), Parse::Partial(Some(304)));
    }

    #[test]
    fn too_big_is_reported_before_payload_arrives() {
        let mut out = Vec::new();
        push_server_header(&mut out, OP_TEXT, 100_000);
        assert_eq!(parse(&out, 65536), Parse::TooBig);
        let bogus = [0x81u8, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse(&bogus, usize::MAX), Parse::TooBig);
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut out = Vec::new();
        push_server_frame(&mut out, OP_TEXT, b"one");
        push_server_frame(&mut out, OP_TEXT, b"three");
        let Parse::Frame(a) = parse(&out, 100) else { panic!() };
        let Parse::Frame(b) = parse(&out[a.total_len()..], 100) else { panic!() };
        assert_eq!(&out[a.total_len() + b.payload_start..][..b.payload_len], b"three");
    }

    #[test]
    fn mask_is_an_involution_for_odd_lengths() {
        let mut g = MaskGen::new(7);
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut d = orig.clone();
            let m = g.next_mask();
            apply_mask(&mut d, m);
            apply_mask(&mut d, m);
            assert_eq!(d, orig);
        }
    }
}
