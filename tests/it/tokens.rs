//! Issue 7, tokens: `DELETE /api/v1/tokens/{jti}` revokes a token (also
//! across a restart, with the store) and single-use tokens (`"use":"once"`)
//! are accepted for one handshake.

use std::net::SocketAddr;

use roomcast::auth::{MintRequest, mint_hs256};
use serde_json::Value;

use super::harness::{Client, Refused, SECRET, Server, raw_http, unix_now};

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
