//! Closing connections: the server's Close (`begin_close`), failing a
//! connection (`fail`), answering the peer's Close, leaving every room at
//! once, freeing sockets at the end of an iteration (`reap_doomed`) and
//! draining the whole shard.

use std::time::{Duration, Instant};

use super::conn::{ConnState, Place, Role};
use super::{RemoteMsg, ShardCore};
use crate::metrics::LimitKind;
use crate::timer::TimerKind;
use crate::ws::CloseCode;
use crate::ws::frame;

impl ShardCore {
    /// Leaves every room (so the others hear at once) and stops routing to
    /// the connection. Remote rooms are told by message; a join still in
    /// flight is undone when its reply comes back (see `on_remote`).
    fn leave_all_rooms(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        let id = conn.id;
        let Role::Member(member) = &mut conn.role else { return };
        let rooms = std::mem::take(&mut member.rooms);
        for joined in rooms {
            match joined.place() {
                Place::Local(membership) => {
                    self.rooms.leave(membership, id, None);
                }
                Place::Remote { owner, membership } => {
                    self.remote.forget_member(&joined.key, id);
                    let leave =
                        RemoteMsg::Leave { key: joined.key, membership, conn: id, reference: None, requested: false };
                    self.remote.send_control(owner, leave);
                }
                Place::Pending { .. } => {}
            }
        }
        self.apply_room_outputs();
    }

    /// Starts a server-initiated close: Close frame queued, room left, and a
    /// deadline for the peer's answer.
    pub(super) fn begin_close(&mut self, slot: usize, code: CloseCode, limit: Option<LimitKind>) {
        self.close_as(slot, code, limit, ConnState::Closing { peer_closed: false });
    }

    /// Fails the connection (RFC 6455 §7.1.7): as `begin_close`, but what is
    /// buffered from the peer is dropped and the socket is shut once the
    /// Close is written, without waiting for the peer's Close (the deadline
    /// then only bounds a peer that does not read). A connection that is
    /// closing already stops waiting for the peer too.
    pub(super) fn fail(&mut self, slot: usize, code: CloseCode, limit: Option<LimitKind>) {
        if let Some(conn) = self.conns.get_mut(slot)
            && !conn.doomed
            && conn.state == (ConnState::Closing { peer_closed: false })
        {
            conn.state = ConnState::Failed;
            conn.inbound = None;
            // Our Close is queued or written already: the flush shuts the socket.
            self.mark_dirty(slot);
            return;
        }
        self.close_as(slot, code, limit, ConnState::Failed);
    }

    /// Queues the Close of an open connection and moves it to `state`.
    fn close_as(&mut self, slot: usize, code: CloseCode, limit: Option<LimitKind>, state: ConnState) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.doomed || conn.state != ConnState::Open {
            return;
        }
        conn.state = state;
        if state == ConnState::Failed {
            conn.inbound = None;
        }
        conn.close_code.get_or_insert(code.code);
        conn.outbound.push_unbounded(frame::close_frame(code));
        self.metrics.queued_frames += 1;
        let id = conn.id;
        if let Some(limit) = limit {
            self.note_limit(slot, limit);
        }
        self.mark_dirty(slot);
        self.leave_all_rooms(slot);
        let deadline = self.now + Duration::from_millis(u64::from(self.settings.limits.close_timeout_ms));
        self.schedule(id, deadline, TimerKind::CloseDeadline);
    }

    /// Answers the peer's Close; the socket goes once the answer is written.
    pub(super) fn answer_close(&mut self, slot: usize, code: CloseCode) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        conn.state = ConnState::Closing { peer_closed: true };
        conn.close_code.get_or_insert(code.code);
        let discarded = conn.outbound.discard_unstarted();
        conn.outbound.push_unbounded(frame::close_frame(code));
        self.metrics.queued_frames = self.metrics.queued_frames.saturating_sub(discarded as u64) + 1;
        let id = conn.id;
        self.mark_dirty(slot);
        self.leave_all_rooms(slot);
        // A peer that closes and then stops reading must not hold the socket.
        let deadline = self.now + Duration::from_millis(u64::from(self.settings.limits.close_timeout_ms));
        self.schedule(id, deadline, TimerKind::CloseDeadline);
    }

    /// Frees the connection at the end of the iteration.
    pub(super) fn drop_conn(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.doomed {
            return;
        }
        conn.doomed = true;
        self.doomed.push(slot);
        self.leave_all_rooms(slot);
    }

    pub(super) fn reap_doomed(&mut self, registry: &mio::Registry) {
        let mut doomed = std::mem::take(&mut self.doomed);
        for slot in doomed.drain(..) {
            if let Some(mut conn) = self.conns.try_remove(slot) {
                self.metrics.queued_frames = self.metrics.queued_frames.saturating_sub(conn.outbound.len() as u64);
                let _ = registry.deregister(&mut conn.stream);
                self.metrics.connections_closed += 1;
                // No Close frame was exchanged: 1006, as in the session audit.
                self.log_connection(slot, None, Some(&conn));
                self.audit_close(&conn);
            }
        }
        self.doomed = doomed; // keep the allocation
    }

    pub(super) fn start_drain(&mut self, deadline: Instant) {
        self.draining = Some(deadline);
        let open: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.state == ConnState::Open).map(|(slot, _)| slot).collect();
        for slot in open {
            self.begin_close(slot, CloseCode::GOING_AWAY, None);
        }
    }

    pub(super) fn drain_finished(&self) -> bool {
        self.draining.is_some_and(|deadline| self.conns.is_empty() || self.now >= deadline)
    }
}
