//! `summarize`: turns the JSON lines of a bench run into the markdown table
//! of summary.md: per scenario, the highest rate with p99 < 10 ms and
//! nothing lost.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// Was the tool the bottleneck of this run (its figures say nothing about
/// the server)?
fn tool_bound(v: &Value) -> bool {
    flag(v, "tool_bottleneck")
}

/// The pass cell: `yes`, `no`, or `no (tool-bound)` for a run whose server
/// figures were within bounds but whose tool was in the way.
fn pass_cell(v: &Value) -> &'static str {
    match (flag(v, "pass"), tool_bound(v)) {
        (true, _) => "yes",
        (false, true) => "no (tool-bound)",
        (false, false) => "no",
    }
}

/// The name a run is listed under: its `bench` tag from `bench/run`, or,
/// for the tool's own `--json` line (no tag), its scenario.
fn bench_name(v: &Value) -> &str {
    v.get("bench").or_else(|| v.get("scenario")).and_then(Value::as_str).unwrap_or("?")
}

fn lat(v: &Value, k: &str) -> f64 {
    v.get("latency_us").and_then(|l| l.get(k)).and_then(Value::as_f64).unwrap_or(0.0)
}

/// One markdown document section from JSON lines tagged with `"bench"`
/// (scenario name in the matrix) by `bench/run`.
pub fn markdown(lines: &str) -> String {
    let mut rows: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut order = Vec::new();
    for l in lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else { continue };
        let name = bench_name(&v).to_string();
        if !rows.contains_key(&name) {
            order.push(name.clone());
        }
        rows.entry(name).or_default().push(v);
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| scenario | highest passing rate (msg/s) | deliveries/s there | p50 / p99 / p99.9 / max (ms) there | tool-bound steps (not counted) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for name in &order {
        let runs = &rows[name];
        let is_connect = runs.first().and_then(|v| v.get("scenario")).and_then(Value::as_str) == Some("connect");
        if is_connect {
            for v in runs {
                let _ = writeln!(
                    o,
                    "| {name} | {} connections held{} ({:.0}/s, handshake p99 {:.3} ms, server RSS +{} B/conn) | – | – | {} |",
                    num(v, "connected"),
                    if v.get("pass").and_then(Value::as_bool).unwrap_or(false) { "" } else { " (FAILED)" },
                    num(v, "connects_per_sec"),
                    v.get("handshake_us").and_then(|h| h.get("p99")).and_then(Value::as_f64).unwrap_or(0.0) / 1000.0,
                    v.get("server_rss_per_conn_bytes")
                        .and_then(Value::as_u64)
                        .map(|b| b.to_string())
                        .unwrap_or("?".into()),
                    v.get("bottleneck_reason")
                        .and_then(Value::as_str)
                        .map(|r| format!("tool-bound: {r}"))
                        .unwrap_or("–".into())
                );
            }
            continue;
        }
        // `pass` already excludes tool-bound runs; list them so that a reader
        // sees which rates were not measured cleanly.
        let bound: Vec<String> =
            runs.iter().filter(|v| tool_bound(v)).map(|v| format!("{} msg/s", num(v, "rate"))).collect();
        let bound = if bound.is_empty() { "–".to_string() } else { bound.join(", ") };
        let best = runs
            .iter()
            .filter(|v| flag(v, "pass") && !tool_bound(v))
            .max_by(|a, b| num(a, "rate").total_cmp(&num(b, "rate")));
        match best {
            Some(v) => {
                let _ = writeln!(
                    o,
                    "| {name} | {} | {:.0} | {:.3} / {:.3} / {:.3} / {:.3} | {} |",
                    num(v, "rate"),
                    num(v, "deliveries_per_sec"),
                    lat(v, "p50") / 1000.0,
                    lat(v, "p99") / 1000.0,
                    lat(v, "p999") / 1000.0,
                    lat(v, "max") / 1000.0,
                    bound
                );
            }
            None => {
                let _ = writeln!(o, "| {name} | none passed | – | – | {bound} |");
            }
        }
    }
    let _ = writeln!(o, "\nEvery run:\n");
    let _ = writeln!(
        o,
        "| scenario | rate | conns | sent | unsent | delivered | expected | lost | dup | ooo | deliveries/s | p50 | p99 | p99.9 | max (ms) | tool CPU % (loop) | tool turn p99 µs | slip p99 µs | pass | tool bottleneck |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in &order {
        for v in &rows[name] {
            let step = v.get("step").and_then(Value::as_str).unwrap_or(name);
            let step = if tool_bound(v) { format!("**{step}** (tool-bound)") } else { step.to_string() };
            let _ = writeln!(
                o,
                "| {step} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} ({}) | {} | {} | {} | {} |",
                num(v, "rate"),
                num(v, "connected"),
                num(v, "connections"),
                num(v, "sent"),
                num(v, "unsent"),
                num(v, "delivered"),
                num(v, "expected"),
                num(v, "lost"),
                num(v, "duplicates"),
                num(v, "out_of_order"),
                num(v, "deliveries_per_sec"),
                lat(v, "p50") / 1000.0,
                lat(v, "p99") / 1000.0,
                lat(v, "p999") / 1000.0,
                lat(v, "max") / 1000.0,
                num(v, "tool_cpu_pct"),
                num(v, "tool_loop_cpu_pct"),
                v.get("tool_turn_us").and_then(|s| s.get("p99")).and_then(Value::as_f64).unwrap_or(0.0),
                v.get("slip_us").and_then(|s| s.get("p99")).and_then(Value::as_f64).unwrap_or(0.0),
                pass_cell(v),
                v.get("bottleneck_reason").and_then(Value::as_str).unwrap_or("no")
            );
        }
    }
    o
}

/// The tool's own figures per run: is it in the way? (deliveries/s, CPU
/// split, the busiest loop's CPU, loop turns, schedule slip, CPU wait,
/// frames per read, the verdict).
pub fn tool(lines: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| step | conns | deliveries/s | tool CPU % (user / sys) | busiest loop on CPU % | not in poll % | loop turn p50 / p99 / max µs | slip p99 µs | waited for CPU % | frames/read | tool bottleneck |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
    let sub = |v: &Value, k: &str, f: &str| v.get(k).and_then(|x| x.get(f)).and_then(Value::as_f64).unwrap_or(0.0);
    for l in lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else { continue };
        let step = v.get("step").and_then(Value::as_str).unwrap_or_else(|| bench_name(&v));
        let _ = writeln!(
            o,
            "| {step} | {}/{} | {:.0} | {} ({} / {}) | {} | {} | {} / {} / {} | {} | {} | {} | {} |",
            num(&v, "connected"),
            num(&v, "connections"),
            num(&v, "deliveries_per_sec"),
            num(&v, "tool_cpu_pct"),
            num(&v, "tool_cpu_user_pct"),
            num(&v, "tool_cpu_sys_pct"),
            num(&v, "tool_loop_cpu_pct"),
            num(&v, "tool_busy_pct"),
            sub(&v, "tool_turn_us", "p50"),
            sub(&v, "tool_turn_us", "p99"),
            sub(&v, "tool_turn_us", "max"),
            sub(&v, "slip_us", "p99"),
            num(&v, "tool_cpu_wait_pct"),
            num(&v, "frames_per_read"),
            v.get("bottleneck_reason").and_then(Value::as_str).unwrap_or("no")
        );
    }
    o
}

/// A shard map of a JSON summary (`home_shards`, `room_shards`) as
/// `shard N: COUNT, …`.
fn shards(v: &Value, k: &str) -> String {
    match v.get(k).and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m.iter().map(|(s, n)| format!("shard {s}: {n}")).collect::<Vec<_>>().join(", "),
        _ => "–".into(),
    }
}

/// Benches side by side, step by step (by rate): deliveries/s, p99 and
/// pass of each of `names` (e.g. `room1000`, its cross-shard twins
/// `room1000x` and `room1000x4`), plus where each cross-shard bench's room
/// and members' homes were.
pub fn compare(lines: &str, names: &[&str]) -> String {
    let runs: Vec<Value> = lines.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    let of = |name: &str| -> BTreeMap<u64, &Value> {
        runs.iter()
            .filter(|v| v.get("bench").and_then(Value::as_str) == Some(name))
            .map(|v| (num(v, "rate") as u64, v))
            .collect()
    };
    let by: Vec<BTreeMap<u64, &Value>> = names.iter().map(|n| of(n)).collect();
    let mut rates: Vec<u64> = by.iter().flat_map(|m| m.keys().copied()).collect();
    rates.sort_unstable();
    rates.dedup();
    let cell = |v: Option<&&Value>| match v {
        Some(v) => format!(
            "{:.0} | {:.3} | {}",
            num(v, "deliveries_per_sec"),
            lat(v, "p99") / 1000.0,
            match pass_cell(v) {
                "yes" => "yes",
                "no" => "**no**",
                _ => "**no** (tool-bound)",
            }
        ),
        None => "– | – | –".into(),
    };
    let mut o = String::new();
    let mut head = String::from("| rate (msg/s) |");
    let mut rule = String::from("|---|");
    for n in names {
        head.push_str(&format!(" {n} deliveries/s | {n} p99 (ms) | {n} pass |"));
        rule.push_str("---|---|---|");
    }
    let _ = writeln!(o, "{head}");
    let _ = writeln!(o, "{rule}");
    for r in &rates {
        let cells: Vec<String> = by.iter().map(|m| cell(m.get(r))).collect();
        let _ = writeln!(o, "| {r} | {} |", cells.join(" | "));
    }
    for (n, m) in names.iter().zip(&by) {
        if let Some(v) = m.values().find(|v| {
            num(v, "cross_shard") > 0.0
                || v.get("room_shards").is_some_and(|x| x.as_object().is_some_and(|o| !o.is_empty()))
        }) {
            let _ = writeln!(
                o,
                "\n{n}: room owned by {}; receivers' home rooms on {}; publishers' on {}; shard mismatches vs the tool's FNV-1a: {}.",
                shards(v, "room_shards"),
                shards(v, "home_shards"),
                shards(v, "publisher_home_shards"),
                num(v, "shard_mismatches")
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn picks_highest_passing_rate() {
        let lines = r#"{"bench":"room1000","rate":100,"pass":true,"latency_us":{"p99":900}}
{"bench":"room1000","rate":200,"pass":true,"latency_us":{"p99":1900}}
{"bench":"room1000","rate":400,"pass":false,"latency_us":{"p99":19000}}
{"bench":"idle","rate":0,"pass":false}
not json"#;
        let md = super::markdown(lines);
        assert!(md.contains("| room1000 | 200 |"), "{md}");
        assert!(md.contains("| idle | none passed |"), "{md}");
    }

    /// The tool's own `--json` line has no `bench` tag: its runs are listed
    /// under their scenario, not `?`.
    #[test]
    fn an_untagged_summary_is_listed_by_its_scenario() {
        let lines = r#"{"scenario":"fanout","proto":"roomcast","rate":100.0,"connected":11,"connections":11,"pass":true,"tool_bottleneck":false,"latency_us":{"count":1000,"p50":120,"p99":900,"p999":950,"max":990}}
{"scenario":"connect","proto":"roomcast","rate":100.0,"connected":10,"connections":10,"pass":true,"connects_per_sec":500.0,"handshake_us":{"p99":2000}}"#;
        let md = super::markdown(lines);
        assert!(md.contains("| fanout | 100 |"), "{md}");
        assert!(md.contains("| connect | 10 connections held"), "{md}");
        assert!(md.contains("| fanout | 100 | 11/11 |"), "{md}");
        assert!(!md.contains("| ? |"), "{md}");
        let tool = super::tool(lines);
        assert!(tool.contains("| fanout | 11/11 |"), "{tool}");
        assert!(tool.contains("| connect | 10/10 |"), "{tool}");
    }

    /// A tool-bound run never counts as the highest passing rate, and the
    /// tables flag it.
    #[test]
    fn tool_bound_steps_are_flagged_not_counted() {
        let lines = r#"{"bench":"room1000","step":"room1000-r100","rate":100,"pass":true,"latency_us":{"p99":900}}
{"bench":"room1000","step":"room1000-r200","rate":200,"pass":true,"tool_bottleneck":true,"bottleneck_reason":"send schedule slip p99 2000 µs","latency_us":{"p99":1900}}
{"bench":"room1000","step":"room1000-r400","rate":400,"pass":false,"server_ok":true,"tool_bottleneck":true,"bottleneck_reason":"CPU-starved","latency_us":{"p99":1900}}"#;
        let md = super::markdown(lines);
        assert!(md.contains("| room1000 | 100 |"), "{md}");
        assert!(md.contains("| 200 msg/s, 400 msg/s |"), "{md}");
        assert!(md.contains("| **room1000-r400** (tool-bound) | 400 |"), "{md}");
        assert!(md.contains("| no (tool-bound) | CPU-starved |"), "{md}");
    }

    #[test]
    fn tool_table_shows_the_verdict() {
        let lines = r#"{"step":"a","connected":1001,"connections":1001,"deliveries_per_sec":2000000,"tool_cpu_pct":60.5,"tool_cpu_user_pct":40,"tool_cpu_sys_pct":20.5,"tool_loop_cpu_pct":60.1,"tool_busy_pct":58,"tool_turn_us":{"p50":100,"p99":400,"max":900},"slip_us":{"p99":80},"tool_cpu_wait_pct":0.5,"frames_per_read":12.5}"#;
        let md = super::tool(lines);
        assert!(
            md.contains(
                "| a | 1001/1001 | 2000000 | 60.5 (40 / 20.5) | 60.1 | 58 | 100 / 400 / 900 | 80 | 0.5 | 12.5 | no |"
            ),
            "{md}"
        );
    }

    #[test]
    fn compares_two_benches_by_rate() {
        let lines = r#"{"bench":"room1000","rate":100,"pass":true,"deliveries_per_sec":100000,"latency_us":{"p99":900}}
{"bench":"room1000","rate":200,"pass":true,"deliveries_per_sec":200000,"latency_us":{"p99":1900}}
{"bench":"room1000x","rate":100,"pass":true,"deliveries_per_sec":99000,"latency_us":{"p99":1500},"room_shards":{"0":1001},"home_shards":{"1":1000},"publisher_home_shards":{"1":1},"shard_mismatches":0}
{"bench":"room1000x","rate":200,"pass":false,"deliveries_per_sec":150000,"latency_us":{"p99":25000}}"#;
        let md = super::compare(lines, &["room1000", "room1000x"]);
        assert!(md.contains("| 100 | 100000 | 0.900 | yes | 99000 | 1.500 | yes |"), "{md}");
        assert!(md.contains("| 200 | 200000 | 1.900 | yes | 150000 | 25.000 | **no** |"), "{md}");
        assert!(md.contains("room1000x: room owned by shard 0: 1001; receivers' home rooms on shard 1: 1000"), "{md}");
        let md = super::compare(lines, &["room1000", "nothing"]);
        assert!(md.contains("| 100 | 100000 | 0.900 | yes | – | – | – |"), "{md}");
        let three = format!(
            "{lines}\n{}",
            r#"{"bench":"room1000x4","rate":100,"pass":false,"tool_bottleneck":true,"deliveries_per_sec":98000,"latency_us":{"p99":2000},"cross_shard":4,"room_shards":{"2":1001},"home_shards":{"0":334,"1":333,"3":333},"publisher_home_shards":{"0":1},"shard_mismatches":0}"#
        );
        let md = super::compare(&three, &["room1000", "room1000x", "room1000x4"]);
        assert!(
            md.contains("| 100 | 100000 | 0.900 | yes | 99000 | 1.500 | yes | 98000 | 2.000 | **no** (tool-bound) |"),
            "{md}"
        );
        assert!(md.contains("room1000x4: room owned by shard 2: 1001; receivers' home rooms on shard 0: 334, shard 1: 333, shard 3: 333"), "{md}");
    }
}
