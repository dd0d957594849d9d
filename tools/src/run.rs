//! Orchestration: builds the plan from the flags, runs worker threads (or
//! child processes in multi-process mode), prints progress, and produces
//! the summary (human, JSON, `.hgrm`, SVG).

use crate::client::{self, Auth, Proto, RttKind, RunCfg, Scenario, Shared, Stats, Target, TargetStats, Worker};
use crate::clock::{mono_ns, process_cpu_split_ns, rss_bytes};
use crate::report::{self, Pcts, Series, hist_from_b64, hist_to_b64};
use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server base URL; the tool adds `/ws/{room}`. Several (repeat the
    /// flag, or separate them with commas), e.g. the nodes of a cluster:
    /// each room's connections are spread round-robin over them
    /// (connection i of a room, members first, then publishers, goes to
    /// URL i mod N), and the summary adds each URL's share (`targets`).
    #[arg(long, default_value = "ws://127.0.0.1:8080", value_delimiter = ',')]
    pub url: Vec<String>,
    /// Protocol: roomcast (welcome, seq, tokens) or raw (any broadcast server:
    /// every text frame received is a delivery).
    #[arg(long, value_enum, default_value_t = Proto::Roomcast)]
    pub proto: Proto,
    /// Rooms.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = num::<u32>)]
    pub rooms: u32,
    /// Receiving members per room (rtt: connections per room doing round trips).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = num::<u32>)]
    pub members: u32,
    /// Publishers per room (extra connections, not counted as receivers).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = num::<u32>)]
    pub publishers: u32,
    /// Aggregate rate: published messages/s (fanout, churn) or round trips/s (rtt).
    #[arg(long, default_value_t = 100.0, allow_negative_numbers = true, value_parser = num::<f64>)]
    pub rate: f64,
    /// Payload (`data`) size in bytes.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = num::<usize>)]
    pub size: usize,
    /// Seconds of measured load (connect: seconds to hold the connections).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true, value_parser = num::<f64>)]
    pub duration: f64,
    /// HS256 secret to mint tokens (`sub`, `exp`, `room`) with. Also read
    /// from ROOMCAST_JWT_SECRET (the server's own variable), which then
    /// counts as this flag.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true, conflicts_with = "dev")]
    pub jwt_secret: Option<String>,
    /// A file holding the HS256 secret (one trailing newline is dropped),
    /// so that the secret is not on the command line for `ps` to show.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["jwt_secret", "dev"])]
    pub jwt_secret_file: Option<PathBuf>,
    /// Dev mode: connect with `?user=NAME`, no token.
    #[arg(long)]
    pub dev: bool,
    /// Print the one-line JSON summary on stdout (last line).
    #[arg(long)]
    pub json: bool,
    /// Directory for `.hgrm` and `.svg` files.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// File name stem in `--out` (default: the scenario).
    #[arg(long)]
    pub name: Option<String>,
    /// Event-loop threads (default: the CPUs this process may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Processes (multi-process mode: each gets a share of the rooms, its
    /// own fd limit and its own source addresses).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = num::<u32>)]
    pub procs: u32,
    /// New connections per second (0: as fast as `--inflight` allows).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = num::<f64>)]
    pub connect_rate: f64,
    /// Handshake in-flight cap per thread.
    #[arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = num::<usize>)]
    pub inflight: usize,
    /// Seconds a connection may take to become ready.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true, value_parser = num::<f64>)]
    pub connect_timeout: f64,
    /// Seconds the whole connect phase may take before load starts anyway.
    #[arg(long, default_value_t = 120.0, allow_negative_numbers = true, value_parser = num::<f64>)]
    pub setup_timeout: f64,
    /// Source addresses: `auto` (loopback targets: 4 addresses in
    /// 127.0.0.10+ per process), `none`, or a range `127.0.0.2-127.0.0.9`.
    #[arg(long, default_value = "auto")]
    pub source_ips: String,
    /// churn: connections arriving per second (each leaves after `--churn-life-ms`).
    #[arg(long, default_value_t = 100.0, allow_negative_numbers = true, value_parser = num::<f64>)]
    pub churn_rate: f64,
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true, value_parser = num::<u64>)]
    pub churn_life_ms: u64,
    /// rtt: ping→pong or publish(ref)→ack.
    #[arg(long, value_enum, default_value_t = RttKind::Ping)]
    pub rtt_kind: RttKind,
    /// Seconds to wait for in-flight deliveries after the schedule ends.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true, value_parser = num::<f64>)]
    pub drain: f64,
    /// Server PID: report its RSS growth per connection.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Room name prefix (rooms are PREFIX-0 … PREFIX-(R-1)).
    #[arg(long, default_value = "load")]
    pub room_prefix: String,
    /// fanout: the server's shard count N (0: off). Every receiver and
    /// publisher connects to its own home room, on a shard other than the
    /// measured room's owner (cycling over them; FNV-1a as the server),
    /// then joins the room and waits for the join's ack; publishers publish
    /// with `"room"`.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = num::<u32>)]
    pub cross_shard: u32,
    /// fanout: extra receivers per room that stop reading once ready (slow
    /// consumers, to exercise the server's outbound queue limit). They are
    /// not counted in `expected`; the server's closes show in its metrics.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = num::<u32>)]
    pub stalled: u32,
    #[arg(long, hide = true)]
    pub child_index: Option<u32>,
    /// Child of a parent showing a progress line: report counters on stdout.
    #[arg(long, hide = true)]
    pub child_progress: bool,
}

/// Parses a number for a flag; clap names the flag in the error ("invalid
/// value '-5' for '--rooms <ROOMS>': …"), and negative values reach this
/// parser instead of being taken for flags.
fn num<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse::<T>()
        .map_err(|e| if s.trim().starts_with('-') { "must not be negative".to_string() } else { format!("{e}") })
}

/// What one process measured; children send it to the parent as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProcResult {
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub too_old: u64,
    pub window_distinct: u64,
    pub sent: u64,
    pub unsent: u64,
    pub expected: u64,
    pub planned: u64,
    pub connected: u64,
    pub failures: BTreeMap<String, u64>,
    pub closed_by_server: BTreeMap<String, u64>,
    pub churn_opened: u64,
    pub churn_closed: u64,
    pub publisher_rx: u64,
    pub lat: String,
    pub handshake: String,
    pub churn_handshake: String,
    pub slip: String,
    pub turn: String,
    pub cpu_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_sys_ns: u64,
    pub loop_cpu_max_pct: f64,
    pub seq_window: u64,
    pub measure_ns: u64,
    pub connect_ns: u64,
    pub threads: usize,
    pub rss_growth: Option<u64>,
    pub reads: u64,
    pub frames: u64,
    pub poll_ns: u64,
    pub wall_ns: u64,
    pub run_delay_ns: u64,
    #[serde(default)]
    pub home_shards: BTreeMap<u16, u64>,
    #[serde(default)]
    pub publisher_home_shards: BTreeMap<u16, u64>,
    #[serde(default)]
    pub room_shards: BTreeMap<u16, u64>,
    #[serde(default)]
    pub shard_mismatches: u64,
    /// Per target when the run has several `--url`s (else empty).
    #[serde(default)]
    pub targets: Vec<TargetResult>,
}

/// One target's share of a process's run (several `--url`s).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TargetResult {
    pub planned: u64,
    pub connected: u64,
    pub failed: u64,
    pub distinct: u64,
    /// The latency histogram of its receivers' deliveries (base64).
    pub lat: String,
}

/// One target's figures in the summary (several `--url`s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetSummary {
    pub url: String,
    /// Planned connections to it (each room's connections round-robin).
    pub connections: u64,
    pub connected: u64,
    pub failed: u64,
    /// Distinct deliveries to the receivers connected to it (whole run,
    /// drain included).
    pub delivered: u64,
    /// Their latency, from the intended send time.
    pub latency_us: Pcts,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub proto: Proto,
    /// The `--url`, or with several, all of them joined by commas.
    pub url: String,
    pub procs: u32,
    pub threads: usize,
    pub rooms: u32,
    pub members: u32,
    pub publishers: u32,
    pub rate: f64,
    pub size: usize,
    pub duration_s: f64,
    pub connections: u64,
    pub connected: u64,
    pub connect_failures: BTreeMap<String, u64>,
    pub closed_by_server: BTreeMap<String, u64>,
    pub connect_s: f64,
    pub connects_per_sec: f64,
    pub sent: u64,
    /// Messages (or round trips) due on the schedule whose connection was
    /// gone or never ready: not sent, their deliveries in `expected`.
    pub unsent: u64,
    /// Every delivery received, duplicates included.
    pub delivered: u64,
    /// Deliveries the sent and unsent messages should have had: each
    /// message × the room's ready receivers when it was due.
    pub expected: u64,
    /// `expected` − distinct deliveries.
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Deliveries older than the per-receiver seq window (`seq_window`
    /// bits), which could not be checked for duplicates; counted as
    /// distinct and out of order. 0 unless a room carries more messages
    /// than the window.
    pub too_old: u64,
    pub seq_window: u64,
    /// Distinct deliveries received inside the measured window [schedule
    /// start, start + `--duration`] ÷ `--duration` (deliveries of the
    /// drain are not counted).
    pub deliveries_per_sec: f64,
    pub latency_us: Pcts,
    /// Handshakes of the planned connections (connect → ready).
    pub handshake_us: Pcts,
    /// churn: handshakes of the arriving connections during the fanout.
    pub churn_handshake_us: Pcts,
    pub slip_us: Pcts,
    /// Loop turns in the measured window (poll return → next poll): data
    /// that becomes ready during a turn waits for the next, so this bounds
    /// the delay the tool itself adds.
    pub tool_turn_us: Pcts,
    pub churn_opened: u64,
    pub churn_closed: u64,
    pub tool_cpu_pct: f64,
    pub tool_cpu_user_pct: f64,
    pub tool_cpu_sys_pct: f64,
    /// The busiest loop thread's CPU time ÷ its wall time, in %.
    pub tool_loop_cpu_pct: f64,
    pub tool_cpu_capacity_pct: f64,
    /// Share of the measured phase the event loops were not blocked in poll.
    pub tool_busy_pct: f64,
    /// Share of the measured phase the loops were runnable but waiting for
    /// a CPU (other processes on the tool's cores).
    pub tool_cpu_wait_pct: f64,
    pub frames_per_read: f64,
    pub tool_bottleneck: bool,
    pub bottleneck_reason: Option<String>,
    pub server_rss_per_conn_bytes: Option<u64>,
    /// `--cross-shard N` (0: off).
    pub cross_shard: u32,
    /// `--cross-shard`: receivers by the shard of their home room, as the
    /// server's home `welcome` said (shard → connections).
    pub home_shards: BTreeMap<u16, u64>,
    /// The same for publishers.
    pub publisher_home_shards: BTreeMap<u16, u64>,
    /// `--cross-shard`: joins by the shard owning the joined room (its
    /// `welcome`'s `shard`).
    pub room_shards: BTreeMap<u16, u64>,
    /// Welcomes whose `shard` differs from the tool's FNV-1a prediction.
    pub shard_mismatches: u64,
    /// The server's result alone: p99 < 10 ms, nothing lost, every
    /// connection made.
    pub server_ok: bool,
    /// `server_ok` and the tool was not the bottleneck.
    pub pass: bool,
    pub hgrm: Option<String>,
    pub svg: Option<String>,
    /// Each `--url`'s share, in `--url` order, when there are several
    /// (absent with one, so a single-target summary is unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSummary>,
}

fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("--url must start with ws:// (got {url:?}); wss is not supported"))?;
    let hostport = rest.split('/').next().unwrap_or("");
    if hostport.is_empty() {
        bail!("--url has no host: {url:?}");
    }
    let with_port = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{with_port} resolves to nothing"))?;
    Ok((addr, hostport.to_string()))
}

/// The source addresses of process `proc_index`; `auto` gives some only
/// when every target is an IPv4 loopback address.
fn parse_src_ips(spec: &str, targets: &[SocketAddr], proc_index: u32) -> anyhow::Result<Vec<IpAddr>> {
    match spec {
        "none" => Ok(Vec::new()),
        "auto" => {
            if targets.iter().any(|t| !t.ip().is_loopback() || !t.is_ipv4()) {
                return Ok(Vec::new());
            }
            let base = 10 + 4 * proc_index;
            if base + 3 > 254 {
                bail!("--source-ips auto supports up to 61 processes");
            }
            Ok((base..base + 4).map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d as u8))).collect())
        }
        range => {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let a: Ipv4Addr = a.parse().with_context(|| format!("--source-ips {range:?}"))?;
            let b: Ipv4Addr = b.parse().with_context(|| format!("--source-ips {range:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                bail!("--source-ips {range:?}: give LOW-HIGH with at most 65536 addresses");
            }
            Ok((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))).collect())
        }
    }
}

/// Refuses flags that are out of range or do not apply, naming the flag:
/// sizes and rates here, then modes and pacing.
fn validate(a: &LoadArgs, scenario: Scenario) -> anyhow::Result<()> {
    let sends = matches!(scenario, Scenario::Fanout | Scenario::Churn);
    if !(a.duration > 0.0 && a.duration <= 3600.0) {
        bail!("--duration must be in (0, 3600] seconds (got {})", a.duration);
    }
    if a.rooms == 0 {
        bail!("--rooms must be at least 1");
    }
    if a.members == 0 {
        bail!("--members must be at least 1 (receivers per room)");
    }
    if sends && a.publishers == 0 {
        bail!("--publishers must be at least 1 for {scenario:?}");
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a non-negative number (got {})", a.rate);
    }
    if scenario != Scenario::Connect && a.rate == 0.0 {
        bail!("--rate must be above 0 for {scenario:?} (messages or round trips per second, aggregate)");
    }
    if a.rate > 10_000_000.0 {
        bail!("--rate must be at most 10,000,000 per second");
    }
    if a.size > 60_000 {
        bail!("--size must be at most 60000 bytes");
    }
    if a.procs == 0 || a.procs > 61 {
        bail!("--procs must be in 1..=61");
    }
    if a.procs > a.rooms {
        bail!("--procs ({}) must not exceed --rooms ({}): processes split the rooms", a.procs, a.rooms);
    }
    if a.url.len() > MAX_TARGETS {
        bail!("--url: at most {MAX_TARGETS} server addresses (got {})", a.url.len());
    }
    validate_modes(a, scenario, sends)?;
    validate_pacing(a)
}

/// Authentication, `--cross-shard` and `--stalled`: each only where it applies.
fn validate_modes(a: &LoadArgs, scenario: Scenario, sends: bool) -> anyhow::Result<()> {
    if a.proto == Proto::Roomcast && a.jwt_secret.is_none() && a.jwt_secret_file.is_none() && !a.dev {
        bail!("--proto roomcast needs --jwt-secret SECRET (or ROOMCAST_JWT_SECRET), --jwt-secret-file PATH, or --dev");
    }
    if a.cross_shard > 0 {
        if scenario != Scenario::Fanout {
            bail!("--cross-shard is for fanout only");
        }
        if a.url.len() > 1 {
            bail!("--cross-shard takes one --url (its shard prediction is one server's)");
        }
        if a.proto != Proto::Roomcast {
            bail!("--cross-shard needs --proto roomcast (join and publish with \"room\")");
        }
        if a.cross_shard > u32::from(u16::MAX) {
            bail!("--cross-shard must be the server's shard count (at most 65535)");
        }
        // Home rooms are `PREFIX-R.hN[.K]`: keep them within 128 bytes.
        if a.room_prefix.len() > 80 {
            bail!("--room-prefix must be at most 80 bytes with --cross-shard");
        }
    }
    if a.stalled > 0 && !sends {
        bail!("--stalled is for fanout and churn");
    }
    // An unreadable or empty secret file is a setup error, before any
    // child process is started.
    jwt_secret(a)?;
    Ok(())
}

/// Threads, handshakes in flight, connect and churn rates, timeouts.
fn validate_pacing(a: &LoadArgs) -> anyhow::Result<()> {
    if a.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    if a.inflight == 0 {
        bail!("--inflight must be at least 1");
    }
    if !(a.connect_rate >= 0.0 && a.connect_rate.is_finite()) {
        bail!("--connect-rate must be a non-negative number (0: as fast as --inflight allows; got {})", a.connect_rate);
    }
    if !(a.churn_rate >= 0.0 && a.churn_rate.is_finite()) {
        bail!("--churn-rate must be a non-negative number (got {})", a.churn_rate);
    }
    if !(a.connect_timeout > 0.0 && a.connect_timeout <= 600.0) {
        bail!("--connect-timeout must be in (0, 600] seconds (got {})", a.connect_timeout);
    }
    if !(a.setup_timeout > 0.0 && a.setup_timeout <= 3600.0) {
        bail!("--setup-timeout must be in (0, 3600] seconds (got {})", a.setup_timeout);
    }
    if !(a.drain >= 0.0 && a.drain <= 600.0) {
        bail!("--drain must be in [0, 600] seconds (got {})", a.drain);
    }
    Ok(())
}

/// Reads `--jwt-secret-file`: the file's text without one trailing newline
/// (`echo SECRET > FILE` writes one; a CRLF counts as one).
fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--jwt-secret-file {}", path.display()))?;
    let secret = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if secret.is_empty() {
        bail!("--jwt-secret-file {}: the file is empty", path.display());
    }
    Ok(secret.to_string())
}

/// The secret tokens are signed with, from `--jwt-secret` (or its
/// environment variable) or `--jwt-secret-file`; `None`: no tokens.
fn jwt_secret(a: &LoadArgs) -> anyhow::Result<Option<String>> {
    match (&a.jwt_secret, &a.jwt_secret_file) {
        (Some(s), _) => Ok(Some(s.clone())),
        (None, Some(path)) => read_secret_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// Most `--url`s one run may spread its connections over.
const MAX_TARGETS: usize = 256;

/// The run's `--url`s as one string: the URL, or several joined by commas.
fn url_label(a: &LoadArgs) -> String {
    a.url.join(",")
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn build_cfg(a: &LoadArgs, scenario: Scenario, proc_index: u32) -> anyhow::Result<RunCfg> {
    let mut targets = Vec::with_capacity(a.url.len());
    for url in &a.url {
        let (addr, host) = parse_url(url)?;
        targets.push(Target { addr, host });
    }
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let threads = a.threads.unwrap_or_else(default_threads);
    let rooms: Vec<String> =
        (0..a.rooms).filter(|r| r % a.procs == proc_index).map(|r| format!("{}-{r}", a.room_prefix)).collect();
    // This process's share of the aggregate rate, by its share of rooms.
    let rate = a.rate * rooms.len() as f64 / a.rooms as f64;
    let rooms_here = rooms.len();
    let receivers = rooms_here as u64 * u64::from(a.members);
    let auth = match jwt_secret(a)? {
        Some(s) => Auth::Jwt(jsonwebtoken::EncodingKey::from_secret(s.as_bytes())),
        None => Auth::Dev,
    };
    Ok(RunCfg {
        scenario,
        proto: a.proto,
        targets,
        auth,
        rooms,
        members: a.members,
        publishers: a.publishers,
        rate,
        size: a.size,
        duration_ns: (a.duration * 1e9) as u64,
        connect_rate: a.connect_rate / a.procs as f64,
        connect_timeout_ns: (a.connect_timeout * 1e9) as u64,
        inflight_max: a.inflight.max(1),
        src_ips: parse_src_ips(&a.source_ips, &addrs, proc_index)?,
        churn_rate: a.churn_rate / a.procs as f64,
        churn_life_ns: a.churn_life_ms * 1_000_000,
        rtt_kind: a.rtt_kind,
        threads,
        proc_index,
        procs: a.procs,
        user_prefix: format!("{}{proc_index}u", a.room_prefix),
        cross_shard: a.cross_shard,
        seq_window: seq_window(a, rate / rooms_here.max(1) as f64, receivers),
        progress: a.child_progress || (a.child_index.is_none() && std::io::stderr().is_terminal()),
        stalled: a.stalled,
    })
}

/// Bitmap bytes all receivers of one process may use for seq accounting.
const SEQ_BUDGET_BYTES: u64 = 256 << 20;

/// Bits of seq history per receiver: every message a room can carry in the
/// run (with slack for the schedule), within [`SEQ_BUDGET_BYTES`].
fn seq_window(a: &LoadArgs, rate_per_room: f64, receivers: u64) -> u64 {
    let msgs = (rate_per_room * (a.duration + 1.0)).ceil().min(u64::MAX as f64) as u64;
    crate::account::window_bits(msgs, receivers, SEQ_BUDGET_BYTES)
}

fn fmt_n(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Counters for a progress line: one process's, or several merged.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Progress {
    /// false: connecting; true: measuring.
    load: bool,
    planned: u64,
    ready: u64,
    failed: u64,
    open: u64,
    sent: u64,
    distinct: u64,
    unsent: u64,
    /// Highest per-loop p99 of the last second, µs.
    p99_us: u64,
}

impl Progress {
    fn of(sh: &Shared, planned: u64, load: bool) -> Progress {
        Progress {
            load,
            planned,
            ready: sh.ready.load(Relaxed),
            failed: sh.failed.load(Relaxed),
            open: sh.open.load(Relaxed),
            sent: sh.sent.load(Relaxed),
            distinct: sh.delivered_distinct.load(Relaxed),
            unsent: sh.unsent.load(Relaxed),
            p99_us: sh.interval_p99.iter().map(|x| x.load(Relaxed)).max().unwrap_or(0),
        }
    }

    /// The line a child sends to its parent.
    fn wire(&self) -> String {
        format!(
            "PROGRESS {} {} {} {} {} {} {} {} {}",
            u8::from(self.load),
            self.planned,
            self.ready,
            self.failed,
            self.open,
            self.sent,
            self.distinct,
            self.unsent,
            self.p99_us
        )
    }

    fn parse(line: &str) -> Option<Progress> {
        let v: Vec<u64> = line.strip_prefix("PROGRESS ")?.split(' ').map(|x| x.parse().ok()).collect::<Option<_>>()?;
        let [load, planned, ready, failed, open, sent, distinct, unsent, p99_us] = v[..] else {
            return None;
        };
        Some(Progress { load: load == 1, planned, ready, failed, open, sent, distinct, unsent, p99_us })
    }

    fn merge(all: &[Progress]) -> Progress {
        let mut m = Progress { load: all.iter().all(|p| p.load), ..Progress::default() };
        for p in all {
            m.planned += p.planned;
            m.ready += p.ready;
            m.failed += p.failed;
            m.open += p.open;
            m.sent += p.sent;
            m.distinct += p.distinct;
            m.unsent += p.unsent;
            m.p99_us = m.p99_us.max(p.p99_us);
        }
        m
    }
}

/// Prints progress lines on a terminal: rates from successive snapshots.
struct Ticker {
    t0: u64,
    last: Option<(u64, Progress)>,
    procs: u32,
}

impl Ticker {
    fn new(procs: u32) -> Ticker {
        Ticker { t0: mono_ns(), last: None, procs }
    }

    fn show(&mut self, p: Progress) {
        let now = mono_ns();
        let procs = if self.procs > 1 { format!(" ({} procs)", self.procs) } else { String::new() };
        if !p.load {
            eprint!(
                "\r[connect {:5.1}s]{procs} ready {}/{} failed {}   ",
                (now - self.t0) as f64 / 1e9,
                p.ready,
                p.planned,
                p.failed
            );
            return;
        }
        if let Some((t, q)) = self.last
            && q.load
        {
            let dt = ((now - t) as f64 / 1e9).max(1e-3);
            eprint!(
                "\r[{:5.1}s]{procs} conns {} sent {}/s delivered {}/s{} p99(1s) {:.2} ms   ",
                (now - self.t0) as f64 / 1e9,
                p.open,
                fmt_n(p.sent.saturating_sub(q.sent) as f64 / dt),
                fmt_n(p.distinct.saturating_sub(q.distinct) as f64 / dt),
                if p.unsent > 0 { format!(" unsent {}", p.unsent) } else { String::new() },
                p.p99_us as f64 / 1000.0
            );
        } else {
            self.t0 = now;
        }
        self.last = Some((now, p));
    }
}

/// Where one process shows its progress: its own line on a terminal, or,
/// as a child of a parent showing one, counters on stdout every 500 ms,
/// which the parent merges into one line.
struct ProgressOut {
    /// Our own line on stderr.
    line: bool,
    /// Counters for the parent on stdout.
    report: bool,
    ticker: Ticker,
}

impl ProgressOut {
    /// Sends `p` to the parent, or shows it on our line.
    fn send_or_show(&mut self, p: Progress) -> anyhow::Result<()> {
        if self.report {
            println!("{}", p.wire());
            std::io::stdout().flush()?;
        } else {
            self.ticker.show(p);
        }
        Ok(())
    }

    /// Ends our line (the next output starts on a fresh one).
    fn end_line(&self) {
        if self.line {
            eprintln!();
        }
    }
}

/// What a process timed around its measured window, for its result.
struct ProcTimes {
    connect_ns: u64,
    measure_ns: u64,
    cpu_user_ns: u64,
    cpu_sys_ns: u64,
    rss_growth: Option<u64>,
}

/// Runs this process's share; `child` = talk to the parent over stdio.
fn run_proc(a: &LoadArgs, scenario: Scenario, proc_index: u32, child: bool) -> anyhow::Result<ProcResult> {
    let cfg = Arc::new(build_cfg(a, scenario, proc_index)?);
    let sh = Arc::new(Shared::new(cfg.rooms.len(), cfg.threads));
    let planned = client::planned_conns(&cfg);
    let mut out = ProgressOut {
        line: !child && std::io::stderr().is_terminal(),
        report: child && a.child_progress,
        ticker: Ticker::new(1),
    };
    let rss0 = a.server_pid.and_then(rss_bytes);
    let handles = start_workers(&cfg, &sh)?;
    let t0 = mono_ns();
    wait_for_setup(&sh, planned, t0 + (a.setup_timeout * 1e9) as u64, &mut out)?;
    if planned > 0 && sh.ready.load(Relaxed) == 0 && sh.failed.load(Relaxed) >= planned {
        // Nothing to measure: say why now instead of waiting out --duration.
        sh.stop.store(true, Relaxed);
        let st = join_workers(handles)?;
        out.end_line();
        bail!(no_connection_error(&url_label(a), sh.failed.load(Relaxed), planned, &st));
    }
    let connect_ns = mono_ns() - t0;
    let rss_growth = match (rss0, a.server_pid.and_then(rss_bytes)) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x)),
        _ => None,
    };
    let start = agree_start(&sh, child)?;
    sh.start_ns.store(start, Relaxed);
    while mono_ns() < start {
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu0 = process_cpu_split_ns();
    measure(&sh, planned, start, start + cfg.duration_ns, &mut out)?;
    let cpu1 = process_cpu_split_ns();
    let measure_ns = mono_ns() - start;
    drain(&sh, a.drain);
    sh.stop.store(true, Relaxed);
    out.end_line();
    let st = join_workers(handles)?;
    let (cpu_user_ns, cpu_sys_ns) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let times = ProcTimes { connect_ns, measure_ns, cpu_user_ns, cpu_sys_ns, rss_growth };
    Ok(proc_result(st, &cfg, planned, times))
}

/// One event-loop thread per `cfg.threads`.
fn start_workers(cfg: &Arc<RunCfg>, sh: &Arc<Shared>) -> anyhow::Result<Vec<std::thread::JoinHandle<Stats>>> {
    let mut handles = Vec::new();
    for i in 0..cfg.threads {
        let w = Worker::new(cfg.clone(), sh.clone(), i).context("creating a worker")?;
        handles.push(std::thread::Builder::new().name(format!("load-{i}")).spawn(move || w.run())?);
    }
    Ok(handles)
}

/// Waits for the workers (after `stop`) and merges what they measured.
fn join_workers(handles: Vec<std::thread::JoinHandle<Stats>>) -> anyhow::Result<Stats> {
    let mut st = Stats::new();
    for h in handles {
        let s = h.join().map_err(|_| anyhow!("a worker thread panicked"))?;
        st.merge(&s);
    }
    Ok(st)
}

/// The connect phase: until every planned connection is ready or failed,
/// or `deadline`; progress every 500 ms.
fn wait_for_setup(sh: &Shared, planned: u64, deadline: u64, out: &mut ProgressOut) -> anyhow::Result<()> {
    let mut last_print = 0;
    loop {
        let done = sh.ready.load(Relaxed) + sh.failed.load(Relaxed);
        let now = mono_ns();
        if done >= planned || now >= deadline {
            return Ok(());
        }
        if (out.line || out.report) && now - last_print > 500_000_000 {
            last_print = now;
            out.send_or_show(Progress::of(sh, planned, false))?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// When the schedule starts: a child says READY and takes the parent's
/// `GO <ns>` (every process starts at once); alone, 20 ms from now.
fn agree_start(sh: &Shared, child: bool) -> anyhow::Result<u64> {
    if !child {
        return Ok(mono_ns() + 20_000_000);
    }
    println!("READY {} {}", sh.ready.load(Relaxed), sh.failed.load(Relaxed));
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    line.trim()
        .strip_prefix("GO ")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("child: expected GO <ns> from the parent, got {line:?}"))
}

/// The measured window [`start`, `end`): the workers run the schedule;
/// this thread only shows progress (each second; to a parent, every 500 ms).
fn measure(sh: &Shared, planned: u64, start: u64, end: u64, out: &mut ProgressOut) -> anyhow::Result<()> {
    let mut last_t = start;
    if out.line {
        out.ticker.show(Progress::of(sh, planned, true));
    }
    loop {
        let now = mono_ns();
        if now >= end {
            return Ok(());
        }
        let step = if out.report { 500_000_000 } else { 100_000_000 };
        std::thread::sleep(Duration::from_nanos((end - now).min(step)));
        let now = mono_ns();
        if out.report {
            out.send_or_show(Progress::of(sh, planned, true))?;
        } else if out.line && now - last_t >= 1_000_000_000 {
            out.ticker.show(Progress::of(sh, planned, true));
            last_t = now;
        }
    }
}

/// Waits up to `drain_s` for deliveries in flight (counters lag by ≤ 10 ms).
fn drain(sh: &Shared, drain_s: f64) {
    let drain_end = mono_ns() + (drain_s * 1e9) as u64;
    std::thread::sleep(Duration::from_millis(30));
    while mono_ns() < drain_end && sh.delivered_distinct.load(Relaxed) < sh.expected.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// This process's result, as sent to a parent.
fn proc_result(st: Stats, cfg: &RunCfg, planned: u64, times: ProcTimes) -> ProcResult {
    ProcResult {
        delivered: st.tally.delivered,
        duplicates: st.tally.duplicates,
        out_of_order: st.tally.out_of_order,
        too_old: st.tally.too_old,
        window_distinct: st.window_distinct,
        sent: st.sent,
        unsent: st.unsent,
        expected: st.expected,
        planned,
        connected: st.connected,
        failures: st.failures,
        closed_by_server: st.closed_by_server,
        churn_opened: st.churn_opened,
        churn_closed: st.churn_closed,
        publisher_rx: st.publisher_rx,
        lat: hist_to_b64(&st.lat),
        handshake: hist_to_b64(&st.handshake),
        churn_handshake: hist_to_b64(&st.churn_handshake),
        slip: hist_to_b64(&st.slip),
        turn: hist_to_b64(&st.turn),
        cpu_ns: times.cpu_user_ns + times.cpu_sys_ns,
        cpu_user_ns: times.cpu_user_ns,
        cpu_sys_ns: times.cpu_sys_ns,
        loop_cpu_max_pct: st.loop_cpu_max_pct,
        seq_window: cfg.seq_window,
        measure_ns: times.measure_ns,
        connect_ns: times.connect_ns,
        threads: cfg.threads,
        rss_growth: times.rss_growth,
        reads: st.reads,
        frames: st.frames,
        poll_ns: st.poll_ns,
        wall_ns: st.wall_ns,
        run_delay_ns: st.run_delay_ns,
        home_shards: st.home_shards,
        publisher_home_shards: st.publisher_home_shards,
        room_shards: st.room_shards,
        shard_mismatches: st.shard_mismatches,
        targets: target_results(&st.by_target, cfg),
    }
}

/// Each target's share of this process's run (empty with one target).
fn target_results(by_target: &[TargetStats], cfg: &RunCfg) -> Vec<TargetResult> {
    by_target
        .iter()
        .enumerate()
        .map(|(i, t)| TargetResult {
            planned: client::planned_conns_to(cfg, i),
            connected: t.connected,
            failed: t.failed,
            distinct: t.distinct,
            lat: hist_to_b64(&t.lat),
        })
        .collect()
}

/// Why a run made no connection at all, worded by what went wrong: a
/// refused handshake gives the server's reason (a refused token says so,
/// and which flags set the secret); only a refused TCP connect asks
/// whether the server is running.
fn no_connection_error(url: &str, failed: u64, planned: u64, st: &Stats) -> String {
    let mut e = format!("no connection to {url} could be made ({failed} of {planned} failed: {:?})", st.failures);
    if st.refusals.keys().any(|r| crate::refusal::is_token_refusal(r)) {
        e.push_str(
            "; the server refused the token: check that --jwt-secret (or --jwt-secret-file, ROOMCAST_JWT_SECRET) is the server's secret",
        );
    }
    if !st.refusals.is_empty() {
        let reasons: Vec<String> = st.refusals.iter().map(|(r, n)| format!("{r} (×{n})")).collect();
        e.push_str(&format!("; the server answered: {}", reasons.join(", ")));
    }
    if st.failures.contains_key("refused") {
        e.push_str("; is the server running there?");
    }
    e
}

/// What a child's stdout reader hands the parent.
enum FromChild {
    Line(String),
    /// Its stdout closed (it exited).
    Eof,
}

/// Multi-process mode: children are this binary with `--child-index`.
fn run_children(a: &LoadArgs) -> anyhow::Result<Vec<ProcResult>> {
    let mut children = Children::spawn(a)?;
    children.wait_ready(Duration::from_secs_f64(a.setup_timeout + 10.0))?;
    children.go(mono_ns() + 50_000_000)?;
    let results = children.collect(Duration::from_secs_f64(a.duration + a.drain + 30.0))?;
    if children.progress {
        eprintln!();
    }
    for mut k in children.kids {
        let _ = k.wait();
    }
    Ok(results)
}

/// The children of a multi-process run, the lines they send (one reader
/// thread each, into `rx`) and their merged progress line.
struct Children {
    kids: Vec<std::process::Child>,
    rx: std::sync::mpsc::Receiver<(usize, FromChild)>,
    /// Show a merged progress line (stderr is a terminal).
    progress: bool,
    ticker: Ticker,
    /// Each child's last progress counters.
    latest: Vec<Progress>,
    last_show: u64,
}

impl Children {
    /// Starts `a.procs` children with this process's arguments.
    fn spawn(a: &LoadArgs) -> anyhow::Result<Children> {
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe()?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let progress = std::io::stderr().is_terminal();
        let mut kids = Vec::new();
        let (tx, rx) = std::sync::mpsc::channel::<(usize, FromChild)>();
        for i in 0..a.procs {
            let mut cmd = Command::new(&exe);
            cmd.args(&args).arg("--child-index").arg(i.to_string());
            if progress {
                cmd.arg("--child-progress");
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("spawning a child process")?;
            let out = child.stdout.take().ok_or_else(|| anyhow!("child stdout not piped"))?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i as usize, FromChild::Line(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i as usize, FromChild::Eof));
            });
            kids.push(child);
        }
        Ok(Children {
            kids,
            rx,
            progress,
            ticker: Ticker::new(a.procs),
            latest: vec![Progress::default(); a.procs as usize],
            last_show: 0,
        })
    }

    fn kill_all(&mut self) {
        for k in self.kids.iter_mut() {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    /// Notes child `i`'s progress line, if `line` is one, and shows the
    /// merged line when it is due (each second while measuring, every
    /// 500 ms while connecting).
    fn progress_line(&mut self, i: usize, line: &str) {
        let Some(p) = Progress::parse(line) else { return };
        self.latest[i] = p;
        let now = mono_ns();
        let load = self.latest.iter().all(|p| p.load);
        if self.progress && now - self.last_show >= if load { 1_000_000_000 } else { 500_000_000 } {
            self.last_show = now;
            self.ticker.show(Progress::merge(&self.latest));
        }
    }

    /// Until every child said READY (its connections are made), within `deadline`.
    fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let mut ready = 0;
        let t0 = std::time::Instant::now();
        while ready < self.kids.len() {
            let left = deadline.saturating_sub(t0.elapsed());
            match self.rx.recv_timeout(left) {
                Ok((_, FromChild::Line(l))) if l.starts_with("READY") => ready += 1,
                Ok((i, FromChild::Line(l))) => self.progress_line(i, &l),
                Ok((i, FromChild::Eof)) => {
                    self.kill_all();
                    if self.progress {
                        eprintln!();
                    }
                    bail!("child process {i} exited during setup (its error is above)");
                }
                Err(_) => {
                    self.kill_all();
                    bail!("children did not all become ready in time");
                }
            }
        }
        Ok(())
    }

    /// Tells every child when the schedule starts.
    fn go(&mut self, start: u64) -> anyhow::Result<()> {
        for k in &mut self.kids {
            let stdin = k.stdin.as_mut().ok_or_else(|| anyhow!("child stdin not piped"))?;
            writeln!(stdin, "GO {start}")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Every child's RESULT, within `deadline`.
    fn collect(&mut self, deadline: Duration) -> anyhow::Result<Vec<ProcResult>> {
        let mut results = Vec::new();
        let t1 = std::time::Instant::now();
        let mut done = vec![false; self.kids.len()];
        while results.len() < self.kids.len() {
            let left = deadline.saturating_sub(t1.elapsed());
            match self.rx.recv_timeout(left) {
                Ok((i, FromChild::Line(l))) => {
                    if let Some(j) = l.strip_prefix("RESULT ") {
                        results.push(serde_json::from_str(j)?);
                        done[i] = true;
                    } else {
                        self.progress_line(i, &l);
                    }
                }
                Ok((i, FromChild::Eof)) => {
                    if !done[i] {
                        self.kill_all();
                        bail!("child process {i} exited without a result (its error is above)");
                    }
                }
                Err(_) => {
                    self.kill_all();
                    bail!("children did not all report in time");
                }
            }
        }
        Ok(results)
    }
}

/// The five histograms of a run, merged over its processes.
struct Hists {
    lat: hdrhistogram::Histogram<u64>,
    handshake: hdrhistogram::Histogram<u64>,
    churn_handshake: hdrhistogram::Histogram<u64>,
    slip: hdrhistogram::Histogram<u64>,
    turn: hdrhistogram::Histogram<u64>,
}

impl Hists {
    fn new() -> Hists {
        Hists {
            lat: report::new_hist(),
            handshake: report::new_hist(),
            churn_handshake: report::new_hist(),
            slip: report::new_hist(),
            turn: report::new_hist(),
        }
    }

    fn add(&mut self, r: &ProcResult) -> anyhow::Result<()> {
        self.lat.add(hist_from_b64(&r.lat)?)?;
        self.handshake.add(hist_from_b64(&r.handshake)?)?;
        self.churn_handshake.add(hist_from_b64(&r.churn_handshake)?)?;
        self.slip.add(hist_from_b64(&r.slip)?)?;
        self.turn.add(hist_from_b64(&r.turn)?)?;
        Ok(())
    }
}

/// The tool's own counters over the processes, from which the summary's
/// shares are derived (they are not in it themselves).
#[derive(Default)]
struct ToolTotals {
    cpu_ns: u64,
    cpu_user_ns: u64,
    cpu_sys_ns: u64,
    window_distinct: u64,
    /// The longest measured window of a process.
    measure_ns: u64,
    /// The largest server RSS growth a process saw (`--server-pid`).
    rss_growth: Option<u64>,
    reads: u64,
    frames: u64,
    poll_ns: u64,
    wall_ns: u64,
    run_delay_ns: u64,
}

impl ToolTotals {
    fn add(&mut self, r: &ProcResult) {
        self.reads += r.reads;
        self.frames += r.frames;
        self.poll_ns += r.poll_ns;
        self.wall_ns += r.wall_ns;
        self.run_delay_ns += r.run_delay_ns;
        self.window_distinct += r.window_distinct;
        self.cpu_user_ns += r.cpu_user_ns;
        self.cpu_sys_ns += r.cpu_sys_ns;
        self.cpu_ns += r.cpu_ns;
        self.measure_ns = self.measure_ns.max(r.measure_ns);
        if let Some(g) = r.rss_growth {
            self.rss_growth = Some(self.rss_growth.unwrap_or(0).max(g));
        }
    }
}

impl Summary {
    /// The run's settings, every figure zero.
    fn blank(a: &LoadArgs, scenario: Scenario) -> Summary {
        Summary {
            scenario,
            proto: a.proto,
            url: url_label(a),
            procs: a.procs,
            threads: 0,
            rooms: a.rooms,
            members: a.members,
            publishers: if matches!(scenario, Scenario::Fanout | Scenario::Churn) { a.publishers } else { 0 },
            rate: a.rate,
            size: a.size,
            duration_s: a.duration,
            connections: 0,
            connected: 0,
            connect_failures: BTreeMap::new(),
            closed_by_server: BTreeMap::new(),
            connect_s: 0.0,
            connects_per_sec: 0.0,
            sent: 0,
            unsent: 0,
            delivered: 0,
            expected: 0,
            lost: 0,
            duplicates: 0,
            out_of_order: 0,
            too_old: 0,
            seq_window: 0,
            deliveries_per_sec: 0.0,
            latency_us: Pcts::default(),
            handshake_us: Pcts::default(),
            churn_handshake_us: Pcts::default(),
            slip_us: Pcts::default(),
            tool_turn_us: Pcts::default(),
            churn_opened: 0,
            churn_closed: 0,
            tool_cpu_pct: 0.0,
            tool_cpu_user_pct: 0.0,
            tool_cpu_sys_pct: 0.0,
            tool_loop_cpu_pct: 0.0,
            tool_cpu_capacity_pct: 0.0,
            tool_busy_pct: 0.0,
            tool_cpu_wait_pct: 0.0,
            frames_per_read: 0.0,
            tool_bottleneck: false,
            bottleneck_reason: None,
            server_rss_per_conn_bytes: None,
            cross_shard: a.cross_shard,
            home_shards: BTreeMap::new(),
            publisher_home_shards: BTreeMap::new(),
            room_shards: BTreeMap::new(),
            shard_mismatches: 0,
            server_ok: false,
            pass: false,
            hgrm: None,
            svg: None,
            targets: Vec::new(),
        }
    }

    /// Adds one process's counts (sums, or the largest for windows and
    /// per-loop shares).
    fn add_counts(&mut self, r: &ProcResult) {
        self.unsent += r.unsent;
        self.too_old += r.too_old;
        self.seq_window = self.seq_window.max(r.seq_window);
        self.tool_loop_cpu_pct = self.tool_loop_cpu_pct.max((r.loop_cpu_max_pct * 10.0).round() / 10.0);
        self.threads += r.threads;
        self.connections += r.planned;
        self.connected += r.connected;
        for (k, v) in &r.failures {
            *self.connect_failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.closed_by_server {
            *self.closed_by_server.entry(k.clone()).or_default() += v;
        }
        self.connect_s = self.connect_s.max(r.connect_ns as f64 / 1e9);
        self.sent += r.sent;
        self.delivered += r.delivered;
        self.expected += r.expected;
        self.duplicates += r.duplicates;
        self.out_of_order += r.out_of_order;
        self.churn_opened += r.churn_opened;
        self.churn_closed += r.churn_closed;
        for (mine, theirs) in [
            (&mut self.home_shards, &r.home_shards),
            (&mut self.publisher_home_shards, &r.publisher_home_shards),
            (&mut self.room_shards, &r.room_shards),
        ] {
            for (k, v) in theirs {
                *mine.entry(*k).or_default() += v;
            }
        }
        self.shard_mismatches += r.shard_mismatches;
    }

    /// The tool's shares of CPU, poll and CPU wait over the measured
    /// window, and frames per read.
    fn set_tool_shares(&mut self, t: &ToolTotals) {
        let secs = (t.measure_ns as f64 / 1e9).max(1e-9);
        let pct = |ns: u64| (ns as f64 / secs / 1e7 * 10.0).round() / 10.0;
        self.tool_cpu_pct = pct(t.cpu_ns);
        self.tool_cpu_user_pct = pct(t.cpu_user_ns);
        self.tool_cpu_sys_pct = pct(t.cpu_sys_ns);
        self.tool_cpu_capacity_pct = self.threads as f64 * 100.0;
        self.tool_busy_pct =
            if t.wall_ns > 0 { ((1.0 - t.poll_ns as f64 / t.wall_ns as f64) * 1000.0).round() / 10.0 } else { 0.0 };
        self.frames_per_read =
            if t.reads > 0 { ((t.frames as f64 / t.reads as f64) * 100.0).round() / 100.0 } else { 0.0 };
        self.tool_cpu_wait_pct =
            if t.wall_ns > 0 { (t.run_delay_ns as f64 / t.wall_ns as f64 * 1000.0).round() / 10.0 } else { 0.0 };
    }

    /// Was the tool in the way, and did the server's figures and the run pass?
    fn set_verdict(&mut self, scenario: Scenario) {
        let reasons = bottleneck_reasons(self);
        self.tool_bottleneck = !reasons.is_empty();
        self.bottleneck_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
        let latency_ok = match scenario {
            Scenario::Connect => true,
            _ => self.latency_us.count > 0 && self.latency_us.p99 < 10_000,
        };
        self.server_ok = latency_ok && self.lost == 0 && self.connected == self.connections;
        // A run the tool may have limited says nothing about the server: it
        // does not pass (bench tables show it, flagged).
        self.pass = self.server_ok && !self.tool_bottleneck;
    }
}

/// The run's summary from its processes' results, and its latency,
/// handshake and churn-handshake histograms, and (several `--url`s) each
/// target's latency histogram.
fn summarize(a: &LoadArgs, scenario: Scenario, rs: &[ProcResult]) -> anyhow::Result<(Summary, Histograms)> {
    let mut s = Summary::blank(a, scenario);
    let mut h = Hists::new();
    let mut t = ToolTotals::default();
    for r in rs {
        h.add(r)?;
        s.add_counts(r);
        t.add(r);
    }
    let by_target = summarize_targets(a, rs)?;
    s.targets = by_target.iter().map(|(t, _)| t.clone()).collect();
    s.lost = s.expected.saturating_sub(s.delivered - s.duplicates);
    // Distinct deliveries that arrived inside [start, start + duration],
    // over that window (the drain's late arrivals count for loss, not rate).
    s.deliveries_per_sec = (t.window_distinct as f64 / a.duration).round();
    s.connects_per_sec = if s.connect_s > 0.0 { (s.connected as f64 / s.connect_s).round() } else { 0.0 };
    s.latency_us = Pcts::of(&h.lat);
    s.handshake_us = Pcts::of(&h.handshake);
    s.churn_handshake_us = Pcts::of(&h.churn_handshake);
    s.slip_us = Pcts::of(&h.slip);
    s.tool_turn_us = Pcts::of(&h.turn);
    s.set_tool_shares(&t);
    if let Some(rss) = t.rss_growth
        && s.connected > 0
    {
        s.server_rss_per_conn_bytes = Some(rss / s.connected);
    }
    s.set_verdict(scenario);
    let targets = by_target.into_iter().map(|(_, h)| h).collect();
    Ok((s, Histograms { lat: h.lat, handshake: h.handshake, churn_handshake: h.churn_handshake, targets }))
}

/// What [`summarize`] hands on for the `--out` files.
struct Histograms {
    lat: hdrhistogram::Histogram<u64>,
    handshake: hdrhistogram::Histogram<u64>,
    churn_handshake: hdrhistogram::Histogram<u64>,
    /// Each target's latency, in `--url` order (empty with one target).
    targets: Vec<hdrhistogram::Histogram<u64>>,
}

/// Each `--url`'s share over the processes, with its latency histogram
/// (empty with one `--url`).
fn summarize_targets(
    a: &LoadArgs,
    rs: &[ProcResult],
) -> anyhow::Result<Vec<(TargetSummary, hdrhistogram::Histogram<u64>)>> {
    if a.url.len() < 2 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(a.url.len());
    for (i, url) in a.url.iter().enumerate() {
        let mut lat = report::new_hist();
        let mut t = TargetSummary {
            url: url.clone(),
            connections: 0,
            connected: 0,
            failed: 0,
            delivered: 0,
            latency_us: Pcts::default(),
        };
        for r in rs.iter().filter_map(|r| r.targets.get(i)) {
            t.connections += r.planned;
            t.connected += r.connected;
            t.failed += r.failed;
            t.delivered += r.distinct;
            lat.add(hist_from_b64(&r.lat)?)?;
        }
        t.latency_us = Pcts::of(&lat);
        out.push((t, lat));
    }
    Ok(out)
}

/// Loop CPU share (thread CPU ÷ wall) at or above which a loop counts as
/// saturated.
pub const LOOP_SATURATED_PCT: f64 = 90.0;
/// A saturated loop whose turns take longer than this (p99) held ready
/// data back long enough to matter against a 10 ms p99.
pub const TURN_P99_MAX_US: u64 = 1000;
/// Schedule slip p99 above which sends were late.
pub const SLIP_P99_MAX_US: u64 = 1000;
/// Share of the time a loop may wait for a CPU before it counts as starved.
pub const CPU_WAIT_MAX_PCT: f64 = 2.0;

/// Why the tool may have been the bottleneck (empty: it was not).
///
/// The ready rule: a loop is only in the way when data was ready for it and
/// it could not get to it, i.e. the loop had no idle time (its thread was on
/// a CPU ≥ 90 % of the window) *and* its turns were long (p99 > 1 ms: a
/// socket that became ready waited that long for its read). High CPU with
/// short turns means the loop kept up (it batches more as load grows); the
/// process CPU figure alone would also count the kernel's loopback work
/// done in the tool's syscalls, which does not delay anything by itself.
/// Late sends (slip) and a loop that waited for its CPU (another process
/// on its core) count too. `connect` holds idle connections: nothing in
/// its window is timed, so it is never flagged.
pub fn bottleneck_reasons(s: &Summary) -> Vec<String> {
    let mut reasons = Vec::new();
    if s.scenario == Scenario::Connect {
        // Nothing is timed in the window of an idle hold (the handshakes
        // were before it): the loop's CPU and waits are reported only.
        return reasons;
    }
    if s.tool_loop_cpu_pct >= LOOP_SATURATED_PCT && s.tool_turn_us.p99 > TURN_P99_MAX_US {
        reasons.push(format!(
            "tool loop saturated: on CPU {:.0}% of the window, loop turn p99 {} µs",
            s.tool_loop_cpu_pct, s.tool_turn_us.p99
        ));
    }
    if s.tool_cpu_wait_pct > CPU_WAIT_MAX_PCT {
        reasons.push(format!(
            "CPU-starved: loops waited {:.1}% of the time for a CPU (other processes on the tool's cores)",
            s.tool_cpu_wait_pct
        ));
    }
    if s.slip_us.p99 > SLIP_P99_MAX_US {
        reasons.push(format!("send schedule slip p99 {} µs", s.slip_us.p99));
    }
    reasons
}

/// The summary for a reader (stderr): what was run and connected, the
/// deliveries and their latency, where things were, and the tool's own
/// figures with the verdict.
fn human(s: &Summary) -> String {
    let mut o = String::new();
    human_setup(&mut o, s);
    human_load(&mut o, s);
    human_extras(&mut o, s);
    human_tool(&mut o, s);
    o
}

/// The run's settings, its connections and handshakes.
fn human_setup(o: &mut String, s: &Summary) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "{:?} {:?} {} | rooms {} members {} publishers {} rate {}/s size {} B, {} s, {} proc × {} threads",
        s.scenario,
        s.proto,
        s.url,
        s.rooms,
        s.members,
        s.publishers,
        s.rate,
        s.size,
        s.duration_s,
        s.procs,
        s.threads / s.procs.max(1) as usize
    );
    let _ = writeln!(
        o,
        "connections: {}/{} in {:.2} s ({}/s); failures {:?}; closed by server {:?}",
        s.connected, s.connections, s.connect_s, s.connects_per_sec, s.connect_failures, s.closed_by_server
    );
    if s.handshake_us.count > 0 {
        let h = &s.handshake_us;
        let _ = writeln!(o, "handshake µs: p50 {} p90 {} p99 {} p99.9 {} max {}", h.p50, h.p90, h.p99, h.p999, h.max);
    }
    if s.churn_handshake_us.count > 0 {
        let h = &s.churn_handshake_us;
        let _ = writeln!(
            o,
            "churn arrivals' handshake µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
            h.p50, h.p90, h.p99, h.p999, h.max
        );
    }
}

/// Sent, delivered, lost, and the latency (not for `connect`).
fn human_load(o: &mut String, s: &Summary) {
    use std::fmt::Write as _;
    if s.scenario != Scenario::Connect {
        let _ = writeln!(
            o,
            "sent {}{} delivered {} expected {} lost {} dup {} out-of-order {}{} | {} deliveries/s (distinct, in the {} s window)",
            s.sent,
            if s.unsent > 0 { format!(" (unsent: {}, publisher gone)", s.unsent) } else { String::new() },
            s.delivered,
            s.expected,
            s.lost,
            s.duplicates,
            s.out_of_order,
            if s.too_old > 0 {
                format!(" ({} older than the {}-bit seq window)", s.too_old, s.seq_window)
            } else {
                String::new()
            },
            fmt_n(s.deliveries_per_sec),
            s.duration_s
        );
        let l = &s.latency_us;
        let _ = writeln!(
            o,
            "latency µs (from intended send time): p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {}",
            l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
        );
    }
}

/// Cross-shard placement, churn counts, server RSS growth, where they apply.
fn human_extras(o: &mut String, s: &Summary) {
    use std::fmt::Write as _;
    if s.cross_shard > 0 {
        let _ = writeln!(
            o,
            "cross-shard ({} shards): room owner shard {:?}; receivers' home shards {:?}; publishers' {:?}; shard mismatches vs FNV-1a {}",
            s.cross_shard, s.room_shards, s.home_shards, s.publisher_home_shards, s.shard_mismatches
        );
    }
    if s.scenario == Scenario::Churn {
        let _ = writeln!(o, "churn: opened {} closed {}", s.churn_opened, s.churn_closed);
    }
    if let Some(r) = s.server_rss_per_conn_bytes {
        let _ = writeln!(o, "server RSS growth per connection: {r} B");
    }
    for t in &s.targets {
        let _ = write!(o, "target {}: connections {}/{}, failed {}", t.url, t.connected, t.connections, t.failed);
        if s.scenario != Scenario::Connect {
            let l = &t.latency_us;
            let _ = write!(
                o,
                "; delivered {} (distinct), latency µs p50 {} p99 {} max {}",
                t.delivered, l.p50, l.p99, l.max
            );
        }
        let _ = writeln!(o);
    }
}

/// The tool's own figures and the verdict.
fn human_tool(o: &mut String, s: &Summary) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "tool: CPU {:.1}% of {:.0}% (user {:.1}, sys {:.1}), busiest loop on CPU {:.1}%, not in poll {:.1}%, turn p99 {} µs max {} µs, waited for CPU {:.1}%, {} frames/read, schedule slip p99 {} µs max {} µs{}",
        s.tool_cpu_pct,
        s.tool_cpu_capacity_pct,
        s.tool_cpu_user_pct,
        s.tool_cpu_sys_pct,
        s.tool_loop_cpu_pct,
        s.tool_busy_pct,
        s.tool_turn_us.p99,
        s.tool_turn_us.max,
        s.tool_cpu_wait_pct,
        s.frames_per_read,
        s.slip_us.p99,
        s.slip_us.max,
        match &s.bottleneck_reason {
            Some(r) => format!(" — WARNING: the tool may be the bottleneck ({r})"),
            None => String::new(),
        }
    );
    let _ = writeln!(
        o,
        "pass (p99 < 10 ms, nothing lost, every connection made, tool not the bottleneck): {}{}",
        s.pass,
        if s.server_ok && !s.pass { " (the server's figures were within bounds; the tool was not)" } else { "" }
    );
}

/// Entry point for the four load scenarios.
pub fn main(scenario: Scenario, a: LoadArgs) -> anyhow::Result<()> {
    validate(&a, scenario)?;
    if let Some(i) = a.child_index {
        // End with the parent process.
        // SAFETY: prctl with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        let r = run_proc(&a, scenario, i, true)?;
        println!("RESULT {}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let results = if a.procs > 1 { run_children(&a)? } else { vec![run_proc(&a, scenario, 0, false)?] };
    let (mut s, hists) = summarize(&a, scenario, &results)?;
    let Histograms { lat, handshake: hs, churn_handshake: chs, targets: target_lats } = hists;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = a.name.clone().unwrap_or_else(|| format!("{scenario:?}").to_lowercase());
        let (main_hist, what) = if scenario == Scenario::Connect { (&hs, "handshake") } else { (&lat, "latency") };
        let hgrm = dir.join(format!("{name}.hgrm"));
        std::fs::write(&hgrm, report::hgrm(main_hist))?;
        let mut series = vec![Series { label: what.to_string(), points: report::parse_hgrm(&report::hgrm(main_hist)) }];
        if scenario == Scenario::Churn {
            // The arrivals during the fanout, not the setup connections.
            std::fs::write(dir.join(format!("{name}-handshake.hgrm")), report::hgrm(&chs))?;
            std::fs::write(dir.join(format!("{name}-setup-handshake.hgrm")), report::hgrm(&hs))?;
            series.push(Series {
                label: "churn arrivals' handshake".into(),
                points: report::parse_hgrm(&report::hgrm(&chs)),
            });
        }
        // Several `--url`s: each one's receivers' latency, NAME-target{i}.hgrm
        // (i in `--url` order), and its curve in the SVG.
        if scenario != Scenario::Connect {
            for (i, (h, t)) in target_lats.iter().zip(&s.targets).enumerate() {
                let text = report::hgrm(h);
                std::fs::write(dir.join(format!("{name}-target{i}.hgrm")), &text)?;
                series.push(Series { label: format!("{} receivers", t.url), points: report::parse_hgrm(&text) });
            }
        }
        let svg = dir.join(format!("{name}.svg"));
        let title = format!("{name}: {what} by percentile");
        std::fs::write(&svg, report::svg(&title, &series))?;
        s.hgrm = Some(hgrm.display().to_string());
        s.svg = Some(svg.display().to_string());
    }
    eprint!("{}", human(&s));
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_source_ranges() {
        let (addr, host) = parse_url("ws://127.0.0.1:9000").unwrap();
        assert_eq!(addr.port(), 9000);
        assert_eq!(host, "127.0.0.1:9000");
        assert!(parse_url("http://x").is_err());
        let ips = parse_src_ips("auto", &[addr], 1).unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 14)));
        let ips = parse_src_ips("127.0.0.2-127.0.1.1", &[addr], 0).unwrap();
        assert_eq!(ips.len(), 256);
        assert!(parse_src_ips("127.0.0.9-127.0.0.2", &[addr], 0).is_err());
        assert!(parse_src_ips("none", &[addr], 0).unwrap().is_empty());
        // Several targets: `auto` binds only if every one is IPv4 loopback.
        let other = parse_url("ws://127.0.0.3:9001").unwrap().0;
        assert_eq!(parse_src_ips("auto", &[addr, other], 0).unwrap().len(), 4);
        let remote = SocketAddr::from(([192, 0, 2, 1], 80));
        assert!(parse_src_ips("auto", &[addr, remote], 0).unwrap().is_empty());
    }

    #[test]
    fn a_refused_token_is_named_not_a_missing_server() {
        let mut st = Stats::new();
        st.failures.insert("http_401".into(), 3);
        st.refusals.insert("HTTP 401 token_bad_signature: the token's signature is invalid".into(), 3);
        let e = no_connection_error("ws://h:1", 3, 3, &st);
        assert!(e.contains("refused the token"), "{e}");
        assert!(e.contains("HTTP 401 token_bad_signature: the token's signature is invalid (×3)"), "{e}");
        assert!(!e.contains("running"), "{e}");
        let mut st = Stats::new();
        st.failures.insert("refused".into(), 2);
        let e = no_connection_error("ws://h:1", 2, 2, &st);
        assert_eq!(
            e,
            r#"no connection to ws://h:1 could be made (2 of 2 failed: {"refused": 2}); is the server running there?"#
        );
        let mut st = Stats::new();
        st.failures.insert("timeout".into(), 2);
        let e = no_connection_error("ws://h:1", 2, 2, &st);
        assert!(!e.contains("running") && !e.contains("token"), "{e}");
    }

    /// A file in the temp dir, unique to this process and `tag`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn with(tag: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!("roomcast-load-{}-{tag}", std::process::id()));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn secret_file_loses_one_trailing_newline() {
        for (tag, text, want) in [
            ("lf", "s3cret\n", "s3cret"),
            ("crlf", "s3cret\r\n", "s3cret"),
            ("bare", "s3cret", "s3cret"),
            ("two", "s3cret\n\n", "s3cret\n"),
            ("spaces", " s3cret \n", " s3cret "),
        ] {
            let f = TempFile::with(tag, text);
            assert_eq!(read_secret_file(&f.0).unwrap(), want, "{text:?}");
        }
        let empty = TempFile::with("empty", "\n");
        let e = read_secret_file(&empty.0).unwrap_err().to_string();
        assert!(e.contains("--jwt-secret-file") && e.contains("empty"), "{e}");
        let missing = std::env::temp_dir().join(format!("roomcast-load-{}-none", std::process::id()));
        let e = format!("{:#}", read_secret_file(&missing).unwrap_err());
        assert!(e.contains("--jwt-secret-file"), "{e}");
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn flags(args: &[&str]) -> Result<LoadArgs, clap::Error> {
        use clap::Parser as _;
        Flags::try_parse_from(std::iter::once("fanout").chain(args.iter().copied())).map(|f| f.load)
    }

    /// Several `--url`s: every planned connection has a target, each room
    /// goes round-robin over them from `(r + slot) mod N`, the per-target
    /// counts match the plan, and rooms of 10 over 3 nodes load them evenly.
    #[test]
    fn several_urls_spread_each_room_round_robin() {
        let urls = "ws://127.0.0.1:9001,ws://127.0.0.1:9002,ws://127.0.0.1:9003";
        for (scenario, rooms, members, procs) in
            [(Scenario::Connect, "6", "10", 2), (Scenario::Fanout, "7", "10", 3), (Scenario::Fanout, "1", "1000", 1)]
        {
            let p = procs.to_string();
            let a = flags(&["--dev", "--url", urls, "--rooms", rooms, "--members", members, "--procs", &p]).unwrap();
            validate(&a, scenario).unwrap();
            let mut per_target = [0u64; 3];
            for i in 0..procs {
                let cfg = build_cfg(&a, scenario, i).unwrap();
                assert_eq!(cfg.targets.len(), 3);
                assert_eq!(cfg.targets[2].host, "127.0.0.1:9003");
                let mut here = [0u64; 3];
                for w in 0..cfg.threads {
                    let (others, pubs) = client::plan_specs(&cfg, w);
                    for s in others.iter().chain(&pubs) {
                        let global = u64::from(s.room) * u64::from(procs) + u64::from(i);
                        assert_eq!(u64::from(s.target), (global + u64::from(s.slot)) % 3, "{s:?}");
                        here[s.target as usize] += 1;
                    }
                }
                for (t, n) in here.iter().enumerate() {
                    assert_eq!(client::planned_conns_to(&cfg, t), *n, "proc {i} target {t}");
                    per_target[t] += n;
                }
            }
            match (rooms, members) {
                // 6 rooms of 10: each target is first in 2 of them (4 + 3 + 3).
                ("6", "10") => assert_eq!(per_target, [20, 20, 20]),
                // 1,000 members and 1 publisher (slot 1,000, on target 1).
                ("1", "1000") => assert_eq!(per_target, [334, 334, 333]),
                _ => assert_eq!(per_target.iter().sum::<u64>(), 7 * 11),
            }
        }
    }

    #[test]
    fn secret_file_signs_the_tokens_and_excludes_the_other_sources() {
        let f = TempFile::with("signs", "from-the-file\n");
        let path = f.0.to_str().unwrap();
        let a = flags(&["--jwt-secret-file", path]).unwrap();
        assert_eq!(jwt_secret(&a).unwrap().as_deref(), Some("from-the-file"));
        validate(&a, Scenario::Fanout).unwrap();
        assert!(matches!(build_cfg(&a, Scenario::Fanout, 0).unwrap().auth, Auth::Jwt(_)));
        let a = flags(&["--jwt-secret", "raw"]).unwrap();
        assert_eq!(jwt_secret(&a).unwrap().as_deref(), Some("raw"));
        for other in [&["--jwt-secret", "raw"][..], &["--dev"][..]] {
            let e = flags(&[&["--jwt-secret-file", path][..], other].concat()).err().map(|e| e.kind());
            assert_eq!(e, Some(clap::error::ErrorKind::ArgumentConflict), "{other:?}");
        }
        let mut none = flags(&[]).unwrap();
        none.jwt_secret = None;
        let e = validate(&none, Scenario::Fanout).unwrap_err().to_string();
        assert!(e.contains("--jwt-secret-file") && e.contains("ROOMCAST_JWT_SECRET"), "{e}");
    }
}
