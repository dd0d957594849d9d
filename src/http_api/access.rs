//! API keys: the admin key and the tenants' keys, given as
//! `Authorization: Bearer` and compared in constant time.

use crate::config::Config;
use crate::http::{self, RequestHead};

use super::{Access, ApiError};

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        diff |= usize::from(std::hint::black_box(x));
    }
    diff == 0
}

/// Checks the key for `access`. `Ok(Some(tenant))` for a tenant key.
pub fn authorize(config: &Config, access: Access, head: &RequestHead) -> Result<Option<String>, ApiError> {
    let given = head.authorization.as_deref().and_then(http::bearer_token).unwrap_or_default().as_bytes();
    match access {
        Access::Public => Ok(None),
        Access::Admin => match &config.admin_key {
            Some(key) if constant_time_eq(given, key.as_bytes()) => Ok(None),
            _ => Err(ApiError::unauthorized()),
        },
        Access::Tenant => {
            // Every key is compared, so timing does not tell which one matched.
            let mut found = None;
            for tenant in &config.tenants {
                if constant_time_eq(given, tenant.api_key.as_bytes()) {
                    found = Some(tenant.id.clone());
                }
            }
            found.map(Some).ok_or_else(ApiError::unauthorized)
        }
        Access::AdminOrTenant => match authorize(config, Access::Admin, head) {
            Ok(None) => Ok(None),
            _ => authorize(config, Access::Tenant, head),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
