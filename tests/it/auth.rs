//! Who may connect where: tokens, rooms, tenants, Origins, expiry and refresh.

use serde_json::json;

use super::harness::{Claims, Client, Refused, SECRET, Server, token, token_at, unix_now};
use super::http_api::{limit_hits, series};

fn refused_status(server: &Server, room: &str, query: &str) -> (u16, String) {
    match Client::connect(&server.url(room, query)) {
        Err(Refused::Status(status, body)) => (status, body),
        Ok(_) => panic!("connection to {room} with {query:?} was accepted"),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[test]
fn a_valid_token_in_query_header_or_cookie_enters_the_room() {
    let server = Server::start(&[]);
    let token = token(&Claims { sub: "alice", ..Claims::default() });
    let mut by_query = Client::connect(&server.url("demo", &format!("token={token}"))).expect("query token");
    assert_eq!(by_query.next_of_type("welcome")["user"], "alice");

    let bearer = format!("Bearer {token}");
    let mut by_header = Client::connect_with(&server.url("demo", ""), &[("authorization", &bearer)]).expect("header");
    assert_eq!(by_header.next_of_type("welcome")["room"], "demo");

    let cookie = format!("theme=dark; roomcast_token={token}");
    let mut by_cookie = Client::connect_with(&server.url("demo", ""), &[("cookie", &cookie)]).expect("cookie");
    assert_eq!(by_cookie.next_of_type("welcome")["member_count"], 3);
}

#[test]
fn missing_expired_forged_and_unsigned_tokens_get_401() {
    let server = Server::start(&[]);
    let (status, body) = refused_status(&server, "demo", "");
    assert_eq!(status, 401);
    assert!(body.contains("token_missing"), "{body}");

    let expired = token_at(&Claims { sub: "a", ttl_s: 60, ..Claims::default() }, unix_now() - 61);
    let (status, body) = refused_status(&server, "demo", &format!("token={expired}"));
    assert_eq!((status, body.contains("expired")), (401, true), "{body}");

    let request = roomcast::token::MintRequest { sub: "a", ttl_s: 60, ..Default::default() };
    let forged =
        roomcast::token::mint_hs256(b"another-secret-that-is-long-enough-0123", &request, unix_now()).expect("mint");
    assert_eq!(refused_status(&server, "demo", &format!("token={forged}")).0, 401);

    // alg "none": a header and claims with an empty signature.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": "a", "exp": unix_now() + 60}).to_string())
    );
    assert_eq!(refused_status(&server, "demo", &format!("token={unsigned}")).0, 401);
    assert_eq!(refused_status(&server, "demo", "token=not.a.jwt").0, 401);
    // Each refusal is counted under its cause.
    for cause in ["token_missing", "token_expired", "token_bad_signature"] {
        let name = format!("roomcast_handshakes_total{{status=\"401\",cause=\"{cause}\"}}");
        assert_eq!(series(server.addr, &name), 1.0, "{name}");
    }
}

#[test]
fn a_token_over_token_bytes_max_is_refused_before_decoding() {
    let server = Server::start(&["--set", "auth.token_bytes_max=512"]);
    let long_name = "n".repeat(600);
    let request = roomcast::token::MintRequest { sub: "a", name: Some(&long_name), ttl_s: 60, ..Default::default() };
    let big = roomcast::token::mint_hs256(SECRET.as_bytes(), &request, unix_now()).expect("mint");
    let (status, body) = refused_status(&server, "demo", &format!("token={big}"));
    assert_eq!(status, 401);
    assert!(body.contains("token_too_large") || body.contains("too large"), "{body}");
    assert_eq!(series(server.addr, r#"roomcast_handshakes_total{status="401",cause="token_too_large"}"#), 1.0);
    assert_eq!(series(server.addr, &limit_hits("token_too_big")), 1.0);
}

#[test]
fn the_room_claim_limits_where_a_token_may_connect() {
    let server = Server::start(&[]);
    let exact = token(&Claims { sub: "a", room: Some("demo"), ..Claims::default() });
    assert!(Client::connect(&server.url("demo", &format!("token={exact}"))).is_ok());
    let (status, body) = refused_status(&server, "other", &format!("token={exact}"));
    assert_eq!(status, 403);
    assert!(body.contains("room_not_allowed"), "{body}");

    let prefix = token(&Claims { sub: "a", room: Some("team-*"), ..Claims::default() });
    assert!(Client::connect(&server.url("team-blue", &format!("token={prefix}"))).is_ok());
    assert_eq!(refused_status(&server, "teal", &format!("token={prefix}")).0, 403);
}

#[test]
fn tenants_with_the_same_room_name_never_see_each_other() {
    let server = Server::start(&["--shards", "4"]);
    let connect = |user: &str, tenant: &str| {
        let token = token(&Claims { sub: user, tenant: Some(tenant), ..Claims::default() });
        let mut client = Client::connect(&server.url("demo", &format!("token={token}"))).expect("connect");
        let welcome = client.next_of_type("welcome");
        (client, welcome)
    };
    let (mut acme_a, _) = connect("a", "acme");
    let (mut acme_b, welcome_b) = connect("b", "acme");
    let (mut globex, welcome_g) = connect("g", "globex");
    assert_eq!(welcome_b["member_count"], 2);
    assert_eq!(welcome_g["member_count"], 1, "globex's demo room is not acme's");

    acme_a.send(json!({"type": "publish", "data": "for acme"}));
    globex.send(json!({"type": "publish", "data": "for globex", "ref": 1}));
    assert_eq!(acme_b.next_of_type("message")["data"], "for acme");
    // The globex publisher's ack comes after its broadcast was queued; no one else is there.
    assert_eq!(globex.next_of_type("ack")["seq"], 1);
    acme_b.send(json!({"type": "publish", "data": "second", "ref": "x"}));
    assert_eq!(acme_b.next_of_type("ack")["seq"], 2);
    assert_eq!(acme_a.next_of_type("message")["data"], "second", "acme saw nothing of globex");
}

#[test]
fn a_disallowed_origin_gets_403_and_an_allowed_one_enters() {
    let server = Server::start(&["--allow-origin", "https://app.example"]);
    let token = token(&Claims { sub: "a", ..Claims::default() });
    let url = server.url("demo", &format!("token={token}"));
    assert!(Client::connect_with(&url, &[("origin", "https://app.example")]).is_ok());
    match Client::connect_with(&url, &[("origin", "https://evil.example")]) {
        Err(Refused::Status(403, body)) => assert!(body.contains("origin_not_allowed"), "{body}"),
        other => panic!("expected 403, got {:?}", other.map(|_| "accepted")),
    }
}

#[test]
fn an_expiring_token_closes_the_connection_unless_refreshed() {
    let server = Server::start(&[]);
    // Expires in 2 s; the close comes from the server's expiry timer.
    let short = token(&Claims { sub: "a", ttl_s: 2, ..Claims::default() });
    let mut lapsing = Client::connect(&server.url("demo", &format!("token={short}"))).expect("connect");
    lapsing.next_of_type("welcome");
    assert_eq!(lapsing.expect_close(), (4001, "token expired".into()));

    let short = token(&Claims { sub: "b", ttl_s: 2, ..Claims::default() });
    let mut refreshed = Client::connect(&server.url("demo", &format!("token={short}"))).expect("connect");
    refreshed.next_of_type("welcome");
    let wrong_user = token(&Claims { sub: "someone-else", ..Claims::default() });
    refreshed.send(json!({"type": "refresh", "token": wrong_user, "ref": 1}));
    assert_eq!(refreshed.next_of_type("error")["code"], "forbidden");
    let fresh = token(&Claims { sub: "b", ttl_s: 3600, ..Claims::default() });
    refreshed.send(json!({"type": "refresh", "token": fresh, "ref": 2}));
    assert_eq!(refreshed.next_of_type("ack")["ref"], 2);
    // Still open past the old expiry: a round trip after it works. The
    // lapsing client above shows expiry fires within the same span.
    let mut watcher = Client::connect(
        &server.url("demo", &format!("token={}", token(&Claims { sub: "w", ttl_s: 3, ..Claims::default() }))),
    )
    .expect("connect");
    watcher.next_of_type("welcome");
    assert_eq!(watcher.expect_close().0, 4001, "a 3 s token has expired, so the 2 s one had too");
    refreshed.send(json!({"type": "ping", "ref": 3}));
    assert_eq!(refreshed.next_of_type("pong")["ref"], 3);
}

#[test]
fn dev_mode_takes_a_user_name_without_a_token() {
    let server = Server::start(&["--auth-mode", "none"]);
    let mut client = Client::connect(&server.url("demo", "user=dev%20user")).expect("dev connect");
    assert_eq!(client.next_of_type("welcome")["user"], "dev user");
    match Client::connect(&server.url("demo", "")) {
        Err(Refused::Status(401, body)) => assert!(body.contains("missing_user"), "{body}"),
        other => panic!("expected 401, got {:?}", other.map(|_| "accepted")),
    }
}

/// Connects `user` to `room` with a token whose `perms` claim is `perms`.
fn join_with_perms(server: &Server, room: &str, user: &str, perms: &[&str]) -> Client {
    let perms: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
    let request = roomcast::token::MintRequest { sub: user, ttl_s: 600, perms: Some(&perms), ..Default::default() };
    let token = roomcast::token::mint_hs256(SECRET.as_bytes(), &request, unix_now()).expect("mint");
    let mut client = Client::connect(&server.url(room, &format!("token={token}"))).expect("handshake");
    client.next_of_type("welcome");
    client
}

#[test]
fn the_perms_claim_gates_publish_join_direct_chat_and_signal() {
    let server = Server::start(&[]);
    let (mut peer, _) = server.join("demo", "peer");
    let mut reader = join_with_perms(&server, "demo", "reader", &["join"]);
    peer.next_of_type("member_joined");

    // No `publish`: refused naming it, and nobody hears the message.
    reader.send(json!({"type": "publish", "ref": 1, "data": "refused"}));
    let error = reader.next_of_type("error");
    assert_eq!((&error["ref"], &error["code"]), (&json!(1), &json!("forbidden")), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("\"publish\"")), "{error}");
    reader.send(json!({"type": "publish", "data": "refused without ref"}));
    assert_eq!(reader.next_of_type("error")["code"], "forbidden");
    for (request, perm) in [
        (json!({"type": "direct", "ref": 2, "to": "peer", "data": 1}), "direct"),
        (json!({"type": "chat.send", "ref": 3, "text": "hi"}), "chat"),
        (json!({"type": "signal", "ref": 4, "to": "peer", "data": {}}), "signal"),
    ] {
        reader.send(request);
        let error = reader.next_of_type("error");
        assert_eq!(error["code"], "forbidden", "{error}");
        assert!(error["message"].as_str().is_some_and(|m| m.contains(&format!("\"{perm}\""))), "{error}");
    }
    // `join` is listed: allowed.
    reader.send(json!({"type": "join", "ref": 5, "room": "other"}));
    assert_eq!(reader.next_of_type("welcome")["room"], "other");
    // The peer saw none of it: the next frame it gets, past the store's
    // chat history (sent whenever the store answers), is its own pong.
    peer.send(json!({"type": "ping", "ref": "p"}));
    let next = loop {
        let frame = peer.next_json();
        if frame["type"] != "chat_history" {
            break frame;
        }
    };
    assert_eq!(next["type"], "pong", "{next}");

    // With `publish` it works; without `join`, a join is refused.
    let mut writer = join_with_perms(&server, "demo", "writer", &["publish"]);
    peer.next_of_type("member_joined");
    writer.send(json!({"type": "publish", "ref": 6, "data": "hello"}));
    assert_eq!(writer.next_of_type("ack")["ref"], 6);
    assert_eq!(peer.next_of_type("message")["data"], "hello");
    writer.send(json!({"type": "join", "ref": 7, "room": "other"}));
    let error = writer.next_of_type("error");
    assert!(error["code"] == "forbidden" && error["message"].as_str().is_some_and(|m| m.contains("\"join\"")));

    // No `perms` claim at all: everything is allowed, as before.
    let (mut everyone, _) = server.join("demo", "everyone");
    everyone.send(json!({"type": "publish", "ref": 8, "data": 1}));
    assert_eq!(everyone.next_of_type("ack")["ref"], 8);
}
