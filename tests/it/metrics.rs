//! `GET /metrics` read by the official Python client's parser
//! (`prometheus_client.parser`, PyPI `prometheus-client`) after real load:
//! connections, publishes, a refused handshake. The parser is lax by its own
//! account, so the script beside it checks what a strict reader would: no
//! sample left untyped or outside its family, every family with HELP and
//! TYPE and rendered once, every sample line parsed, histograms consistent.
//! The venv is made like kosoku's (`venv.rs`).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::harness::{Server, raw_http, upgrade_request};
use super::http_api::{metrics_text, wait_for_metric};
use super::venv::{python_venv, run_bounded_with_input};

/// Pinned: the checks below lean on how this version names counter families.
const PROMETHEUS_CLIENT_VERSION: &str = "0.26.0";
const PARSE_LIMIT: Duration = Duration::from_secs(60);

/// Reads the exposition on stdin; prints `{family: {type, help, samples:
/// [[name, labels, value]]}}` as JSON, or the problems found and exits 1.
const CHECK: &str = r##"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
problems = []
families = {}
parsed_samples = 0
for f in text_string_to_metric_families(text):
    # The parser calls a counter family `x` for `# TYPE x_total counter`.
    name = f.name + "_total" if f.type == "counter" else f.name
    if name in families:
        problems.append(f"{name}: family rendered twice")
    if f.type not in ("counter", "gauge", "histogram"):
        problems.append(f"{name}: type {f.type} (a sample with no TYPE, or outside its family?)")
    if not f.documentation.strip():
        problems.append(f"{name}: no HELP text")
    parsed_samples += len(f.samples)
    for s in f.samples:
        if math.isnan(s.value):
            problems.append(f"{s.name}{s.labels}: NaN")
    if f.type == "histogram":
        series = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if s.name == f.name + "_bucket":
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name == f.name + "_sum":
                series[key]["sum"] = s.value
            elif s.name == f.name + "_count":
                series[key]["count"] = s.value
        if not series:
            problems.append(f"{name}: histogram without series")
        for key, h in series.items():
            les = [le for le, _ in h["buckets"]]
            if les != sorted(les) or len(set(les)) != len(les):
                problems.append(f"{name}{key}: bucket bounds not increasing: {les}")
            counts = [n for _, n in h["buckets"]]
            if counts != sorted(counts):
                problems.append(f"{name}{key}: buckets not cumulative: {counts}")
            if not les or les[-1] != math.inf:
                problems.append(f"{name}{key}: no +Inf bucket")
            elif h["count"] != counts[-1]:
                problems.append(f"{name}{key}: +Inf {counts[-1]} != _count {h['count']}")
            if h["sum"] is None or h["sum"] < 0:
                problems.append(f"{name}{key}: _sum {h['sum']}")
    families[name] = {
        "type": f.type,
        "help": f.documentation,
        "samples": [[s.name, s.labels, s.value] for s in f.samples],
    }
lines = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
if parsed_samples != len(lines):
    problems.append(f"{len(lines)} sample lines but {parsed_samples} samples parsed")
helps = [l.split()[2] for l in text.splitlines() if l.startswith("# HELP ")]
types = [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")]
if helps != types:
    problems.append("HELP and TYPE lines do not pair up family by family")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(json.dumps(families))
"##;

/// The value of the one sample `name` with exactly `labels` in the parsed families.
fn sample(families: &Value, family: &str, name: &str, labels: Value) -> f64 {
    let samples = families[family]["samples"].as_array().unwrap_or_else(|| panic!("no family {family}"));
    samples
        .iter()
        .find(|s| s[0] == name && s[1] == labels)
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no {name}{labels} in {family}: {samples:?}"))
}

#[test]
fn metrics_parse_strictly_with_the_prometheus_client_after_load() {
    let venv =
        python_venv("prometheus-venv", "prometheus-client", PROMETHEUS_CLIENT_VERSION, "prometheus_client.parser");
    let server = Server::start(&[]);
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64();

    // Load: three connections on two rooms, a publish delivered, a handshake refused.
    let (mut alice, _) = server.join("room-a", "alice");
    let (mut bob, _) = server.join("room-a", "bob");
    let (_carol, _) = server.join("room-b", "carol");
    alice.send(json!({"type": "publish", "data": {"n": 1}}));
    assert_eq!(bob.next_of_type("message")["data"], json!({"n": 1}));
    let (status, _) = raw_http(server.addr, &upgrade_request("/ws/room-a", ""));
    assert_eq!(status, 401, "no token");
    // The shards' counters arrive with their next snapshot.
    wait_for_metric(&server, "roomcast_messages_published_total", |n| n >= 1.0);
    wait_for_metric(&server, "roomcast_connections", |n| n == 3.0);

    let text = metrics_text(server.addr);
    let mut python = Command::new(venv.join("bin").join("python"));
    python.args(["-c", CHECK]);
    let run = run_bounded_with_input(python, Some(text.as_bytes()), PARSE_LIMIT, "prometheus_client parser");
    assert!(run.status.success(), "the exposition does not parse cleanly; {}\n--- exposition\n{text}", run.describe());
    let families: Value = serde_json::from_str(&run.stdout).expect("the script prints JSON");

    // Counters the load moved.
    let published: f64 = (0..2)
        .map(|shard| {
            let labels = json!({"shard": shard.to_string()});
            sample(&families, "roomcast_messages_published_total", "roomcast_messages_published_total", labels)
        })
        .sum();
    assert_eq!(published, 1.0);
    let refused = json!({"status": "401", "cause": "token_missing"});
    assert_eq!(sample(&families, "roomcast_handshakes_total", "roomcast_handshakes_total", refused), 1.0);
    let ok = json!({"status": "101", "cause": "ok"});
    assert_eq!(sample(&families, "roomcast_handshakes_total", "roomcast_handshakes_total", ok), 3.0);

    // Per-shard histograms: loop time and inbox depth, one series per shard.
    for family in ["roomcast_loop_iteration_seconds", "roomcast_loop_inbox_depth"] {
        assert_eq!(families[family]["type"], "histogram", "{family}");
        for shard in ["0", "1"] {
            let count = sample(&families, family, &format!("{family}_count"), json!({"shard": shard}));
            assert!(count >= 1.0, "{family} shard {shard}: every loop iteration is recorded");
        }
    }
    assert_eq!(families["roomcast_refresh_overloaded_total"]["type"], "counter");

    // The process families, with plausible values.
    let process = |name: &str| sample(&families, name, name, json!({}));
    assert!(process("process_open_fds") >= 3.0 + 1.0, "3 client sockets and the listener at least");
    assert!(process("process_resident_memory_bytes") > 0.0);
    assert!(process("process_cpu_seconds_total") >= 0.0);
    let started = process("process_start_time_seconds");
    assert!(started <= now() + 1.0 && started > now() - 600.0, "the server started just now: {started}");
    assert_eq!(families["process_cpu_seconds_total"]["type"], "counter");
}
