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
        membership: Membership,
    },
    Deliver {
        to: ConnId,
        frame: Frame,
    },
    /// `expected`: the owner's audience on the receiving shard when it sent
    /// this; `present`: its members there then, in the audience or not.
    /// Both by membership: a connection may be in a room twice for a moment
    /// (a join left in flight, then joined again), with two roles.
    Fanout {
        key: usize,
        audience: Audience,
        skip: Option<ConnId>,
        frame: Frame,
        expected: Vec<(ConnId, Membership)>,
        present: Vec<(ConnId, Membership)>,
    },
    Role {
        conn: ConnId,
        key: usize,
        membership: Membership,
        role: Role,
    },
    Close {
        conn: ConnId,
    },
}

struct Shard {
    rooms: Rooms,
    /// This shard's connections in rooms owned elsewhere, with their
    /// memberships and roles there.
    mirrors: [Vec<(ConnId, Membership, Role)>; KEYS],
}

struct Sim {
    rng: Rng,
    trace: bool,
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
    fn new(seed: u64, trace: bool) -> Sim {
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
        if trace {
            println!("seed {seed}: {shards} shards, durable {durable}, {limits:?}");
        }
        Sim::with(rng, trace, shards, durable, limits)
    }

    /// A run over `shards` shards whose rooms have `limits` (scripted tests
    /// choose them; `new` draws them from the seed).
    fn with(rng: Rng, trace: bool, shards: usize, durable: bool, limits: RoomLimits) -> Sim {
        let shards: Vec<Shard> = (0..shards)
            .map(|s| Shard {
                rooms: Rooms::new(s as ShardId, shards, limits).with_store(BOOT, durable),
                mirrors: Default::default(),
            })
            .collect();
        let channels = (0..shards.len() * shards.len()).map(|_| VecDeque::new()).collect();
        Sim {
            rng,
            trace,
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
        self.open_as(id.shard, user, host);
    }

    /// Opens a connection of user `u{user}` on shard `shard`.
    fn open_as(&mut self, shard: ShardId, user: usize, host: bool) -> ConnId {
        let id = ConnId { shard, slot: self.conns.len() as u32, generation: 1 };
        self.note(|| format!("{id} opens as u{user}{}", if host { " (token host)" } else { "" }));
        self.conns.push(Conn { id, user, host, open: true, rooms: Vec::new(), seen: [None; KEYS] });
        id
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
        self.join_room(id, key, since, reference)
    }

    /// Connection `id` joins room `key`: on its own shard, or by a `Join`
    /// to the owner (the room is then pending).
    fn join_room(&mut self, id: ConnId, key: usize, since: Option<Since>, reference: bool) -> Check {
        let owner = self.owner(key);
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
        let reference = self.rng.chance(30);
        self.leave_room(id, at, reference)
    }

    /// Connection `id` leaves its room at index `at` of its `rooms`.
    fn leave_room(&mut self, id: ConnId, at: usize, reference: bool) -> Check {
        let joined = self.conns[id.slot as usize].rooms.remove(at);
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
            Place::Remote(None) => Ok(()),
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
                    self.shards[home].mirrors[joined.key].retain(|&(c, ..)| c != id);
                    let owner = self.owner(joined.key);
                    let leave = Msg::Leave { key: joined.key, membership, conn: id, reference: false };
                    self.send(home, owner, leave);
                }
                Place::Remote(None) => {}
            }
        }
        Ok(())
    }

    fn publish(&mut self) -> Check {
        let Some((id, at)) = self.random_joined(true) else { return Ok(()) };
        self.publish_in(id, at)
    }

    /// Connection `id` publishes to its room at index `at` of its `rooms`.
    fn publish_in(&mut self, id: ConnId, at: usize) -> Check {
        let key = self.conn(id).rooms[at].key;
        self.note(|| format!("{id} publishes to r{key}"));
        match self.conn(id).rooms[at].place {
            Place::Local(membership) => self.owner_publish(id.shard as usize, membership, id, key),
            Place::Remote(Some(membership)) => {
                self.send(id.shard as usize, self.owner(key), Msg::Publish { membership, conn: id });
                Ok(())
            }
            Place::Remote(None) => Ok(()),
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
        self.request_in(id, at, request)
    }

    /// Connection `id` makes `request` in its room at index `at` of its `rooms`.
    fn request_in(&mut self, id: ConnId, at: usize, request: MeetingRequest) -> Check {
        let key = self.conn(id).rooms[at].key;
        self.note(|| format!("{id} (u{}) in r{key}: {request:?}", self.conn(id).user));
        match self.conn(id).rooms[at].place {
            Place::Local(membership) => self.owner_request(id.shard as usize, membership, id, key, &request, true),
            Place::Remote(Some(membership)) => {
                self.send(id.shard as usize, self.owner(key), Msg::Meeting { membership, conn: id, request });
                Ok(())
            }
            Place::Remote(None) => Ok(()),
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
        self.capacities[key] = policy.and_then(|p| p.capacity);
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
                // Answered also when a kick or deny crossed the leave.
                self.shards[to].rooms.leave(membership, conn, reference);
                self.send(to, from, Msg::Left { conn, key, membership });
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
                        self.shards[to].mirrors[key].push((conn, membership, role));
                    }
                    None => {
                        self.note(|| format!("  join of {conn} undone"));
                        self.send(to, from, Msg::Leave { key, membership, conn, reference: false });
                    }
                }
                Ok(())
            }
            Msg::JoinRefused { conn, key, tag } => {
                let refused = |j: &Joined| j.key == key && j.tag == tag && matches!(j.place, Place::Remote(None));
                self.conns[conn.slot as usize].rooms.retain(|j| !refused(j));
                Ok(())
            }
            Msg::Left { conn, key, membership } => {
                self.shards[to].mirrors[key].retain(|&(c, m, _)| (c, m) != (conn, membership));
                Ok(())
            }
            Msg::Deliver { to: conn, frame } => self.receive(conn, &frame),
            Msg::Fanout { key, audience, skip, frame, expected, present } => {
                self.on_fanout(to, key, audience, skip, &frame, &expected, &present)
            }
            Msg::Role { conn, key, membership, role } => {
                let mirrored = self.shards[to].mirrors[key].iter_mut().find(|(c, m, _)| (*c, *m) == (conn, membership));
                if let Some((.., held)) = mirrored {
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
        expected: &[(ConnId, Membership)],
        present: &[(ConnId, Membership)],
    ) -> Check {
        let recipients: Vec<(ConnId, Membership)> = self.shards[shard].mirrors[key]
            .iter()
            .filter(|&&(c, _, role)| Some(c) != skip && audience.includes(role))
            .map(|&(c, m, _)| (c, m))
            .collect();
        for &(conn, membership) in &recipients {
            let open = self.conn(conn).open;
            ensure!(
                !open || expected.contains(&(conn, membership)) || !present.contains(&(conn, membership)),
                "{conn} got a {audience:?} broadcast of r{key} it was not in the audience of ({})",
                payload_text(frame)
            );
        }
        for &(conn, membership) in expected {
            let c = self.conn(conn);
            let joined =
                c.rooms.iter().any(|j| j.key == key && matches!(j.place, Place::Remote(Some(m)) if m == membership));
            ensure!(
                recipients.contains(&(conn, membership)) || !c.open || !joined,
                "{conn} is in the {audience:?} audience of a r{key} broadcast and its home shard did not deliver it ({})",
                payload_text(frame)
            );
        }
        for (conn, _) in recipients {
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
                Output::RoleChanged { conn, membership, role } => {
                    let room = membership.room_slot();
                    ensure!(conn.shard as usize != s, "RoleChanged for {conn}, a member on the owner itself");
                    let key = self.keys.iter().position(|k| Some(k) == self.shards[s].rooms.key(room));
                    let Some(key) = key else { return Err(format!("RoleChanged for {conn} in freed slot {room}")) };
                    self.send(s, conn.shard as usize, Msg::Role { conn, key, membership, role });
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
                Output::Persist(_) | Output::Chatted { .. } | Output::Closed { .. } => {}
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
        let by_membership = |audience: Option<Audience>| -> Vec<(ConnId, Membership)> {
            let Some(state) = rooms.rooms.get(room) else { return Vec::new() };
            let incarnation = state.incarnation as u32;
            state
                .members
                .iter()
                .filter(|(_, m)| audience.is_none_or(|a| a.includes(m.role) && Some(m.conn) != skip))
                .map(|(at, m)| (m.conn, Membership { room: room as u32, member: at as u32, incarnation }))
                .collect()
        };
        let (expected_at, members_at) = (by_membership(Some(audience)), by_membership(None));
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
            let here: Vec<(ConnId, Membership)> =
                expected_at.iter().copied().filter(|(c, _)| c.shard == shard).collect();
            let present: Vec<(ConnId, Membership)> =
                members_at.iter().copied().filter(|(c, _)| c.shard == shard).collect();
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
                        .filter(|&&(c, ..)| c == conn)
                        .map(|&(.., r)| r)
                        .collect();
                    ensure!(mirrored == [role], "{conn} is {role:?} in r{key}, its home mirrors {mirrored:?}");
                }
            }
            for (s, shard) in self.shards.iter().enumerate() {
                for &(conn, ..) in &shard.mirrors[key] {
                    ensure!(
                        roles.iter().any(|&(c, _)| c == conn),
                        "shard {s} mirrors {conn} in r{key}, which does not hold it"
                    );
                }
            }
        }
        for conn in self.conns.iter().filter(|c| c.open) {
            for joined in &conn.rooms {
                let membership = match joined.place {
                    Place::Local(m) | Place::Remote(Some(m)) => m,
                    Place::Remote(None) => {
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

/// Runs one seed; `Err` says where and why it failed (a panic in the room
/// logic, such as its own debug checks, included).
fn run_seed(seed: u64, steps: usize, trace: bool) -> Result<u64, String> {
    let step_at = Cell::new(0);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, trace);
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
        if let Err(failure) = run_seed(seed, STEPS, true) {
            panic!("{failure}");
        }
        return;
    }
    let seeds = env_number("ROOMCAST_SIM_SEEDS").unwrap_or(SEEDS);
    for seed in 0..seeds {
        if let Err(failure) = run_seed(seed, STEPS, false) {
            panic!("{failure}");
        }
    }
}

/// Replaying a seed gives the same run: failures can be reproduced.
#[test]
fn a_seed_replays_alike() {
    for seed in [1, 42, 7_777] {
        assert_eq!(run_seed(seed, STEPS, false), run_seed(seed, STEPS, false), "seed {seed}");
    }
}

/// A scripted run: `shards` shards, no store, no lobby, room for 5.
fn scripted(shards: usize) -> Sim {
    let limits = RoomLimits {
        members_max: 5,
        rooms_max: 2,
        welcome_members_max: 2,
        presence_members_max: 4,
        history_max: 3,
        welcome_history_max: 2,
        chat_text_chars_max: 8,
        screenshare_max: 1,
        lobby_default: false,
        recovery_messages_max: 2,
        recovery_age_ms: 40,
        require_registration: false,
    };
    Sim::with(Rng(0), false, shards, false, limits)
}

/// Bug found by this simulation (seed 39): a connection joins a room on
/// another shard, leaves it and joins it again before the owner answered.
/// Both joins reach the owner; the home undoes the first (`on_joined`), and
/// the owner's `Left` for that undo made the home forget the connection's
/// mirror entry for the room, which belonged to the second join: the
/// connection stayed a member on the owner but got no broadcast again.
/// `Left` (and `Role`) now name the membership.
#[test]
fn rejoin_while_the_first_join_is_in_flight() {
    let run = || -> Check {
        let mut sim = scripted(2);
        // Room r1 lives on shard 1; the rejoining connection on shard 0.
        let host = sim.open_as(1, 0, false);
        sim.join_room(host, 1, None, false)?;
        let rejoiner = sim.open_as(0, 1, false);
        sim.join_room(rejoiner, 1, None, false)?;
        sim.leave_room(rejoiner, 0, false)?;
        sim.join_room(rejoiner, 1, None, false)?;
        // Settles, then checks that both sides agree (`check_settled`).
        sim.deliver_all()?;
        sim.publish_in(host, 0)?;
        sim.deliver_all()?;
        ensure!(sim.conn(rejoiner).seen[1] == Some(1), "the rejoined connection missed the publish");
        Ok(())
    };
    if let Err(failure) = run() {
        panic!("{failure}");
    }
}

/// Bug found by this simulation (seed 46): turning the lobby off with two
/// members waiting admitted them one after the other, so the
/// `member_joined` queued for the first was carried out once the second
/// was admitted too: on the owner's shard the second received it before
/// its own `welcome`, while on any other shard (whose mirror learns the
/// role later, in order) it did not receive it at all. Now members admitted
/// in one call are admitted together (`Rooms::admit_members`): every
/// welcome first, listing the members admitted before; then one
/// `member_joined` per newly admitted member, to everyone admitted but it.
/// So each member learns of each other member exactly once, after its
/// welcome.
#[test]
fn lobby_off_welcomes_each_admitted_member_first() {
    use super::tests::{conn, limits};
    let mut rooms = Rooms::new(0, 1, RoomLimits { lobby_default: true, ..limits(10, 10, 10) });
    let key = RoomKey::new("", "m");
    let mut joined = Vec::new();
    for (slot, user) in [(1, "h"), (2, "p"), (3, "a"), (4, "b")] {
        let peer = Peer::new(conn(slot), user, None);
        joined.push(rooms.join(&peer, &key, false, None).expect("the room has space"));
    }
    let admit = MeetingRequest::LobbyAdmit { user: "p".into() };
    rooms.request(joined[0], conn(1), &admit, None, 0).expect("a host may admit");
    while rooms.poll_output().is_some() {}
    let off = MeetingRequest::LobbySet { enabled: false };
    rooms.request(joined[0], conn(1), &off, None, 0).expect("a host may turn the lobby off");
    let mut welcomed = Vec::new();
    // Per receiver: the connections it learnt of, by welcome or member_joined.
    let mut learnt: Vec<(ConnId, String)> = Vec::new();
    let mut lobby_state = Vec::new();
    while let Some(output) = rooms.poll_output() {
        let (to, frame): (Vec<ConnId>, Frame) = match output {
            Output::Deliver { to, frame } => (vec![to], frame),
            Output::Broadcast { room, audience, skip, frame } => {
                (rooms.audience(room, audience).filter(|&c| Some(c) != skip).collect(), frame)
            }
            _ => continue,
        };
        let json: serde_json::Value = serde_json::from_slice(payload(&frame)).expect("server frames are JSON");
        let kind = json["type"].as_str().unwrap_or_default();
        let welcome = kind == "welcome";
        for receiver in to {
            // The host and p were welcomed before the lobby went off.
            let known = welcome || [conn(1), conn(2)].contains(&receiver) || welcomed.contains(&receiver);
            assert!(known, "{receiver} got {} before its welcome", payload_text(&frame));
            match kind {
                "welcome" => {
                    welcomed.push(receiver);
                    for member in json["members"].as_array().into_iter().flatten() {
                        learnt.push((receiver, member["conn"].to_string()));
                    }
                }
                "member_joined" => learnt.push((receiver, json["member"]["conn"].to_string())),
                "lobby_state" => lobby_state.push(receiver),
                _ => {}
            }
        }
    }
    assert_eq!(welcomed, [conn(3), conn(4)], "each admitted member gets one welcome, in arrival order");
    let conn_json = |slot: u32| format!("\"{}\"", conn(slot));
    for (receiver, others) in [(1, [3, 4]), (2, [3, 4]), (3, [2, 4]), (4, [2, 3])] {
        for other in others {
            let times = learnt.iter().filter(|(r, c)| *r == conn(receiver) && *c == conn_json(other)).count();
            assert_eq!(times, 1, "{} learnt of {} {times} times", conn(receiver), conn(other));
        }
    }
    lobby_state.sort();
    assert_eq!(lobby_state, [conn(1), conn(2), conn(3), conn(4)], "lobby_state reaches every admitted member");
}

/// Bug found by this simulation (seed 194): a connection on another shard
/// leaves a room (its `Leave` in flight) while a host of the room removes
/// it (`kick`, or `lobby.deny` as in the seed). The owner's `leave` found it
/// gone and sent no `Left`; the `Close` makes the home leave the rooms the
/// connection still lists, which no longer include this one: its mirror
/// entry stayed for good. The owner now answers every `Leave` with a `Left`.
#[test]
fn leave_crossing_a_removal_leaves_no_mirror_behind() {
    let run = || -> Check {
        let mut sim = scripted(2);
        let host = sim.open_as(1, 0, false);
        sim.join_room(host, 1, None, false)?;
        let guest = sim.open_as(0, 1, false);
        sim.join_room(guest, 1, None, false)?;
        sim.deliver_all()?;
        sim.leave_room(guest, 0, false)?;
        sim.request_in(host, 0, MeetingRequest::Kick { user: "u1".into() })?;
        // `check_settled` fails on a mirror entry the owner does not hold.
        sim.deliver_all()?;
        ensure!(sim.shards[0].mirrors[1].is_empty(), "shard 0 still mirrors {:?}", sim.shards[0].mirrors[1]);
        Ok(())
    };
    if let Err(failure) = run() {
        panic!("{failure}");
    }
}

/// Bug found by this simulation (seed 6387): the registry raises a room's
/// capacity above `members_max`, the room fills past `members_max`, then a
/// registry change drops the capacity. The members stay, as `set_policy`
/// promises for a lowered capacity, but the debug check asserted
/// `members <= members_max` and panicked (debug builds only). The one
/// checker, `verify_invariants`, checks no bound on the members.
#[test]
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
