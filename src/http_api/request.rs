//! Reading a request's input: the body's length, the fields of a JSON
//! body, and query parameters (`tenant`, `limit`), each refused with a 400
//! that names the field.

use serde_json::Value;

use crate::http::RequestHead;
use crate::ids::{self, ConnId};

use super::{ApiError, Context};

/// Entries of a listing when `limit` is not given, and the most it may ask.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;

/// The request body's length from `Content-Length`, checked against the cap.
pub fn body_length(head: &RequestHead, max: usize) -> Result<usize, ApiError> {
    if head.transfer_encoding.is_some() {
        return Err(ApiError::new(411, "length_required", "chunked bodies are not accepted; send Content-Length"));
    }
    let Some(text) = head.content_length.as_deref() else { return Ok(0) };
    let len: usize = text.parse().map_err(|_| ApiError::new(400, "bad_request", "Content-Length is not a number"))?;
    if len > max {
        return Err(ApiError::new(413, "body_too_large", format!("request bodies are at most {max} bytes")));
    }
    Ok(len)
}

/// The tenant a request acts on: with the admin key `?tenant=` (default
/// ""); with a tenant key its own, and `?tenant=` naming another is 403.
pub(super) fn scoped_tenant(ctx: &Context<'_>, head: &RequestHead) -> Result<String, ApiError> {
    let asked = tenant_param(head)?;
    match &ctx.tenant {
        None => Ok(asked),
        Some(own) if head.query_param("tenant").is_none() || &asked == own => Ok(own.clone()),
        Some(_) => Err(ApiError::new(403, "forbidden", "a tenant API key acts on its own tenant only")),
    }
}

pub(super) fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_field("body", "must be a JSON object")),
        Err(e) => Err(ApiError::bad_field("body", &format!("malformed JSON: {e}"))),
    }
}

pub(super) fn required_str(doc: &serde_json::Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match doc.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(_) => Err(ApiError::bad_field(field, "must be a non-empty string")),
        None => Err(ApiError::bad_field(field, "required")),
    }
}

pub(super) fn optional_str(doc: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_field(field, "must be a string")),
    }
}

pub(super) fn optional_room(doc: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match optional_str(doc, field)? {
        Some(room) if !ids::is_valid_room_id(&room) => {
            Err(ApiError::bad_field(field, "room ids are 1-128 bytes of [A-Za-z0-9._:-]"))
        }
        room => Ok(room),
    }
}

/// `tenant` of a body, else of the query, else `""`.
pub(super) fn tenant_of(doc: &serde_json::Map<String, Value>, head: &RequestHead) -> Result<String, ApiError> {
    match optional_str(doc, "tenant")? {
        Some(tenant) if tenant.contains('\0') => Err(ApiError::bad_field("tenant", "must not contain NUL")),
        Some(tenant) => Ok(tenant),
        None => tenant_param(head),
    }
}

pub(super) fn tenant_param(head: &RequestHead) -> Result<String, ApiError> {
    let tenant = head.query_param("tenant").unwrap_or_default();
    if tenant.contains('\0') {
        return Err(ApiError::bad_field("tenant", "must not contain NUL"));
    }
    Ok(tenant)
}

pub(super) fn limit_param(head: &RequestHead) -> Result<usize, ApiError> {
    match head.query_param("limit") {
        None => Ok(LIST_LIMIT_DEFAULT),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_field("limit", &format!("an integer from 1 to {LIST_LIMIT_MAX}"))),
        },
    }
}

/// `"{shard}.{slot}.{generation}"`, as `welcome` and the listings give it.
pub(super) fn parse_conn_id(text: &str) -> Option<ConnId> {
    ConnId::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_parse() {
        assert_eq!(parse_conn_id("1.2.3"), Some(ConnId { shard: 1, slot: 2, generation: 3 }));
        assert_eq!(parse_conn_id("1.2"), None);
        assert_eq!(parse_conn_id("1.2.3.4"), None);
    }
}
