//! `GET /api/v1/usage` and `GET /api/v1/rooms/{room}/usage`: the date range
//! and tenant of a usage report, asked of the store.

use crate::http::RequestHead;
use crate::ids;
use crate::store::QueryRequest;

use super::request::scoped_tenant;
use super::time::parse_day;
use super::{ApiError, Context, Gather, Outcome};

/// Days a usage report covers when `from` is not given (ending with `to`).
const USAGE_DAYS_DEFAULT: i64 = 30;
/// Most days one usage report covers: the store computes it on the thread
/// that writes chat, so a request must not make it read years of sessions.
pub const USAGE_DAYS_MAX: i64 = 366;

/// `GET /api/v1/usage` and `GET /api/v1/rooms/{room}/usage`: validates the
/// range (`from`/`to`, `YYYY-MM-DD`, inclusive, UTC; `to` defaults to today,
/// `from` to 29 days before `to`; `from` after `to` is an empty range; at
/// most `USAGE_DAYS_MAX` days) and the tenant (a tenant key reads its own;
/// the admin key names one with `?tenant=`, default ""). Only days with
/// sessions are listed.
pub(super) fn usage(ctx: &Context<'_>, head: &RequestHead, room: Option<&String>) -> Result<Outcome, ApiError> {
    if room.is_some_and(|r| !ids::is_valid_room_id(r)) {
        return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
    }
    let day = |field: &str| -> Result<Option<i64>, ApiError> {
        match head.query_param(field) {
            None => Ok(None),
            Some(text) => parse_day(&text).map(Some).ok_or_else(|| ApiError::bad_field(field, "a date YYYY-MM-DD")),
        }
    };
    let to_day = day("to")?.unwrap_or((ctx.now_unix_s / 86_400) as i64);
    let from_day = day("from")?.unwrap_or(to_day - (USAGE_DAYS_DEFAULT - 1));
    if to_day - from_day >= USAGE_DAYS_MAX {
        return Err(ApiError::bad_field("from", &format!("the range from..to covers at most {USAGE_DAYS_MAX} days")));
    }
    let tenant = scoped_tenant(ctx, head)?;
    let room = room.cloned();
    let request = QueryRequest::Usage { tenant: tenant.clone(), room: room.clone(), from_day, to_day };
    Ok(Outcome::Store { request, gather: Gather::Usage { tenant, room, from_day, to_day } })
}
