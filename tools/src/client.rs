//! The load engine: one mio event loop per worker thread, each owning a
//! share of the connections. Receive path: one read per readable event into
//! a big reusable buffer, frames parsed in place, no allocation per frame,
//! one clock read per read batch. Send path: an open-loop (wrk2-style)
//! schedule; every message carries its *intended* send time, and frames due
//! in the same loop turn go out in one write per connection.

use crate::account::{Obs, SeqTracker, Tally};
use crate::clock::{TimerFd, mono_ns};
use crate::frame::{self, MaskGen, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Parse};
use crate::refusal;
use crate::report::{new_hist, record};
use crate::scan;
use crate::shard;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use slab::Slab;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

const TIMER: Token = Token(usize::MAX - 1);
/// Receive buffer per worker; a frame must fit in it.
pub const RBUF: usize = 512 * 1024;
/// Largest frame payload accepted from the server.
const MAX_PAYLOAD: usize = RBUF - 16;
/// Outstanding `ref`s remembered per rtt connection.
const RTT_RING: usize = 8192;
/// Housekeeping period (timeouts, progress counters).
const TICK_NS: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Connect,
    Fanout,
    Rtt,
    Churn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Roomcast,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum RttKind {
    /// `{"type":"ping","ref":N}` → `pong`.
    Ping,
    /// `{"type":"publish","ref":N,"data":…}` → `ack`.
    Publish,
}

#[derive(Clone)]
pub enum Auth {
    Dev,
    Jwt(jsonwebtoken::EncodingKey),
}

/// One server address of the run (`--url`, which may name several).
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header: `HOST:PORT` as the URL gave it.
    pub host: String,
}

/// Everything a worker needs to know; shared read-only.
pub struct RunCfg {
    pub scenario: Scenario,
    pub proto: Proto,
    /// The server addresses; a room's connections are spread round-robin
    /// over them (connection `slot` of room `r` → target `(r + slot) mod N`,
    /// [`target_of`]), e.g. over the nodes of a cluster. At least one.
    pub targets: Vec<Target>,
    pub auth: Auth,
    /// Room names this process drives.
    pub rooms: Vec<String>,
    pub members: u32,
    pub publishers: u32,
    /// Aggregate send rate of this process (messages or round trips per s).
    pub rate: f64,
    pub size: usize,
    pub duration_ns: u64,
    pub connect_rate: f64,
    pub connect_timeout_ns: u64,
    pub inflight_max: usize,
    pub src_ips: Vec<IpAddr>,
    pub churn_rate: f64,
    pub churn_life_ns: u64,
    pub rtt_kind: RttKind,
    pub threads: usize,
    pub proc_index: u32,
    /// Processes of the run (`--procs`): this one has the rooms
    /// `r ≡ proc_index (mod procs)`, its room `i` being room
    /// `i·procs + proc_index` of the run.
    pub procs: u32,
    /// Global id offset for publishers of this process.
    pub user_prefix: String,
    /// `fanout --cross-shard N`: the server's shard count; every connection
    /// gets a home room on a shard other than the room's owner and joins
    /// the room from there. 0: off.
    pub cross_shard: u32,
    /// Bits of `seq` history each receiver keeps ([`crate::account::window_bits`]).
    pub seq_window: u64,
    /// Keep the per-second latency histogram for a progress line.
    pub progress: bool,
    /// fanout: receivers per room that stop reading once ready (slow
    /// consumers; not counted in `expected`).
    pub stalled: u32,
}

/// Counters shared between workers and the main thread.
pub struct Shared {
    pub ready: AtomicU64,
    pub failed: AtomicU64,
    pub start_ns: AtomicU64,
    pub stop: AtomicBool,
    pub sent: AtomicU64,
    pub expected: AtomicU64,
    pub delivered_distinct: AtomicU64,
    pub open: AtomicU64,
    /// Per-room count of ready receivers (members), for `expected`.
    pub room_ready: Vec<AtomicU64>,
    /// Per worker: p99 (µs) of the last second.
    pub interval_p99: Vec<AtomicU64>,
    /// Schedule slots whose connection was gone when due (progress line).
    pub unsent: AtomicU64,
}

impl Shared {
    pub fn new(rooms: usize, threads: usize) -> Self {
        Shared {
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            start_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            delivered_distinct: AtomicU64::new(0),
            open: AtomicU64::new(0),
            room_ready: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            interval_p99: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            unsent: AtomicU64::new(0),
        }
    }
}

/// What one target (server address) of a run with several saw: its share
/// of the connections and of the deliveries, and their latency.
#[derive(Debug, Clone)]
pub struct TargetStats {
    /// Planned connections (not churn) that became ready / failed.
    pub connected: u64,
    pub failed: u64,
    /// Distinct deliveries to receivers connected to this target.
    pub distinct: u64,
    /// Their latency (µs), as `Stats::lat`.
    pub lat: Histogram<u64>,
}

impl TargetStats {
    pub fn new() -> Self {
        TargetStats { connected: 0, failed: 0, distinct: 0, lat: new_hist() }
    }

    pub fn merge(&mut self, o: &TargetStats) {
        self.connected += o.connected;
        self.failed += o.failed;
        self.distinct += o.distinct;
        let _ = self.lat.add(&o.lat);
    }
}

impl Default for TargetStats {
    fn default() -> Self {
        Self::new()
    }
}

/// What a worker (or a whole process) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    pub lat: Histogram<u64>,
    /// Handshakes of the planned connections (connect → ready).
    pub handshake: Histogram<u64>,
    /// Handshakes of churn arrivals, apart from the setup ones.
    pub churn_handshake: Histogram<u64>,
    pub slip: Histogram<u64>,
    /// Loop turns in the measured phase: poll return → next poll (µs). A
    /// socket that becomes ready during a turn waits for the next one.
    pub turn: Histogram<u64>,
    pub tally: Tally,
    pub sent: u64,
    /// Due sends whose connection was not there (dropped or never ready):
    /// not sent, but their deliveries are in `expected`, so they are lost.
    pub unsent: u64,
    /// Distinct deliveries received inside the measured window
    /// [start, start + duration].
    pub window_distinct: u64,
    /// Highest share of its measured wall time one loop thread spent on
    /// a CPU (thread CPU time ÷ wall), in %.
    pub loop_cpu_max_pct: f64,
    pub expected: u64,
    pub connected: u64,
    pub failures: BTreeMap<String, u64>,
    /// Handshakes the server answered with an HTTP error, by the reason
    /// its body gave ([`refusal::describe`]): `failures` says `http_401`,
    /// this says why.
    pub refusals: BTreeMap<String, u64>,
    pub closed_by_server: BTreeMap<String, u64>,
    pub churn_opened: u64,
    pub churn_closed: u64,
    pub first_connect_ns: u64,
    pub last_ready_ns: u64,
    pub publisher_rx: u64,
    /// Successful reads and frames parsed (frames per read shows batching).
    pub reads: u64,
    pub frames: u64,
    /// Time blocked in poll, and wall time, since the measured phase began.
    pub poll_ns: u64,
    pub wall_ns: u64,
    /// Time the loop thread waited for a CPU (runnable, not running).
    pub run_delay_ns: u64,
    /// `--cross-shard`: receivers and publishers by the shard of their home
    /// room (as the home `welcome` says), and joins by the shard that owns
    /// the joined room (the room's `welcome`).
    pub home_shards: BTreeMap<u16, u64>,
    pub publisher_home_shards: BTreeMap<u16, u64>,
    pub room_shards: BTreeMap<u16, u64>,
    /// Welcomes whose `shard` differs from the tool's FNV-1a prediction.
    pub shard_mismatches: u64,
    /// Per target, in `--url` order, when the run has several (empty with
    /// one: the single-target path does no per-target work).
    pub by_target: Vec<TargetStats>,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            lat: new_hist(),
            handshake: new_hist(),
            churn_handshake: new_hist(),
            slip: new_hist(),
            turn: new_hist(),
            tally: Tally::default(),
            sent: 0,
            unsent: 0,
            window_distinct: 0,
            loop_cpu_max_pct: 0.0,
            expected: 0,
            connected: 0,
            failures: BTreeMap::new(),
            refusals: BTreeMap::new(),
            closed_by_server: BTreeMap::new(),
            churn_opened: 0,
            churn_closed: 0,
            first_connect_ns: u64::MAX,
            last_ready_ns: 0,
            publisher_rx: 0,
            reads: 0,
            frames: 0,
            poll_ns: 0,
            wall_ns: 0,
            run_delay_ns: 0,
            home_shards: BTreeMap::new(),
            publisher_home_shards: BTreeMap::new(),
            room_shards: BTreeMap::new(),
            shard_mismatches: 0,
            by_target: Vec::new(),
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        let _ = self.lat.add(&o.lat);
        let _ = self.handshake.add(&o.handshake);
        let _ = self.churn_handshake.add(&o.churn_handshake);
        let _ = self.slip.add(&o.slip);
        let _ = self.turn.add(&o.turn);
        self.tally.add(&o.tally);
        self.sent += o.sent;
        self.unsent += o.unsent;
        self.window_distinct += o.window_distinct;
        self.loop_cpu_max_pct = self.loop_cpu_max_pct.max(o.loop_cpu_max_pct);
        self.expected += o.expected;
        self.connected += o.connected;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.refusals {
            *self.refusals.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.closed_by_server {
            *self.closed_by_server.entry(k.clone()).or_default() += v;
        }
        self.churn_opened += o.churn_opened;
        self.churn_closed += o.churn_closed;
        self.first_connect_ns = self.first_connect_ns.min(o.first_connect_ns);
        self.last_ready_ns = self.last_ready_ns.max(o.last_ready_ns);
        self.publisher_rx += o.publisher_rx;
        self.reads += o.reads;
        self.frames += o.frames;
        self.poll_ns += o.poll_ns;
        self.wall_ns += o.wall_ns;
        self.run_delay_ns += o.run_delay_ns;
        for (mine, theirs) in [
            (&mut self.home_shards, &o.home_shards),
            (&mut self.publisher_home_shards, &o.publisher_home_shards),
            (&mut self.room_shards, &o.room_shards),
        ] {
            for (k, v) in theirs {
                *mine.entry(*k).or_default() += v;
            }
        }
        self.shard_mismatches += o.shard_mismatches;
        if self.by_target.len() < o.by_target.len() {
            self.by_target.resize_with(o.by_target.len(), TargetStats::new);
        }
        for (mine, theirs) in self.by_target.iter_mut().zip(&o.by_target) {
            mine.merge(theirs);
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A receiver counted in `expected`.
    Member,
    /// Sends on the fanout schedule; what it receives is not counted.
    Publisher,
    /// Round trips on the rtt schedule.
    Rtt,
    /// Arrives and leaves during a fanout.
    Churn,
    /// A fanout receiver that stops reading once ready (`--stalled`).
    Stalled,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub room: u32,
    pub role: Role,
    pub id: u64,
    /// Index within the room: members 0..M, then publishers, then stalled.
    pub slot: u32,
    /// Index of its send-schedule slot in its worker (publishers, rtt
    /// connections), or `NO_SCHED`.
    pub sched: u32,
    /// Index of the server address it connects to (`RunCfg::targets`),
    /// [`target_of`]: each room's connections are spread round-robin.
    pub target: u32,
}

/// The target of connection `slot` of this process's room `room`: `(r +
/// slot) mod N` with `r` the room's number in the whole run. Round-robin
/// within each room; the room number shifts where each room starts, so
/// that rooms of fewer members than a multiple of N (10 over 3 nodes: 4, 3,
/// 3) still load the targets evenly.
pub fn target_of(cfg: &RunCfg, room: u32, slot: u32) -> u32 {
    let n = cfg.targets.len().max(1) as u64;
    let global = u64::from(room) * u64::from(cfg.procs.max(1)) + u64::from(cfg.proc_index);
    ((global + u64::from(slot)) % n) as u32
}

/// `Spec::sched` of connections that send nothing on the schedule.
pub const NO_SCHED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Handshake,
    WaitWelcome,
    /// `--cross-shard`: the join is sent; waiting for the room's `welcome`
    /// (the seq base) and the join's `ack`.
    WaitJoin,
    Ready,
}

struct Conn {
    stream: TcpStream,
    spec: Spec,
    st: St,
    t_open: u64,
    pending: Vec<u8>,
    out: Vec<u8>,
    out_off: usize,
    writable_armed: bool,
    tracker: SeqTracker,
    close_at: u64,
    ring: Option<Box<[u64]>>,
    next_ref: u64,
    rseq: u64,
    /// `--cross-shard`: the predicted shards of the home room and of the
    /// joined room.
    home_shard: u16,
    room_shard: u16,
}

/// The `ref` of the join request (`--cross-shard`).
const JOIN_REF: u64 = 1;

/// Builds the connection specs for one worker.
pub fn plan_specs(cfg: &RunCfg, worker: usize) -> (Vec<Spec>, Vec<Spec>) {
    // Members are spread round-robin over workers; all publishers of a room
    // live on the worker `room % threads` (so `--proto raw` can number a
    // room's messages). Returns (receivers/others, publishers).
    let t = cfg.threads;
    let mut others = Vec::new();
    let mut pubs = Vec::new();
    let mut idx: u64 = 0;
    for r in 0..cfg.rooms.len() as u32 {
        let role = match cfg.scenario {
            Scenario::Rtt => Role::Rtt,
            _ => Role::Member,
        };
        for slot in 0..cfg.members {
            if idx as usize % t == worker {
                // rtt connections are the schedule's slots, in this order.
                let sched = if role == Role::Rtt { others.len() as u32 } else { NO_SCHED };
                others.push(Spec { room: r, role, id: idx, slot, sched, target: target_of(cfg, r, slot) });
            }
            idx += 1;
        }
        if matches!(cfg.scenario, Scenario::Fanout | Scenario::Churn) {
            for p in 0..cfg.publishers {
                if r as usize % t == worker {
                    let sched = pubs.len() as u32;
                    let slot = cfg.members + p;
                    let target = target_of(cfg, r, slot);
                    pubs.push(Spec { room: r, role: Role::Publisher, id: idx, slot, sched, target });
                }
                idx += 1;
            }
            for k in 0..cfg.stalled {
                if idx as usize % t == worker {
                    let slot = cfg.members + cfg.publishers + k;
                    others.push(Spec {
                        room: r,
                        role: Role::Stalled,
                        id: idx,
                        slot,
                        sched: NO_SCHED,
                        target: target_of(cfg, r, slot),
                    });
                }
                idx += 1;
            }
        }
    }
    (others, pubs)
}

/// Total connections (excluding churn) the plan opens in this process.
pub fn planned_conns(cfg: &RunCfg) -> u64 {
    let per_room = cfg.members as u64
        + if matches!(cfg.scenario, Scenario::Fanout | Scenario::Churn) {
            cfg.publishers as u64 + cfg.stalled as u64
        } else {
            0
        };
    per_room * cfg.rooms.len() as u64
}

/// Planned connections (excluding churn) of this process to target `i`
/// ([`target_of`]).
pub fn planned_conns_to(cfg: &RunCfg, i: usize) -> u64 {
    let n = cfg.targets.len().max(1) as u64;
    let per_room = planned_conns(cfg) / (cfg.rooms.len().max(1) as u64);
    (0..cfg.rooms.len() as u32)
        .map(|r| {
            // The room's slot 0 goes to target t0; target i gets the slots
            // s ≡ i − t0 (mod N) in 0..per_room.
            let t0 = u64::from(target_of(cfg, r, 0));
            let first = (i as u64 + n - t0) % n;
            if first < per_room { (per_room - 1 - first) / n + 1 } else { 0 }
        })
        .sum()
}

fn cause_of(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset => "reset",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::AddrNotAvailable => "addr_not_available",
        io::ErrorKind::BrokenPipe => "broken_pipe",
        _ => match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => "fd_limit",
            _ => "io_other",
        },
    }
}

/// Counters already added to the shared ones ([`Shared`]), so that each
/// tick adds only what is new.
#[derive(Default)]
struct Published {
    sent: u64,
    expected: u64,
    distinct: u64,
    unsent: u64,
}

/// The measured window as one loop saw it: when it began (0: not yet),
/// the thread's CPU time and CPU wait at its start and end (0: not yet),
/// and when the current loop turn began (0: no turn being timed).
#[derive(Default)]
struct Window {
    from: u64,
    cpu_from: u64,
    delay_from: u64,
    cpu_end: u64,
    delay_end: u64,
    turn_from: u64,
}

pub struct Worker {
    cfg: Arc<RunCfg>,
    sh: Arc<Shared>,
    idx: usize,
    poll: Poll,
    conns: Slab<Conn>,
    rbuf: Vec<u8>,
    pbuf: Vec<u8>,
    masks: MaskGen,
    stats: Stats,
    ihist: Histogram<u64>,
    to_open: Vec<Spec>,
    opened: u64,
    inflight: usize,
    /// The send schedule's slots (publishers, or rtt connections), in plan
    /// order: the connection while it is ready, else `None`. Message k goes
    /// to slot k mod len whatever happened to it, so a dropped publisher's
    /// share is counted (`unsent`), not silently moved or skipped.
    sched: Vec<Option<usize>>,
    /// Room of each slot.
    sched_room: Vec<u32>,
    /// End of the measured window (0 until the start is known).
    window_end: u64,
    dirty: Vec<usize>,
    room_seq: Vec<u64>,
    timer: TimerFd,
    src_rr: usize,
    connect_start: u64,
    interval_ns: u64,
    sched_k: u64,
    sched_rr: usize,
    churn_k: u64,
    churn_room: u32,
}

impl Worker {
    pub fn new(cfg: Arc<RunCfg>, sh: Arc<Shared>, idx: usize) -> io::Result<Self> {
        let (others, pubs) = plan_specs(&cfg, idx);
        let sched_room: Vec<u32> = match cfg.scenario {
            Scenario::Rtt => others.iter().map(|s| s.room).collect(),
            _ => pubs.iter().map(|s| s.room).collect(),
        };
        let mut to_open = pubs;
        to_open.extend(others);
        to_open.reverse(); // popped from the back: publishers first
        let poll = Poll::new()?;
        let timer = TimerFd::new()?;
        poll.registry().register(&mut SourceFd(&timer.raw_fd()), TIMER, Interest::READABLE)?;
        let nrooms = cfg.rooms.len();
        let mut stats = Stats::new();
        if cfg.targets.len() > 1 {
            stats.by_target = vec![TargetStats::new(); cfg.targets.len()];
        }
        Ok(Worker {
            conns: Slab::with_capacity(to_open.len() + 16),
            cfg,
            sh,
            idx,
            poll,
            rbuf: vec![0u8; RBUF],
            pbuf: Vec::with_capacity(64 * 1024),
            masks: MaskGen::new(0x9E37_79B9_7F4A_7C15 ^ ((idx as u64 + 1) * 0x1234_5678_9ABC)),
            stats,
            ihist: new_hist(),
            to_open,
            opened: 0,
            inflight: 0,
            sched: vec![None; sched_room.len()],
            sched_room,
            window_end: 0,
            dirty: Vec::new(),
            room_seq: vec![0; nrooms],
            timer,
            src_rr: idx,
            connect_start: 0,
            interval_ns: u64::MAX,
            sched_k: 0,
            sched_rr: 0,
            churn_k: 0,
            churn_room: idx as u32,
        })
    }

    fn path_for(&self, spec: &Spec) -> String {
        let target = &self.cfg.rooms[spec.room as usize];
        // With --cross-shard the URL names the home room; a token's room
        // claim `TARGET*` allows it and the target (the home starts with it).
        let (home, claim) = if self.cfg.cross_shard > 0 {
            (shard::home_room(target, u64::from(spec.slot), self.cfg.cross_shard).0, format!("{target}*"))
        } else {
            (target.clone(), target.clone())
        };
        let (room, claim) = (&home, &claim);
        let user = format!("{}{}", self.cfg.user_prefix, spec.id);
        match (&self.cfg.proto, &self.cfg.auth) {
            (Proto::Raw, _) => format!("/ws/{room}"),
            (Proto::Roomcast, Auth::Dev) => format!("/ws/{room}?user={user}"),
            (Proto::Roomcast, Auth::Jwt(key)) => {
                #[derive(Serialize)]
                struct Claims<'a> {
                    sub: &'a str,
                    exp: u64,
                    room: &'a str,
                }
                let exp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    + 86_400;
                let tok = jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &Claims { sub: &user, exp, room: claim },
                    key,
                )
                .unwrap_or_default();
                format!("/ws/{room}?token={tok}")
            }
        }
    }

    fn open(&mut self, spec: Spec, now: u64) {
        use socket2::{Domain, Protocol, Socket, Type};
        if self.stats.first_connect_ns == u64::MAX {
            self.stats.first_connect_ns = now;
        }
        let fail = |w: &mut Worker, cause: &str| {
            *w.stats.failures.entry(cause.to_string()).or_default() += 1;
            if spec.role != Role::Churn {
                w.sh.failed.fetch_add(1, Relaxed);
                if let Some(t) = w.stats.by_target.get_mut(spec.target as usize) {
                    t.failed += 1;
                }
            }
        };
        let addr = self.cfg.targets[spec.target as usize].addr;
        let domain = Domain::for_address(addr);
        let sock = match Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP)) {
            Ok(s) => s,
            Err(e) => return fail(self, cause_of(&e)),
        };
        let _ = sock.set_tcp_nodelay(true);
        if !self.cfg.src_ips.is_empty() {
            let ip = self.cfg.src_ips[self.src_rr % self.cfg.src_ips.len()];
            self.src_rr += 1;
            set_bind_no_port(&sock);
            if let Err(e) = sock.bind(&SocketAddr::new(ip, 0).into()) {
                return fail(self, cause_of(&e));
            }
        }
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return fail(self, cause_of(&e)),
        }
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(sock));
        let entry = self.conns.vacant_entry();
        let tok = Token(entry.key());
        if let Err(e) = self.poll.registry().register(&mut stream, tok, Interest::READABLE | Interest::WRITABLE) {
            return fail(self, cause_of(&e));
        }
        let ring = (spec.role == Role::Rtt).then(|| vec![0u64; RTT_RING].into_boxed_slice());
        let (home_shard, room_shard) = if self.cfg.cross_shard > 0 {
            let target = &self.cfg.rooms[spec.room as usize];
            let n = self.cfg.cross_shard;
            (shard::home_room(target, u64::from(spec.slot), n).1, shard::room_shard("", target, n))
        } else {
            (u16::MAX, u16::MAX)
        };
        entry.insert(Conn {
            stream,
            spec,
            st: St::Connecting,
            t_open: now,
            pending: Vec::new(),
            out: Vec::new(),
            out_off: 0,
            writable_armed: true,
            tracker: SeqTracker::new(0, self.cfg.seq_window),
            close_at: 0,
            ring,
            next_ref: 1,
            rseq: 0,
            home_shard,
            room_shard,
        });
        self.inflight += 1;
        if spec.role == Role::Churn {
            self.stats.churn_opened += 1;
        }
        self.sh.open.fetch_add(1, Relaxed);
    }

    /// Drops a connection; `cause` is recorded as a connect failure if it
    /// had not become ready, else as a server-side close.
    fn drop_conn(&mut self, key: usize, cause: &str) {
        let c = self.conns.remove(key);
        let mut stream = c.stream;
        let _ = self.poll.registry().deregister(&mut stream);
        self.sh.open.fetch_sub(1, Relaxed);
        if c.st == St::Ready {
            if !cause.is_empty() {
                *self.stats.closed_by_server.entry(cause.to_string()).or_default() += 1;
            }
            if c.spec.role == Role::Member {
                self.sh.room_ready[c.spec.room as usize].fetch_sub(1, Relaxed);
            }
            if c.spec.role == Role::Churn {
                self.stats.churn_closed += 1;
            }
        } else {
            self.inflight -= 1;
            *self.stats.failures.entry(cause.to_string()).or_default() += 1;
            if c.spec.role != Role::Churn {
                self.sh.failed.fetch_add(1, Relaxed);
                if let Some(t) = self.stats.by_target.get_mut(c.spec.target as usize) {
                    t.failed += 1;
                }
            }
        }
        if let Some(slot) = self.sched.get_mut(c.spec.sched as usize)
            && *slot == Some(key)
        {
            *slot = None;
        }
    }

    fn became_ready(&mut self, key: usize, now: u64) {
        let c = &mut self.conns[key];
        c.st = St::Ready;
        let spec = c.spec;
        let hs = if spec.role == Role::Churn { &mut self.stats.churn_handshake } else { &mut self.stats.handshake };
        record(hs, (now - c.t_open) / 1000);
        self.inflight -= 1;
        self.stats.last_ready_ns = now;
        match spec.role {
            Role::Churn => {
                c.close_at = now + self.cfg.churn_life_ns;
            }
            Role::Publisher | Role::Rtt => {
                if let Some(slot) = self.sched.get_mut(spec.sched as usize) {
                    *slot = Some(key);
                }
            }
            Role::Stalled => {}
            Role::Member => {
                self.sh.room_ready[spec.room as usize].fetch_add(1, Relaxed);
            }
        }
        if spec.role != Role::Churn {
            self.stats.connected += 1;
            self.sh.ready.fetch_add(1, Relaxed);
            if let Some(t) = self.stats.by_target.get_mut(spec.target as usize) {
                t.connected += 1;
            }
        }
    }

    fn queue_write(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.out.is_empty() && !c.writable_armed && !self.dirty.contains(&key) {
            self.dirty.push(key);
        }
    }

    /// Writes out what is queued; returns an error cause to drop the conn.
    fn flush(&mut self, key: usize) -> Result<(), &'static str> {
        let c = &mut self.conns[key];
        while c.out_off < c.out.len() {
            match c.stream.write(&c.out[c.out_off..]) {
                Ok(0) => return Err("eof"),
                Ok(n) => c.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.writable_armed {
                        c.writable_armed = true;
                        let _ = self.poll.registry().reregister(
                            &mut c.stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(cause_of(&e)),
            }
        }
        c.out.clear();
        c.out_off = 0;
        if c.writable_armed && c.st != St::Connecting {
            c.writable_armed = false;
            let _ = self.poll.registry().reregister(&mut c.stream, Token(key), Interest::READABLE);
        }
        Ok(())
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.st == St::Connecting {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                let cause = cause_of(&e);
                return self.drop_conn(key, cause);
            }
            match c.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.drop_conn(key, cause_of(&e)),
            }
            let path = self.path_for(&self.conns[key].spec);
            let c = &mut self.conns[key];
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                self.cfg.targets[c.spec.target as usize].host
            );
            c.out.extend_from_slice(req.as_bytes());
            c.st = St::Handshake;
            if let Err(cause) = self.flush(key) {
                return self.drop_conn(key, cause);
            }
            return;
        }
        if writable
            && self.conns[key].writable_armed
            && let Err(cause) = self.flush(key)
        {
            return self.drop_conn(key, cause);
        }
        if readable {
            let c = &self.conns[key];
            if c.st == St::Ready && c.spec.role == Role::Stalled {
                // A slow consumer: leave the data in the socket.
                return;
            }
            self.on_readable(key);
        }
    }

    fn on_readable(&mut self, key: usize) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let res = self.read_loop(key, &mut rbuf);
        self.rbuf = rbuf;
        match res {
            Ok(()) => {
                if self.conns.contains(key) {
                    self.queue_write(key);
                }
            }
            Err(cause) => self.drop_conn(key, &cause),
        }
    }

    fn read_loop(&mut self, key: usize, rbuf: &mut [u8]) -> Result<(), String> {
        loop {
            let c = &mut self.conns[key];
            let p = c.pending.len();
            if p >= rbuf.len() {
                return Err("frame_too_big".into());
            }
            rbuf[..p].copy_from_slice(&c.pending);
            let n = match c.stream.read(&mut rbuf[p..]) {
                Ok(0) => return Err("eof".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(cause_of(&e).into()),
            };
            c.pending.clear();
            self.stats.reads += 1;

            let total = p + n;
            let now = mono_ns();
            let used = self.process(key, &mut rbuf[..total], now)?;
            if used < total {
                let c = &mut self.conns[key];
                c.pending.extend_from_slice(&rbuf[used..total]);
            } else if self.conns[key].pending.capacity() > 4096 {
                self.conns[key].pending = Vec::new();
            }
            // A short read means the socket was drained (edge-triggered:
            // new data brings a new event), so skip the read that would
            // only say WouldBlock.
            if n < rbuf.len() - p {
                return Ok(());
            }
        }
    }

    /// Handles the bytes in `buf`; returns how many were consumed.
    fn process(&mut self, key: usize, buf: &mut [u8], now: u64) -> Result<usize, String> {
        let mut pos = 0;
        if self.conns[key].st == St::Handshake {
            let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
                if buf.len() > 16 * 1024 {
                    return Err("bad_response".into());
                }
                return Ok(0);
            };
            let status = buf.strip_prefix(b"HTTP/1.1 ").and_then(scan::parse_u64).map(|(v, _)| v).unwrap_or(0);
            if status == 0 {
                return Err("bad_response".into());
            }
            if status != 101 {
                return self.refused(status, buf, end + 4);
            }
            pos = end + 4;
            if self.cfg.proto == Proto::Roomcast {
                self.conns[key].st = St::WaitWelcome;
            } else {
                self.became_ready(key, now);
            }
        }
        while pos < buf.len() {
            let f = match frame::parse(&buf[pos..], MAX_PAYLOAD) {
                Parse::Frame(f) => f,
                Parse::Partial(_) => break,
                Parse::TooBig => return Err("frame_too_big".into()),
            };
            let ps = pos + f.payload_start;
            let pe = ps + f.payload_len;
            pos += f.total_len();
            self.stats.frames += 1;
            if let Some(m) = f.mask {
                frame::apply_mask(&mut buf[ps..pe], m);
            }
            let payload = &buf[ps..pe];
            match f.opcode {
                OP_TEXT => {
                    self.on_text(key, payload, now)?;
                }
                OP_PING => {
                    let mask = self.masks.next_mask();
                    let c = &mut self.conns[key];
                    frame::push_client_frame(&mut c.out, OP_PONG, payload, mask);
                }
                OP_CLOSE => {
                    let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    return Err(format!("close_{code}"));
                }
                _ => {}
            }
        }
        Ok(pos)
    }

    /// A handshake answered with `status` instead of 101: once its body is
    /// here (the server closes after it), notes the body's reason and
    /// drops the connection as `http_STATUS`; until then consumes nothing.
    fn refused(&mut self, status: u64, buf: &[u8], body_start: usize) -> Result<usize, String> {
        if !refusal::body_complete(buf, body_start) && buf.len() <= 16 * 1024 {
            return Ok(0);
        }
        let reason = refusal::describe(status, &buf[body_start..]);
        *self.stats.refusals.entry(reason).or_default() += 1;
        Err(format!("http_{status}"))
    }

    /// Returns true if a latency sample was recorded; an error drops the
    /// connection with that cause.
    fn on_text(&mut self, key: usize, payload: &[u8], now: u64) -> Result<bool, String> {
        let c = &self.conns[key];
        Ok(match (c.st, c.spec.role) {
            (St::WaitWelcome, _) => {
                self.on_welcome(key, payload, now);
                false
            }
            (St::WaitJoin, _) => {
                self.on_join_reply(key, payload, now)?;
                false
            }
            (St::Ready, Role::Member) => self.on_delivery(key, payload, now),
            (St::Ready, Role::Rtt) => self.on_rtt_reply(key, payload, now),
            (St::Ready, Role::Publisher | Role::Churn | Role::Stalled) => {
                self.stats.publisher_rx += 1;
                false
            }
            _ => false,
        })
    }

    /// The connection's first `welcome`: the base of its seq accounting,
    /// and it is ready; with `--cross-shard` it is the home room's, so the
    /// connection notes its shard and joins the measured room.
    fn on_welcome(&mut self, key: usize, payload: &[u8], now: u64) {
        if scan::find_type(payload) != Some(b"welcome") {
            return;
        }
        let c = &mut self.conns[key];
        let seq = scan::find_u64_after(payload, b"\"seq\":").unwrap_or(0);
        c.tracker = SeqTracker::new(seq, self.cfg.seq_window);
        if self.cfg.cross_shard == 0 {
            self.became_ready(key, now);
            return;
        }
        // Home room joined: note its shard, join the target.
        let shard = scan::find_u64_after(payload, b"\"shard\":").unwrap_or(u64::MAX);
        if shard != u64::from(c.home_shard) {
            self.stats.shard_mismatches += 1;
        }
        let by_role = match c.spec.role {
            Role::Publisher => &mut self.stats.publisher_home_shards,
            _ => &mut self.stats.home_shards,
        };
        *by_role.entry(shard.min(u64::from(u16::MAX)) as u16).or_default() += 1;
        self.pbuf.clear();
        let target = &self.cfg.rooms[c.spec.room as usize];
        let _ = write!(self.pbuf, r#"{{"type":"join","room":"{target}","ref":{JOIN_REF}}}"#);
        let mask = self.masks.next_mask();
        frame::push_client_frame(&mut c.out, OP_TEXT, &self.pbuf, mask);
        c.st = St::WaitJoin;
    }

    /// `--cross-shard`: the measured room's `welcome` (from its owner: the
    /// seq base), then the join's `ack` (ready); an `error` drops the
    /// connection as `join_CODE`.
    fn on_join_reply(&mut self, key: usize, payload: &[u8], now: u64) -> Result<(), String> {
        let c = &mut self.conns[key];
        match scan::find_type(payload) {
            Some(b"welcome") => {
                // The joined room's welcome (from its owner): the seq base.
                let seq = scan::find_u64_after(payload, b"\"seq\":").unwrap_or(0);
                c.tracker = SeqTracker::new(seq, self.cfg.seq_window);
                let shard = scan::find_u64_after(payload, b"\"shard\":").unwrap_or(u64::MAX);
                if shard != u64::from(c.room_shard) {
                    self.stats.shard_mismatches += 1;
                }
                *self.stats.room_shards.entry(shard.min(u64::from(u16::MAX)) as u16).or_default() += 1;
            }
            Some(b"ack") if scan::find_u64_after(payload, b"\"ref\":") == Some(JOIN_REF) => {
                self.became_ready(key, now);
            }
            Some(b"error") => {
                let code = scan::find_str_after(payload, b"\"code\":")
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .unwrap_or_else(|| "unknown".into());
                return Err(format!("join_{code}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// A receiver's delivery: latency from its intended send time, and
    /// loss/duplicate/order accounting by the server's `seq` (roomcast) or
    /// the tool's own (raw). True if it carried a load marker.
    fn on_delivery(&mut self, key: usize, payload: &[u8], now: u64) -> bool {
        let found = match self.cfg.proto {
            Proto::Roomcast => scan::find_delivery(payload),
            Proto::Raw => scan::find_marker(payload).map(|m| (m.seq, m)),
        };
        let Some((seq, m)) = found else {
            return false;
        };
        let lat = now.saturating_sub(m.intended_ns) / 1000;
        record(&mut self.stats.lat, lat);
        if self.cfg.progress {
            record(&mut self.ihist, lat);
        }
        let c = &mut self.conns[key];
        let obs = c.tracker.observe(seq);
        if obs != Obs::Duplicate && now <= self.window_end {
            self.stats.window_distinct += 1;
        }
        self.stats.tally.record(obs);
        if let Some(t) = self.stats.by_target.get_mut(c.spec.target as usize) {
            // Several targets: each one's share, for the per-node figures.
            record(&mut t.lat, lat);
            t.distinct += u64::from(obs != Obs::Duplicate);
        }
        true
    }

    /// An rtt answer: the round trip from its request's intended send
    /// time (raw: the echoed marker; roomcast: the `ref` of a `pong` or
    /// `ack`, looked up in the ring). True if a round trip was recorded.
    fn on_rtt_reply(&mut self, key: usize, payload: &[u8], now: u64) -> bool {
        let c = &mut self.conns[key];
        let intended = if self.cfg.proto == Proto::Raw {
            match scan::find_marker(payload) {
                Some(m) if m.publisher == c.spec.id => m.intended_ns,
                _ => return false,
            }
        } else {
            let t = scan::find_type(payload);
            if t != Some(b"pong") && t != Some(b"ack") {
                return false;
            }
            let Some(r) = scan::find_u64_after(payload, b"\"ref\":") else {
                return false;
            };
            let ring = c.ring.as_mut().expect("rtt ring");
            let slot = &mut ring[(r as usize) % RTT_RING];
            let v = *slot;
            *slot = 0;
            if v == 0 {
                // A second answer to one request.
                self.stats.tally.delivered += 1;
                self.stats.tally.duplicates += 1;
                return false;
            }
            v
        };
        let lat = now.saturating_sub(intended) / 1000;
        record(&mut self.stats.lat, lat);
        if self.cfg.progress {
            record(&mut self.ihist, lat);
        }
        if now <= self.window_end {
            self.stats.window_distinct += 1;
        }
        self.stats.tally.delivered += 1;
        true
    }

    fn build_publish(&mut self, key: usize, intended: u64) {
        let cfg = &self.cfg;
        let c = &mut self.conns[key];
        let room = c.spec.room as usize;
        self.room_seq[room] += 1;
        let m = scan::Marker { intended_ns: intended, publisher: c.spec.id, seq: self.room_seq[room] };
        self.pbuf.clear();
        if cfg.proto == Proto::Roomcast {
            if cfg.cross_shard > 0 {
                // Into the joined room, not the home room.
                self.pbuf.extend_from_slice(br#"{"type":"publish","room":""#);
                self.pbuf.extend_from_slice(cfg.rooms[room].as_bytes());
                self.pbuf.extend_from_slice(br#"","data":"#);
            } else {
                self.pbuf.extend_from_slice(br#"{"type":"publish","data":"#);
            }
            scan::push_payload(&mut self.pbuf, m, cfg.size);
            self.pbuf.push(b'}');
        } else {
            scan::push_payload(&mut self.pbuf, m, cfg.size);
        }
        let mask = self.masks.next_mask();
        frame::push_client_frame(&mut c.out, OP_TEXT, &self.pbuf, mask);
        self.stats.sent += 1;
        self.stats.expected += self.sh.room_ready[room].load(Relaxed);
    }

    fn build_rtt(&mut self, key: usize, intended: u64) {
        let cfg = &self.cfg;
        let c = &mut self.conns[key];
        self.pbuf.clear();
        if cfg.proto == Proto::Raw {
            c.rseq += 1;
            let m = scan::Marker { intended_ns: intended, publisher: c.spec.id, seq: c.rseq };
            scan::push_payload(&mut self.pbuf, m, cfg.size);
        } else {
            let r = c.next_ref;
            c.next_ref += 1;
            let ring = c.ring.as_mut().expect("rtt ring");
            ring[(r as usize) % RTT_RING] = intended;
            match cfg.rtt_kind {
                RttKind::Ping => {
                    let _ = write!(self.pbuf, r#"{{"type":"ping","ref":{r}}}"#);
                }
                RttKind::Publish => {
                    let _ = write!(self.pbuf, r#"{{"type":"publish","ref":{r},"data":"#);
                    c.rseq += 1;
                    let m = scan::Marker { intended_ns: intended, publisher: c.spec.id, seq: c.rseq };
                    scan::push_payload(&mut self.pbuf, m, cfg.size);
                    self.pbuf.push(b'}');
                }
            }
        }
        let mask = self.masks.next_mask();
        frame::push_client_frame(&mut c.out, OP_TEXT, &self.pbuf, mask);
        self.stats.sent += 1;
        self.stats.expected += 1;
    }

    /// Runs the loop until `stop`; returns what was measured.
    pub fn run(mut self) -> Stats {
        // Room for every socket of a big room in one poll call.
        let mut events = Events::with_capacity(4096);
        let connect_rate = self.cfg.connect_rate / self.cfg.threads as f64;
        self.interval_ns = self.send_interval_ns();
        let mut next_tick = 0u64;
        let mut last_interval = mono_ns();
        let mut published = Published::default();
        let mut window = Window::default();
        self.connect_start = mono_ns();
        loop {
            let now = mono_ns();
            if self.sh.stop.load(Relaxed) {
                break;
            }
            self.open_due(now, connect_rate);
            let mut deadline = now + TICK_NS;
            if connect_rate > 0.0 && !self.to_open.is_empty() {
                let next = self.connect_start + ((self.opened as f64) / connect_rate * 1e9) as u64;
                deadline = deadline.min(next.max(now));
            }
            deadline = deadline.min(self.pump(now));
            if now >= next_tick {
                next_tick = now + TICK_NS;
                self.housekeeping(now);
                self.publish_counters(&mut published);
                if self.cfg.progress && now - last_interval >= 1_000_000_000 {
                    last_interval = now;
                    self.publish_interval_p99();
                }
            }
            if let Err(e) = self.poll_until(&mut events, now, deadline, &mut window)
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
            self.dispatch(&events);
        }
        self.close_window(&window);
        // Final counters for the progress line.
        self.publish_counters(&mut published);
        self.stats
    }

    /// Nanoseconds between this worker's sends: its share of the send
    /// schedule (publishers, or rtt connections) of the aggregate rate.
    fn send_interval_ns(&self) -> u64 {
        let cfg = &self.cfg;
        let total_sched = match cfg.scenario {
            Scenario::Rtt => planned_conns(cfg) as f64,
            _ => (cfg.publishers as usize * cfg.rooms.len()) as f64,
        };
        let (others, pubs) = plan_specs(cfg, self.idx);
        let my_sched = match cfg.scenario {
            Scenario::Rtt => others.len() as f64,
            _ => pubs.len() as f64,
        };
        let my_rate = if total_sched > 0.0 { cfg.rate * my_sched / total_sched } else { 0.0 };
        if my_rate > 0.0 { (1e9 / my_rate) as u64 } else { u64::MAX }
    }

    /// Opens planned connections: paced, and at most `inflight_max` handshakes.
    fn open_due(&mut self, now: u64, connect_rate: f64) {
        while let Some(&spec) = self.to_open.last() {
            if self.inflight >= self.cfg.inflight_max {
                break;
            }
            if connect_rate > 0.0 {
                let allowed = ((now - self.connect_start) as f64 / 1e9 * connect_rate) as u64 + 1;
                if self.opened >= allowed {
                    break;
                }
            }
            self.to_open.pop();
            self.opened += 1;
            self.open(spec, now);
        }
    }

    /// Adds what is new in this worker's counters to the shared ones the
    /// progress line reads.
    fn publish_counters(&self, published: &mut Published) {
        let sh = &self.sh;
        sh.sent.fetch_add(self.stats.sent - published.sent, Relaxed);
        published.sent = self.stats.sent;
        sh.expected.fetch_add(self.stats.expected - published.expected, Relaxed);
        published.expected = self.stats.expected;
        let dd = self.stats.tally.distinct();
        sh.delivered_distinct.fetch_add(dd - published.distinct, Relaxed);
        published.distinct = dd;
        sh.unsent.fetch_add(self.stats.unsent - published.unsent, Relaxed);
        published.unsent = self.stats.unsent;
    }

    /// The last second's latency p99 for the progress line; starts the next second.
    fn publish_interval_p99(&mut self) {
        let p = if self.ihist.is_empty() { 0 } else { self.ihist.value_at_quantile(0.99) };
        self.sh.interval_p99[self.idx].store(p, Relaxed);
        self.ihist.reset();
    }

    /// Polls until `deadline`, timing the loop turn that ends here and, in
    /// the measured window, the time spent in poll.
    fn poll_until(&mut self, events: &mut Events, now: u64, deadline: u64, w: &mut Window) -> io::Result<()> {
        let timeout = if deadline <= now {
            Some(std::time::Duration::ZERO)
        } else {
            // Sub-ms precision: the timerfd wakes the loop on time
            // (epoll's own timeout is rounded up to whole ms).
            self.timer.arm(deadline);
            Some(std::time::Duration::from_nanos(deadline - now + 2_000_000))
        };
        let before = mono_ns();
        if w.turn_from != 0 {
            // The turn that began at the last poll's return ends here.
            record(&mut self.stats.turn, (before - w.turn_from) / 1000);
        }
        let res = self.poll.poll(events, timeout);
        self.account_poll(before, !events.is_empty(), w);
        res
    }

    /// After a poll that began at `before`: inside the measured window,
    /// its poll time and wall time (and, at the window's start, the
    /// thread's CPU time and CPU wait); after it, their values at its end.
    fn account_poll(&mut self, before: u64, had_events: bool, w: &mut Window) {
        let start = self.sh.start_ns.load(Relaxed);
        let measuring = start != 0 && before >= start && before < start.saturating_add(self.cfg.duration_ns);
        w.turn_from = 0;
        if measuring {
            let after = mono_ns();
            self.stats.poll_ns += after - before;
            if w.from == 0 {
                w.from = before;
                w.delay_from = crate::clock::thread_run_delay_ns();
                w.cpu_from = crate::clock::thread_cpu_ns();
                self.window_end = start + self.cfg.duration_ns;
            }
            self.stats.wall_ns = after - w.from;
            if had_events {
                w.turn_from = after;
            }
        } else if w.from != 0 && w.cpu_end == 0 {
            // The measured window is over: its loop CPU share.
            w.cpu_end = crate::clock::thread_cpu_ns();
            w.delay_end = crate::clock::thread_run_delay_ns();
        }
    }

    /// Handles the events of one poll.
    fn dispatch(&mut self, events: &Events) {
        for (i, ev) in events.iter().enumerate() {
            if i % 32 == 31 {
                // Keep the send schedule on time while a long batch of
                // readable connections is being handled.
                self.pump(mono_ns());
            }
            if ev.token() == TIMER {
                self.timer.drain();
                continue;
            }
            let r = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            let w = ev.is_writable();
            self.on_event(ev.token().0, r, w);
        }
    }

    /// The loop's CPU share and CPU wait over the measured window (if the
    /// loop saw it).
    fn close_window(&mut self, w: &Window) {
        if w.from == 0 {
            return;
        }
        let (cpu_end, delay_end) = if w.cpu_end == 0 {
            (crate::clock::thread_cpu_ns(), crate::clock::thread_run_delay_ns())
        } else {
            (w.cpu_end, w.delay_end)
        };
        self.stats.run_delay_ns = delay_end.saturating_sub(w.delay_from);
        if self.stats.wall_ns > 0 {
            self.stats.loop_cpu_max_pct = cpu_end.saturating_sub(w.cpu_from) as f64 / self.stats.wall_ns as f64 * 100.0;
        }
    }

    /// Sends what the open-loop schedule has due (and opens due churn
    /// connections), then flushes: one write per connection. Returns the
    /// next due time (or `u64::MAX`).
    fn pump(&mut self, now: u64) -> u64 {
        let deadline = self.schedule(now);
        // Also before the schedule starts: pongs, and the joins of
        // `--cross-shard`, go out as soon as they are queued.
        self.flush_dirty();
        deadline
    }

    /// The send schedule and churn arrivals due by `now`; returns the next
    /// due time (or `u64::MAX`).
    fn schedule(&mut self, now: u64) -> u64 {
        let cfg = self.cfg.clone();
        let start = self.sh.start_ns.load(Relaxed);
        let mut deadline = u64::MAX;
        if start == 0 || now < start {
            return if start == 0 { u64::MAX } else { start };
        }
        let end = start.saturating_add(cfg.duration_ns);
        if self.interval_ns != u64::MAX {
            // Message k is due at start + k*interval, whatever happened to
            // earlier ones (wrk2-style open loop).
            loop {
                let due = start + self.sched_k * self.interval_ns;
                if due > now || due >= end {
                    if due < end {
                        deadline = deadline.min(due);
                    }
                    break;
                }
                self.sched_k += 1;
                if self.sched.is_empty() {
                    continue;
                }
                let slot = self.sched_rr % self.sched.len();
                self.sched_rr += 1;
                let Some(key) = self.sched[slot] else {
                    // Its connection is gone (or never became ready): the
                    // message is due but cannot be sent. Count it, and the
                    // deliveries it would have had, so it shows as loss.
                    self.stats.unsent += 1;
                    self.stats.expected += match cfg.scenario {
                        Scenario::Rtt => 1,
                        _ => self.sh.room_ready[self.sched_room[slot] as usize].load(Relaxed),
                    };
                    continue;
                };
                record(&mut self.stats.slip, (now - due) / 1000);
                match cfg.scenario {
                    Scenario::Rtt => self.build_rtt(key, due),
                    _ => self.build_publish(key, due),
                }
                if !self.dirty.contains(&key) {
                    self.dirty.push(key);
                }
            }
        }
        let churn_rate = cfg.churn_rate / cfg.threads as f64;
        if cfg.scenario == Scenario::Churn && churn_rate > 0.0 {
            let ci = (1e9 / churn_rate) as u64;
            loop {
                let due = start + self.churn_k * ci;
                if due > now || due >= end {
                    if due < end {
                        deadline = deadline.min(due);
                    }
                    break;
                }
                self.churn_k += 1;
                self.churn_room = (self.churn_room + cfg.threads as u32) % cfg.rooms.len() as u32;
                let id = 1_000_000_000 + self.churn_k * cfg.threads as u64 + self.idx as u64;
                // Arrivals cycle over the targets too.
                let target = (self.churn_k % cfg.targets.len().max(1) as u64) as u32;
                let spec = Spec { room: self.churn_room, role: Role::Churn, id, slot: 0, sched: NO_SCHED, target };
                self.open(spec, now);
            }
        }
        deadline
    }

    /// One write per connection with queued frames.
    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            if self.conns.contains(key)
                && let Err(cause) = self.flush(key)
            {
                self.drop_conn(key, cause);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    fn housekeeping(&mut self, now: u64) {
        let timeout = self.cfg.connect_timeout_ns;
        let mut victims: Vec<(usize, &'static str)> = Vec::new();
        if self.inflight > 0 || self.cfg.scenario == Scenario::Churn {
            for (key, c) in self.conns.iter() {
                if c.st != St::Ready {
                    if now - c.t_open > timeout {
                        victims.push((key, "timeout"));
                    }
                } else if c.spec.role == Role::Churn && now >= c.close_at {
                    victims.push((key, ""));
                }
            }
        }
        for (key, cause) in victims {
            self.drop_conn(key, cause);
        }
    }
}

fn set_bind_no_port(sock: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with a c_int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
