//! WebSocket framing (RFC 6455) without I/O: parse client frames in place,
//! build server frames once, and the close codes roomcast sends.
//!
//! Header parsing is tungstenite's `FrameHeader::parse`; everything around it
//! (size checks before any copy, unmasking in place, reassembly of fragments,
//! UTF-8 checks) is ours, because the shard owns the buffers.

pub mod close;
pub mod frame;

pub use close::CloseCode;
