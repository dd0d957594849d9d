//! roomcast's integration tests: one binary, modules under `it/`. Every test
//! starts the real `roomcast` binary on 127.0.0.1:0 and talks to it over real
//! sockets with a real WebSocket client (tungstenite).

mod it;
