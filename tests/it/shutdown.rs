//! SIGTERM: every connection gets Close 1001 and the process exits cleanly.

use super::harness::Server;

#[test]
fn sigterm_closes_every_connection_with_1001_and_exits() {
    let server = Server::start(&["--shards", "4"]);
    let mut clients: Vec<_> = (0..6).map(|i| server.join(&format!("bye-{i}"), "u").0).collect();
    let status = server.terminate();
    for client in &mut clients {
        assert_eq!(client.expect_close(), (1001, "server shutting down".into()));
    }
    assert!(status.success(), "exit status {status:?}");
}
