//! `roomcast-load`: load generator for roomcast (and any WebSocket
//! broadcast server with `--proto raw`). See tools/README.md.

use clap::{Parser, Subcommand};
use roomcast_load::client::Scenario;
use roomcast_load::report;
use roomcast_load::run::{self, LoadArgs};
use roomcast_load::sink::{self, SinkCfg, SinkMode};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "roomcast-load", version, about = "Open-loop WebSocket load generator with HDR histograms")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open rooms×members connections (paced), hold them for --duration.
    Connect(LoadArgs),
    /// Rooms × members receivers plus publishers at an open-loop aggregate rate.
    Fanout(LoadArgs),
    /// Request/response round trips (ping→pong or publish→ack) at a constant rate.
    Rtt(LoadArgs),
    /// A fanout while connections arrive and leave at --churn-rate.
    Churn(LoadArgs),
    /// A trivial broadcast/sink server (minimal roomcast contract, or raw).
    Sink {
        /// Address to listen on. Several (repeat the flag, or separate
        /// them with commas) share one loop and its rooms: a stand-in for
        /// the nodes of a cluster, for `--url A,B,C` runs.
        #[arg(long, default_value = "127.0.0.1:9100", value_delimiter = ',')]
        listen: Vec<SocketAddr>,
        #[arg(long, value_enum, default_value_t = SinkMode::Roomcast)]
        mode: SinkMode,
        /// Seconds to run before exiting by itself.
        #[arg(long, default_value_t = 300)]
        duration: u64,
        /// Seconds between WebSocket pings to every connection (0: none).
        #[arg(long, default_value_t = 30)]
        ping_interval: u64,
        /// Processes sharing the port with SO_REUSEPORT (each holds its own
        /// connections; rooms are not shared between them).
        #[arg(long, default_value_t = 1)]
        procs: u32,
        #[arg(long, hide = true)]
        reuseport: bool,
        #[arg(long)]
        quiet: bool,
        /// Seconds between status lines (deliveries/s, frames per write, the
        /// sink's own CPU and CPU wait), unless --quiet.
        #[arg(long, default_value_t = 5)]
        report_interval: u64,
        /// Fault injection for tests: close a connection (1011) after it has
        /// published this many messages (0: never).
        #[arg(long, default_value_t = 0)]
        close_after_publishes: u64,
    },
    /// Plot one or more .hgrm files (FILE or FILE=LABEL) into one SVG.
    Plot {
        #[arg(long)]
        title: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Markdown table from bench JSON lines (highest passing rate per scenario).
    Summarize {
        jsonl: PathBuf,
        /// Instead: benches side by side by rate, `A:B[:C…]` (deliveries/s,
        /// p99 and pass of each; e.g. `room1000:room1000x:room1000x4`).
        #[arg(long, value_name = "A:B[:C…]")]
        compare: Option<String>,
        /// Instead: the tool's own figures per run (CPU, loop turns, slip,
        /// verdict).
        #[arg(long, conflicts_with = "compare")]
        tool: bool,
    },
}

/// Raises the soft open-file limit to the hard one: every connection is an
/// fd, and boxes often ship a soft limit of 1024 under a much higher hard
/// one. The hard limit is the user's to raise (`ulimit -Hn`, tuning.md).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    raise_fd_limit();
    let res = match cli.cmd {
        Cmd::Connect(a) => run::main(Scenario::Connect, a),
        Cmd::Fanout(a) => run::main(Scenario::Fanout, a),
        Cmd::Rtt(a) => run::main(Scenario::Rtt, a),
        Cmd::Churn(a) => run::main(Scenario::Churn, a),
        Cmd::Sink {
            listen,
            mode,
            duration,
            ping_interval,
            procs,
            reuseport,
            quiet,
            report_interval,
            close_after_publishes,
        } => run_sink(
            SinkCfg {
                listen,
                mode,
                duration_s: duration,
                ping_interval_s: ping_interval,
                reuseport,
                quiet,
                report_interval_s: report_interval,
                close_after_publishes,
            },
            procs,
        ),
        Cmd::Plot { title, out, files } => plot(&title, &out, &files),
        Cmd::Summarize { jsonl, compare, tool } => summarize(&jsonl, compare.as_deref(), tool),
    };
    if let Err(e) = res {
        eprintln!("roomcast-load: error: {e:#}");
        std::process::exit(2);
    }
}

fn run_sink(cfg: SinkCfg, procs: u32) -> anyhow::Result<()> {
    if cfg.duration_s == 0 || cfg.duration_s > 86_400 {
        anyhow::bail!("--duration must be in 1..=86400 seconds");
    }
    if procs == 0 || procs > 64 {
        anyhow::bail!("--procs must be in 1..=64");
    }
    if procs > 1 {
        let exe = std::env::current_exe()?;
        let mut kids = Vec::new();
        for _ in 0..procs {
            // Drop the value following a bare `--procs`.
            let mut clean = Vec::new();
            let mut skip = false;
            for a in std::env::args().skip(1) {
                if skip {
                    skip = false;
                    continue;
                }
                if a == "--procs" {
                    skip = true;
                    continue;
                }
                if a.starts_with("--procs=") {
                    continue;
                }
                clean.push(a);
            }
            kids.push(std::process::Command::new(&exe).args(&clean).arg("--reuseport").spawn()?);
        }
        for mut k in kids {
            k.wait()?;
        }
        return Ok(());
    }
    if cfg.reuseport {
        // A child of `--procs`: end with the parent.
        // SAFETY: prctl with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    }
    let st = sink::run(&cfg)?;
    eprintln!("sink {} done: {st:?}", std::process::id());
    Ok(())
}

fn summarize(jsonl: &PathBuf, compare: Option<&str>, tool: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(jsonl).map_err(|e| anyhow::anyhow!("{}: {e}", jsonl.display()))?;
    if tool {
        print!("{}", roomcast_load::table::tool(&text));
        return Ok(());
    }
    match compare {
        None => print!("{}", roomcast_load::table::markdown(&text)),
        Some(pair) => {
            let names: Vec<&str> = pair.split(':').filter(|n| !n.is_empty()).collect();
            if names.len() < 2 {
                anyhow::bail!("--compare takes A:B[:C…] (at least two bench names), got {pair:?}");
            }
            print!("{}", roomcast_load::table::compare(&text, &names));
        }
    }
    Ok(())
}

fn plot(title: &str, out: &PathBuf, files: &[String]) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for f in files {
        let (path, label) = f.split_once('=').unwrap_or((f, f));
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let label = std::path::Path::new(label)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| label.to_string());
        series.push(report::Series { label, points: report::parse_hgrm(&text) });
    }
    std::fs::write(out, report::svg(title, &series))?;
    Ok(())
}
