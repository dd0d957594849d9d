//! Issue 7: the session audit (one row per room connection, written by the
//! store thread), its retention, and the usage figures the HTTP API derives
//! from it, for a scripted set of sessions over real sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::harness::{Claims, Client, PATIENCE, Server, raw_http, token, unix_now};

const ADMIN_KEY: &str = "admin-key-0123456789";
const TENANT_KEY: &str = "tenant-key-acme-0123456789";

fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, Value) {
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
    let (status, text) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn join(server: &Server, tenant: Option<&str>, room: &str, user: &str) -> Client {
    let token = token(&Claims { sub: user, tenant, ..Claims::default() });
    let mut client = Client::connect(&server.url(room, &format!("token={token}"))).expect("handshake");
    client.next_of_type("welcome");
    client
}

/// Closes with `code` and waits for the server's echo and its close.
fn close_with(mut client: Client, code: u16) {
    client.ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: "bye".into() })).expect("send close");
    while client.ws.read().is_ok() {}
}

fn day(offset_days: i64) -> String {
    let days = (unix_now() / 86_400) as i64 + offset_days;
    roomcast::__private::format_day(days)
}

const DAY_MS: i64 = 86_400_000;

/// One audit row as the store wrote it.
#[derive(Debug, Clone)]
struct Row {
    user: String,
    room: String,
    tenant: String,
    peer: String,
    close_code: Option<i64>,
    connected_ms: i64,
    disconnected_ms: Option<i64>,
}

/// Every audit row, once `expected` of them have ended (polls the database
/// the server writes: a dropped connection's end has no event to await).
fn rows_once_ended(server: &Server, expected: usize) -> Vec<Row> {
    let path = server.data_dir().join("roomcast.db");
    let start = Instant::now();
    loop {
        let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut select = db
            .prepare(
                "SELECT user, room, tenant, peer, close_code, connected_ms, disconnected_ms FROM sessions ORDER BY id",
            )
            .unwrap();
        let rows: Vec<Row> = select
            .query_map([], |r| {
                Ok(Row {
                    user: r.get(0)?,
                    room: r.get(1)?,
                    tenant: r.get(2)?,
                    peer: r.get(3)?,
                    close_code: r.get(4)?,
                    connected_ms: r.get(5)?,
                    disconnected_ms: r.get(6)?,
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let ended = rows.iter().filter(|r| r.disconnected_ms.is_some()).count();
        if ended >= expected {
            return rows;
        }
        assert!(start.elapsed() < PATIENCE, "only {ended} of {expected} audit rows ended: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `days` a usage report must list for `rows`, computed here from the
/// rows themselves: per UTC day of connection, distinct users, sessions,
/// and the mean and nearest-rank p95 of the ended sessions' durations.
fn expected_days<'a>(rows: impl Iterator<Item = &'a Row>) -> Value {
    let mut days: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        days.entry(row.connected_ms.div_euclid(DAY_MS)).or_default().push(row);
    }
    let days: Vec<Value> = days
        .into_iter()
        .map(|(day, rows)| {
            let users: BTreeSet<&str> = rows.iter().map(|r| r.user.as_str()).collect();
            let mut ended: Vec<i64> =
                rows.iter().filter_map(|r| Some((r.disconnected_ms? - r.connected_ms).max(0))).collect();
            ended.sort_unstable();
            let (avg, p95) = if ended.is_empty() {
                (None, None)
            } else {
                let sum: i64 = ended.iter().sum();
                let rank = (ended.len() * 95).div_ceil(100) - 1;
                // The mean to the nearest millisecond (halves up), as documented.
                let mean_ms = (sum + ended.len() as i64 / 2) / ended.len() as i64;
                (Some(mean_ms as f64 / 1000.0), Some(ended[rank] as f64 / 1000.0))
            };
            json!({
                "date": roomcast::__private::format_day(day),
                "unique_users": users.len(),
                "sessions": rows.len(),
                "avg_duration_s": avg,
                "p95_duration_s": p95,
            })
        })
        .collect();
    Value::Array(days)
}

#[test]
fn scripted_sessions_give_audit_rows_and_exact_usage() {
    let tenants = format!("tenants=acme:{TENANT_KEY}");
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--set", &tenants]);
    let acme = Some("acme");
    // In acme: alice twice and bob in "standup", carol in "other"; dan in
    // "standup" of the default tenant. Each session ends after the one
    // before it, so their durations differ.
    let alice1 = join(&server, acme, "standup", "alice");
    let alice2 = join(&server, acme, "standup", "alice");
    let bob = join(&server, acme, "standup", "bob");
    let bob_addr = bob.ws.get_ref().local_addr().unwrap();
    let _carol = join(&server, acme, "other", "carol");
    let dan = join(&server, None, "standup", "dan");

    close_with(alice1, 1000);
    close_with(alice2, 4000);
    drop(bob); // no Close frame: 1006
    close_with(dan, 1000);
    let (status, kicked) = raw_post_kick(server.addr);
    assert_eq!((status, kicked["kicked"].as_u64()), (200, Some(1)), "{kicked}");

    let rows = rows_once_ended(&server, 5);
    assert_eq!(rows.len(), 5, "{rows:?}");
    let find = |user: &str| rows.iter().filter(|r| r.user == user).collect::<Vec<_>>();
    let alice = find("alice");
    assert_eq!(alice.len(), 2);
    let mut alice_codes: Vec<Option<i64>> = alice.iter().map(|r| r.close_code).collect();
    alice_codes.sort();
    assert_eq!(alice_codes, [Some(1000), Some(4000)], "the peer's close code");
    assert_eq!(find("bob")[0].close_code, Some(1006), "dropped without a Close");
    assert_eq!(find("bob")[0].peer, bob_addr.to_string(), "peer address as accepted");
    assert_eq!(find("carol")[0].close_code, Some(4003), "the server's close code (kick)");
    assert_eq!((find("carol")[0].room.as_str(), find("carol")[0].tenant.as_str()), ("other", "acme"));
    assert_eq!((find("dan")[0].tenant.as_str(), find("dan")[0].close_code), ("", Some(1000)));

    // The usage figures are exactly those of the rows, day by day (a test
    // that runs across UTC midnight has two days).
    let in_scope = |tenant: &'static str, room: Option<&'static str>| {
        rows.iter().filter(move |r| r.tenant == tenant && room.is_none_or(|room| r.room == room))
    };
    let range = format!("from={}&to={}", day(-1), day(1));
    // One room, with the admin key naming the tenant.
    let (status, report) =
        get(server.addr, &format!("/api/v1/rooms/standup/usage?tenant=acme&{range}"), Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!((report["tenant"].as_str(), report["room"].as_str()), (Some("acme"), Some("standup")));
    assert_eq!((report["from"].as_str(), report["to"].as_str()), (Some(day(-1).as_str()), Some(day(1).as_str())));
    assert_eq!(report["days"], expected_days(in_scope("acme", Some("standup"))), "{report}");
    let sessions = |report: &Value| {
        report["days"].as_array().unwrap().iter().map(|d| d["sessions"].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(sessions(&report), 3, "{report}");

    // The whole tenant, with the tenant's own key (no ?tenant= needed).
    let (status, report) = get(server.addr, &format!("/api/v1/usage?{range}"), Some(TENANT_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["room"], Value::Null);
    assert_eq!(report["days"], expected_days(in_scope("acme", None)), "{report}");
    assert_eq!(sessions(&report), 4);
    let (status, report) =
        get(server.addr, &format!("/api/v1/rooms/standup/usage?tenant=acme&{range}"), Some(TENANT_KEY));
    assert_eq!((status, sessions(&report)), (200, 3), "{report}");

    // The admin key without ?tenant= reads the default tenant: dan only.
    let (status, report) = get(server.addr, &format!("/api/v1/usage?{range}"), Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["days"], expected_days(in_scope("", None)), "{report}");
    // Without from/to: the 30 days up to today (the server's today, read
    // between these two readings of the test's).
    let before = day(0);
    let (status, report) = get(server.addr, "/api/v1/usage?tenant=acme", Some(ADMIN_KEY));
    let after = day(0);
    assert_eq!((status, sessions(&report)), (200, 4), "{report}");
    let to = report["to"].as_str().expect("to").to_string();
    assert!(to == before || to == after, "{report}");
    let to_day = roomcast::__private::parse_day(&to).expect("a date");
    assert_eq!(report["from"].as_str(), Some(roomcast::__private::format_day(to_day - 29).as_str()), "{report}");
}

/// `POST /api/v1/kick` of carol (tenant acme), with the admin key.
fn raw_post_kick(addr: SocketAddr) -> (u16, Value) {
    let body = json!({"user": "carol", "tenant": "acme"}).to_string();
    let request = format!(
        "POST /api/v1/kick HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn usage_requests_are_validated_and_tenant_keys_scoped() {
    let tenants = format!("tenants=acme:{TENANT_KEY}");
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--set", &tenants]);
    let bad = |path: &str, key: &str, status: u16, code: &str, field: &str| {
        let (got, body) = get(server.addr, path, Some(key));
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{path}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with(field), "{path}: {body}");
    };
    bad("/api/v1/usage?from=2024-02-30", ADMIN_KEY, 400, "bad_request", "from:");
    bad("/api/v1/usage?to=yesterday", ADMIN_KEY, 400, "bad_request", "to:");
    bad("/api/v1/usage?from=2024-3-01", ADMIN_KEY, 400, "bad_request", "from:");
    bad("/api/v1/rooms/bad%20room/usage", ADMIN_KEY, 400, "bad_request", "room:");
    bad("/api/v1/usage?tenant=other", TENANT_KEY, 403, "forbidden", "");
    bad("/api/v1/usage", "wrong-key", 401, "unauthorized", "");
    // A report covers at most 366 days.
    bad("/api/v1/usage?from=0001-01-01&to=9999-12-31", ADMIN_KEY, 400, "bad_request", "from:");
    bad("/api/v1/rooms/r/usage?from=2024-01-01&to=2025-01-01", ADMIN_KEY, 400, "bad_request", "from:");
    // Ranges without sessions, and from after to, list no day.
    for range in ["from=2024-02-28&to=2024-03-01", "from=2024-03-02&to=2024-03-01", "from=2024-01-01&to=2024-12-31"] {
        let (status, report) = get(server.addr, &format!("/api/v1/usage?{range}"), Some(ADMIN_KEY));
        assert_eq!((status, &report["days"]), (200, &json!([])), "{range}: {report}");
    }

    // Without a store there is nothing to read.
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--no-store"]);
    let (status, body) = get(server.addr, "/api/v1/usage", Some(ADMIN_KEY));
    assert_eq!((status, body["error"].as_str()), (501, Some("not_implemented")), "{body}");
}

#[test]
fn old_audit_rows_are_deleted_at_start_and_unfinished_ones_marked_1006() {
    let server = Server::start(&[]);
    let dir = server.stop();
    let path = dir.path().join("roomcast.db");
    let now_ms = unix_now() as i64 * 1000;
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        let insert = "INSERT INTO sessions (boot, conn, tenant, room, user, peer, connected_ms, disconnected_ms)
                      VALUES (1, ?1, '', 'r', 'u', '127.0.0.1:1', ?2, ?3)";
        let day = 86_400_000i64;
        db.execute(insert, rusqlite::params!["0.1.1", now_ms - 3 * day, now_ms - 3 * day + 1000]).unwrap();
        db.execute(insert, rusqlite::params!["0.2.1", now_ms - 1000, None::<i64>]).unwrap();
    }
    let server = Server::start_in(dir, &["--admin-key", ADMIN_KEY, "--set", "store.audit_retention_days=2"]);
    // The store thread's first pass runs before it takes anything from its
    // queue, so once a query is answered the pass is done. (Its log line may
    // come before the "listening" line the harness waits for.)
    let (status, report) = get(server.addr, "/api/v1/usage", Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let rows: Vec<(String, Option<i64>)> = db
        .prepare("SELECT conn, close_code FROM sessions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [("0.2.1".to_string(), Some(1006))], "the old row went; the unfinished one is 1006");
}

/// One request with a JSON body.
fn send(addr: SocketAddr, method: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn delete(addr: SocketAddr, path: &str, key: &str) -> (u16, Value) {
    let request = format!("DELETE {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n");
    let (status, text) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn the_room_registry_is_tenant_scoped_crud_that_survives_a_restart() {
    let tenants = format!("tenants=acme:{TENANT_KEY}");
    let args = ["--admin-key", ADMIN_KEY, "--set", tenants.as_str()];
    let server = Server::start(&args);
    let addr = server.addr;
    let room = json!({"id": "standup", "name": "Stand-up", "description": "daily", "capacity": 12,
        "lobby": true, "private": true, "history_max": 50, "metadata": {"team": ["a", 1]}});
    let (status, created) = send(addr, "POST", "/api/v1/rooms", TENANT_KEY, &room);
    assert_eq!(status, 201, "{created}");
    for field in ["id", "name", "description", "capacity", "lobby", "private", "history_max", "metadata"] {
        assert_eq!(created[field], room[field], "{field}: {created}");
    }
    assert_eq!(created["tenant"], "acme");
    assert_eq!(send(addr, "POST", "/api/v1/rooms", TENANT_KEY, &room).0, 409, "ids are unique per tenant");
    // The same id in another tenant (the admin key names it) is another room.
    let (status, other) = send(addr, "POST", "/api/v1/rooms?tenant=beta", ADMIN_KEY, &json!({"id": "standup"}));
    assert_eq!(status, 201, "{other}");
    assert_eq!(
        (other["tenant"].as_str(), other["private"].as_bool(), &other["capacity"]),
        (Some("beta"), Some(false), &Value::Null)
    );
    send(addr, "POST", "/api/v1/rooms", TENANT_KEY, &json!({"id": "retro"}));

    let (status, page) = get(addr, "/api/v1/rooms?limit=1", Some(TENANT_KEY));
    assert_eq!(
        (status, page["rooms"][0]["id"].as_str(), page["next_cursor"].as_str()),
        (200, Some("retro"), Some("retro"))
    );
    let (_, page) = get(addr, "/api/v1/rooms?limit=1&cursor=retro", Some(TENANT_KEY));
    assert_eq!((page["rooms"][0]["id"].as_str(), &page["next_cursor"]), (Some("standup"), &Value::Null), "{page}");
    let (_, page) = get(addr, "/api/v1/rooms?tenant=acme", Some(ADMIN_KEY));
    assert_eq!(page["rooms"].as_array().map(Vec::len), Some(2));

    // PUT replaces: absent fields go back to their defaults.
    let (status, replaced) = send(addr, "PUT", "/api/v1/rooms/standup", TENANT_KEY, &json!({"capacity": 3}));
    assert_eq!(
        (status, &replaced["capacity"], &replaced["name"], &replaced["private"]),
        (200, &json!(3), &Value::Null, &json!(false))
    );
    assert_eq!(replaced["created_at_ms"], created["created_at_ms"]);
    assert_eq!(send(addr, "PUT", "/api/v1/rooms/nope", TENANT_KEY, &json!({})).0, 404);

    let bad = |method: &str, path: &str, body: Value, field: &str| {
        let (status, e) = send(addr, method, path, TENANT_KEY, &body);
        assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")), "{e}");
        assert!(e["message"].as_str().unwrap().starts_with(field), "{e}");
    };
    bad("POST", "/api/v1/rooms", json!({"name": "x"}), "id:");
    bad("POST", "/api/v1/rooms", json!({"id": "a b"}), "id:");
    bad("POST", "/api/v1/rooms", json!({"id": "a", "capacity": 0}), "capacity:");
    bad("POST", "/api/v1/rooms", json!({"id": "a", "metadata": [1]}), "metadata:");
    bad("PUT", "/api/v1/rooms/standup", json!({"lobby": "yes"}), "lobby:");
    bad("PUT", "/api/v1/rooms/standup", json!({"name": "n".repeat(257)}), "name:");
    let (status, _) = get(addr, "/api/v1/rooms?tenant=beta", Some(TENANT_KEY));
    assert_eq!(status, 403, "a tenant key stays in its tenant");

    let dir = server.stop();
    let server = Server::start_in(dir, &args);
    let (status, kept) = get(server.addr, "/api/v1/rooms/standup", Some(TENANT_KEY));
    assert_eq!((status, &kept["capacity"]), (200, &json!(3)), "{kept}");
    assert_eq!(delete(server.addr, "/api/v1/rooms/standup", TENANT_KEY), (200, json!({"deleted": true})));
    assert_eq!(delete(server.addr, "/api/v1/rooms/standup", TENANT_KEY).0, 404);
    assert_eq!(get(server.addr, "/api/v1/rooms/standup", Some(TENANT_KEY)).0, 404);
    assert_eq!(get(server.addr, "/api/v1/rooms/standup?tenant=beta", Some(ADMIN_KEY)).0, 200, "beta's is untouched");
}
