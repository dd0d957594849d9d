//! Issue 7, tokens: `DELETE /api/v1/tokens/{jti}` revokes a token (also
//! across a restart, with the store) and single-use tokens (`"use":"once"`)
//! are accepted for one handshake.

use std::net::SocketAddr;

use roomcast::token::{MintRequest, mint_hs256};
use serde_json::{Value, json};

use super::harness::{Client, PATIENCE, Refused, SECRET, Server, raw_http, unix_now};
use super::store::{await_store_stuck, lock_database, metric, metrics, settle_store};

const ADMIN_KEY: &str = "admin-key-0123456789";
const TENANT_KEY: &str = "tenant-key-acme-0123456789";

fn call(addr: SocketAddr, method: &str, path: &str, key: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn minted(jti: &str, once: bool) -> String {
    let request = MintRequest { sub: "u", ttl_s: 600, jti: Some(jti), once, ..MintRequest::default() };
    mint_hs256(SECRET.as_bytes(), &request, unix_now()).expect("mint")
}

fn connects(server: &Server, token: &str) -> Result<(), (u16, String)> {
    match Client::connect(&server.url("t", &format!("token={token}"))) {
        Ok(mut client) => {
            assert_eq!(client.next_json()["type"], "welcome");
            Ok(())
        }
        Err(Refused::Status(status, body)) => Err((status, body)),
        Err(other) => panic!("{other:?}"),
    }
}

fn assert_revoked(result: Result<(), (u16, String)>) {
    let (status, body) = result.expect_err("refused");
    assert_eq!(status, 401);
    assert!(body.contains("token_revoked"), "{body}");
}

#[test]
fn a_revoked_token_is_refused_also_after_a_restart() {
    let server = Server::start(&["--admin-key", ADMIN_KEY]);
    let token = minted("jti-1", false);
    assert_eq!(connects(&server, &token), Ok(()));
    let (status, body) = call(server.addr, "DELETE", "/api/v1/tokens/jti-1", ADMIN_KEY, "");
    assert_eq!((status, &body["jti"], &body["revoked"]), (200, &"jti-1".into(), &true.into()), "{body}");
    assert_revoked(connects(&server, &token));
    assert_eq!(connects(&server, &minted("jti-2", false)), Ok(()), "other tokens still work");
    let (status, _) = call(server.addr, "DELETE", "/api/v1/tokens/jti-2", "wrong-key", "");
    assert_eq!(status, 401, "admin key required");
    let (status, _) = call(server.addr, "GET", "/api/v1/tokens/jti-2", ADMIN_KEY, "");
    assert_eq!(status, 405);

    let dir = server.stop();
    let server = Server::start_in(dir, &["--admin-key", ADMIN_KEY]);
    assert_revoked(connects(&server, &token));
    assert_eq!(connects(&server, &minted("jti-2", false)), Ok(()));
}

#[test]
fn a_single_use_token_is_accepted_once_then_refused_also_after_a_restart() {
    let tenants = format!("tenants=acme:{TENANT_KEY}");
    let server = Server::start(&["--set", &tenants]);
    let (status, body) = call(server.addr, "POST", "/api/v1/tokens", TENANT_KEY, r#"{"user":"ann","once":true}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body["jti"].as_str().is_some_and(|jti| jti.len() == 32), "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    assert_eq!(connects(&server, &token), Ok(()));
    assert_revoked(connects(&server, &token));

    let own = minted("once-1", true);
    assert_eq!(connects(&server, &own), Ok(()));
    let dir = server.stop();
    let server = Server::start_in(dir, &["--set", &tenants]);
    assert_revoked(connects(&server, &own));
    assert_revoked(connects(&server, &token));
}

#[test]
fn without_the_store_revocation_holds_in_memory() {
    let server = Server::start(&["--no-store", "--admin-key", ADMIN_KEY]);
    let token = minted("mem-1", false);
    let (status, _) = call(server.addr, "DELETE", "/api/v1/tokens/mem-1?exp=4000000000", ADMIN_KEY, "");
    assert_eq!(status, 200);
    assert_revoked(connects(&server, &token));
    let once = minted("mem-2", true);
    assert_eq!(connects(&server, &once), Ok(()));
    assert_revoked(connects(&server, &once));
}

#[test]
fn refresh_refuses_revoked_and_single_use_tokens() {
    let server = Server::start(&["--admin-key", ADMIN_KEY]);
    let mut client = Client::connect(&server.url("t", &format!("token={}", minted("conn-1", false)))).expect("connect");
    client.next_of_type("welcome");
    let revoked = minted("refresh-revoked", false);
    assert_eq!(call(server.addr, "DELETE", "/api/v1/tokens/refresh-revoked", ADMIN_KEY, "").0, 200);
    client.send(json!({"type": "refresh", "token": revoked, "ref": 1}));
    let error = client.next_of_type("error");
    assert_eq!((&error["code"], &error["ref"]), (&json!("token_revoked"), &json!(1)), "{error}");

    let once = minted("refresh-once", true);
    client.send(json!({"type": "refresh", "token": once, "ref": 2}));
    let error = client.next_of_type("error");
    assert_eq!((&error["code"], &error["ref"]), (&json!("forbidden"), &json!(2)), "{error}");
    assert_eq!(connects(&server, &once), Ok(()), "a refused refresh does not spend a single-use token");

    client.send(json!({"type": "refresh", "token": minted("refresh-ok", false), "ref": 3}));
    assert_eq!(client.next_of_type("ack")["ref"], 3, "the connection is still open and refreshable");
}

#[test]
fn roomcast_token_once_mints_a_single_use_token() {
    let server = Server::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["token", "--secret", SECRET, "--sub", "cli", "--once"])
        .env_clear()
        .output()
        .expect("run roomcast token");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().expect("a token line").trim();
    assert_eq!(connects(&server, token), Ok(()));
    assert_revoked(connects(&server, token));
}

#[test]
fn exp_is_bounded_and_a_far_exp_survives_a_restart() {
    let server = Server::start(&["--admin-key", ADMIN_KEY]);
    for exp in ["18446744073709551615", "9223372036854775808", "253402300800", "-1", "soon"] {
        let (status, body) = call(server.addr, "DELETE", &format!("/api/v1/tokens/far?exp={exp}"), ADMIN_KEY, "");
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "exp={exp}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.starts_with("exp:")), "{body}");
    }
    let (status, body) = call(server.addr, "DELETE", "/api/v1/tokens/far?exp=253402300799", ADMIN_KEY, "");
    assert_eq!((status, body["expires_s"].as_u64()), (200, Some(253_402_300_799)), "{body}");
    let token = minted("far", false);
    assert_revoked(connects(&server, &token));
    let server = Server::start_in(server.stop(), &["--admin-key", ADMIN_KEY]);
    assert_revoked(connects(&server, &token));
}

#[test]
fn a_full_revocation_set_refuses_revocations_and_single_use_tokens_and_counts_them() {
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--set", "limits.revoked_tokens_max=2"]);
    for jti in ["r1", "r2"] {
        assert_eq!(call(server.addr, "DELETE", &format!("/api/v1/tokens/{jti}"), ADMIN_KEY, "").0, 200);
    }
    let (status, body) = call(server.addr, "DELETE", "/api/v1/tokens/r3", ADMIN_KEY, "");
    assert_eq!((status, body["error"].as_str()), (507, Some("revocations_full")), "{body}");
    assert_eq!(connects(&server, &minted("r3", false)), Ok(()), "r3 was not revoked");
    assert_eq!(call(server.addr, "DELETE", "/api/v1/tokens/r1", ADMIN_KEY, "").0, 200, "revoking again needs no room");
    // A single-use token cannot be spent, so it is not accepted at all.
    let (status, body) = connects(&server, &minted("once-full", true)).expect_err("refused");
    assert_eq!(status, 503);
    assert!(body.contains("revocations_full"), "{body}");
    let text = metrics(&server);
    assert_eq!(metric(&text, "roomcast_revoked_tokens"), 2.0);
    assert_eq!(metric(&text, "roomcast_revoked_tokens_max"), 2.0);
    assert_eq!(metric(&text, "roomcast_revocations_refused_total{reason=\"revoked\"}"), 1.0);
    assert_eq!(metric(&text, "roomcast_revocations_refused_total{reason=\"used\"}"), 1.0);
}

#[test]
fn a_revocation_the_full_store_queue_could_not_take_is_written_later_and_survives_a_restart() {
    let args = [
        "--admin-key",
        ADMIN_KEY,
        "--set",
        "store.queue_max=2",
        "--set",
        "store.busy_timeout_ms=600000",
        "--set",
        "limits.rate_burst=1000",
    ];
    let server = Server::start(&args);
    let (mut alice, _) = server.join("q", "alice");
    settle_store(&mut alice);
    // The store waits for the lock while chat fills its queue.
    let lock = lock_database(&server);
    alice.send(json!({"type": "chat.send", "text": "stuck", "ref": "stuck"}));
    await_store_stuck(&server);
    for n in 0.. {
        alice.send(json!({"type": "chat.send", "text": "fill", "ref": n}));
        alice.send(json!({"type": "ping", "ref": "p"}));
        let mut refused = false;
        loop {
            let frame = alice.next_json();
            match frame["type"].as_str() {
                Some("error") => refused = frame["code"] == "store_overloaded",
                Some("pong") => break,
                _ => {}
            }
        }
        if refused {
            break;
        }
        assert!(n < 10, "the queue never filled");
    }
    let (status, _) = call(server.addr, "DELETE", "/api/v1/tokens/deferred", ADMIN_KEY, "");
    assert_eq!(status, 200, "accepted: the acceptor's set holds it");
    let token = minted("deferred", false);
    assert_revoked(connects(&server, &token));
    let text = metrics(&server);
    assert_eq!(metric(&text, "roomcast_revocations_unpersisted"), 1.0, "{text}");
    assert_eq!(metric(&text, "roomcast_revocations_deferred_total"), 1.0);

    lock.execute_batch("COMMIT").expect("release the lock");
    // The acceptor offers it again at least once a second; no event says when.
    let started = std::time::Instant::now();
    while metric(&metrics(&server), "roomcast_revocations_unpersisted") > 0.0 {
        assert!(started.elapsed() < PATIENCE, "the revocation was never queued to the store");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop((alice, lock));
    let server = Server::start_in(server.stop(), &args);
    assert_revoked(connects(&server, &token));
}
