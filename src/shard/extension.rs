//! roomcast as a library, on the shard side: custom message handlers, the
//! connection hooks, and the built-in `echo` and `status` requests.
//!
//! Handlers and hooks are plain `Fn` values behind `Arc`, registered once at
//! startup (`ServerBuilder`) and shared immutably by every shard: the shard
//! path takes no lock to reach them. A handler runs synchronously on the
//! shard thread that owns the connection's room, inside the loop iteration
//! that read the frame, so its run time is loop time: it must not block.
//! Per-room state lives in the room's entry on that shard (`room_state`),
//! so it needs no lock either.
//!
//! The hook points are single methods here (`hook_connect`, `hook_join`,
//! `hook_leave`, `hook_disconnect`), each called from one place in the shard
//! code, so anything else fed from those events (webhooks) hangs off them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::IgnoredAny;

use super::conn::{Connection, Place, Role};
use super::{RemoteMsg, ShardCore};
use crate::auth::Identity;
use crate::config::WebhookEventKind;
use crate::ids::{ConnId, RoomKey};
use crate::protocol;
use crate::refusal::{Refusal, RequestError};
use crate::room::Membership;
use crate::webhooks::{WebhookDetail, WebhookEvent};
use crate::ws::frame::Opcode;

/// A custom message handler: called with the frame and what it may do.
/// Return `Err` to refuse the frame with an `error` of your code.
pub type Handler = dyn Fn(&mut Context<'_>) -> Result<(), HandlerError> + Send + Sync;
/// `on_connect` and `on_join`: `Err` refuses the connection or the join.
pub type AdmitHook = dyn Fn(&ClientInfo<'_>, &str) -> Result<(), HookRefusal> + Send + Sync;
/// `on_leave`: a connection left a room with a `leave` request.
pub type LeaveHook = dyn Fn(&ClientInfo<'_>, &str) + Send + Sync;
/// `on_disconnect`: a connection is gone, with the WebSocket close code it
/// ended with (1006 when no Close frame was exchanged).
pub type DisconnectHook = dyn Fn(&ClientInfo<'_>, u16) + Send + Sync;

/// Everything registered on the builder, shared by all shards.
#[derive(Clone, Default)]
pub struct Extensions {
    /// Handler by frame type, with its index (the key of its room state).
    handlers: HashMap<Box<str>, (u32, Arc<Handler>)>,
    pub on_connect: Option<Arc<AdmitHook>>,
    pub on_join: Option<Arc<AdmitHook>>,
    pub on_leave: Option<Arc<LeaveHook>>,
    pub on_disconnect: Option<Arc<DisconnectHook>>,
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<&str> = self.handlers.keys().map(|k| &**k).collect();
        types.sort_unstable();
        f.debug_struct("Extensions")
            .field("handlers", &types)
            .field("on_connect", &self.on_connect.is_some())
            .field("on_join", &self.on_join.is_some())
            .field("on_leave", &self.on_leave.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .finish()
    }
}

impl Extensions {
    /// Registers `handler` for frames of type `kind`. Refused for the
    /// types roomcast reads itself (`protocol::is_builtin_type`) and for a
    /// type registered twice.
    pub fn add_handler(&mut self, kind: &str, handler: Arc<Handler>) -> Result<(), String> {
        if protocol::is_builtin_type(kind) {
            return Err(format!("handler for {kind:?}: that type is built in"));
        }
        if kind.is_empty() || self.handlers.contains_key(kind) {
            return Err(format!("handler for {kind:?}: empty or registered twice"));
        }
        let index = self.handlers.len() as u32;
        self.handlers.insert(kind.into(), (index, handler));
        Ok(())
    }
}

/// A connection, as the shard that holds it names it. Printed as
/// `shard.slot.generation`, as in logs and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef(ConnId);

impl fmt::Display for ConnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who a connection is, as its token said.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    pub conn: ConnRef,
    /// The token's `sub`.
    pub user: &'a str,
    pub name: Option<&'a str>,
    /// `""` without a `tenant` claim.
    pub tenant: &'a str,
    /// The token's `role` is `host`.
    pub host: bool,
}

/// A member's role in a room (docs/protocol.md §14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRole {
    /// In the lobby, not yet admitted.
    Waiting,
    Participant,
    /// A participant allowed to share its screen.
    Screenshare,
    Host,
}

/// A handler's refusal: sent as `{"type":"error","ref":R,"code":C,"message":M}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

impl HandlerError {
    /// `code` should be a short snake_case word clients can switch on.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> HandlerError {
        HandlerError { code: code.into(), message: message.into() }
    }
}

impl From<Refusal> for HandlerError {
    fn from(refusal: Refusal) -> HandlerError {
        HandlerError::new(refusal.code(), refusal.message())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HandlerError {}

/// A hook's refusal. A refused connect is answered, instead of the
/// WebSocket upgrade, with the HTTP `status` (403 unless set) and the body
/// `{"error":CODE,"message":M}`; a refused `join` gets an `error` frame
/// with `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRefusal {
    pub status: u16,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

impl HookRefusal {
    /// Refused with 403 (connect) or an `error` frame (join).
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> HookRefusal {
        HookRefusal { status: 403, code: code.into(), message: message.into() }
    }

    /// The HTTP status of a refused connect (a 4xx or 5xx; others read as 403).
    pub fn with_status(mut self, status: u16) -> HookRefusal {
        self.status = if (400..600).contains(&status) { status } else { 403 };
        self
    }
}

/// What a handler may do, for one frame of one connection. Every method is
/// non-blocking; frames it queues are written in this iteration's flush.
pub struct Context<'a> {
    core: &'a mut ShardCore,
    slot: usize,
    conn: ConnId,
    membership: Membership,
    owner: u32,
    kind: &'a str,
    reference: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
    /// The frame got its one answer (a reply); else a `ref` gets an `ack`.
    answered: bool,
}

impl Context<'_> {
    /// The frame's `type`.
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// The frame's top-level `data`, byte for byte as the client sent it.
    pub fn data(&self) -> Option<&[u8]> {
        self.data
    }

    /// The connection that sent the frame.
    pub fn conn(&self) -> ConnRef {
        ConnRef(self.conn)
    }

    /// Who sent it (user, name, tenant, host claim).
    pub fn sender(&self) -> ClientInfo<'_> {
        match self.core.conns.get(self.slot) {
            Some(conn) => conn_info(conn).unwrap_or_else(|| unknown_info(self.conn)),
            None => unknown_info(self.conn),
        }
    }

    /// The room the frame is about: its `room` field, else the URL room.
    pub fn room(&self) -> &str {
        self.core.rooms.key(self.membership.room_slot()).map_or("", RoomKey::room)
    }

    /// The sender's role in that room.
    pub fn role(&self) -> RoomRole {
        use crate::room::Role as R;
        match self.core.rooms.role_of(self.membership, self.conn) {
            Some(R::Host) => RoomRole::Host,
            Some(R::Screenshare) => RoomRole::Screenshare,
            Some(R::Participant) => RoomRole::Participant,
            Some(R::Waiting) | None => RoomRole::Waiting,
        }
    }

    /// The shard running the handler (it owns the room).
    pub fn shard(&self) -> usize {
        usize::from(self.core.id)
    }

    /// Answers the sender with `{"type":KIND,"ref":R,"data":DATA}` (`ref`
    /// as the frame carried it). `data` must be one JSON value.
    pub fn reply(&mut self, kind: &str, data: &[u8]) -> Result<(), HandlerError> {
        check_json(data)?;
        protocol::encode_typed(self.core.frames.begin(), kind, self.reference, None, data);
        let frame = self.core.frames.finish(Opcode::Text);
        self.core.queue(self.slot, frame);
        self.answered = true;
        Ok(())
    }

    /// Publishes `data` to the room exactly as a `publish` would: the
    /// room's next `seq`, kept for recovery, delivered on every shard with
    /// members, the sender skipped. Returns the `seq`.
    pub fn publish(&mut self, data: &[u8]) -> Result<u64, HandlerError> {
        check_json(data)?;
        let now_ms = self.core.now_unix_ms();
        let published = self.core.rooms.publish(self.membership, self.conn, None, data, now_ms);
        let seq = published.ok_or(Refusal::NotJoined)??;
        self.core.metrics.messages_published += 1;
        self.core.apply_room_outputs();
        Ok(seq)
    }

    /// Sends `data` to every connection of `user` (same tenant, any shard)
    /// as a `direct` from the sender. `Ok(false)`: the user is not connected
    /// (known only when this shard owns the user's personal room).
    pub fn send_to_user(&mut self, user: &str, data: &[u8]) -> Result<bool, HandlerError> {
        check_json(data)?;
        match self.core.direct(self.slot, user, None, data) {
            Ok(()) => Ok(true),
            Err(Refusal::UserOffline) => Ok(false),
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// Sends `{"type":KIND,"room":ROOM,"data":DATA}` to connection `to`.
    /// On this shard: `false` when it is gone. On another shard the frame
    /// goes there with the shard's next batch (`true`) and is dropped there
    /// if the connection has closed meanwhile, as every cross-shard delivery.
    pub fn send_to_conn(&mut self, to: ConnRef, kind: &str, data: &[u8]) -> Result<bool, HandlerError> {
        check_json(data)?;
        let local = to.0.shard == self.core.id;
        if (local && !self.core.is_live(to.0)) || usize::from(to.0.shard) >= self.core.settings.shards {
            return Ok(false);
        }
        let room = self.core.rooms.key(self.membership.room_slot()).map(|key| key.room().to_owned());
        protocol::encode_typed(self.core.frames.begin(), kind, None, room.as_deref(), data);
        let frame = self.core.frames.finish(Opcode::Text);
        if local {
            self.core.queue(to.0.slot as usize, frame);
        } else {
            self.core.remote.send_control(to.0.shard, RemoteMsg::Deliver { to: to.0, frame });
        }
        Ok(true)
    }

    /// This handler's state of type `T` in this room, made with
    /// `T::default()` on first use and dropped with the room. It lives on
    /// the shard that owns the room and only its thread touches it: no lock.
    pub fn room_state<T: Default + Send + 'static>(&mut self) -> Result<&mut T, HandlerError> {
        let state = self.core.rooms.extension::<T>(self.membership, self.conn, self.owner);
        state.ok_or_else(|| Refusal::NotJoined.into())
    }
}

/// A handler's `data` is copied into frames as it is: it must be JSON.
fn check_json(data: &[u8]) -> Result<(), HandlerError> {
    serde_json::from_slice::<IgnoredAny>(data)
        .map(drop)
        .map_err(|_| HandlerError::new("internal_error", "the handler's data is not one JSON value"))
}

fn conn_info(conn: &Connection) -> Option<ClientInfo<'_>> {
    let Role::Member(member) = &conn.role else { return None };
    Some(ClientInfo {
        conn: ConnRef(conn.id),
        user: member.peer.user(),
        name: member.peer.name(),
        tenant: member.tenant(),
        host: member.peer.host,
    })
}

fn unknown_info(conn: ConnId) -> ClientInfo<'static> {
    ClientInfo { conn: ConnRef(conn), user: "", name: None, tenant: "", host: false }
}

impl ShardCore {
    /// `echo`: `{"type":"echo","ref":R,"data":DATA}`, `data` byte for byte.
    pub(super) fn echo(&mut self, slot: usize, reference: Option<&[u8]>, data: &[u8]) {
        protocol::encode_typed(self.frames.begin(), "echo", reference, None, data);
        let frame = self.frames.finish(Opcode::Text);
        self.queue(slot, frame);
    }

    /// `status`: the connection's id, user, rooms, shard, version, uptime.
    pub(super) fn status(&mut self, slot: usize, reference: Option<&[u8]>) -> Result<(), Refusal> {
        let uptime_s = self.now.saturating_duration_since(self.origin).as_secs();
        let Some(conn) = self.conns.get(slot) else { return Err(Refusal::Internal) };
        let Role::Member(member) = &conn.role else { return Err(Refusal::Internal) };
        let conn_id = conn.id.to_string();
        let rooms: Vec<&str> = member.rooms.iter().map(|joined| joined.key.room()).collect();
        let status = protocol::Status {
            conn: &conn_id,
            user: member.peer.user(),
            rooms: &rooms,
            shard: u32::from(self.id),
            version: env!("CARGO_PKG_VERSION"),
            uptime_s,
        };
        protocol::encode_status(self.frames.begin(), reference, &status);
        let frame = self.frames.finish(Opcode::Text);
        self.queue(slot, frame);
        Ok(())
    }

    /// A frame of a type roomcast does not read: its registered handler
    /// runs here, on this shard, for a room this shard owns (the URL room
    /// always is; another joined room owned elsewhere is refused
    /// `room_elsewhere`). No handler: `unknown_type`.
    pub(super) fn custom(
        &mut self,
        slot: usize,
        kind: &str,
        room: Option<&str>,
        reference: Option<&[u8]>,
        data: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let settings = Arc::clone(&self.settings);
        let Some((owner, handler)) = settings.extensions.handlers.get(kind) else {
            return Err(Refusal::Request(RequestError::UnknownType));
        };
        let (conn, place) = self.place_of(slot, room)?;
        let membership = match place {
            Place::Local(membership) => membership,
            Place::Pending { .. } => return Err(Refusal::JoinPending),
            Place::Remote { .. } => {
                self.send_code(
                    slot,
                    reference,
                    "room_elsewhere",
                    "custom messages are handled only in rooms owned by the connection's shard \
                     (its URL room always is)",
                );
                return Ok(());
            }
        };
        let mut ctx =
            Context { core: self, slot, conn, membership, owner: *owner, kind, reference, data, answered: false };
        let outcome = handler(&mut ctx);
        let answered = ctx.answered;
        match outcome {
            Err(error) => self.send_code(slot, reference, &error.code, &error.message),
            Ok(()) if !answered && reference.is_some() => {
                protocol::encode_ack(self.frames.begin(), reference, None);
                let frame = self.frames.finish(Opcode::Text);
                self.queue(slot, frame);
            }
            Ok(()) => {}
        }
        Ok(())
    }

    /// An `error` frame with a code that is not one of `Refusal`'s (a
    /// handler's or a hook's).
    pub(super) fn send_code(&mut self, slot: usize, reference: Option<&[u8]>, code: &str, message: &str) {
        protocol::encode_error(self.frames.begin(), reference, code, message);
        let frame = self.frames.finish(Opcode::Text);
        self.queue(slot, frame);
    }

    /// The connect hook, for a room connection about to be admitted as `id`
    /// into its URL room `home`. Called once, from `Shard::admit`.
    pub(super) fn hook_connect(&self, id: ConnId, identity: &Identity, home: &RoomKey) -> Result<(), HookRefusal> {
        let Some(hook) = &self.settings.extensions.on_connect else { return Ok(()) };
        let info = ClientInfo {
            conn: ConnRef(id),
            user: &identity.user,
            name: identity.name.as_deref(),
            tenant: &identity.tenant,
            host: identity.host,
        };
        hook(&info, home.room())
    }

    /// The join hook, for a `join` request of connection `slot`. Called
    /// once, from `join` (the URL room is the connect hook's).
    pub(super) fn hook_join(&self, slot: usize, room: &str) -> Result<(), HookRefusal> {
        let Some(hook) = &self.settings.extensions.on_join else { return Ok(()) };
        let Some(info) = self.conns.get(slot).and_then(conn_info) else { return Ok(()) };
        hook(&info, room)
    }

    /// The leave hook, after a `leave` request of connection `slot` left `room`.
    pub(super) fn hook_leave(&self, slot: usize, room: &str) {
        let Some(hook) = &self.settings.extensions.on_leave else { return };
        if let Some(info) = self.conns.get(slot).and_then(conn_info) {
            hook(&info, room);
        }
    }

    /// The disconnect hook, for a room connection being freed (already out
    /// of the slab), with the close code it ended with. Called once, from
    /// `log_connection`.
    pub(super) fn hook_disconnect(&self, conn: &Connection, close_code: u16) {
        let Some(hook) = &self.settings.extensions.on_disconnect else { return };
        if let Some(info) = conn_info(conn) {
            hook(&info, close_code);
        }
    }
}

/// Webhook events (`src/webhooks/`): built only when an endpoint wants the
/// kind, then handed to the webhook thread without blocking.
impl ShardCore {
    fn webhook(&self, kind: WebhookEventKind, build: impl FnOnce() -> WebhookEvent) {
        if let Some(webhooks) = &self.settings.webhooks
            && webhooks.wants(kind)
        {
            webhooks.notify(build());
        }
    }

    /// A room connection opened or is being freed: `connect` or `disconnect`.
    pub(super) fn webhook_connection(&self, conn: &Connection, detail: WebhookDetail) {
        let kind = match detail {
            WebhookDetail::Connect { .. } => WebhookEventKind::Connect,
            _ => WebhookEventKind::Disconnect,
        };
        let Role::Member(member) = &conn.role else { return };
        let Some(info) = conn_info(conn) else { return };
        let home = Some(&member.home);
        self.webhook(kind, || WebhookEvent {
            ts_ms: self.now_unix_ms(),
            conn: conn.id.to_string(),
            user: info.user.into(),
            tenant: tenant_of(info.tenant),
            room: home.map(|key| key.room().into()),
            detail,
        });
    }

    /// A `join` or `leave` request of connection `slot` for `room` went through.
    pub(super) fn webhook_room(&self, slot: usize, room: &str, detail: WebhookDetail) {
        let kind = if detail == WebhookDetail::Join { WebhookEventKind::Join } else { WebhookEventKind::Leave };
        let Some(conn) = self.conns.get(slot) else { return };
        let Some(info) = conn_info(conn) else { return };
        self.webhook(kind, || WebhookEvent {
            ts_ms: self.now_unix_ms(),
            conn: conn.id.to_string(),
            user: info.user.into(),
            tenant: tenant_of(info.tenant),
            room: Some(room.into()),
            detail,
        });
    }

    /// A chat message room `key` accepted (reported on the room's owner).
    pub(super) fn webhook_chat(&self, key: &RoomKey, sender: ConnId, id: Box<str>, author: Box<str>, text: Box<str>) {
        self.webhook(WebhookEventKind::Chat, || WebhookEvent {
            ts_ms: self.now_unix_ms(),
            conn: sender.to_string(),
            user: author.into(),
            tenant: tenant_of(key.tenant()),
            room: Some(key.room().into()),
            detail: WebhookDetail::Chat { chat_id: id.into(), text: text.into() },
        });
    }
}

/// The default tenant is "" inside roomcast and absent in webhook payloads.
fn tenant_of(tenant: &str) -> Option<String> {
    (!tenant.is_empty()).then(|| tenant.to_string())
}
