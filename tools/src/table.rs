//! `summarize`: turns the JSON lines of a bench run into the markdown table
//! of summary.md: per scenario, the highest rate with p99 < 10 ms and
//! nothing lost.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
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
        let name = v.get("bench").and_then(Value::as_str).unwrap_or("?").to_string();
        if !rows.contains_key(&name) {
            order.push(name.clone());
        }
        rows.entry(name).or_default().push(v);
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| scenario | highest passing rate (msg/s) | deliveries/s there | p50 / p99 / p99.9 / max (ms) there | tool bottleneck |"
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
                    v.get("bottleneck_reason").and_then(Value::as_str).unwrap_or("no")
                );
            }
            continue;
        }
        let best = runs
            .iter()
            .filter(|v| v.get("pass").and_then(Value::as_bool).unwrap_or(false))
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
                    v.get("bottleneck_reason").and_then(Value::as_str).unwrap_or("no")
                );
            }
            None => {
                let _ = writeln!(o, "| {name} | none passed | – | – | – |");
            }
        }
    }
    let _ = writeln!(o, "\nEvery run:\n");
    let _ = writeln!(
        o,
        "| scenario | rate | conns | sent | delivered | expected | lost | dup | ooo | deliveries/s | p50 | p99 | p99.9 | max (ms) | tool CPU % | slip p99 µs | pass | tool bottleneck |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in &order {
        for v in &rows[name] {
            let step = v.get("step").and_then(Value::as_str).unwrap_or(name);
            let _ = writeln!(
                o,
                "| {step} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
                num(v, "rate"),
                num(v, "connected"),
                num(v, "connections"),
                num(v, "sent"),
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
                v.get("slip_us").and_then(|s| s.get("p99")).and_then(Value::as_f64).unwrap_or(0.0),
                v.get("pass").and_then(Value::as_bool).unwrap_or(false),
                v.get("bottleneck_reason").and_then(Value::as_str).unwrap_or("no")
            );
        }
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

/// Two benches side by side, step by step (by rate): deliveries/s and p99
/// of `a` beside those of `b` (e.g. `room1000` and its cross-shard twin
/// `room1000x`), plus where `b`'s room and members' homes were.
pub fn compare(lines: &str, a: &str, b: &str) -> String {
    let runs: Vec<Value> = lines.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    let of = |name: &str| -> BTreeMap<u64, &Value> {
        runs.iter()
            .filter(|v| v.get("bench").and_then(Value::as_str) == Some(name))
            .map(|v| (num(v, "rate") as u64, v))
            .collect()
    };
    let (ra, rb) = (of(a), of(b));
    let mut rates: Vec<u64> = ra.keys().chain(rb.keys()).copied().collect();
    rates.sort_unstable();
    rates.dedup();
    let cell = |v: Option<&&Value>| match v {
        Some(v) => format!(
            "{:.0} | {:.3} | {}",
            num(v, "deliveries_per_sec"),
            lat(v, "p99") / 1000.0,
            if v.get("pass").and_then(Value::as_bool).unwrap_or(false) { "yes" } else { "**no**" }
        ),
        None => "– | – | –".into(),
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| rate (msg/s) | {a} deliveries/s | {a} p99 (ms) | {a} pass | {b} deliveries/s | {b} p99 (ms) | {b} pass |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for r in &rates {
        let _ = writeln!(o, "| {r} | {} | {} |", cell(ra.get(r)), cell(rb.get(r)));
    }
    if let Some(v) = rb.values().next() {
        let _ = writeln!(
            o,
            "\n{b}: room owned by {}; receivers' home rooms on {}; publishers' on {}; shard mismatches vs the tool's FNV-1a: {}.",
            shards(v, "room_shards"),
            shards(v, "home_shards"),
            shards(v, "publisher_home_shards"),
            num(v, "shard_mismatches")
        );
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

    #[test]
    fn compares_two_benches_by_rate() {
        let lines = r#"{"bench":"room1000","rate":100,"pass":true,"deliveries_per_sec":100000,"latency_us":{"p99":900}}
{"bench":"room1000","rate":200,"pass":true,"deliveries_per_sec":200000,"latency_us":{"p99":1900}}
{"bench":"room1000x","rate":100,"pass":true,"deliveries_per_sec":99000,"latency_us":{"p99":1500},"room_shards":{"0":1001},"home_shards":{"1":1000},"publisher_home_shards":{"1":1},"shard_mismatches":0}
{"bench":"room1000x","rate":200,"pass":false,"deliveries_per_sec":150000,"latency_us":{"p99":25000}}"#;
        let md = super::compare(lines, "room1000", "room1000x");
        assert!(md.contains("| 100 | 100000 | 0.900 | yes | 99000 | 1.500 | yes |"), "{md}");
        assert!(md.contains("| 200 | 200000 | 1.900 | yes | 150000 | 25.000 | **no** |"), "{md}");
        assert!(md.contains("room owned by shard 0: 1001; receivers' home rooms on shard 1: 1000"), "{md}");
        let md = super::compare(lines, "room1000", "nothing");
        assert!(md.contains("| 100 | 100000 | 0.900 | yes | – | – | – |"), "{md}");
    }
}
