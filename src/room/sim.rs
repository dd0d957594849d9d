//! A seeded simulation of the room logic: for one seed, a few shards (one
//! `Rooms` each), a few rooms and users, and a few hundred random steps —
//! connections opening and closing, joins and leaves (across shards too),
//! publishes, every meeting request (lobby, roles, hands, screen share,
//! chat, kicks, signals), registry changes and late store answers — with
//! `verify_invariants` after every step and checks on every output.
//!
//! The shards' part is modelled here as the shard code does it
//! (`shard/remote.rs`): a member on another shard joins through a message
//! to the owner, its home keeps a mirror of its role, broadcasts reach it as
//! one fan-out per shard filtered by that mirror, and messages between two
//! shards travel in order, in one in-memory queue per pair, delivered in a
//! seeded order. So the checks also cover what the outputs promise the shard:
//! each broadcast reaches exactly its audience on every shard, each member
//! sees a room's `seq` rise, and once every queue is empty both sides agree
//! on who is in which room with which role.
//!
//! A failure names its seed and step and the command that replays it
//! (`ROOMCAST_SIM_SEED=<seed>`, which prints the steps); `ROOMCAST_SIM_SEEDS=<n>`
//! runs more seeds than the default.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::{Audience, Membership, Output, Peer, Persist, Role, RoomLimits, Rooms, Since, StoredChat};
use crate::ids::{ConnId, RoomKey, ShardId};
use crate::protocol::MeetingRequest;
use crate::refusal::Refusal;
use crate::registry::RoomPolicy;
use crate::ws::frame::Frame;

/// Seeds `simulate_many_seeds` runs unless `ROOMCAST_SIM_SEEDS` says otherwise.
const SEEDS: u64 = 1_500;
/// Steps per seed.
const STEPS: usize = 200;
/// Rooms in play; room `i` is owned by shard `i % shards`.
const KEYS: usize = 3;
/// Users in play; several connections may share one.
const USERS: usize = 4;
/// Connections open at once at most.
const OPEN_MAX: usize = 8;
/// The boot number every epoch starts with.
const BOOT: u64 = 7;

type Check = Result<(), String>;

/// Returns `Err(what)` from the enclosing function when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err(format!($($what)+));
        }
    };
}

/// splitmix64: tiny, fast, and every seed (0 too) gives a good stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Where a connection is in a room, as its home shard holds it (`conn::Place`).
#[derive(Debug, Clone, Copy)]
enum Place {
    Local(Membership),
    /// `None` while the join is in flight to the owner.
    Remote(Option<Membership>),
    /// Left while the join was in flight: undone when the answer comes
    /// back, and until then not joined again (see `Sim::rejoin_in_flight`).
    Abandoned,
}

#[derive(Debug)]
struct Joined {
    key: usize,
    /// Which join this is, so a late answer to an earlier one is told apart.
    tag: u32,
    place: Place,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    user: usize,
    host: bool,
    open: bool,
    rooms: Vec<Joined>,
    /// Per room: the last `seq` this connection received since its last welcome.
    seen: [Option<u64>; KEYS],
}

/// A message between shards (the part of `shard::remote::RemoteMsg` rooms use).
#[derive(Debug)]
enum Msg {
    Join {
        peer: Arc<Peer>,
        key: usize,
        tag: u32,
        reference: bool,
        since: Option<Since>,
    },
    Leave {
        key: usize,
        membership: Membership,
        conn: ConnId,
        reference: bool,
    },
    Publish {
        membership: Membership,
        conn: ConnId,
    },
    Meeting {
        membership: Membership,
        conn: ConnId,
        request: MeetingRequest,
    },
    Joined {
        conn: ConnId,
        key: usize,
        tag: u32,
        membership: Membership,
        role: Role,
    },
    JoinRefused {
        conn: ConnId,
        key: usize,
        tag: u32,
    },
    Left {
        conn: ConnId,
        key: usize,
    },
    Deliver {
        to: ConnId,
        frame: Frame,
    },
    /// `expected`: the owner's audience on the receiving shard when it sent
    /// this; `present`: its members there then, in the audience or not.
    Fanout {
        key: usize,
        audience: Audience,
        skip: Option<ConnId>,
        frame: Frame,
        expected: Vec<ConnId>,
        present: Vec<ConnId>,
    },
    Role {
        conn: ConnId,
        key: usize,
        role: Role,
    },
    Close {
        conn: ConnId,
    },
}

struct Shard {
    rooms: Rooms,
    /// This shard's connections in rooms owned elsewhere, with their roles there.
    mirrors: [Vec<(ConnId, Role)>; KEYS],
}

struct Sim {
    rng: Rng,
    trace: bool,
    /// A connection may join a room again while its first join, left before
    /// the owner answered, is still in flight. The shards get that wrong
    /// today (the bug `rejoin_while_the_first_join_is_in_flight` shows),
    /// so the seeds leave it out until it is fixed.
    rejoin_in_flight: bool,
    /// Requests that admit several lobby members in one call (`lobby.set`
    /// off, a registry change turning the lobby off, `lobby.admit` of a user
    /// waiting twice) are carried out. The room logic gets that wrong today
    /// (the bug `lobby_off_welcomes_each_admitted_member_first` shows), so
    /// the seeds leave them out until it is fixed.
    batch_admits: bool,
    /// See `Known::stale_mirrors`.
    stale_mirrors: bool,
    /// See `Known::capacity_removed`.
    capacity_removed: bool,
    /// Per room: the registry capacity in force (`None`: `members_max`).
    capacities: [Option<u32>; KEYS],
    members_max: u32,
    now_ms: u64,
    shards: Vec<Shard>,
    keys: Vec<RoomKey>,
    /// Every connection ever opened, indexed by its slot.
    conns: Vec<Conn>,
    /// Messages in flight, one FIFO per (from, to) pair: `from * shards + to`.
    channels: Vec<VecDeque<Msg>>,
    /// History loads asked of the store: (shard, room, load, limit).
    store: VecDeque<(usize, usize, u64, u32)>,
    /// Per room: the last `seq` its owner gave out in its current incarnation.
    seqs: [u64; KEYS],
    next_tag: u32,
    /// A digest of every frame received, to check that a seed replays alike.
    digest: u64,
}

/// What a step may do; the weights are out of 100.
const STEP_WEIGHTS: [(Action, usize); 11] = [
    (Action::Open, 5),
    (Action::Join, 13),
    (Action::Leave, 5),
    (Action::Close, 3),
    (Action::Publish, 7),
    (Action::Meeting, 25),
    (Action::Policy, 2),
    (Action::StoreAnswer, 2),
    (Action::Binary, 1),
    (Action::DeliverOne, 33),
    (Action::DeliverAll, 4),
];

#[derive(Debug, Clone, Copy)]
enum Action {
    Open,
    Join,
    Leave,
    Close,
    Publish,
    Meeting,
    Policy,
    StoreAnswer,
    Binary,
    DeliverOne,
    DeliverAll,
}

impl Sim {
    fn new(seed: u64, trace: bool, known: Known) -> Sim {
        let mut rng = Rng(seed);
        let shards = 1 + rng.below(3);
        let durable = rng.chance(30);
        let limits = RoomLimits {
            members_max: 3 + rng.below(3) as u32,
            // With one shard owning all three rooms, the third is refused.
            rooms_max: 2,
            welcome_members_max: 2,
            presence_members_max: 4,
            history_max: 3,
            welcome_history_max: 2,
            chat_text_chars_max: 8,
            screenshare_max: 1 + rng.below(2) as u32,
            lobby_default: rng.chance(50),
            recovery_messages_max: rng.below(3) as u32,
            recovery_age_ms: 40,
            require_registration: false,
        };
        let shards: Vec<Shard> = (0..shards)
            .map(|s| Shard {
                rooms: Rooms::new(s as ShardId, shards, limits).with_store(BOOT, durable),
                mirrors: Default::default(),
            })
            .collect();
        let channels = (0..shards.len() * shards.len()).map(|_| VecDeque::new()).collect();
        if trace {
            println!("seed {seed}: {} shards, durable {durable}, {limits:?}", shards.len());
        }
        Sim {
            rng,
            trace,
            rejoin_in_flight: known.rejoin_in_flight,
            batch_admits: known.batch_admits,
            stale_mirrors: known.stale_mirrors,
            capacity_removed: known.capacity_removed,
            capacities: [None; KEYS],
            members_max: limits.members_max,
            now_ms: 1_000,
            shards,
            keys: (0..KEYS).map(|k| RoomKey::new("", &format!("r{k}"))).collect(),
            conns: Vec::new(),
            channels,
            store: VecDeque::new(),
            seqs: [0; KEYS],
            next_tag: 0,
            digest: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn note(&self, what: impl FnOnce() -> String) {
        if self.trace {
            println!("  {}", what());
        }
    }

    fn owner(&self, key: usize) -> usize {
        key % self.shards.len()
    }

    fn conn(&self, id: ConnId) -> &Conn {
        &self.conns[id.slot as usize]
    }

    fn run(&mut self, steps: usize, step_at: &Cell<usize>) -> Check {
        for step in 0..steps {
            step_at.set(step);
            self.step(step)?;
        }
        step_at.set(steps);
        self.note(|| "end: deliver everything".into());
        self.deliver_all()
    }

    fn step(&mut self, step: usize) -> Check {
        self.now_ms += self.rng.below(25) as u64;
        let mut roll = self.rng.below(100);
        let mut action = Action::DeliverOne;
        for (candidate, weight) in STEP_WEIGHTS {
            if roll < weight {
                action = candidate;
                break;
            }
            roll -= weight;
        }
        if self.trace {
            println!("step {step} at {} ms: {action:?}", self.now_ms);
        }
        match action {
            Action::Open => self.open(),
            Action::Join => self.join()?,
            Action::Leave => self.leave()?,
            Action::Close => {
                if let Some(id) = self.random_open_conn() {
                    self.note(|| format!("{id} closes"));
                    self.close_conn(id)?;
                }
            }
            Action::Publish => self.publish()?,
            Action::Meeting => self.meeting()?,
            Action::Policy => self.policy()?,
            Action::StoreAnswer => self.store_answer()?,
            Action::Binary => self.binary()?,
            Action::DeliverOne => self.deliver_one()?,
            Action::DeliverAll => self.deliver_all()?,
        }
        for (s, shard) in self.shards.iter().enumerate() {
            shard.rooms.verify_invariants().map_err(|e| format!("shard {s}: invariant: {e}"))?;
        }
        Ok(())
    }

    fn random_open_conn(&mut self) -> Option<ConnId> {
        let open: Vec<ConnId> = self.conns.iter().filter(|c| c.open).map(|c| c.id).collect();
        (!open.is_empty()).then(|| open[self.rng.below(open.len())])
    }

    /// A random open connection and one of its rooms (by index in `rooms`).
    fn random_joined(&mut self, settled: bool) -> Option<(ConnId, usize)> {
        let mut choices = Vec::new();
        for conn in self.conns.iter().filter(|c| c.open) {
            for (at, joined) in conn.rooms.iter().enumerate() {
                let usable = match joined.place {
                    Place::Local(_) | Place::Remote(Some(_)) => true,
                    Place::Remote(None) => !settled,
                    Place::Abandoned => false,
                };
                if usable {
                    choices.push((conn.id, at));
                }
            }
        }
        (!choices.is_empty()).then(|| choices[self.rng.below(choices.len())])
    }

    fn open(&mut self) {
        if self.conns.iter().filter(|c| c.open).count() >= OPEN_MAX {
            return;
        }
        let id = ConnId {
            shard: self.rng.below(self.shards.len()) as ShardId,
            slot: self.conns.len() as u32,
            generation: 1,
        };
        let user = self.rng.below(USERS);
        let host = self.rng.chance(12);
        self.note(|| format!("{id} opens as u{user}{}", if host { " (token host)" } else { "" }));
        self.conns.push(Conn { id, user, host, open: true, rooms: Vec::new(), seen: [None; KEYS] });
    }

    fn join(&mut self) -> Check {
        let Some(id) = self.random_open_conn() else { return Ok(()) };
        let key = self.rng.below(KEYS);
        if self.conn(id).rooms.iter().any(|j| j.key == key) {
            return Ok(());
        }
        let owner = self.owner(key);
        let since = self.rng.chance(20).then(|| Since {
            seq: self.rng.below(6) as u64,
            epoch: self.rng.chance(80).then(|| format!("{BOOT}.{owner}.{}", 1 + self.rng.below(4)).into_boxed_str()),
        });
        let reference = self.rng.chance(30);
        let conn = self.conn(id);
        let peer = Peer::with_host(id, &format!("u{}", conn.user), None, conn.host);
        self.next_tag += 1;
        let tag = self.next_tag;
        self.note(|| format!("{id} joins r{key} (tag {tag}, since {since:?})"));
        if owner == id.shard as usize {
            if let Ok(membership) = self.owner_join(owner, &peer, key, reference, since.as_ref())? {
                self.conns[id.slot as usize].rooms.push(Joined { key, tag, place: Place::Local(membership) });
            }
            self.drain(owner, Some(id))
        } else {
            self.conns[id.slot as usize].rooms.push(Joined { key, tag, place: Place::Remote(None) });
            self.send(id.shard as usize, owner, Msg::Join { peer, key, tag, reference, since });
            Ok(())
        }
    }

    /// A join on the owner (its outputs not yet drained); a room it creates
    /// starts counting `seq` again.
    fn owner_join(
        &mut self,
        owner: usize,
        peer: &Arc<Peer>,
        key: usize,
        reference: bool,
        since: Option<&Since>,
    ) -> Result<Result<Membership, Refusal>, String> {
        let rooms = &mut self.shards[owner].rooms;
        if rooms.roles(&self.keys[key]).is_empty() {
            self.seqs[key] = 0;
        }
        let reference = reference.then_some(&b"1"[..]);
        let before = rooms.roles(&self.keys[key]).len();
        let capacity = self.capacities[key].unwrap_or(self.members_max) as usize;
        let joined = rooms.join_since(peer, &self.keys[key], false, reference, since, self.now_ms);
        // `join` admits up to the capacity in force, and refuses a full room.
        let full = matches!(joined, Err(Refusal::RoomFull));
        ensure!(full == (before >= capacity), "join of r{key} with {before} members of {capacity}: {joined:?}");
        match joined {
            Ok(membership) => {
                let role = rooms.role_of(membership, peer.conn);
                ensure!(role.is_some(), "{} joined r{key} but has no role there", peer.conn);
                self.note(|| format!("  {} is in r{key} as {role:?}", peer.conn));
            }
            Err(refused) => self.note(|| format!("  {} refused: {refused:?}", peer.conn)),
        }
        Ok(joined)
    }

    fn leave(&mut self) -> Check {
        let Some((id, at)) = self.random_joined(false) else { return Ok(()) };
        let rooms = &mut self.conns[id.slot as usize].rooms;
        let joined = match rooms[at].place {
            Place::Remote(None) if !self.rejoin_in_flight => {
                let tag = rooms[at].tag;
                rooms[at].place = Place::Abandoned;
                Joined { key: rooms[at].key, tag, place: Place::Remote(None) }
            }
            _ => rooms.remove(at),
        };
        let reference = self.rng.chance(30);
        let key = joined.key;
        self.note(|| format!("{id} leaves r{key} ({:?})", joined.place));
        match joined.place {
            Place::Local(membership) => {
                let reference = reference.then_some(&b"1"[..]);
                let left = self.shards[id.shard as usize].rooms.leave(membership, id, reference);
                ensure!(left, "{id} held a local membership of r{key} the room did not know");
                self.drain(id.shard as usize, Some(id))
            }
            Place::Remote(Some(membership)) => {
                let owner = self.owner(key);
                self.send(id.shard as usize, owner, Msg::Leave { key, membership, conn: id, reference });
                Ok(())
            }
            // Undone when the owner's answer comes back (`on_joined`).
            Place::Remote(None) | Place::Abandoned => Ok(()),
        }
    }

    /// The home shard closes `id` (`leave_all_rooms`): local rooms are left
    /// at once, remote ones by message, with routing to it stopped now.
    fn close_conn(&mut self, id: ConnId) -> Check {
        let home = id.shard as usize;
        let conn = &mut self.conns[id.slot as usize];
        if !conn.open {
            return Ok(());
        }
        conn.open = false;
        let rooms = std::mem::take(&mut conn.rooms);
        for joined in rooms {
            match joined.place {
                Place::Local(membership) => {
                    self.shards[home].rooms.leave(membership, id, None);
                    self.drain(home, Some(id))?;
                }
                Place::Remote(Some(membership)) => {
                    self.shards[home].mirrors[joined.key].retain(|(c, _)| *c != id);
                    let owner = self.owner(joined.key);
                    let leave = Msg::Leave { key: joined.key, membership, conn: id, reference: false };
                    self.send(home, owner, leave);
                }
                Place::Remote(None) | Place::Abandoned => {}
            }
        }
        Ok(())
    }

    fn publish(&mut self) -> Check {
        let Some((id, at)) = self.random_joined(true) else { return Ok(()) };
        let key = self.conn(id).rooms[at].key;
        self.note(|| format!("{id} publishes to r{key}"));
        match self.conn(id).rooms[at].place {
            Place::Local(membership) => self.owner_publish(id.shard as usize, membership, id, key),
            Place::Remote(Some(membership)) => {
                self.send(id.shard as usize, self.owner(key), Msg::Publish { membership, conn: id });
                Ok(())
            }
            Place::Remote(None) | Place::Abandoned => Ok(()),
        }
    }

    /// A publish on the owner: its `seq` is the room's next.
    fn owner_publish(&mut self, owner: usize, membership: Membership, id: ConnId, key: usize) -> Check {
        let reference = self.rng.chance(30).then_some(&b"1"[..]);
        let published = self.shards[owner].rooms.publish(membership, id, reference, b"{\"n\":1}", self.now_ms);
        self.note(|| format!("  published: {published:?}"));
        if let Some(Ok(seq)) = published {
            ensure!(seq == self.seqs[key] + 1, "publish in r{key} got seq {seq} after {}", self.seqs[key]);
            self.seqs[key] = seq;
        }
        self.drain(owner, Some(id))
    }

    fn binary(&mut self) -> Check {
        let Some((id, at)) = self.random_joined(true) else { return Ok(()) };
        if let Place::Local(membership) = self.conn(id).rooms[at].place {
            self.note(|| format!("{id} relays binary"));
            self.shards[id.shard as usize].rooms.relay_binary(membership, id, b"\x01\x02");
            self.drain(id.shard as usize, Some(id))?;
        }
        Ok(())
    }

    fn random_user(&mut self) -> Box<str> {
        format!("u{}", self.rng.below(USERS)).into()
    }

    fn random_request(&mut self) -> MeetingRequest {
        const TEXTS: [&str; 4] = ["hi", "hello", "  ", "far too long"];
        const IDS: [&str; 4] = ["c0", "c1", "c2", "srv-x"];
        match self.rng.below(17) {
            0 | 1 => MeetingRequest::ChatSend {
                text: TEXTS[self.rng.below(TEXTS.len())].into(),
                id: self.rng.chance(60).then(|| IDS[self.rng.below(IDS.len())].into()),
            },
            2 => MeetingRequest::ChatDelete { id: IDS[self.rng.below(IDS.len())].into() },
            3 => MeetingRequest::ChatHistory { limit: self.rng.chance(50).then(|| self.rng.below(4) as u32) },
            4 => MeetingRequest::HandRaise,
            5 => MeetingRequest::HandLower { user: self.rng.chance(50).then(|| self.random_user()) },
            6 => MeetingRequest::ScreenshareRequest,
            7 => MeetingRequest::ScreenshareGrant { user: self.random_user() },
            8 => MeetingRequest::ScreenshareDeny { user: self.random_user() },
            9 => MeetingRequest::ScreenshareStop { user: self.rng.chance(50).then(|| self.random_user()) },
            10 | 11 => MeetingRequest::LobbyAdmit { user: self.random_user() },
            12 => MeetingRequest::LobbyDeny { user: self.random_user() },
            13 => MeetingRequest::LobbySet { enabled: self.rng.chance(50) },
            14 => MeetingRequest::Kick { user: self.random_user() },
            _ => MeetingRequest::Signal { to: self.random_user(), data: b"{}"[..].into() },
        }
    }

    fn meeting(&mut self) -> Check {
        let Some((id, at)) = self.random_joined(true) else { return Ok(()) };
        let request = self.random_request();
        let key = self.conn(id).rooms[at].key;
        self.note(|| format!("{id} (u{}) in r{key}: {request:?}", self.conn(id).user));
        match self.conn(id).rooms[at].place {
            Place::Local(membership) => self.owner_request(id.shard as usize, membership, id, key, &request, true),
            Place::Remote(Some(membership)) => {
                self.send(id.shard as usize, self.owner(key), Msg::Meeting { membership, conn: id, request });
                Ok(())
            }
            Place::Remote(None) | Place::Abandoned => Ok(()),
        }
    }

    /// A meeting request on the owner; `held`: the caller knows the
    /// membership is current (a local one), so `not_joined` is a bug.
    fn owner_request(
        &mut self,
        owner: usize,
        membership: Membership,
        id: ConnId,
        key: usize,
        request: &MeetingRequest,
        held: bool,
    ) -> Check {
        let reference = self.rng.chance(30).then_some(&b"1"[..]);
        if !self.batch_admits && key < KEYS {
            let admits = match request {
                MeetingRequest::LobbySet { enabled: false } => self.waiting(owner, key, None),
                MeetingRequest::LobbyAdmit { user } => self.waiting(owner, key, Some(user)),
                _ => 0,
            };
            if admits > 1 {
                self.note(|| format!("  left out: admits {admits} at once"));
                return Ok(());
            }
        }
        let answer = self.shards[owner].rooms.request(membership, id, request, reference, self.now_ms);
        self.note(|| format!("  answer: {answer:?}"));
        if held && let Err(refusal) = answer {
            ensure!(
                refusal.code() != "not_joined",
                "{id} holds a local membership of r{key} the room refused as not_joined"
            );
        }
        self.drain(owner, Some(id))
    }

    /// Members of room `key` waiting in its lobby (of `user` only, if given).
    fn waiting(&self, owner: usize, key: usize, user: Option<&str>) -> usize {
        let roles = self.shards[owner].rooms.roles(&self.keys[key]);
        let of_user = |c: ConnId| user.is_none_or(|u| u == format!("u{}", self.conn(c).user));
        roles.iter().filter(|&&(c, role)| role == Role::Waiting && of_user(c)).count()
    }

    fn policy(&mut self) -> Check {
        let key = self.rng.below(KEYS);
        let policy = self.rng.chance(80).then(|| RoomPolicy {
            capacity: self.rng.chance(50).then(|| 1 + self.rng.below(5) as u32),
            lobby: self.rng.chance(60).then(|| self.rng.chance(50)),
            private: false,
            history_max: self.rng.chance(50).then(|| self.rng.below(5) as u32),
        });
        self.note(|| format!("registry: r{key} {policy:?}"));
        let owner = self.owner(key);
        if !self.batch_admits && self.waiting(owner, key, None) > 1 {
            self.note(|| "  left out: may admit several at once".into());
            return Ok(());
        }
        let capacity = policy.and_then(|p| p.capacity);
        let members = self.shards[owner].rooms.roles(&self.keys[key]).len();
        if !self.capacity_removed && capacity.is_none() && members > self.members_max as usize {
            self.note(|| "  left out: drops a raised capacity".into());
            return Ok(());
        }
        self.capacities[key] = capacity;
        self.shards[owner].rooms.set_policy(&self.keys[key], policy);
        self.drain(owner, None)
    }

    fn store_answer(&mut self) -> Check {
        let Some((owner, key, load, limit)) = self.store.pop_front() else { return Ok(()) };
        const STORED: [&str; 5] = ["old-1", "c0", "old-2", "c1", "old-3"];
        let count = self.rng.below(limit as usize + 2).min(STORED.len());
        let start = self.rng.below(STORED.len() - count + 1);
        let stored: Vec<StoredChat> = STORED[start..start + count]
            .iter()
            .map(|id| StoredChat { id: (*id).into(), author: "u0".into(), json: b"{\"type\":\"chat\"}"[..].into() })
            .collect();
        self.note(|| format!("store answers r{key} load {load} with {count} messages"));
        self.shards[owner].rooms.history_loaded(&self.keys[key], load, stored);
        self.drain(owner, None)
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let shards = self.shards.len();
        self.channels[from * shards + to].push_back(msg);
    }

    fn deliver_one(&mut self) -> Check {
        let busy: Vec<usize> = (0..self.channels.len()).filter(|&c| !self.channels[c].is_empty()).collect();
        if busy.is_empty() {
            return self.check_settled();
        }
        let channel = busy[self.rng.below(busy.len())];
        let Some(msg) = self.channels[channel].pop_front() else { return Ok(()) };
        let shards = self.shards.len();
        self.on_msg(channel / shards, channel % shards, msg)
    }

    /// Delivers messages until every queue is empty, then checks that both
    /// sides of every membership agree.
    fn deliver_all(&mut self) -> Check {
        while self.channels.iter().any(|c| !c.is_empty()) {
            self.deliver_one()?;
        }
        self.check_settled()
    }

    /// Shard `to` handles a message from shard `from` (`ShardCore::on_remote`).
    fn on_msg(&mut self, from: usize, to: usize, msg: Msg) -> Check {
        if self.trace {
            println!("  shard {from} -> {to}: {}", brief(&msg));
        }
        match msg {
            Msg::Join { peer, key, tag, reference, since } => {
                match self.owner_join(to, &peer, key, reference, since.as_ref())? {
                    Ok(membership) => {
                        let role = self.shards[to].rooms.role_of(membership, peer.conn).unwrap_or(Role::Waiting);
                        // Before the welcome and any broadcast: the home adds its mirror entry first.
                        self.send(to, from, Msg::Joined { conn: peer.conn, key, tag, membership, role });
                        self.drain(to, Some(peer.conn))
                    }
                    Err(_) => {
                        self.send(to, from, Msg::JoinRefused { conn: peer.conn, key, tag });
                        Ok(())
                    }
                }
            }
            Msg::Leave { key, membership, conn, reference } => {
                let reference = reference.then_some(&b"1"[..]);
                if self.shards[to].rooms.leave(membership, conn, reference) {
                    self.send(to, from, Msg::Left { conn, key });
                }
                self.drain(to, Some(conn))
            }
            Msg::Publish { membership, conn } => {
                let key = self.keys.iter().position(|k| Some(k) == self.shards[to].rooms.key(membership.room_slot()));
                match key {
                    Some(key) => self.owner_publish(to, membership, conn, key),
                    None => Ok(()),
                }
            }
            Msg::Meeting { membership, conn, request } => {
                let key = self.keys.iter().position(|k| Some(k) == self.shards[to].rooms.key(membership.room_slot()));
                self.owner_request(to, membership, conn, key.unwrap_or(KEYS), &request, false)
            }
            Msg::Joined { conn, key, tag, membership, role } => {
                let c = &mut self.conns[conn.slot as usize];
                let open = c.open;
                let entry = c
                    .rooms
                    .iter_mut()
                    .find(|j| j.key == key && j.tag == tag && matches!(j.place, Place::Remote(None)))
                    .filter(|_| open);
                match entry {
                    Some(joined) => {
                        joined.place = Place::Remote(Some(membership));
                        self.shards[to].mirrors[key].push((conn, role));
                    }
                    None => {
                        let abandoned =
                            |j: &Joined| j.key == key && j.tag == tag && matches!(j.place, Place::Abandoned);
                        self.conns[conn.slot as usize].rooms.retain(|j| !abandoned(j));
                        self.note(|| format!("  join of {conn} undone"));
                        self.send(to, from, Msg::Leave { key, membership, conn, reference: false });
                    }
                }
                Ok(())
            }
            Msg::JoinRefused { conn, key, tag } => {
                let refused = |j: &Joined| {
                    j.key == key && j.tag == tag && matches!(j.place, Place::Remote(None) | Place::Abandoned)
                };
                self.conns[conn.slot as usize].rooms.retain(|j| !refused(j));
                Ok(())
            }
            Msg::Left { conn, key } => {
                self.shards[to].mirrors[key].retain(|(c, _)| *c != conn);
                Ok(())
            }
            Msg::Deliver { to: conn, frame } => self.receive(conn, &frame),
            Msg::Fanout { key, audience, skip, frame, expected, present } => {
                self.on_fanout(to, key, audience, skip, &frame, &expected, &present)
            }
            Msg::Role { conn, key, role } => {
                if let Some((_, held)) = self.shards[to].mirrors[key].iter_mut().find(|(c, _)| *c == conn) {
                    *held = role;
                }
                Ok(())
            }
            Msg::Close { conn } => self.close_conn(conn),
        }
    }

    /// A broadcast reaches this shard's members of `key` in `audience` by
    /// their mirrored roles: the owner's audience here when it sent it, but
    /// for connections that closed or left since, plus those removed by the
    /// same call (their `Close` follows: they were in the audience when the
    /// broadcast was queued, which leaving it since does not change).
    #[allow(clippy::too_many_arguments)]
    fn on_fanout(
        &mut self,
        shard: usize,
        key: usize,
        audience: Audience,
        skip: Option<ConnId>,
        frame: &Frame,
        expected: &[ConnId],
        present: &[ConnId],
    ) -> Check {
        let recipients: Vec<ConnId> = self.shards[shard].mirrors[key]
            .iter()
            .filter(|&&(c, role)| Some(c) != skip && audience.includes(role))
            .map(|&(c, _)| c)
            .collect();
        for &conn in &recipients {
            let open = self.conn(conn).open;
            ensure!(
                !open || expected.contains(&conn) || !present.contains(&conn),
                "{conn} got a {audience:?} broadcast of r{key} it was not in the audience of ({})",
                payload_text(frame)
            );
        }
        for &conn in expected {
            let c = self.conn(conn);
            let joined = c.rooms.iter().any(|j| j.key == key && matches!(j.place, Place::Remote(Some(_))));
            ensure!(
                recipients.contains(&conn) || !c.open || !joined,
                "{conn} is in the {audience:?} audience of a r{key} broadcast and its home shard did not deliver it ({})",
                payload_text(frame)
            );
        }
        for conn in recipients {
            self.receive(conn, frame)?;
        }
        Ok(())
    }

    /// Carries out the outputs of shard `s` (`apply_room_outputs`), checking
    /// each; `actor`: the connection whose call produced them.
    fn drain(&mut self, s: usize, actor: Option<ConnId>) -> Check {
        while let Some(output) = self.shards[s].rooms.poll_output() {
            match output {
                Output::Deliver { to, frame } => {
                    let member = self.keys.iter().any(|k| self.shards[s].rooms.roles(k).iter().any(|&(c, _)| c == to));
                    ensure!(
                        Some(to) == actor || member || !self.conn(to).open,
                        "shard {s} delivered to {to}, neither the caller nor a member ({})",
                        payload_text(&frame)
                    );
                    self.check_owner_frame(&frame, false)?;
                    if to.shard as usize == s {
                        self.receive(to, &frame)?;
                    } else {
                        self.send(s, to.shard as usize, Msg::Deliver { to, frame });
                    }
                }
                Output::Broadcast { room, audience, skip, frame } => {
                    self.broadcast(s, actor, room, audience, skip, frame)?
                }
                Output::RoleChanged { conn, room, role } => {
                    ensure!(conn.shard as usize != s, "RoleChanged for {conn}, a member on the owner itself");
                    let key = self.keys.iter().position(|k| Some(k) == self.shards[s].rooms.key(room));
                    let Some(key) = key else { return Err(format!("RoleChanged for {conn} in freed slot {room}")) };
                    self.send(s, conn.shard as usize, Msg::Role { conn, key, role });
                }
                Output::Close { conn, .. } => {
                    ensure!(Some(conn) != actor, "{conn} was closed by its own request");
                    if conn.shard as usize == s {
                        self.close_conn(conn)?;
                    } else {
                        self.send(s, conn.shard as usize, Msg::Close { conn });
                    }
                }
                Output::Persist(Persist::LoadHistory { key, load, limit, .. }) => {
                    let Some(key) = self.keys.iter().position(|k| *k == key) else {
                        return Err(format!("history load for unknown room {key:?}"));
                    };
                    self.store.push_back((s, key, load, limit));
                }
                Output::Persist(_) => {}
            }
        }
        Ok(())
    }

    fn broadcast(
        &mut self,
        s: usize,
        actor: Option<ConnId>,
        room: usize,
        audience: Audience,
        skip: Option<ConnId>,
        frame: Frame,
    ) -> Check {
        let rooms = &self.shards[s].rooms;
        let key = self.keys.iter().position(|k| Some(k) == rooms.key(room));
        let Some(key) = key else { return Err(format!("shard {s} broadcast to freed slot {room}")) };
        let members: Vec<ConnId> = rooms.members(room).collect();
        ensure!(
            skip.is_none_or(|c| Some(c) == actor || members.contains(&c)),
            "broadcast of r{key} skips {skip:?}, neither the caller nor a member"
        );
        let expected: Vec<ConnId> = rooms.audience(room, audience).filter(|&c| Some(c) != skip).collect();
        let remote: Vec<ShardId> = rooms.remote_shards(room).collect();
        for conn in &members {
            ensure!(
                conn.shard as usize == s || remote.contains(&conn.shard),
                "{conn} is in r{key} but its shard is not among the room's remote shards {remote:?}"
            );
        }
        self.check_owner_frame(&frame, true)?;
        for &conn in expected.iter().filter(|c| c.shard as usize == s) {
            self.receive(conn, &frame)?;
        }
        for shard in remote {
            let here: Vec<ConnId> = expected.iter().copied().filter(|c| c.shard == shard).collect();
            let present: Vec<ConnId> = members.iter().copied().filter(|c| c.shard == shard).collect();
            let fanout = Msg::Fanout { key, audience, skip, frame: Arc::clone(&frame), expected: here, present };
            self.send(s, shard as usize, fanout);
        }
        Ok(())
    }

    /// On the owner: a chat takes the room's next `seq`, a broadcast message
    /// carries the one its publish returned (a recovered one, delivered to
    /// one joiner, an older one), a welcome the room's current one.
    fn check_owner_frame(&mut self, frame: &Frame, broadcast: bool) -> Check {
        let Some((kind, key, seq)) = sequenced(frame, &self.keys) else { return Ok(()) };
        let last = self.seqs[key];
        match kind {
            Kind::Chat => {
                ensure!(seq == last + 1, "chat in r{key} has seq {seq} after {last}");
                self.seqs[key] = seq;
            }
            Kind::Message if broadcast => {
                ensure!(seq == last, "message in r{key} has seq {seq}, the room is at {last}")
            }
            Kind::Message => ensure!(seq <= last, "recovered message in r{key} has seq {seq}, the room is at {last}"),
            Kind::Welcome => ensure!(seq == last, "welcome to r{key} says seq {seq}, the room is at {last}"),
        }
        Ok(())
    }

    /// A connection receives a frame: a room's messages reach it in `seq`
    /// order (a welcome starts over: recovered messages follow it).
    fn receive(&mut self, to: ConnId, frame: &Frame) -> Check {
        let keys = &self.keys;
        let conn = &mut self.conns[to.slot as usize];
        if !conn.open {
            return Ok(());
        }
        for &byte in frame.iter() {
            self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.digest ^= u64::from(to.slot);
        let text = payload(frame);
        if text.starts_with(b"{\"type\":\"welcome\",") {
            if let Some(key) = room_of(text, keys) {
                conn.seen[key] = None;
            }
            return Ok(());
        }
        if let Some((Kind::Chat | Kind::Message, key, seq)) = sequenced(frame, keys) {
            if let Some(last) = conn.seen[key] {
                ensure!(seq > last, "{to} got seq {seq} in r{key} after {last}");
            }
            conn.seen[key] = Some(seq);
        }
        Ok(())
    }

    /// With no message in flight, both sides of every membership agree: the
    /// owner's members are open connections holding that membership, remote
    /// ones mirrored on their home with the owner's role, and back.
    fn check_settled(&self) -> Check {
        for (key, room_key) in self.keys.iter().enumerate() {
            let owner = self.owner(key);
            let roles = self.shards[owner].rooms.roles(room_key);
            for &(conn, role) in &roles {
                let c = self.conn(conn);
                ensure!(c.open, "{conn} is still in r{key} after it closed");
                let held =
                    c.rooms.iter().any(|j| j.key == key && matches!(j.place, Place::Local(_) | Place::Remote(Some(_))));
                ensure!(held, "{conn} is in r{key} but does not know it");
                if conn.shard as usize != owner {
                    let mirrored: Vec<Role> = self.shards[conn.shard as usize].mirrors[key]
                        .iter()
                        .filter(|(c, _)| *c == conn)
                        .map(|&(_, r)| r)
                        .collect();
                    ensure!(mirrored == [role], "{conn} is {role:?} in r{key}, its home mirrors {mirrored:?}");
                }
            }
            for (s, shard) in self.shards.iter().enumerate() {
                for &(conn, _) in &shard.mirrors[key] {
                    ensure!(
                        roles.iter().any(|&(c, _)| c == conn) || (self.stale_mirrors && !self.conn(conn).open),
                        "shard {s} mirrors {conn} in r{key}, which does not hold it"
                    );
                }
            }
        }
        for conn in self.conns.iter().filter(|c| c.open) {
            for joined in &conn.rooms {
                let membership = match joined.place {
                    Place::Local(m) | Place::Remote(Some(m)) => m,
                    Place::Remote(None) | Place::Abandoned => {
                        return Err(format!("{}: join of r{} unanswered", conn.id, joined.key));
                    }
                };
                let owner = self.owner(joined.key);
                ensure!(
                    self.shards[owner].rooms.role_of(membership, conn.id).is_some(),
                    "{} holds a membership of r{} the owner does not",
                    conn.id,
                    joined.key
                );
            }
        }
        Ok(())
    }
}

/// The kinds of frame that carry a room's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Chat,
    Welcome,
}

/// A frame's payload (server frames are unmasked, under 64 KiB here).
fn payload(frame: &[u8]) -> &[u8] {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => &frame[4..],
        Some(127) => &frame[10..],
        Some(_) => &frame[2..],
        None => &[],
    }
}

fn payload_text(frame: &Frame) -> String {
    String::from_utf8_lossy(payload(frame)).into_owned()
}

/// The room (by index) a frame names in its first `"room":"…"`.
fn room_of(text: &[u8], keys: &[RoomKey]) -> Option<usize> {
    let at = find(text, b"\"room\":\"")? + 8;
    let len = text[at..].iter().position(|&b| b == b'"')?;
    keys.iter().position(|k| k.room().as_bytes() == &text[at..at + len])
}

/// For a `message`, `chat` or full `welcome`: its kind, room and `seq` (the
/// first `"seq":`, which in these frames is their own: the user ids and
/// texts the simulation uses hold none).
fn sequenced(frame: &Frame, keys: &[RoomKey]) -> Option<(Kind, usize, u64)> {
    let text = payload(frame);
    let kind = if text.starts_with(b"{\"type\":\"message\",") {
        Kind::Message
    } else if text.starts_with(b"{\"type\":\"chat\",") {
        Kind::Chat
    } else if text.starts_with(b"{\"type\":\"welcome\",") {
        Kind::Welcome
    } else {
        return None;
    };
    let key = room_of(text, keys)?;
    let at = find(text, b"\"seq\":")? + 6;
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&text[at..at + digits]).ok()?.parse().ok()?;
    Some((kind, key, seq))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A message in one line, frames as text.
fn brief(msg: &Msg) -> String {
    match msg {
        Msg::Deliver { to, frame } => format!("Deliver to {to}: {}", payload_text(frame)),
        Msg::Fanout { key, audience, skip, frame, expected, .. } => {
            format!("Fanout r{key} {audience:?} skip {skip:?} expected {expected:?}: {}", payload_text(frame))
        }
        Msg::Join { peer, key, tag, .. } => format!("Join {} r{key} tag {tag}", peer.conn),
        other => format!("{other:?}"),
    }
}

/// Which known bugs the seeds steer around (see `Sim`); `Known::default()`
/// steers around none.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    rejoin_in_flight: bool,
    batch_admits: bool,
    /// A mirror entry of a closed connection may outlive it (the bug
    /// `leave_crossing_a_removal_leaves_no_mirror_behind` shows): the
    /// settled check lets that pass until it is fixed.
    stale_mirrors: bool,
    /// A registry change drops a room's raised capacity while it holds more
    /// than `members_max` (the bug `dropping_a_raised_capacity_keeps_the_members`
    /// shows): the seeds leave that out until it is fixed.
    capacity_removed: bool,
}

/// What the seeds do while the known bugs stand.
const AROUND_KNOWN_BUGS: Known =
    Known { rejoin_in_flight: false, batch_admits: false, stale_mirrors: true, capacity_removed: false };

/// Runs one seed; `Err` says where and why it failed (a panic in the room
/// logic, such as its own debug checks, included).
fn run_seed(seed: u64, steps: usize, trace: bool, known: Known) -> Result<u64, String> {
    let step_at = Cell::new(0);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, trace, known);
        sim.run(steps, &step_at).map(|()| sim.digest)
    }));
    let step = step_at.get();
    let why = match outcome {
        Ok(Ok(digest)) => return Ok(digest),
        Ok(Err(why)) => why,
        Err(panic) => {
            let text =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("panicked: {}", text.unwrap_or_default())
        }
    };
    Err(format!(
        "room simulation failed: seed {seed}, step {step}: {why}\n\
         replay with: ROOMCAST_SIM_SEED={seed} cargo test --lib room::sim -- --nocapture"
    ))
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// `ROOMCAST_SIM_SEED=<seed>` replays that one seed with a trace of its
/// steps; otherwise seeds `0..ROOMCAST_SIM_SEEDS` (default `SEEDS`) run.
#[test]
fn simulate_many_seeds() {
    if let Some(seed) = env_number("ROOMCAST_SIM_SEED") {
        if let Err(failure) = run_seed(seed, STEPS, true, AROUND_KNOWN_BUGS) {
            panic!("{failure}");
        }
        return;
    }
    let seeds = env_number("ROOMCAST_SIM_SEEDS").unwrap_or(SEEDS);
    for seed in 0..seeds {
        if let Err(failure) = run_seed(seed, STEPS, false, AROUND_KNOWN_BUGS) {
            panic!("{failure}");
        }
    }
}

/// Replaying a seed gives the same run: failures can be reproduced.
#[test]
fn a_seed_replays_alike() {
    for seed in [1, 42, 7_777] {
        assert_eq!(
            run_seed(seed, STEPS, false, AROUND_KNOWN_BUGS),
            run_seed(seed, STEPS, false, AROUND_KNOWN_BUGS),
            "seed {seed}"
        );
    }
}

/// Bug found by this simulation (seed 39 with `rejoin_in_flight`): a
/// connection joins a room on another shard, leaves it and joins it again
/// before the owner answered. Both joins reach the owner; the home undoes
/// the first (`on_joined`), and the owner's `Left` for that undo makes the
/// home forget the connection's mirror entry for the room (`forget_member`
/// matches by connection and room, not by membership), which belonged to
/// the second join: the connection stays a member on the owner but gets no
/// broadcast again. Ignored until `shard/remote.rs` is fixed.
#[test]
#[ignore = "known bug in shard/remote.rs: a Left for an undone join forgets the next join's mirror entry"]
fn rejoin_while_the_first_join_is_in_flight() {
    let known = Known { rejoin_in_flight: true, ..AROUND_KNOWN_BUGS };
    for seed in 0..SEEDS {
        if let Err(failure) = run_seed(seed, STEPS, false, known) {
            panic!("{failure}");
        }
    }
}

/// Bug found by this simulation (seed 46 with `batch_admits`): turning
/// the lobby off with two members waiting admits them one after the other
/// (`lobby_set` calls `admit_member` per member), so the `member_joined`
/// queued for the first is carried out once the second is admitted too:
/// on the owner's shard the second receives it before its own `welcome`,
/// while on any other shard (whose mirror learns the role later, in order)
/// it does not receive it at all. Debug builds catch it in `poll_output`.
/// Ignored until `lobby_set` / `lobby_admit` admit in a way that queues no
/// broadcast to the admitted audience before the last role change.
#[test]
#[ignore = "known bug in room/meeting.rs: admitting several lobby members in one call"]
fn lobby_off_welcomes_each_admitted_member_first() {
    use super::tests::{conn, limits};
    let mut rooms = Rooms::new(0, 1, RoomLimits { lobby_default: true, ..limits(10, 10, 10) });
    let key = RoomKey::new("", "m");
    let mut joined = Vec::new();
    for (slot, user) in [(1, "h"), (2, "a"), (3, "b")] {
        let peer = Peer::new(conn(slot), user, None);
        joined.push(rooms.join(&peer, &key, false, None).expect("the room has space"));
    }
    while rooms.poll_output().is_some() {}
    let off = MeetingRequest::LobbySet { enabled: false };
    rooms.request(joined[0], conn(1), &off, None, 0).expect("a host may turn the lobby off");
    let mut welcomed = Vec::new();
    while let Some(output) = rooms.poll_output() {
        let (to, frame): (Vec<ConnId>, Frame) = match output {
            Output::Deliver { to, frame } => (vec![to], frame),
            Output::Broadcast { room, audience, skip, frame } => {
                (rooms.audience(room, audience).filter(|&c| Some(c) != skip).collect(), frame)
            }
            _ => continue,
        };
        let welcome = payload(&frame).starts_with(b"{\"type\":\"welcome\",");
        for receiver in to {
            // The host was welcomed at its join, before the lobby went off.
            let known = welcome || receiver == conn(1) || welcomed.contains(&receiver);
            assert!(known, "{receiver} got {} before its welcome", payload_text(&frame));
            if welcome {
                welcomed.push(receiver);
            }
        }
    }
}

/// Bug found by this simulation (seed 194 without `stale_mirrors`): a
/// connection on another shard leaves a room (its `Leave` in flight) while
/// a host of the room removes it (`kick`, or `lobby.deny` as in the seed).
/// The owner's `leave` finds it gone and sends no `Left`; the `Close` makes
/// the home leave the rooms the connection still lists, which no longer
/// include this one: its mirror entry stays for good, a small leak per such
/// race (nothing is misrouted: the connection id is dead). Ignored until
/// `shard/remote.rs` is fixed (e.g. a `Left` for every `Leave`, naming the
/// membership, which also fixes `rejoin_while_the_first_join_is_in_flight`).
#[test]
#[ignore = "known bug in shard/remote.rs: a mirror entry outlives a leave that crossed a kick"]
fn leave_crossing_a_removal_leaves_no_mirror_behind() {
    let known = Known { stale_mirrors: false, ..AROUND_KNOWN_BUGS };
    for seed in 0..SEEDS {
        if let Err(failure) = run_seed(seed, STEPS, false, known) {
            panic!("{failure}");
        }
    }
}

/// Bug found by this simulation (seed 6387 with `capacity_removed`): the
/// registry raises a room's capacity above `members_max`, the room fills
/// past `members_max`, then a registry change drops the capacity. The
/// members stay, as `set_policy` promises for a lowered capacity, but the
/// debug check in `Rooms::check_invariants` (`mod.rs`) then asserts
/// `members <= members_max` and panics (debug builds only; release builds
/// are right). `verify_invariants` leaves that bound out for this reason.
#[test]
#[ignore = "known bug in room/mod.rs check_invariants: a dropped capacity fails the debug check"]
fn dropping_a_raised_capacity_keeps_the_members() {
    use super::tests::{conn, limits};
    let mut rooms = Rooms::new(0, 1, limits(2, 10, 10));
    let key = RoomKey::new("", "m");
    let raised = RoomPolicy { capacity: Some(3), ..RoomPolicy::default() };
    rooms.set_policy(&key, Some(raised));
    for slot in 1..=3 {
        rooms.join(&Peer::new(conn(slot), "u", None), &key, false, None).expect("within the raised capacity");
    }
    rooms.set_policy(&key, None);
    assert_eq!(rooms.roles(&key).len(), 3, "members present stay");
    rooms.check_invariants();
}
