//! What `/proc/self` says of this process (CPU time, start time, resident
//! memory, open descriptors), read by the acceptor thread when `/metrics`
//! is rendered, never on a shard.

use super::{Kind, family};

/// What `/proc/self` says of this process, read when `/metrics` is rendered
/// (by the acceptor thread). Each figure is `None` where it cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = (ticks > 0).then_some(ticks as f64);
        let boot = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(boot_time_s);
        ProcessStats {
            cpu_seconds: stat.zip(ticks).map(|(s, hz)| (s.utime + s.stime) as f64 / hz),
            start_time_seconds: stat
                .zip(ticks)
                .zip(boot)
                .map(|((s, hz), boot)| boot as f64 + s.start_ticks as f64 / hz),
            resident_memory_bytes: process_rss_bytes(),
            open_fds: process_open_fds(),
        }
    }

    pub(super) fn render(&self, out: &mut String) {
        if let Some(cpu) = self.cpu_seconds {
            family(out, "process_cpu_seconds_total", Kind::Counter, "Total user and system CPU time spent in seconds.")
                .value(cpu);
        }
        if let Some(start) = self.start_time_seconds {
            family(
                out,
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
            )
            .value(start);
        }
        if let Some(rss) = self.resident_memory_bytes {
            family(out, "process_resident_memory_bytes", Kind::Gauge, "Resident memory size in bytes.").value(rss);
        }
        if let Some(fds) = self.open_fds {
            family(out, "process_open_fds", Kind::Gauge, "Number of open file descriptors.").value(fds);
        }
    }
}

/// The fields of `/proc/self/stat` that [`ProcessStats`] uses, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Since boot.
    start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may hold spaces or parentheses itself, so fields are counted from
/// the last `)`: what follows starts at field 3 (`state`).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let field = |n: usize| -> Option<u64> { rest.split_whitespace().nth(n - 3)?.parse().ok() };
    Some(Stat { utime: field(14)?, stime: field(15)?, start_ticks: field(22)? })
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
fn boot_time_s(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// Resident set size of this process, from `/proc/self/statm`.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Open file descriptors of this process, counted in `/proc/self/fd`.
pub fn process_open_fds() -> Option<u64> {
    // The directory handle itself is one of the entries.
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count().saturating_sub(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        // Field 2 of a process named "a) (b c" and the fields after it.
        let mut line = String::from("4242 (a) (b c) S");
        for field in 4..=22 {
            line.push_str(&format!(" {}", field * 10));
        }
        line.push_str(" 99 100\n");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat, Stat { utime: 140, stime: 150, start_ticks: 220 });
        assert_eq!(boot_time_s("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let me = ProcessStats::read();
        let start = me.start_time_seconds.unwrap();
        assert!(start <= now + 1.0 && start > now - 86_400.0, "this test process started recently: {start} vs {now}");
        assert!(me.cpu_seconds.is_some_and(|cpu| cpu >= 0.0));
    }
}
