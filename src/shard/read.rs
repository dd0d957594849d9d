//! The read path: bytes from a readable socket, within the per-event
//! budget, decoded into frames; control frames answered here, messages
//! passed to the echo, the binary relay or the request handler.

use std::io::{self, Read};

use super::conn::{ConnState, Place, Role};
use super::{Shard, ShardCore};
use crate::metrics::LimitKind;
use crate::protocol;
use crate::refusal::Refusal;
use crate::ws::CloseCode;
use crate::ws::frame::{self, Event, Flow, Opcode};

impl Shard {
    /// Reads what the socket has, up to the per-event budget, decoding as it
    /// goes. `to_eof`: keep reading after a short read (the peer has closed).
    pub(super) fn read_from(&mut self, slot: usize, to_eof: bool) {
        let budget = self.core.settings.limits.read_bytes_per_event_max;
        let mut taken = 0;
        let now_ms = self.core.now_ms();
        loop {
            let Some(conn) = self.core.conns.get_mut(slot) else { return };
            if conn.doomed {
                return;
            }
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    self.core.drop_conn(slot);
                    return;
                }
                Ok(n) => {
                    conn.last_rx_ms = now_ms as u32;
                    self.core.metrics.bytes_in += n as u64;
                    taken += n;
                    self.core.consume_bytes(slot, &mut self.read_buf[..n]);
                    if taken >= budget {
                        self.core.metrics.hit(LimitKind::ReadBudget);
                        self.core.read_again.push(slot);
                        return;
                    }
                    // A short read means the socket was drained; new bytes
                    // raise a new edge, so skip the read that would only
                    // say WouldBlock (one syscall per readable event).
                    if n < self.read_buf.len() && !to_eof {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.core.drop_conn(slot);
                    return;
                }
            }
        }
    }
}

impl ShardCore {
    /// Decodes frames from `bytes` (newly read) after any remainder of the
    /// previous read, and keeps what is left of an incomplete frame.
    pub(super) fn consume_bytes(&mut self, slot: usize, bytes: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.state.shuts_when_written() {
            // Nothing the peer sends matters any more (after a protocol
            // error the bytes may not even be frames): read and dropped, so
            // the socket closes without unread input.
            return;
        }
        let message_max = match conn.role {
            Role::Echo => self.settings.limits.echo_message_bytes_max,
            Role::Member(_) => self.settings.limits.message_inbound_bytes_max as usize,
        };
        let mut parked = conn.inbound.take();
        let mut fragments = parked.as_mut().and_then(|inbound| inbound.fragments.take());
        let pending = parked.as_mut().map(|inbound| std::mem::take(&mut inbound.pending)).unwrap_or_default();
        let (result, rest) = if pending.is_empty() {
            let result =
                frame::decode(bytes, &mut fragments, message_max, &mut |event| self.on_frame_event(slot, event));
            let rest = result.map(|consumed| bytes[consumed..].to_vec()).unwrap_or_default();
            (result, rest)
        } else {
            let mut joined = pending;
            joined.extend_from_slice(bytes);
            let result =
                frame::decode(&mut joined, &mut fragments, message_max, &mut |event| self.on_frame_event(slot, event));
            joined.drain(..*result.as_ref().unwrap_or(&joined.len()));
            (result, joined)
        };
        let Some(conn) = self.conns.get_mut(slot) else { return };
        // Idle connections hold no buffers: the box goes when nothing is left,
        // and when nothing more will be decoded.
        if (!rest.is_empty() || fragments.is_some()) && !conn.state.shuts_when_written() {
            let mut inbound = parked.unwrap_or_default();
            inbound.pending = rest;
            inbound.fragments = fragments;
            conn.inbound = Some(inbound);
        }
        if let Err(error) = result {
            let limit =
                if error == frame::FrameError::TooBig { LimitKind::MessageTooBig } else { LimitKind::ProtocolError };
            self.fail(slot, error.close_code(), Some(limit));
        }
    }

    fn on_frame_event(&mut self, slot: usize, event: Event<'_>) -> Flow {
        let Some(conn) = self.conns.get_mut(slot) else { return Flow::Stop };
        if conn.doomed {
            return Flow::Stop;
        }
        self.metrics.frames_in += 1;
        if conn.state.shuts_when_written() {
            return Flow::Stop;
        }
        if let ConnState::Closing { .. } = conn.state {
            // Only the peer's Close matters now; it completes the closing handshake.
            if let Event::Close { .. } = event {
                self.drop_conn(slot);
                return Flow::Stop;
            }
            return Flow::Continue;
        }
        if matches!(event, Event::Ping(_) | Event::Pong) {
            let per_s = self.settings.limits.control_frames_per_s;
            let now_ms = self.now_ms();
            let Some(conn) = self.conns.get_mut(slot) else { return Flow::Stop };
            if !conn.control_rate.try_take(now_ms, per_s, per_s) {
                // Each Ping costs a Pong and a write: a flood would hold up
                // every connection of the shard. No strikes, as for messages.
                self.fail(slot, CloseCode::CONTROL_FLOOD, Some(LimitKind::ControlFlood));
                return Flow::Stop;
            }
        }
        match event {
            Event::Ping(payload) => {
                let pong = frame::encode_frame(Opcode::Pong, payload);
                self.queue(slot, pong);
            }
            Event::Pong => {}
            Event::Close { code, .. } => {
                let reply = code.map_or(CloseCode::NORMAL, |code| CloseCode { code, reason: "" });
                self.answer_close(slot, reply);
                return Flow::Stop;
            }
            Event::Message { opcode, payload } => self.on_message(slot, opcode, payload),
        }
        Flow::Continue
    }

    fn on_message(&mut self, slot: usize, opcode: Opcode, payload: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        let Role::Member(member) = &conn.role else {
            let echo = frame::encode_frame(opcode, payload);
            self.queue(slot, echo);
            return;
        };
        let limits = &self.settings.limits;
        let now_ms = self.now.saturating_duration_since(self.origin).as_millis() as u64;
        if !conn.rate.try_take(now_ms, limits.rate_messages_per_s, limits.rate_burst) {
            conn.rate_strikes += 1;
            if conn.rate_strikes > limits.rate_strikes_max {
                self.begin_close(slot, CloseCode::RATE_ABUSE, Some(LimitKind::RateAbuse));
            } else {
                self.note_limit(slot, LimitKind::RateLimited);
                self.send_error(slot, None, Refusal::RateLimited);
            }
            return;
        }
        self.metrics.client_messages += 1;
        let home = member.rooms.first().map(|home| home.place());
        if opcode == Opcode::Binary {
            if let Some(Place::Local(membership)) = home {
                let from = conn.id;
                self.rooms.relay_binary(membership, from, payload);
                self.apply_room_outputs();
            }
            return;
        }
        self.on_request(slot, payload);
    }

    pub(super) fn send_error(&mut self, slot: usize, reference: Option<&[u8]>, refusal: Refusal) {
        protocol::encode_error(self.frames.begin(), reference, refusal.code(), refusal.message());
        let frame = self.frames.finish(Opcode::Text);
        self.queue(slot, frame);
    }
}
