//! The write path: frames queued per connection (within its outbound
//! bounds, closing a slow consumer), the rooms' outputs carried out, and the
//! flush phase with one vectored write per connection with bytes queued.

use std::net::Shutdown;
use std::sync::Arc;

use slab::Slab;

use super::conn::{ConnState, Connection, FlushOutcome, QueueBounds, Role, SlowConsumer};
use super::{RemoteMsg, ShardCore};
use crate::ids::ConnId;
use crate::metrics::{LimitKind, ShardMetrics};
use crate::room::Output;
use crate::ws::CloseCode;
use crate::ws::frame::Frame;

/// Queues a broadcast frame for one member: the hot loop of every fanout.
/// `Err(slot)` names a slow consumer for the caller to close once its walk
/// is over: its own queue is past its bounds, or the shard holds
/// `limits.shard_queued_frames_max` frames and this one's last write left
/// bytes behind (`Connection::write_blocked`).
/// Connections that are gone or closing are skipped.
pub(super) fn enqueue(
    conns: &mut Slab<Connection>,
    dirty: &mut Vec<usize>,
    metrics: &mut ShardMetrics,
    member: ConnId,
    frame: &Frame,
    bounds: QueueBounds,
) -> Result<(), usize> {
    let slot = member.slot as usize;
    let Some(conn) = conns.get_mut(slot) else { return Ok(()) };
    if conn.id != member || conn.doomed || conn.state != ConnState::Open {
        return Ok(());
    }
    push_counted(conn, Arc::clone(frame), bounds, metrics).map_err(|SlowConsumer| slot)?;
    metrics.deliveries += 1;
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(slot);
    }
    Ok(())
}

/// Queues `frame` for `conn` within `bounds`, keeping the shard's count of
/// queued frames: every frame queued to a connection goes through here.
/// At `bounds.shard_frames` a connection whose last write left bytes
/// behind is refused (`shard_queue_full`).
fn push_counted(
    conn: &mut Connection,
    frame: Frame,
    bounds: QueueBounds,
    metrics: &mut ShardMetrics,
) -> Result<(), SlowConsumer> {
    if metrics.queued_frames >= bounds.shard_frames && conn.write_blocked() {
        metrics.hit(LimitKind::ShardQueueFull);
        return Err(SlowConsumer);
    }
    let before = conn.outbound.len();
    let pushed = conn.push_bounded(frame, bounds);
    // Counted whether or not the soft bound's grace ran out: the frame is queued.
    metrics.queued_frames += (conn.outbound.len() - before) as u64;
    pushed
}

impl ShardCore {
    pub(super) fn mark_dirty(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Carries out what the rooms decided: local deliveries are queued,
    /// others go to their shard, and a broadcast goes once to each other
    /// shard with members.
    pub(super) fn apply_room_outputs(&mut self) {
        while let Some(output) = self.rooms.poll_output() {
            match output {
                Output::Deliver { to, frame } if to.shard == self.id => {
                    if self.is_live(to) {
                        self.queue(to.slot as usize, frame);
                    }
                }
                // Replies to requests (welcomes, acks, errors, signals) are never
                // dropped: each answers a request that passed the outbox bound.
                Output::Deliver { to, frame } => self.remote.send_control(to.shard, RemoteMsg::Deliver { to, frame }),
                Output::Broadcast { room, audience, skip, frame } => {
                    self.metrics.broadcasts += 1;
                    let bounds = self.member_queue_bounds();
                    let mut slow = Vec::new();
                    for member in self.rooms.local_audience(room, audience) {
                        if Some(member) != skip
                            && let Err(slot) =
                                enqueue(&mut self.conns, &mut self.dirty, &mut self.metrics, member, &frame, bounds)
                        {
                            slow.push(slot);
                        }
                    }
                    // Closing changes room membership, so it waits until the walk is over.
                    for slot in slow {
                        self.close_slow_consumer(slot);
                    }
                    self.fan_out_remote(room, audience, skip, &frame);
                }
                Output::Close { conn, code } if conn.shard == self.id => {
                    if self.is_live(conn) {
                        self.begin_close(conn.slot as usize, code, None);
                    }
                }
                Output::Close { conn, code } => self.remote.send_control(conn.shard, RemoteMsg::Close { conn, code }),
                Output::RoleChanged { conn, membership, role } => self.send_role(conn, membership, role),
                Output::Persist(event) => self.persist(event),
                Output::Chatted { key, sender, id, author, text } => self.webhook_chat(&key, sender, id, author, text),
                Output::Closed { key } => self.release_room(key),
            }
        }
    }

    /// Queues one frame for one connection, closing it if it cannot keep up.
    pub(super) fn queue(&mut self, slot: usize, frame: Frame) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.doomed || conn.state != ConnState::Open {
            return;
        }
        let bounds = match conn.role {
            Role::Echo => {
                // Echo (conformance runs) queues whole large messages: one fixed bound.
                let cap = (self.settings.limits.echo_message_bytes_max * 2)
                    .max(self.settings.limits.outbound_queue_hard_bytes_max as usize);
                QueueBounds { soft: cap, hard: cap, grace_ms: 0, now_ms: 0, shard_frames: self.shard_frames_max() }
            }
            Role::Member(_) => self.member_queue_bounds(),
        };
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if push_counted(conn, frame, bounds, &mut self.metrics).is_err() {
            self.close_slow_consumer(slot);
            return;
        }
        self.metrics.deliveries += 1;
        self.mark_dirty(slot);
    }

    /// A room member's outbound bounds, now.
    pub(super) fn member_queue_bounds(&self) -> QueueBounds {
        let limits = &self.settings.limits;
        QueueBounds {
            soft: limits.outbound_queue_bytes_max as usize,
            hard: limits.outbound_queue_hard_bytes_max as usize,
            grace_ms: limits.outbound_queue_grace_ms,
            now_ms: self.now_ms() as u32,
            shard_frames: self.shard_frames_max(),
        }
    }

    fn shard_frames_max(&self) -> u64 {
        self.settings.limits.shard_queued_frames_max as u64
    }

    /// Debug builds: the running count of queued frames is every queue's.
    pub(super) fn check_queued_frames(&self) {
        if cfg!(debug_assertions) {
            let queued: usize = self.conns.iter().map(|(_, conn)| conn.outbound.len()).sum();
            assert_eq!(self.metrics.queued_frames, queued as u64, "queued_frames drifted from the queues");
        }
    }

    pub(super) fn close_slow_consumer(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            let discarded = conn.outbound.discard_unstarted();
            self.metrics.queued_frames = self.metrics.queued_frames.saturating_sub(discarded as u64);
        }
        self.begin_close(slot, CloseCode::SLOW_CONSUMER, Some(LimitKind::SlowConsumer));
    }

    /// One vectored write per connection with something queued, for at
    /// most `limits.flush_writes_per_turn` of them, oldest first; the rest
    /// stay on the list, in order, for the next turns (the loop does not
    /// wait while it is not empty). Frames queued meanwhile for a
    /// connection still on the list go out in its one write.
    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let turn = dirty.len().min(self.settings.limits.flush_writes_per_turn.max(1));
        if turn < dirty.len() {
            self.metrics.hit(LimitKind::FlushBudget);
        }
        let bounds = self.member_queue_bounds();
        let mut slow = Vec::new();
        for &slot in &dirty[..turn] {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            // An entry left from an earlier turn whose slot was freed and
            // taken again is stale once the new connection's is written.
            if !std::mem::take(&mut conn.dirty) {
                continue;
            }
            if conn.doomed {
                continue;
            }
            let (outcome, written) = conn.outbound.flush(&mut conn.stream);
            self.metrics.frames_out += written.frames as u64;
            self.metrics.queued_frames = self.metrics.queued_frames.saturating_sub(written.frames as u64);
            self.metrics.bytes_out += written.bytes as u64;
            self.metrics.writes += 1;
            match outcome {
                FlushOutcome::Drained => {
                    conn.over_soft_since_ms = 0;
                    if conn.state.shuts_when_written() {
                        // The server closes TCP first (RFC 6455 §7.1.1): the
                        // FIN goes right behind the Close frame.
                        let _ = conn.stream.shutdown(Shutdown::Write);
                        self.drop_conn(slot);
                    }
                }
                // The WRITABLE event marks it dirty again when the socket drains.
                FlushOutcome::WouldBlock => {
                    if conn.state == ConnState::Open
                        && matches!(conn.role, Role::Member(_))
                        && conn.check_backlog(bounds).is_err()
                    {
                        slow.push(slot);
                    }
                }
                FlushOutcome::Failed(_) => self.drop_conn(slot),
            }
        }
        // What this turn did not reach keeps its place ahead of what was
        // marked during it (closes of slow consumers, below).
        dirty.drain(..turn);
        for slot in slow {
            self.close_slow_consumer(slot);
        }
        dirty.append(&mut self.dirty);
        self.dirty = dirty; // keeps the allocation
    }
}
