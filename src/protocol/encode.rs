//! Server frames out: every JSON message roomcast sends, written straight
//! into a `FrameBuilder`'s buffer once per message, whatever the number of
//! recipients. Bytes are written by hand (no serde) so that the output is
//! fixed to the byte and the hot `message` encoder allocates nothing;
//! values encoded into many frames (a user id) are escaped once by the
//! caller (`json_str`) and passed as JSON literals.
//!
//! The room decides what a presence or meeting frame says and passes it as
//! plain values (`PeerJson`, `WelcomeHead`, `Welcome`, iterators over its
//! members); the bytes are written here.

use crate::ids::{ConnId, ShardId};

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xF) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `s` as a JSON string literal, for values encoded into many frames.
pub fn json_str(s: &str) -> Box<str> {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    // push_json_str copies valid UTF-8 and adds ASCII only.
    String::from_utf8(out).unwrap_or_default().into_boxed_str()
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `,"ref":R` when the request carried a ref.
fn push_ref(out: &mut Vec<u8>, reference: Option<&[u8]>) {
    if let Some(raw) = reference {
        out.extend_from_slice(b",\"ref\":");
        out.extend_from_slice(raw);
    }
}

/// `{"type":"ack","ref":R[,"seq":N]}`
pub fn encode_ack(out: &mut Vec<u8>, reference: Option<&[u8]>, seq: Option<u64>) {
    out.extend_from_slice(b"{\"type\":\"ack\"");
    push_ref(out, reference);
    if let Some(seq) = seq {
        out.extend_from_slice(b",\"seq\":");
        push_u64(out, seq);
    }
    out.push(b'}');
}

/// `{"type":"left","room":R[,"seq":N]}`: the answer to a `leave` sent
/// without `ref` (with one, the answer is the `ack`).
pub fn encode_left(out: &mut Vec<u8>, room: &str, seq: Option<u64>) {
    out.extend_from_slice(b"{\"type\":\"left\",\"room\":");
    push_json_str(out, room);
    if let Some(seq) = seq {
        out.extend_from_slice(b",\"seq\":");
        push_u64(out, seq);
    }
    out.push(b'}');
}

/// `{"type":"error","ref":R,"code":C,"message":M}`
pub fn encode_error(out: &mut Vec<u8>, reference: Option<&[u8]>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"type\":\"error\"");
    push_ref(out, reference);
    out.extend_from_slice(b",\"code\":");
    push_json_str(out, code);
    out.extend_from_slice(b",\"message\":");
    push_json_str(out, message);
    out.push(b'}');
}

/// `{"type":K,"ref":R[,"room":ROOM],"data":D}`: the answer to `echo` and
/// what a custom handler's `reply` and `send_to_conn` send; `data` is one
/// JSON value, copied as given.
pub fn encode_typed(out: &mut Vec<u8>, kind: &str, reference: Option<&[u8]>, room: Option<&str>, data: &[u8]) {
    out.extend_from_slice(b"{\"type\":");
    push_json_str(out, kind);
    push_ref(out, reference);
    if let Some(room) = room {
        out.extend_from_slice(b",\"room\":");
        push_json_str(out, room);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

/// What `status` reports about the asking connection.
#[derive(Debug)]
pub struct Status<'a> {
    pub conn: &'a str,
    pub user: &'a str,
    pub rooms: &'a [&'a str],
    pub shard: u32,
    pub version: &'a str,
    pub uptime_s: u64,
}

/// `{"type":"status","ref":R,"conn":C,"user":U,"rooms":[…],"shard":N,"version":V,"uptime_s":S}`
pub fn encode_status(out: &mut Vec<u8>, reference: Option<&[u8]>, status: &Status<'_>) {
    out.extend_from_slice(b"{\"type\":\"status\"");
    push_ref(out, reference);
    out.extend_from_slice(b",\"conn\":");
    push_json_str(out, status.conn);
    out.extend_from_slice(b",\"user\":");
    push_json_str(out, status.user);
    out.extend_from_slice(b",\"rooms\":[");
    for (i, room) in status.rooms.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, room);
    }
    out.extend_from_slice(b"],\"shard\":");
    push_u64(out, u64::from(status.shard));
    out.extend_from_slice(b",\"version\":");
    push_json_str(out, status.version);
    out.extend_from_slice(b",\"uptime_s\":");
    push_u64(out, status.uptime_s);
    out.push(b'}');
}

/// `{"type":"pong","ref":R}`
pub fn encode_pong(out: &mut Vec<u8>, reference: Option<&[u8]>) {
    out.extend_from_slice(b"{\"type\":\"pong\"");
    push_ref(out, reference);
    out.push(b'}');
}

/// `{"type":"message","room":ROOM,"from":USER,"seq":N,"data":DATA}`;
/// `from_json` is already a JSON literal, `data` the publisher's bytes.
pub fn encode_message(out: &mut Vec<u8>, room: &str, from_json: &str, seq: u64, data: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"message\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"from\":");
    out.extend_from_slice(from_json.as_bytes());
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, seq);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

/// A member as presence frames show it.
#[derive(Debug, Clone, Copy)]
pub struct PeerJson<'a> {
    pub conn: ConnId,
    /// The user id, already a JSON literal (`json_str`).
    pub user_json: &'a str,
    pub name: Option<&'a str>,
}

impl PeerJson<'_> {
    /// `{"conn":"…","user":…,"name":"…"}` (name only when set).
    pub fn push(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"conn\":\"");
        out.extend_from_slice(self.conn.to_string().as_bytes());
        out.extend_from_slice(b"\",\"user\":");
        out.extend_from_slice(self.user_json.as_bytes());
        if let Some(name) = self.name {
            out.extend_from_slice(b",\"name\":");
            push_json_str(out, name);
        }
        out.push(b'}');
    }

    /// `{"conn":…,"user":…,"name":…,"role":ROLE}`
    fn push_with_role(&self, out: &mut Vec<u8>, role: &str) {
        self.push(out);
        out.pop(); // the closing brace
        out.extend_from_slice(b",\"role\":\"");
        out.extend_from_slice(role.as_bytes());
        out.extend_from_slice(b"\"}");
    }
}

/// `{"type":"direct","from":U,"data":D}`; `from_json` is a JSON literal.
pub fn encode_direct(out: &mut Vec<u8>, from_json: &str, data: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"direct\",\"from\":");
    out.extend_from_slice(from_json.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

/// `{"type":KIND,"room":R,"member":{…},"member_count":K}` (`member_joined`, `member_left`).
pub fn encode_presence(out: &mut Vec<u8>, kind: &str, room: &str, peer: PeerJson<'_>, member_count: u64) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"member\":");
    peer.push(out);
    out.extend_from_slice(b",\"member_count\":");
    push_u64(out, member_count);
    out.push(b'}');
}

/// A `chat` event as sent and kept in histories.
#[derive(Debug, Clone, Copy)]
pub struct Chat<'a> {
    pub room: &'a str,
    pub id: &'a str,
    /// The author's user id, already a JSON literal.
    pub from_json: &'a str,
    pub name: Option<&'a str>,
    pub text: &'a str,
    pub ts_ms: u64,
    pub seq: u64,
    pub epoch: &'a str,
}

/// `{"type":"chat","room":R,"id":I,"from":U[,"name":N],"text":T,"ts":MS,"seq":N,"epoch":E}`
pub fn encode_chat(out: &mut Vec<u8>, chat: &Chat<'_>) {
    out.extend_from_slice(b"{\"type\":\"chat\",\"room\":");
    push_json_str(out, chat.room);
    out.extend_from_slice(b",\"id\":");
    push_json_str(out, chat.id);
    out.extend_from_slice(b",\"from\":");
    out.extend_from_slice(chat.from_json.as_bytes());
    if let Some(name) = chat.name {
        out.extend_from_slice(b",\"name\":");
        push_json_str(out, name);
    }
    out.extend_from_slice(b",\"text\":");
    push_json_str(out, chat.text);
    out.extend_from_slice(b",\"ts\":");
    push_u64(out, chat.ts_ms);
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, chat.seq);
    out.extend_from_slice(b",\"epoch\":");
    push_json_str(out, chat.epoch);
    out.push(b'}');
}

/// `{"type":"chat_deleted","room":R,"id":I,"by":U}`; `by_json` is a JSON literal.
pub fn encode_chat_deleted(out: &mut Vec<u8>, room: &str, id: &str, by_json: &str) {
    out.extend_from_slice(b"{\"type\":\"chat_deleted\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"id\":");
    push_json_str(out, id);
    out.extend_from_slice(b",\"by\":");
    out.extend_from_slice(by_json.as_bytes());
    out.push(b'}');
}

/// `{"type":"chat_history","room":R,"messages":[…]}`, plus `"loading":true`
/// while the stored history is on its way; `messages` are `chat` events as sent.
pub fn encode_history<'m>(out: &mut Vec<u8>, room: &str, messages: impl Iterator<Item = &'m [u8]>, loading: bool) {
    out.extend_from_slice(b"{\"type\":\"chat_history\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"messages\":");
    push_raw_list(out, messages);
    if loading {
        out.extend_from_slice(b",\"loading\":true");
    }
    out.push(b'}');
}

/// `{"type":"hands","room":R,"queue":[U…]}`
pub fn encode_hands(out: &mut Vec<u8>, room: &str, queue: &[Box<str>]) {
    out.extend_from_slice(b"{\"type\":\"hands\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"queue\":");
    push_str_list(out, queue);
    out.push(b'}');
}

/// `{"type":KIND,"room":R,"user":U,"state"|"role":V}`: `role` for kind
/// `role`, `state` for the others (`screenshare`).
pub fn encode_user_event(out: &mut Vec<u8>, kind: &str, room: &str, user: &str, value: &str) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"user\":");
    push_json_str(out, user);
    out.extend_from_slice(if kind == "role" { b",\"role\":" } else { b",\"state\":" });
    push_json_str(out, value);
    out.push(b'}');
}

/// `{"type":"lobby","room":R,"event":E,"member":{…}}`, for hosts.
pub fn encode_lobby_event(out: &mut Vec<u8>, room: &str, event: &str, peer: PeerJson<'_>) {
    out.extend_from_slice(b"{\"type\":\"lobby\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"event\":\"");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\",\"member\":");
    peer.push(out);
    out.push(b'}');
}

/// `{"type":"lobby_state","room":R,"enabled":B}`
pub fn encode_lobby_state(out: &mut Vec<u8>, room: &str, enabled: bool) {
    out.extend_from_slice(b"{\"type\":\"lobby_state\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(if enabled { b",\"enabled\":true}" } else { b",\"enabled\":false}" });
}

/// `{"type":"signal","room":R,"from":U,"data":D}`; `from_json` is a JSON literal.
pub fn encode_signal(out: &mut Vec<u8>, room: &str, from_json: &str, data: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"signal\",\"room\":");
    push_json_str(out, room);
    out.extend_from_slice(b",\"from\":");
    out.extend_from_slice(from_json.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

/// Who a `welcome` is for: the fields every welcome starts with.
#[derive(Debug, Clone, Copy)]
pub struct WelcomeHead<'a> {
    pub conn: ConnId,
    pub room: &'a str,
    pub shard: ShardId,
    /// The user id, already a JSON literal.
    pub user_json: &'a str,
    pub role: &'a str,
}

impl WelcomeHead<'_> {
    /// `{"type":"welcome","conn":C,"room":R,"shard":S,"user":U,"role":ROLE` (open).
    fn push(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"welcome\",\"conn\":\"");
        out.extend_from_slice(self.conn.to_string().as_bytes());
        out.extend_from_slice(b"\",\"room\":");
        push_json_str(out, self.room);
        out.extend_from_slice(b",\"shard\":");
        push_u64(out, u64::from(self.shard));
        out.extend_from_slice(b",\"user\":");
        out.extend_from_slice(self.user_json.as_bytes());
        out.extend_from_slice(b",\"role\":\"");
        out.extend_from_slice(self.role.as_bytes());
        out.push(b'"');
    }
}

/// The welcome of a lobby member: its own admission state and nothing else.
pub fn encode_waiting_welcome(out: &mut Vec<u8>, head: &WelcomeHead<'_>) {
    head.push(out);
    out.extend_from_slice(b",\"lobby\":true}");
}

/// What the full welcome of an admitted member says after its head; the
/// lists are already cut to what the room sends.
#[derive(Debug, Clone, Copy)]
pub struct Welcome<'a> {
    pub seq: u64,
    pub epoch: &'a str,
    /// Admitted members.
    pub member_count: u64,
    pub lobby: bool,
    pub hands: &'a [Box<str>],
    pub sharers: &'a [Box<str>],
    /// The stored chat history is on its way (`history_loading`).
    pub history_loading: bool,
    /// Set on a join with `since`: whether the missed messages follow.
    pub recovered: Option<bool>,
}

/// The full welcome: the other admitted `members` with their roles, recent
/// chat (`history`, `chat` events as sent) and, for hosts, the lobby (`waiting`).
pub fn encode_welcome<'m>(
    out: &mut Vec<u8>,
    head: &WelcomeHead<'_>,
    welcome: &Welcome<'_>,
    members: impl Iterator<Item = (PeerJson<'m>, &'m str)>,
    history: impl Iterator<Item = &'m [u8]>,
    waiting: Option<impl Iterator<Item = PeerJson<'m>>>,
) {
    head.push(out);
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, welcome.seq);
    out.extend_from_slice(b",\"epoch\":");
    push_json_str(out, welcome.epoch);
    out.extend_from_slice(b",\"member_count\":");
    push_u64(out, welcome.member_count);
    out.extend_from_slice(b",\"members\":[");
    for (i, (peer, role)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        peer.push_with_role(out, role);
    }
    out.extend_from_slice(b"],\"lobby\":");
    out.extend_from_slice(if welcome.lobby { b"true" } else { b"false" });
    out.extend_from_slice(b",\"hands\":");
    push_str_list(out, welcome.hands);
    out.extend_from_slice(b",\"sharers\":");
    push_str_list(out, welcome.sharers);
    out.extend_from_slice(b",\"history\":");
    push_raw_list(out, history);
    if welcome.history_loading {
        out.extend_from_slice(b",\"history_loading\":true");
    }
    if let Some(recovered) = welcome.recovered {
        out.extend_from_slice(if recovered { b",\"recovered\":true" } else { b",\"recovered\":false" });
    }
    if let Some(waiting) = waiting {
        out.extend_from_slice(b",\"waiting\":[");
        for (i, peer) in waiting.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            peer.push(out);
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// `["a","b"]`
fn push_str_list(out: &mut Vec<u8>, items: &[Box<str>]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, item);
    }
    out.push(b']');
}

/// A JSON array of values that are already JSON.
fn push_raw_list<'m>(out: &mut Vec<u8>, items: impl Iterator<Item = &'m [u8]>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
}

/// `{"type":"cluster","state":"degraded"}` when the node lost its link to
/// the cluster, `{"type":"cluster","state":"restored","recovered":false}`
/// when it is back (messages of the outage may be missing).
pub fn encode_cluster_state(out: &mut Vec<u8>, up: bool) {
    out.extend_from_slice(if up {
        b"{\"type\":\"cluster\",\"state\":\"restored\",\"recovered\":false}".as_slice()
    } else {
        b"{\"type\":\"cluster\",\"state\":\"degraded\"}".as_slice()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(&*json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
        let mut out = Vec::new();
        for n in [0, 9, 10, 123456789, u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn encoders_produce_valid_json() {
        let mut out = Vec::new();
        encode_message(&mut out, "demo", "\"al\\\"ice\"", 42, br#"{"t":1}"#);
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(value["from"], "al\"ice");
        assert_eq!(value["seq"], 42);
        out.clear();
        encode_error(&mut out, Some(b"\"r1\""), "rate_limited", "slow \"down\"");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(value["ref"], "r1");
        assert_eq!(value["message"], "slow \"down\"");
    }
}
