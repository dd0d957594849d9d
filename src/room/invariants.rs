//! The room state's invariants as one checker that reports instead of
//! panicking, so the seeded simulation (`sim.rs`) can name the seed and step
//! that broke one. Every check is derived from a rule the code enforces
//! (`mod.rs`, `meeting.rs`), with the rule named next to it; a check that
//! fails is a bug in the room logic, not in the caller.

use std::collections::HashSet;

use super::{Role, Rooms};

/// Returns `Err(what)` from the enclosing function when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err(format!($($what)+));
        }
    };
}

impl Rooms {
    /// Checks every invariant of the rooms this shard owns; `Err` names the
    /// first that does not hold. Reads only, so it may run after any call.
    pub fn verify_invariants(&self) -> Result<(), String> {
        // `join` creates and indexes a room together, `remove_member` frees
        // and unindexes it together: the index maps exactly the live rooms.
        ensure!(
            self.index.len() == self.rooms.len(),
            "index holds {} rooms, slab {}",
            self.index.len(),
            self.rooms.len()
        );
        // `join` refuses to create a room past `rooms_max` (`TooManyRooms`).
        ensure!(self.rooms.len() <= self.limits.rooms_max as usize, "{} rooms over rooms_max", self.rooms.len());
        // `add_member` and `remove_member` move `remote_members` with each
        // room's cluster lane.
        let lanes: u64 = self
            .rooms
            .iter()
            .filter_map(|(_, room)| room.per_shard().map(|counts| u64::from(counts[self.shards])))
            .sum();
        ensure!(
            lanes == self.remote_members,
            "remote_members is {}, the rooms' cluster lanes say {lanes}",
            self.remote_members
        );
        let mut incarnations = HashSet::new();
        for (slot, room) in &self.rooms {
            let key = &room.key;
            ensure!(self.index.get(key, &self.rooms) == Some(slot), "room {key:?} not indexed at its slot {slot}");
            // Each creation takes the next number, so live rooms never share one.
            ensure!(
                room.incarnation <= self.incarnations && incarnations.insert(room.incarnation),
                "room {key:?} has incarnation {} (issued so far: {})",
                room.incarnation,
                self.incarnations
            );
            // `remove_member` frees a room the moment its last member goes.
            ensure!(!room.members.is_empty(), "empty room {key:?} kept");
            // No bound on the members here: `join` refuses past the capacity
            // in force, but a registry change may lower it (to `members_max`
            // too, by dropping a raised one) and the members present stay.
            // The simulation checks the bound at each join instead.
            // Only a durable `Rooms` asks the store for history (`loading`).
            ensure!(!room.loading || self.durable, "room {key:?} loads history without a store");
            self.verify_members(room)?;
            self.verify_meeting(room)?;
            // `publish` keeps at most `recovery_messages_max`, in `seq` order,
            // each newer than the last one dropped and none past the room's seq.
            if let Some(recent) = room.recent() {
                let max = self.limits.recovery_messages_max as usize;
                ensure!(recent.held.len() <= max, "recovery ring of {key:?} holds {}, over {max}", recent.held.len());
                ensure!(
                    recent.dropped <= room.seq,
                    "recovery ring of {key:?} dropped seq {} past the room's",
                    recent.dropped
                );
                let mut last = recent.dropped;
                for &(seq, ..) in &recent.held {
                    ensure!(seq > last && seq <= room.seq, "recovery ring of {key:?}: seq {seq} after {last}");
                    last = seq;
                }
            }
        }
        Ok(())
    }

    /// The members of one room against its counters and roles.
    fn verify_members(&self, room: &super::Room) -> Result<(), String> {
        let key = &room.key;
        let mut per_shard = vec![0u32; self.shards + 1];
        let (mut waiting, mut hosts) = (0u32, 0usize);
        let mut arrivals = HashSet::new();
        for (_, member) in &room.members {
            // `join` stores the peer's own conn next to it, for the broadcast walk.
            ensure!(member.conn == member.peer.conn, "member {} of {key:?} holds another conn's peer", member.conn);
            // Arrivals are numbered by `join` from `room.arrivals`, once each.
            ensure!(
                member.arrival <= room.arrivals && arrivals.insert(member.arrival),
                "member {} of {key:?} has arrival {} (room at {})",
                member.conn,
                member.arrival,
                room.arrivals
            );
            // A token host joins as host, and no rule ever lowers a host.
            ensure!(
                !member.peer.host || member.role == Role::Host,
                "token host {} of {key:?} is {:?}",
                member.conn,
                member.role
            );
            // Quiet joins (personal and group rooms) never wait in a lobby.
            ensure!(!member.quiet || member.role != Role::Waiting, "quiet member {} of {key:?} waits", member.conn);
            // A sharing member's user is in `sharers`: `screenshare_grant` sets
            // both, `screenshare_stop` clears both (`set_role_of_user`).
            ensure!(
                member.role != Role::Screenshare || room.meeting().sharers.iter().any(|u| **u == *member.peer.user()),
                "member {} of {key:?} has role screenshare but its user is not sharing",
                member.conn
            );
            if member.conn.shard != self.shard {
                let Some(count) = per_shard.get_mut(super::lane(member.conn.shard, self.shards)) else {
                    return Err(format!("member {} of {key:?} on shard out of range", member.conn));
                };
                *count += 1;
            }
            waiting += u32::from(member.role == Role::Waiting);
            hosts += usize::from(member.role == Role::Host);
        }
        // `join` and `remove_member` count remote members per home shard (a
        // broadcast goes once to each shard with any, `remote_shards`); this
        // shard's own entry stays 0.
        match room.per_shard() {
            None => {
                ensure!(per_shard.iter().all(|&n| n == 0), "room {key:?} has remote members but no per-shard counts")
            }
            Some(counts) => {
                ensure!(*counts == *per_shard, "per-shard counts of {key:?} are {counts:?}, members say {per_shard:?}")
            }
        }
        // `join`, `admit_members`, `hand_over_host` and `remove_member` keep the lobby count.
        ensure!(waiting == room.waiting, "room {key:?} counts {} waiting, {waiting} wait", room.waiting);
        // The first member is host, and `hand_over_host` runs after every
        // admitted departure, promoting from the lobby if nobody else is left.
        ensure!(hosts > 0, "room {key:?} has {} members and no host", room.members.len());
        // Members wait only while the lobby is on; `lobby_set(false)` admits them all.
        ensure!(room.lobby || waiting == 0, "room {key:?} has its lobby off and {waiting} waiting");
        Ok(())
    }

    /// Hands, screen sharing and chat history of one room against its members.
    fn verify_meeting(&self, room: &super::Room) -> Result<(), String> {
        let key = &room.key;
        let meeting = room.meeting();
        let admitted =
            |user: &str| room.members.iter().any(|(_, m)| *m.peer.user() == *user && m.role != Role::Waiting);
        let unique = |users: &[Box<str>]| users.iter().collect::<HashSet<_>>().len() == users.len();
        // `set_hand` adds a user only when absent.
        ensure!(unique(&meeting.hands), "a hand raised twice in {key:?}: {:?}", meeting.hands);
        // Only admitted roles may raise (`allowed`), and `after_departure`
        // lowers the hand when the user's last admitted connection goes.
        for user in &meeting.hands {
            ensure!(admitted(user), "hand of {user:?} raised in {key:?} with no admitted connection");
        }
        // `screenshare_grant` refuses past `screenshare_max` and adds a user once.
        ensure!(
            meeting.sharers.len() <= self.limits.screenshare_max as usize && unique(&meeting.sharers),
            "sharers of {key:?}: {:?}, max {}",
            meeting.sharers,
            self.limits.screenshare_max
        );
        // `screenshare_grant` needs an admitted member of the user, and
        // `after_departure` stops the share with the user's last one.
        for user in &meeting.sharers {
            ensure!(admitted(user), "{user:?} shares in {key:?} with no admitted connection");
        }
        // `screenshare_request` adds a user once; `after_departure` drops it.
        ensure!(unique(&meeting.share_requests), "a share request twice in {key:?}: {:?}", meeting.share_requests);
        for user in &meeting.share_requests {
            ensure!(admitted(user), "{user:?} asks to share in {key:?} with no admitted connection");
        }
        // `chat_send`, `merge_history` and `set_policy` trim to the room's `history_max`.
        let history_max = self.history_max(key) as usize;
        ensure!(
            meeting.history.len() <= history_max,
            "history of {key:?} holds {}, over {history_max}",
            meeting.history.len()
        );
        // `chat_send` refuses an id already in the history (`duplicate_id`),
        // and `merge_history` drops a stored message whose id was reused.
        let ids: HashSet<&str> = meeting.history.iter().map(|e| &*e.id).collect();
        ensure!(ids.len() == meeting.history.len(), "history of {key:?} holds an id twice");
        Ok(())
    }
}
