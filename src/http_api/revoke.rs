//! `DELETE /api/v1/tokens/{jti}`: the request's checks, and the answer
//! when the revoked-token set is full.

use serde_json::json;

use crate::http::{self, RequestHead};
use crate::revocation::{FULL_CODE, SetFull};

use super::{ApiError, Context, Outcome};

/// Largest `exp` of `DELETE /api/v1/tokens/{jti}`: 9999-12-31T23:59:59Z,
/// far past any real token, and within SQLite's signed 64-bit integers.
pub const REVOKE_EXP_MAX: u64 = 253_402_300_799;

/// `DELETE /api/v1/tokens/{jti}`: kept until `?exp=` (the token's `exp`,
/// Unix seconds, at most `REVOKE_EXP_MAX`) or, without it,
/// `api.token_ttl_max_s` from now.
pub(super) fn revoke(ctx: &Context<'_>, head: &RequestHead, jti: &str) -> Result<Outcome, ApiError> {
    if jti.is_empty() || jti.chars().count() > 256 || jti.chars().any(char::is_control) {
        return Err(ApiError::bad_field("jti", "1-256 characters without control characters"));
    }
    let expires_s = match head.query_param("exp") {
        None => ctx.now_unix_s.saturating_add(ctx.config.api.token_ttl_max_s),
        Some(exp) => match exp.parse::<u64>() {
            Ok(exp) if exp <= REVOKE_EXP_MAX => exp,
            _ => {
                let problem = format!("Unix seconds, an integer from 0 to {REVOKE_EXP_MAX} (9999-12-31T23:59:59Z)");
                return Err(ApiError::bad_field("exp", &problem));
            }
        },
    };
    let value = json!({ "jti": jti, "revoked": true, "expires_s": expires_s });
    let response = http::response(200, "application/json", "", value.to_string().as_bytes());
    Ok(Outcome::Revoke { jti: jti.to_owned(), expires_s, response })
}

impl SetFull {
    /// The answer to `DELETE /api/v1/tokens/{jti}` when the set is full: 507.
    /// Written here, beside the endpoint, so that `revocation` knows
    /// nothing of the HTTP API.
    pub fn api_error(self) -> ApiError {
        ApiError::new(
            507,
            FULL_CODE,
            "the server holds limits.revoked_tokens_max revoked tokens that have not expired; the token was not revoked",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_is_507() {
        assert_eq!(SetFull.api_error().status, 507);
        assert_eq!(SetFull.api_error().code, FULL_CODE);
    }
}
