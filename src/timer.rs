//! A hashed timer wheel: heartbeats (which also watch token expiry) and close deadlines for
//! every connection of a shard, without one timer per connection per tick
//! and without scanning all connections.
//!
//! Time is cut into ticks of `TICK`; a timer due at tick `t` waits in slot
//! `t % SLOTS` and fires when the wheel passes that slot on its round. Entries
//! are never removed early: each carries a `ConnId`, and the shard ignores a
//! fired timer whose generation no longer matches or whose condition no
//! longer holds. The number of entries is bounded by the shard's timer cap.

use std::time::{Duration, Instant};

use crate::ids::ConnId;

/// Resolution of the wheel. Heartbeats are in tens of seconds, so 100 ms is
/// far finer than needed and keeps idle wake-ups to ten a second at most.
pub const TICK: Duration = Duration::from_millis(100);
/// 512 slots of 100 ms: one round is 51.2 s, about one ping interval, so most
/// heartbeat entries are looked at once per firing.
const SLOTS: usize = 512;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The connection's one periodic check: token expiry, silence, ping.
    Heartbeat,
    /// The peer had `close_timeout_ms` to finish the closing handshake.
    CloseDeadline,
}

/// 16 bytes (a `ConnId` and a `u64` tick would make 24): every connection
/// has an entry, and a slot's `Vec` holds up to twice its entries. The due
/// tick is `due_round * SLOTS + ` the slot's index; a round is 51.2 s, so a
/// `u32` of rounds lasts millennia.
#[derive(Debug, Clone, Copy)]
struct Entry {
    due_round: u32,
    slot: u32,
    generation: u32,
    shard: crate::ids::ShardId,
    kind: TimerKind,
}

impl Entry {
    fn conn(&self) -> ConnId {
        ConnId { shard: self.shard, slot: self.slot, generation: self.generation }
    }
}

/// The wheel is full; the caller counts it and treats the timer as due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelFull;

#[derive(Debug)]
pub struct TimerWheel {
    origin: Instant,
    slots: Vec<Vec<Entry>>,
    /// Every tick up to and including this one has fired.
    fired_tick: u64,
    len: usize,
    len_max: usize,
}

impl TimerWheel {
    pub fn new(origin: Instant, len_max: usize) -> TimerWheel {
        TimerWheel { origin, slots: vec![Vec::new(); SLOTS], fired_tick: 0, len: 0, len_max }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_millis() / TICK.as_millis()) as u64
    }

    /// Schedules `kind` for `conn` at `at` (rounded up to the next tick).
    pub fn schedule(&mut self, at: Instant, conn: ConnId, kind: TimerKind) -> Result<(), WheelFull> {
        if self.len >= self.len_max {
            return Err(WheelFull);
        }
        let due_tick = (self.tick_of(at) + 1).max(self.fired_tick + 1);
        let due_round = (due_tick / SLOTS as u64).min(u64::from(u32::MAX)) as u32;
        let entry = Entry { due_round, slot: conn.slot, generation: conn.generation, shard: conn.shard, kind };
        self.slots[(due_tick % SLOTS as u64) as usize].push(entry);
        self.len += 1;
        Ok(())
    }

    /// Moves every timer due by `now` into `fired`.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<(ConnId, TimerKind)>) {
        let now_tick = self.tick_of(now);
        if now_tick <= self.fired_tick {
            return;
        }
        // After a long stall every slot is visited once; entries due later stay.
        let ticks = (now_tick - self.fired_tick).min(SLOTS as u64);
        for step in 1..=ticks {
            let index = (self.fired_tick + step) % SLOTS as u64;
            let slot = &mut self.slots[index as usize];
            let before = slot.len();
            slot.retain(|entry| {
                let due = u64::from(entry.due_round) * SLOTS as u64 + index <= now_tick;
                if due {
                    fired.push((entry.conn(), entry.kind));
                }
                !due
            });
            self.len -= before - slot.len();
        }
        self.fired_tick = now_tick;
    }

    /// When the poll loop should wake next for timers (`None`: no timers).
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.origin + TICK * (self.fired_tick + 1) as u32)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnId {
        ConnId { shard: 0, slot, generation: 0 }
    }

    #[test]
    fn timers_fire_once_at_or_after_their_time() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin, 10);
        wheel.schedule(origin + Duration::from_millis(250), conn(1), TimerKind::Heartbeat).expect("room");
        wheel.schedule(origin + Duration::from_secs(120), conn(2), TimerKind::CloseDeadline).expect("room");
        let mut fired = Vec::new();
        wheel.expire(origin + Duration::from_millis(200), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(origin + Duration::from_millis(400), &mut fired);
        assert_eq!(fired, [(conn(1), TimerKind::Heartbeat)]);
        fired.clear();
        // Several rounds of the wheel pass before the long timer is due.
        wheel.expire(origin + Duration::from_secs(60), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(origin + Duration::from_secs(121), &mut fired);
        assert_eq!(fired, [(conn(2), TimerKind::CloseDeadline)]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn a_stall_longer_than_a_round_still_fires_everything_due() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin, 100);
        for i in 0..50 {
            wheel.schedule(origin + Duration::from_secs(i), conn(i as u32), TimerKind::Heartbeat).expect("room");
        }
        let mut fired = Vec::new();
        wheel.expire(origin + Duration::from_secs(300), &mut fired);
        assert_eq!(fired.len(), 50);
    }

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn the_wheel_is_bounded() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin, 1);
        assert!(wheel.schedule(origin, conn(1), TimerKind::Heartbeat).is_ok());
        assert_eq!(wheel.schedule(origin, conn(2), TimerKind::Heartbeat), Err(WheelFull));
        assert_eq!(wheel.len(), 1);
    }
}
