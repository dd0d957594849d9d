//! Reading a client's frames until the one a test waits for, with what came
//! before it in the failure message; and `Pumped`, a client read on a
//! thread of its own, for tests where a member must keep reading while the
//! test does something else (a Redis restart under a stream of messages).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

use crate::harness::{Client, PATIENCE};

/// What a connection gave: a text frame (as JSON), or its end.
#[derive(Debug)]
pub enum Event {
    Frame(Value),
    Closed(u16, String),
    Failed(String),
}

/// The next event of `client` (pings are answered by tungstenite).
pub fn next_event(client: &mut Client) -> Event {
    loop {
        match client.ws.read() {
            Ok(Message::Text(text)) => {
                return Event::Frame(serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")));
            }
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                return Event::Closed(code.into(), reason.to_string());
            }
            Ok(Message::Close(None)) => return Event::Closed(1005, String::new()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return Event::Failed(format!(
                    "no frame before the read timeout ({PATIENCE:?} unless the test set another)"
                ));
            }
            Err(e) => return Event::Failed(e.to_string()),
        }
    }
}

/// Reads `who`'s frames until one satisfies `pred`, and returns it. A close
/// or a read timeout (`PATIENCE`) on the way fails the test, naming `what`
/// was awaited and the last frames seen instead.
pub fn wait_for(client: &mut Client, who: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut seen = Vec::new();
    loop {
        match next_event(client) {
            Event::Frame(frame) if pred(&frame) => return frame,
            Event::Frame(frame) => remember(&mut seen, frame),
            other => panic!("{who}: {other:?} while waiting for {what}; before it: {}", show(&seen)),
        }
    }
}

/// Reads `who`'s frames until a frame of type `kind`.
pub fn next_of(client: &mut Client, who: &str, kind: &str) -> Value {
    wait_for(client, who, kind, |frame| frame["type"] == kind)
}

/// Reads `who`'s frames until its Close; returns the code and reason.
pub fn wait_for_close(client: &mut Client, who: &str) -> (u16, String) {
    let mut seen = Vec::new();
    loop {
        match next_event(client) {
            Event::Closed(code, reason) => return (code, reason),
            Event::Frame(frame) => remember(&mut seen, frame),
            Event::Failed(e) => panic!("{who}: {e} while waiting for a Close; before it: {}", show(&seen)),
        }
    }
}

/// Sends `request` with `ref` = `reference` and reads until its `ack` or
/// `error`; returns it and every other frame seen on the way.
pub fn call(client: &mut Client, mut request: Value, reference: u64) -> (Value, Vec<Value>) {
    request["ref"] = json!(reference);
    client.send(request);
    let mut others = Vec::new();
    loop {
        match next_event(client) {
            Event::Frame(frame)
                if frame["ref"] == json!(reference) && (frame["type"] == "ack" || frame["type"] == "error") =>
            {
                return (frame, others);
            }
            Event::Frame(frame) => others.push(frame),
            other => panic!("{other:?} while waiting for the answer to ref {reference}; before it: {others:?}"),
        }
    }
}

/// As `call`, and the answer must be an `ack`.
pub fn acked(client: &mut Client, request: Value, reference: u64) -> Value {
    let what = request.to_string();
    let (reply, _) = call(client, request, reference);
    assert_eq!(reply["type"], "ack", "{what} answered {reply}");
    reply
}

fn remember(seen: &mut Vec<Value>, frame: Value) {
    if seen.len() == 10 {
        seen.remove(0);
    }
    seen.push(frame);
}

fn show(seen: &[Value]) -> String {
    if seen.is_empty() {
        return "nothing".into();
    }
    seen.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")
}

/// A client read by a thread of its own: every frame goes to a channel,
/// and frames to send are taken from another between reads (the socket's
/// read timeout is short, so a send waits at most that long).
pub struct Pumped {
    pub who: String,
    out: Sender<Value>,
    events: Receiver<Event>,
}

/// How long one read waits before the pump looks for frames to send.
const PUMP_READ_TIMEOUT: Duration = Duration::from_millis(20);

impl Pumped {
    pub fn new(who: &str, mut client: Client) -> Pumped {
        client.ws.get_mut().set_read_timeout(Some(PUMP_READ_TIMEOUT)).expect("read timeout");
        let (out, to_send) = channel::<Value>();
        let (events_tx, events) = channel();
        std::thread::spawn(move || pump(client, &to_send, &events_tx));
        Pumped { who: who.to_string(), out, events }
    }

    pub fn send(&self, frame: Value) {
        self.out.send(frame).expect("the pump thread is running");
    }

    /// Waits for a frame satisfying `pred` and returns it; the connection's
    /// end, or `PATIENCE` without one, fails the test.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Event::Frame(frame)) if pred(&frame) => return frame,
                Ok(Event::Frame(frame)) => remember(&mut seen, frame),
                Ok(other) => panic!("{}: {other:?} while waiting for {what}; before it: {}", self.who, show(&seen)),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("{}: no {what} within {PATIENCE:?}; last frames: {}", self.who, show(&seen))
                }
            }
        }
    }
}

fn pump(mut client: Client, to_send: &Receiver<Value>, events: &Sender<Event>) {
    loop {
        loop {
            match to_send.try_recv() {
                Ok(frame) => {
                    if let Err(e) = client.ws.send(Message::text(frame.to_string())) {
                        let _ = events.send(Event::Failed(format!("send: {e}")));
                        return;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let event = match client.ws.read() {
            Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                Ok(frame) => Event::Frame(frame),
                Err(e) => Event::Failed(format!("not JSON ({e}): {text}")),
            },
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => Event::Closed(code.into(), reason.to_string()),
            Ok(Message::Close(None)) => Event::Closed(1005, String::new()),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                continue;
            }
            Err(e) => Event::Failed(e.to_string()),
        };
        let last = !matches!(event, Event::Frame(_));
        if events.send(event).is_err() || last {
            return;
        }
    }
}
