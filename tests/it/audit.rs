//! Issue 7: the session audit (one row per room connection, written by the
//! store thread), its retention, and the usage figures the HTTP API derives
//! from it, for a scripted set of sessions over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::harness::{Claims, Client, PATIENCE, Server, raw_http, token, unix_now};

const ADMIN_KEY: &str = "admin-key-0123456789";
const TENANT_KEY: &str = "tenant-key-acme-0123456789";
/// How long every scripted session lasts at least.
const HOLD: Duration = Duration::from_millis(300);

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
    roomcast::http_api::format_day(days)
}

/// The audit rows as `(user, room, tenant, peer, close_code, duration_ms)`,
/// once every row has ended (polls the database the server writes).
fn ended_rows(server: &Server, expected: usize) -> Vec<(String, String, String, String, i64, i64)> {
    let path = server.data_dir().join("roomcast.db");
    let start = Instant::now();
    loop {
        let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut select = db
            .prepare(
                "SELECT user, room, tenant, peer, close_code, disconnected_ms - connected_ms FROM sessions
                 WHERE disconnected_ms IS NOT NULL ORDER BY id",
            )
            .unwrap();
        let rows: Vec<_> = select
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if rows.len() >= expected {
            return rows;
        }
        assert!(start.elapsed() < PATIENCE, "only {} of {expected} audit rows ended: {rows:?}", rows.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The one day of a usage report: `(sessions, unique users, avg, p95)`.
/// Days without sessions are not listed, and every session here is of one
/// day (today, UTC, or yesterday if the test straddles midnight).
fn one_day(report: &Value) -> (u64, u64, f64, f64) {
    let days = report["days"].as_array().expect("days");
    assert_eq!(days.len(), 1, "all sessions on one day: {report}");
    let d = &days[0];
    assert!([day(-1), day(0)].contains(&d["date"].as_str().unwrap().to_string()), "{report}");
    (
        d["sessions"].as_u64().unwrap(),
        d["unique_users"].as_u64().unwrap(),
        d["avg_duration_s"].as_f64().expect("avg"),
        d["p95_duration_s"].as_f64().expect("p95"),
    )
}

#[test]
fn scripted_sessions_give_audit_rows_and_exact_usage() {
    let tenants = format!("tenants=acme:{TENANT_KEY}");
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--set", &tenants]);
    let started = Instant::now();
    let acme = Some("acme");
    // In acme: alice twice and bob in "standup", carol in "other"; dan in
    // "standup" of the default tenant.
    let alice1 = join(&server, acme, "standup", "alice");
    let alice2 = join(&server, acme, "standup", "alice");
    let bob = join(&server, acme, "standup", "bob");
    let bob_addr = bob.ws.get_ref().local_addr().unwrap();
    let _carol = join(&server, acme, "other", "carol");
    let dan = join(&server, None, "standup", "dan");
    std::thread::sleep(HOLD);

    close_with(alice1, 1000);
    close_with(alice2, 4000);
    drop(bob); // no Close frame: 1006
    close_with(dan, 1000);
    let (status, kicked) = raw_post_kick(server.addr);
    assert_eq!((status, kicked["kicked"].as_u64()), (200, Some(1)), "{kicked}");
    let elapsed_s = started.elapsed().as_secs_f64() + 1.0;

    let rows = ended_rows(&server, 5);
    let find = |user: &str| rows.iter().filter(|r| r.0 == user).collect::<Vec<_>>();
    let alice = find("alice");
    assert_eq!(alice.len(), 2);
    let mut alice_codes: Vec<i64> = alice.iter().map(|r| r.4).collect();
    alice_codes.sort();
    assert_eq!(alice_codes, [1000, 4000], "the peer's close code");
    assert_eq!(find("bob")[0].4, 1006, "dropped without a Close");
    assert_eq!(find("bob")[0].3, bob_addr.to_string(), "peer address as accepted");
    assert_eq!(find("carol")[0].4, 4003, "the server's close code (kick)");
    assert_eq!((find("carol")[0].1.as_str(), find("carol")[0].2.as_str()), ("other", "acme"));
    assert_eq!((find("dan")[0].2.as_str(), find("dan")[0].4), ("", 1000));
    for row in &rows {
        assert!(row.5 >= HOLD.as_millis() as i64, "duration {row:?}");
    }

    let range = format!("from={}&to={}", day(-1), day(1));
    // One room, with the admin key naming the tenant.
    let (status, report) =
        get(server.addr, &format!("/api/v1/rooms/standup/usage?tenant=acme&{range}"), Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!((report["tenant"].as_str(), report["room"].as_str()), (Some("acme"), Some("standup")));
    assert_eq!((report["from"].as_str(), report["to"].as_str()), (Some(day(-1).as_str()), Some(day(1).as_str())));
    let (sessions, users, avg, p95) = one_day(&report);
    assert_eq!((sessions, users), (3, 2), "{report}");
    let hold = HOLD.as_secs_f64();
    assert!(avg >= hold && avg <= elapsed_s && p95 >= avg && p95 <= elapsed_s, "{report}");

    // The whole tenant, with the tenant's own key (no ?tenant= needed).
    let (status, report) = get(server.addr, &format!("/api/v1/usage?{range}"), Some(TENANT_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["room"], Value::Null);
    let (sessions, users, avg, _) = one_day(&report);
    assert_eq!((sessions, users), (4, 3), "{report}");
    assert!(avg >= hold && avg <= elapsed_s, "{report}");
    let (status, report) =
        get(server.addr, &format!("/api/v1/rooms/standup/usage?tenant=acme&{range}"), Some(TENANT_KEY));
    assert_eq!((status, one_day(&report).0), (200, 3), "{report}");

    // The admin key without ?tenant= reads the default tenant: dan only.
    let (status, report) = get(server.addr, &format!("/api/v1/usage?{range}"), Some(ADMIN_KEY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(one_day(&report).0, 1, "{report}");
    // Without from/to: the last 30 days up to today.
    let (status, report) = get(server.addr, "/api/v1/usage?tenant=acme", Some(ADMIN_KEY));
    assert_eq!((status, report["days"][0]["sessions"].as_u64()), (200, Some(4)), "{report}");
    assert_eq!((report["from"].as_str(), report["to"].as_str()), (Some(day(-29).as_str()), Some(day(0).as_str())));
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
    // Ranges without sessions, and from after to, list no day.
    for range in ["from=2024-02-28&to=2024-03-01", "from=2024-03-02&to=2024-03-01", "from=0001-01-01&to=9999-12-31"] {
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
    let mut server = Server::start_in(dir, &["--set", "store.audit_retention_days=2"]);
    server.wait_for_log("session audit rows past store.audit_retention_days deleted");
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
