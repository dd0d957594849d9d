//! The HTTP API beside the WebSocket, served by the acceptor: routing, key
//! checks, request parsing and response bodies. Nothing here does I/O or
//! blocks; requests that need shard data come out as an [`Outcome::Scatter`]
//! that the acceptor sends to the shards, and [`finish`] turns the gathered
//! replies into the response.
//!
//! Every error is a JSON body `{"error":CODE,"message":TEXT}`: 404 unknown
//! path, 405 wrong method (with `Allow`), 400 malformed input naming the
//! field, 401 bad or missing key (one body for unknown and wrong keys), 411
//! no `Content-Length`, 413 body over `api.body_bytes_max`, 503 draining,
//! busy or a shard that did not answer in time, 507 a revocation while the
//! revoked-token set is full. The OpenAPI 3.1 document of
//! all of it is `src/openapi.json`, served at `GET /api/v1/openapi.json`.
//!
//! The files, one role each: `route` (method and path to [`Endpoint`]),
//! `access` (API keys), `request` (reading bodies and query parameters),
//! `mint` and `revoke` (tokens), `send` (admin sends), `usage` and `time`
//! (usage reports and their dates), `registry` (the room registry's rooms),
//! `stats`, `gather` (shard replies into a response), and `demo` (the
//! meeting page, `GET /`). This file holds
//! [`ApiError`], what a handler gets and returns, and the dispatch.

use serde_json::{Value, json};

use crate::config::Config;
use crate::http::{self, RequestHead};
use crate::ids::{self, RoomKey, ShardId};
use crate::metrics::{self, AcceptorMetrics, Gauges, LimitKind, ShardMetrics};
use crate::shard::AdminQuery;
use crate::store::QueryRequest;

mod access;
mod demo;
mod gather;
mod mint;
mod registry;
mod request;
mod revoke;
mod route;
mod send;
mod stats;
mod time;
mod usage;

pub use access::authorize;
pub use gather::{Gather, finish};
pub use registry::{RegistryOp, registry_change};
pub use request::body_length;
pub use route::{Access, Endpoint, route};
pub use time::{format_day, parse_day};

use registry::{registry_id, room_record};
use request::{limit_param, optional_room, parse_object, required_str, scoped_tenant, tenant_of, tenant_param};

/// The OpenAPI document, served as is.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// A refusal, as status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub extra_headers: &'static str,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra_headers: "" }
    }

    fn bad_field(field: &str, problem: &str) -> ApiError {
        ApiError::new(400, "bad_request", format!("{field}: {problem}"))
    }

    fn method(allow: &'static str) -> ApiError {
        ApiError { extra_headers: allow, ..ApiError::new(405, "method_not_allowed", "method not allowed here") }
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            extra_headers: "WWW-Authenticate: Bearer\r\n",
            ..ApiError::new(401, "unauthorized", "missing or invalid API key in Authorization: Bearer")
        }
    }

    pub fn response(&self) -> Vec<u8> {
        http::error_response(self.status, self.code, &self.message, self.extra_headers)
    }
}

/// What the acceptor knows when it answers a request.
pub struct Context<'a> {
    pub config: &'a Config,
    /// HS secret tokens are minted with; `None` in dev mode.
    pub mint_secret: Option<&'a [u8]>,
    pub shards: &'a [ShardMetrics],
    pub acceptor: &'a AcceptorMetrics,
    pub gauges: Gauges,
    /// `Some(tenant)` when a tenant key was checked.
    pub tenant: Option<String>,
    pub now_unix_s: u64,
    /// The registry holds `rooms.registry_max` rooms: a create gets 507.
    pub registry_full: bool,
    /// Registry changes wait for a shard that is behind: writes get 503.
    pub registry_behind: bool,
    /// Set by a handler that hit a limit without refusing (a capped `ttl`);
    /// the acceptor counts it.
    pub limit_hit: std::cell::Cell<Option<LimitKind>>,
}

/// Which shards a scatter goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    All,
    One(ShardId),
    /// None of this node's shards: another node of the cluster (a
    /// connection id naming that node).
    Node(u8),
}

/// What to do with a request.
#[derive(Debug)]
pub enum Outcome {
    Respond(u16, Vec<u8>),
    Scatter {
        query: AdminQuery,
        targets: Targets,
        gather: Gather,
    },
    /// Stop taking WebSocket connections, then scatter `Drain`.
    StartDrain,
    /// Ask the store thread; its one reply is gathered like a shard's.
    Store {
        request: QueryRequest,
        gather: Gather,
    },
    /// Add `jti` to the acceptor's revoked set until `expires_s`, then send `response`.
    Revoke {
        jti: String,
        expires_s: u64,
        response: Vec<u8>,
    },
}

fn json_ok(status: u16, value: &Value) -> Outcome {
    Outcome::Respond(status, http::response(status, "application/json", "", value.to_string().as_bytes()))
}

/// Answers `endpoint` or says what to ask the shards.
pub fn handle(ctx: &Context<'_>, endpoint: &Endpoint, head: &RequestHead, body: &[u8]) -> Result<Outcome, ApiError> {
    let shards = ctx.shards.len();
    match endpoint {
        Endpoint::Healthz => Ok(json_ok(200, &json!({ "status": "ok" }))),
        Endpoint::Readyz if ctx.gauges.draining => Err(ApiError::new(503, "draining", "the server is draining")),
        Endpoint::Readyz if ctx.gauges.cluster.as_ref().is_some_and(|c| !c.stats.link_up) => Err(ApiError::new(
            503,
            "cluster_degraded",
            "the link to Redis is down: rooms that span nodes cannot reach the other nodes",
        )),
        Endpoint::Readyz => Ok(json_ok(200, &json!({ "status": "ready" }))),
        Endpoint::Metrics => {
            let text = metrics::render_prometheus(ctx.shards, ctx.acceptor, &ctx.gauges);
            Ok(Outcome::Respond(200, http::response(200, "text/plain; version=0.0.4", "", text.as_bytes())))
        }
        Endpoint::OpenApi => {
            Ok(Outcome::Respond(200, http::response(200, "application/json", "", OPENAPI_JSON.as_bytes())))
        }
        Endpoint::Stats => Ok(json_ok(200, &stats::stats(ctx))),
        Endpoint::Demo(asset) if ctx.config.http.demo_page => Ok(Outcome::Respond(200, asset.response())),
        Endpoint::Demo(_) => Err(ApiError::new(404, "not_found", "unknown path")),
        Endpoint::Tokens => mint::mint(ctx, body),
        Endpoint::RevokeToken(jti) => revoke::revoke(ctx, head, jti),
        Endpoint::Send => send::send(head, body, shards),
        Endpoint::Kick => {
            let doc = parse_object(body)?;
            let user = required_str(&doc, "user")?;
            let room = optional_room(&doc, "room")?;
            let tenant = tenant_of(&doc, head)?;
            Ok(Outcome::Scatter {
                query: AdminQuery::Kick { tenant, user, room },
                targets: Targets::All,
                gather: Gather::Kicked,
            })
        }
        Endpoint::Drain => {
            if !body.is_empty() {
                parse_object(body)?;
            }
            Ok(Outcome::StartDrain)
        }
        Endpoint::LiveRooms => {
            let limit = limit_param(head)?;
            let cursor = head.query_param("cursor").filter(|c| !c.is_empty());
            let query = AdminQuery::Rooms {
                tenant: tenant_param(head)?,
                prefix: head.query_param("prefix").unwrap_or_default(),
                after: cursor,
                // One more than asked tells whether there is a next page.
                limit: limit + 1,
            };
            Ok(Outcome::Scatter { query, targets: Targets::All, gather: Gather::Rooms { limit } })
        }
        Endpoint::LiveRoom(room) | Endpoint::CloseRoom(room) => {
            if !ids::is_valid_room_id(room) {
                return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
            }
            let tenant = tenant_param(head)?;
            if let Endpoint::CloseRoom(_) = endpoint {
                let query = AdminQuery::CloseRoom { key: RoomKey::new(&tenant, room) };
                return Ok(Outcome::Scatter {
                    query,
                    targets: Targets::All,
                    gather: Gather::Closed { announced: false },
                });
            }
            let query = AdminQuery::Connections { tenant, room: Some(room.clone()), user: None, limit: usize::MAX };
            Ok(Outcome::Scatter { query, targets: Targets::All, gather: Gather::Room { room: room.clone() } })
        }
        Endpoint::LiveConnections => {
            let room = head.query_param("room");
            if room.as_deref().is_some_and(|r| !ids::is_valid_room_id(r)) {
                return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
            }
            let query = AdminQuery::Connections {
                tenant: tenant_param(head)?,
                room,
                user: head.query_param("user").filter(|u| !u.is_empty()),
                limit: limit_param(head)?,
            };
            Ok(Outcome::Scatter { query, targets: Targets::All, gather: Gather::Connections })
        }
        Endpoint::Usage => usage::usage(ctx, head, None),
        Endpoint::RoomUsage(room) => usage::usage(ctx, head, Some(room)),
        Endpoint::ListRooms => {
            let limit = limit_param(head)?;
            let after = head.query_param("cursor").filter(|c| !c.is_empty());
            // One more than asked tells whether there is a next page.
            let request = QueryRequest::RoomList { tenant: scoped_tenant(ctx, head)?, after, limit: limit + 1 };
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::List { limit }) })
        }
        Endpoint::CreateRoom | Endpoint::PutRoom(_) | Endpoint::DeleteRoom(_) if ctx.registry_behind => {
            Err(ApiError::new(503, "busy", "a shard has not yet taken earlier registry changes; try again"))
        }
        Endpoint::CreateRoom if ctx.registry_full => {
            Err(ApiError::new(507, "registry_full", "the registry holds rooms.registry_max rooms"))
        }
        Endpoint::CreateRoom => {
            let doc = parse_object(body)?;
            let id = optional_room(&doc, "id")?.ok_or_else(|| ApiError::bad_field("id", "required"))?;
            let room = room_record(&doc, scoped_tenant(ctx, head)?, id)?;
            let request = QueryRequest::RoomCreate(Box::new(room));
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Create) })
        }
        Endpoint::PutRoom(id) => {
            let id = registry_id(id)?;
            let doc = parse_object(body)?;
            // An `id` in the body is ignored: the path names the room.
            let room = room_record(&doc, scoped_tenant(ctx, head)?, id)?;
            let request = QueryRequest::RoomReplace(Box::new(room));
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Replace) })
        }
        Endpoint::GetRoom(id) => {
            let request = QueryRequest::RoomGet { tenant: scoped_tenant(ctx, head)?, id: registry_id(id)? };
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Get) })
        }
        Endpoint::DeleteRoom(id) => {
            let (tenant, id) = (scoped_tenant(ctx, head)?, registry_id(id)?);
            let key = RoomKey::new(&tenant, &id);
            let request = QueryRequest::RoomDelete { tenant, id };
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Delete { key }) })
        }
    }
}
