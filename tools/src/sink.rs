//! A trivial broadcast/sink server speaking the minimal roomcast contract
//! (welcome, publish → message/ack, ping → pong, WebSocket pings), or, with
//! `--mode raw`, a plain broadcast server that relays every text frame to
//! the other connections on the same path. One mio loop, one thread; run
//! several processes with `--procs` (SO_REUSEPORT) to hold more
//! connections than one process's fd limit. It exists to develop and
//! demonstrate the load generator, not to be fast or complete.

use crate::clock::mono_ns;
use crate::frame::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Parse};
use crate::scan;
use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use sha1::Digest as _;
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// The first listener's token; listener i is `LISTENER - i`.
const LISTENER: usize = usize::MAX - 1;
const OUT_MAX: usize = 8 << 20;
const RBUF: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkMode {
    /// Minimal roomcast contract (welcome, publish → message/ack, ping → pong).
    Roomcast,
    /// Relay every text frame to the other connections on the same path.
    Raw,
    /// Echo every text frame back to its sender (for `rtt --proto raw`).
    Echo,
}

pub struct SinkCfg {
    /// Addresses to listen on (at least one). Several listeners share one
    /// loop and its rooms: a stand-in for the nodes of a cluster, for
    /// `--url A,B,C` runs.
    pub listen: Vec<SocketAddr>,
    pub mode: SinkMode,
    pub duration_s: u64,
    pub ping_interval_s: u64,
    pub reuseport: bool,
    pub quiet: bool,
    /// Seconds between the sink's status lines (unless `quiet`).
    pub report_interval_s: u64,
    /// Fault injection: close a connection (1011) once it has published
    /// this many messages (0: never). Lets tests show that a publisher the
    /// server drops is counted, not silently skipped.
    pub close_after_publishes: u64,
}

struct Conn {
    stream: TcpStream,
    open: bool,
    room: usize,
    slot: usize,
    user: String,
    pending: Vec<u8>,
    out: Vec<u8>,
    out_off: usize,
    writable: bool,
    /// In `Sink::dirty` (so marking is O(1), not a search of the list).
    queued: bool,
    publishes: u64,
}

struct Room {
    name: String,
    members: Vec<usize>,
    seq: u64,
    /// Frames broadcast in this loop turn, framed once: every member that
    /// has nothing else queued gets this very buffer in one write (no copy
    /// per member).
    turn: Vec<u8>,
    /// (start, end, publisher) of each frame in `turn`: a publisher gets the
    /// others' frames, not its own.
    turn_frames: Vec<(usize, usize, usize)>,
}

#[derive(Default, Debug)]
pub struct SinkStats {
    pub accepted: u64,
    pub peak: u64,
    pub messages: u64,
    pub deliveries: u64,
    pub dropped_slow: u64,
    /// Socket writes (one per dirty connection per loop turn).
    pub writes: u64,
}

struct Sink {
    poll: Poll,
    conns: Slab<Conn>,
    rooms: Vec<Room>,
    room_ix: HashMap<String, usize>,
    dirty: Vec<usize>,
    /// Rooms with frames in their turn buffer.
    dirty_rooms: Vec<usize>,
    scratch: Vec<u8>,
    mode: SinkMode,
    stats: SinkStats,
    close_after_publishes: u64,
}

fn accept_key(key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Parses a request head: returns (path, Sec-WebSocket-Key).
fn parse_head(head: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    let mut parts = first.split(' ');
    if parts.next()? != "GET" {
        return None;
    }
    let path = parts.next()?.to_string();
    let key = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim().to_string())
    })?;
    Some((path, key))
}

fn room_and_user(path: &str, n: u64) -> (String, String) {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let room = p.strip_prefix("/ws/").unwrap_or(p).to_string();
    let user =
        q.split('&').find_map(|kv| kv.strip_prefix("user=")).map(str::to_string).unwrap_or_else(|| format!("anon{n}"));
    (room, user)
}

impl Sink {
    fn flush(&mut self, key: usize) -> bool {
        let c = &mut self.conns[key];
        while c.out_off < c.out.len() {
            self.stats.writes += 1;
            match c.stream.write(&c.out[c.out_off..]) {
                Ok(0) => return false,
                Ok(n) => c.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.writable {
                        c.writable = true;
                        let _ = self.poll.registry().reregister(
                            &mut c.stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                    }
                    return c.out.len() - c.out_off <= OUT_MAX;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        c.out.clear();
        c.out_off = 0;
        if c.out.capacity() > 64 * 1024 {
            c.out = Vec::new();
        }
        if c.writable {
            c.writable = false;
            let _ = self.poll.registry().reregister(&mut c.stream, Token(key), Interest::READABLE);
        }
        true
    }

    fn close(&mut self, key: usize) {
        let mut c = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        if c.open {
            let room = &mut self.rooms[c.room];
            room.members.swap_remove(c.slot);
            if let Some(&moved) = room.members.get(c.slot) {
                self.conns[moved].slot = c.slot;
            }
        }
    }

    fn mark(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.writable && !c.out.is_empty() && !c.queued {
            c.queued = true;
            self.dirty.push(key);
        }
    }

    fn on_readable(&mut self, key: usize, rbuf: &mut [u8]) -> bool {
        loop {
            let c = &mut self.conns[key];
            let p = c.pending.len();
            if p >= rbuf.len() {
                return false;
            }
            rbuf[..p].copy_from_slice(&c.pending);
            let n = match c.stream.read(&mut rbuf[p..]) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            c.pending.clear();
            let total = p + n;
            let Some(used) = self.process(key, &mut rbuf[..total]) else {
                return false;
            };
            self.conns[key].pending.extend_from_slice(&rbuf[used..total]);
            if n < rbuf.len() - p {
                return true;
            }
        }
    }

    fn process(&mut self, key: usize, buf: &mut [u8]) -> Option<usize> {
        let mut pos = 0;
        if !self.conns[key].open {
            let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
                return (buf.len() <= 8192).then_some(0);
            };
            let (path, wskey) = parse_head(&buf[..end])?;
            let (room, user) = room_and_user(&path, key as u64);
            let ri = match self.room_ix.get(&room) {
                Some(&i) => i,
                None => {
                    self.rooms.push(Room {
                        name: room.clone(),
                        members: Vec::new(),
                        seq: 0,
                        turn: Vec::new(),
                        turn_frames: Vec::new(),
                    });
                    self.room_ix.insert(room, self.rooms.len() - 1);
                    self.rooms.len() - 1
                }
            };
            let r = &mut self.rooms[ri];
            let c = &mut self.conns[key];
            c.open = true;
            c.room = ri;
            c.slot = r.members.len();
            r.members.push(key);
            let _ = write!(
                c.out,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(&wskey)
            );
            if self.mode == SinkMode::Roomcast {
                let body = format!(
                    r#"{{"type":"welcome","conn":"c{key}","room":"{}","shard":0,"user":"{user}","seq":{},"member_count":{},"members":[]}}"#,
                    r.name,
                    r.seq,
                    r.members.len()
                );
                frame::push_server_frame(&mut c.out, OP_TEXT, body.as_bytes());
            }
            c.user = user;
            self.stats.accepted += 1;
            self.stats.peak = self.stats.peak.max(self.conns.len() as u64);
            self.mark(key);
            pos = end + 4;
        }
        while pos < buf.len() {
            let f = match frame::parse(&buf[pos..], 1 << 20) {
                Parse::Frame(f) => f,
                Parse::Partial(_) => break,
                Parse::TooBig => return None,
            };
            let ps = pos + f.payload_start;
            let pe = ps + f.payload_len;
            pos += f.total_len();
            if let Some(m) = f.mask {
                frame::apply_mask(&mut buf[ps..pe], m);
            }
            match f.opcode {
                OP_TEXT => {
                    self.on_text(key, &buf[ps..pe]);
                    let limit = self.close_after_publishes;
                    if limit > 0 && self.conns[key].publishes >= limit {
                        let c = &mut self.conns[key];
                        frame::push_server_frame(&mut c.out, OP_CLOSE, &1011u16.to_be_bytes());
                        let _ = self.flush(key);
                        return None;
                    }
                }
                OP_PING => {
                    let c = &mut self.conns[key];
                    frame::push_server_frame(&mut c.out, OP_PONG, &buf[ps..pe]);
                    self.mark(key);
                }
                OP_CLOSE => {
                    let c = &mut self.conns[key];
                    frame::push_server_frame(&mut c.out, OP_CLOSE, &buf[ps..pe.min(ps + 2)]);
                    let _ = self.flush(key);
                    return None;
                }
                _ => {}
            }
        }
        Some(pos)
    }

    /// Queues the frame in `scratch` for every other member of `from`'s
    /// room: appended once to the room's turn buffer, written to the members
    /// by [`Sink::flush_rooms`] at the end of the loop turn.
    fn broadcast(&mut self, from: usize) {
        let room = self.conns[from].room;
        let r = &mut self.rooms[room];
        if r.turn.is_empty() {
            self.dirty_rooms.push(room);
        }
        let start = r.turn.len();
        r.turn.extend_from_slice(&self.scratch);
        r.turn_frames.push((start, r.turn.len(), from));
        self.stats.deliveries += r.members.len().saturating_sub(1) as u64;
        self.stats.messages += 1;
    }

    /// One write per member of each room with frames this turn, all from
    /// the room's one buffer; a member with bytes already queued (a partial
    /// write, an ack, a pong) or that published this turn gets a copy
    /// appended to its own queue instead, so its order is kept.
    fn flush_rooms(&mut self) {
        let rooms = std::mem::take(&mut self.dirty_rooms);
        let mut victims = Vec::new();
        for &ri in &rooms {
            let turn = std::mem::take(&mut self.rooms[ri].turn);
            let frames = std::mem::take(&mut self.rooms[ri].turn_frames);
            let mut senders: Vec<usize> = frames.iter().map(|f| f.2).collect();
            senders.sort_unstable();
            senders.dedup();
            let members = std::mem::take(&mut self.rooms[ri].members);
            for &m in &members {
                if senders.binary_search(&m).is_ok() {
                    let c = &mut self.conns[m];
                    for &(a, b, from) in &frames {
                        if from != m {
                            c.out.extend_from_slice(&turn[a..b]);
                        }
                    }
                    self.mark(m);
                    continue;
                }
                let c = &mut self.conns[m];
                if !c.out.is_empty() || c.writable {
                    c.out.extend_from_slice(&turn);
                    if c.out.len() - c.out_off > OUT_MAX {
                        victims.push(m);
                    } else {
                        self.mark(m);
                    }
                    continue;
                }
                let mut off = 0;
                let ok = loop {
                    self.stats.writes += 1;
                    match c.stream.write(&turn[off..]) {
                        Ok(0) => break false,
                        Ok(n) => {
                            off += n;
                            if off == turn.len() {
                                break true;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Keep the rest in its own queue until writable.
                            c.out.extend_from_slice(&turn[off..]);
                            c.writable = true;
                            let _ = self.poll.registry().reregister(
                                &mut c.stream,
                                Token(m),
                                Interest::READABLE | Interest::WRITABLE,
                            );
                            break true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break false,
                    }
                };
                if !ok {
                    victims.push(m);
                }
            }
            let r = &mut self.rooms[ri];
            r.members = members;
            // Keep the allocations for the next turn.
            r.turn = turn;
            r.turn.clear();
            r.turn_frames = frames;
            r.turn_frames.clear();
        }
        self.dirty_rooms = rooms;
        self.dirty_rooms.clear();
        for v in victims {
            if self.conns.contains(v) {
                self.stats.dropped_slow += 1;
                self.close(v);
            }
        }
    }

    fn on_text(&mut self, key: usize, payload: &[u8]) {
        if self.mode == SinkMode::Echo {
            frame::push_server_frame(&mut self.conns[key].out, OP_TEXT, payload);
            self.mark(key);
            return;
        }
        if self.mode == SinkMode::Raw {
            self.scratch.clear();
            frame::push_server_frame(&mut self.scratch, OP_TEXT, payload);
            self.broadcast(key);
            return;
        }
        let reference = scan::find_value(payload, b"\"ref\"");
        match scan::find_type(payload) {
            Some(b"publish") => {
                self.conns[key].publishes += 1;
                let Some(data) = scan::find_value(payload, b"\"data\"") else {
                    return;
                };
                let room = self.conns[key].room;
                self.rooms[room].seq += 1;
                let seq = self.rooms[room].seq;
                let mut body = Vec::with_capacity(payload.len() + 96);
                let _ = write!(
                    body,
                    r#"{{"type":"message","room":"{}","from":"{}","seq":{seq},"data":"#,
                    self.rooms[room].name, self.conns[key].user
                );
                body.extend_from_slice(data);
                body.push(b'}');
                self.scratch.clear();
                frame::push_server_frame(&mut self.scratch, OP_TEXT, &body);
                self.broadcast(key);
                if let Some(r) = reference {
                    let mut ack = Vec::with_capacity(64);
                    ack.extend_from_slice(br#"{"type":"ack","ref":"#);
                    ack.extend_from_slice(r);
                    let _ = write!(ack, r#","seq":{seq}}}"#);
                    frame::push_server_frame(&mut self.conns[key].out, OP_TEXT, &ack);
                    self.mark(key);
                }
            }
            Some(b"ping") => {
                let mut pong = Vec::with_capacity(48);
                pong.extend_from_slice(br#"{"type":"pong""#);
                if let Some(r) = reference {
                    pong.extend_from_slice(br#","ref":"#);
                    pong.extend_from_slice(r);
                }
                pong.push(b'}');
                frame::push_server_frame(&mut self.conns[key].out, OP_TEXT, &pong);
                self.mark(key);
            }
            _ => {}
        }
    }
}

/// Runs the sink until `duration_s` has passed.
pub fn run(cfg: &SinkCfg) -> anyhow::Result<SinkStats> {
    if cfg.listen.is_empty() || cfg.listen.len() > 64 {
        anyhow::bail!("--listen: give 1 to 64 addresses");
    }
    let poll = Poll::new()?;
    let mut listeners = Vec::with_capacity(cfg.listen.len());
    for (i, addr) in cfg.listen.iter().enumerate() {
        let mut listener = bind(cfg, *addr)?;
        poll.registry().register(&mut listener, Token(LISTENER - i), Interest::READABLE)?;
        listeners.push(listener);
    }
    let mut s = Sink {
        poll,
        conns: Slab::with_capacity(1024),
        rooms: Vec::new(),
        room_ix: HashMap::new(),
        dirty: Vec::new(),
        dirty_rooms: Vec::new(),
        scratch: Vec::new(),
        mode: cfg.mode,
        close_after_publishes: cfg.close_after_publishes,
        stats: SinkStats::default(),
    };
    let mut rbuf = vec![0u8; RBUF];
    let mut events = Events::with_capacity(1024);
    let t0 = mono_ns();
    let end = t0 + cfg.duration_s * 1_000_000_000;
    let ping_ns = cfg.ping_interval_s.max(1) * 1_000_000_000;
    let mut next_ping = t0 + ping_ns;
    let report_ns = cfg.report_interval_s.max(1) * 1_000_000_000;
    let mut next_report = t0 + report_ns;
    let mut status = StatusLine::new(t0);
    loop {
        let now = mono_ns();
        if now >= end {
            break;
        }
        if cfg.ping_interval_s > 0 && now >= next_ping {
            next_ping = now + ping_ns;
            s.ping_all();
        }
        if !cfg.quiet && now >= next_report {
            next_report = now + report_ns;
            status.print(&s, now);
        }
        s.flush_rooms();
        s.flush_dirty();
        let timeout = std::time::Duration::from_millis(100).min(std::time::Duration::from_nanos(end - now));
        if let Err(e) = s.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t > LISTENER - listeners.len() {
                s.accept_all(&listeners[LISTENER - t]);
            } else {
                s.on_event(ev, &mut rbuf);
            }
        }
    }
    Ok(s.stats)
}

/// The listening socket (`SO_REUSEPORT` for `--procs`); says where it
/// listens.
fn bind(cfg: &SinkCfg, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if cfg.reuseport {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    sock.set_nonblocking(true)?;
    let listener = TcpListener::from_std(sock.into());
    // The bound address (the port, when `--listen` asked for port 0): tests
    // and scripts wait for this line instead of sleeping.
    eprintln!("sink {} listening on {} ({:?})", std::process::id(), listener.local_addr()?, cfg.mode);
    Ok(listener)
}

/// The periodic status line: is the sink itself keeping up? Holds the
/// figures of the previous line, to print rates since.
struct StatusLine {
    at: u64,
    cpu: (u64, u64),
    delay: u64,
    writes: u64,
    deliveries: u64,
}

impl StatusLine {
    fn new(t0: u64) -> StatusLine {
        let (cpu, delay) = (crate::clock::process_cpu_split_ns(), crate::clock::thread_run_delay_ns());
        StatusLine { at: t0, cpu, delay, writes: 0, deliveries: 0 }
    }

    fn print(&mut self, s: &Sink, now: u64) {
        let (cpu, delay) = (crate::clock::process_cpu_split_ns(), crate::clock::thread_run_delay_ns());
        let wall = (now - self.at).max(1) as f64;
        let (writes, deliveries) = (s.stats.writes - self.writes, s.stats.deliveries - self.deliveries);
        eprintln!(
            "sink {}: conns {} accepted {} messages {} deliveries {} | last {:.1} s: {:.0} deliveries/s, {:.1} frames/write, CPU {:.1}% (user {:.1}, sys {:.1}), waited for CPU {:.1}%",
            std::process::id(),
            s.conns.len(),
            s.stats.accepted,
            s.stats.messages,
            s.stats.deliveries,
            wall / 1e9,
            deliveries as f64 / wall * 1e9,
            if writes > 0 { deliveries as f64 / writes as f64 } else { 0.0 },
            ((cpu.0 - self.cpu.0) + (cpu.1 - self.cpu.1)) as f64 / wall * 100.0,
            (cpu.0 - self.cpu.0) as f64 / wall * 100.0,
            (cpu.1 - self.cpu.1) as f64 / wall * 100.0,
            delay.saturating_sub(self.delay) as f64 / wall * 100.0
        );
        *self = StatusLine { at: now, cpu, delay, writes: s.stats.writes, deliveries: s.stats.deliveries };
    }
}

impl Sink {
    /// A WebSocket ping to every open connection.
    fn ping_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().filter(|c| c.1.open).map(|c| c.0).collect();
        for k in keys {
            frame::push_server_frame(&mut self.conns[k].out, OP_PING, b"");
            self.mark(k);
        }
    }

    /// One write per connection with queued frames; one that cannot take
    /// them is closed as a slow consumer.
    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &k in &dirty {
            if let Some(c) = self.conns.get_mut(k) {
                c.queued = false;
            }
            if self.conns.contains(k) && !self.flush(k) {
                self.stats.dropped_slow += 1;
                self.close(k);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Accepts every pending connection (until the backlog is empty or
    /// the fds run out).
    fn accept_all(&mut self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    if self.poll.registry().register(&mut stream, Token(entry.key()), Interest::READABLE).is_ok() {
                        entry.insert(Conn {
                            stream,
                            open: false,
                            room: 0,
                            slot: 0,
                            user: String::new(),
                            pending: Vec::new(),
                            out: Vec::new(),
                            out_off: 0,
                            writable: false,
                            queued: false,
                            publishes: 0,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    // Out of fds: stop accepting for this turn.
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// A connection's readiness: writes what waits, reads what came.
    fn on_event(&mut self, ev: &mio::event::Event, rbuf: &mut [u8]) {
        let key = ev.token().0;
        if !self.conns.contains(key) {
            return;
        }
        if ev.is_writable() && self.conns[key].writable && !self.flush(key) {
            self.close(key);
            return;
        }
        if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && !self.on_readable(key, rbuf) {
            self.close(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn head_and_path() {
        let head = b"GET /ws/r1?user=bob HTTP/1.1\r\nHost: x\r\nsec-websocket-key: abc\r\n";
        let (path, key) = parse_head(head).unwrap();
        assert_eq!((path.as_str(), key.as_str()), ("/ws/r1?user=bob", "abc"));
        assert_eq!(room_and_user(&path, 3), ("r1".into(), "bob".into()));
        assert_eq!(room_and_user("/ws/x?token=t", 3), ("x".into(), "anon3".into()));
    }
}
