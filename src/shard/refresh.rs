//! `refresh` on a shard, without verifying anything here: the shard sends
//! the token (`requests.rs`), with what the acceptor needs to judge it (the
//! connection, its user, tenant and home room), to the acceptor thread,
//! which verifies it against the same keys and the same revoked-token set
//! as a handshake. Its answer comes back through this shard's inbox
//! (`ShardMsg::Refreshed`) and is applied only if the connection is still
//! the one that asked (same slot and generation). So no RSA or EdDSA
//! verification ever runs inside a shard's loop.
//!
//! The request channel is bounded (shared by every shard); when it is full
//! the client gets the error `overloaded` at once, counted in
//! `ShardMetrics::refresh_overloaded`.

use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::Waker;

use super::ShardCore;
use crate::ids::ConnId;
use crate::protocol;
use crate::refusal::Refusal;
use crate::ws::frame::Opcode;

/// How a shard reaches the acceptor with a refresh: its bounded request
/// channel and its waker. `None` in `ShardSettings` in dev mode.
#[derive(Debug, Clone)]
pub struct RefreshLink {
    pub requests: Sender<RefreshRequest>,
    pub waker: Arc<Waker>,
}

/// A `refresh` for the acceptor to verify; what it needs of the connection
/// travels with it, so the acceptor never looks into a shard.
#[derive(Debug)]
pub struct RefreshRequest {
    /// The connection that asked (its shard, slot and generation).
    pub conn: ConnId,
    pub token: Box<str>,
    /// The request's `ref`, echoed on the answer.
    pub reference: Option<Box<[u8]>>,
    /// The connection's user (`sub`) and tenant: the new token must name the same.
    pub user: Box<str>,
    pub tenant: Box<str>,
    /// The connection's URL room, which the new token's room claim must allow.
    pub home: Option<Box<str>>,
}

/// The acceptor's verdict on a [`RefreshRequest`], sent to the shard's inbox.
#[derive(Debug)]
pub struct RefreshAnswer {
    pub conn: ConnId,
    pub reference: Option<Box<[u8]>>,
    /// The new expiry (`exp`, Unix seconds), or the error frame's code and message.
    pub outcome: Result<u64, Refusal>,
}

impl ShardCore {
    /// The acceptor's answer to a refresh: the new expiry and an ack, or the
    /// error frame, for the connection that asked if it is still here.
    pub(super) fn on_refreshed(&mut self, answer: RefreshAnswer) {
        // The connection may have closed, and its slot been reused, meanwhile.
        if !self.is_live(answer.conn) {
            return;
        }
        let slot = answer.conn.slot as usize;
        let reference = answer.reference.as_deref();
        match answer.outcome {
            Ok(expires_at_s) => {
                if let Some(conn) = self.conns.get_mut(slot) {
                    conn.set_expires_at_s(expires_at_s);
                }
                protocol::encode_ack(self.frames.begin(), reference, None);
                let frame = self.frames.finish(Opcode::Text);
                self.queue(slot, frame);
            }
            Err(refusal) => self.send_error(slot, reference, refusal),
        }
    }
}
