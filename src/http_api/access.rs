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
    use crate::config::{Sources, TenantConfig};

    fn head_with(authorization: Option<&str>) -> RequestHead {
        RequestHead { authorization: authorization.map(str::to_owned), ..RequestHead::default() }
    }

    #[test]
    fn keys_are_read_from_the_bearer_credential() {
        let mut config = Config::load(Sources::default()).expect("default config");
        config.admin_key = Some("admin-key".to_owned());
        config.tenants = vec![TenantConfig { id: "acme".to_owned(), api_key: "acme-key".to_owned() }];
        let access = |authorization, access| authorize(&config, access, &head_with(authorization));
        assert_eq!(access(Some("Bearer admin-key"), Access::Admin), Ok(None));
        assert_eq!(access(Some("bearer   admin-key"), Access::Admin), Ok(None));
        assert_eq!(access(Some("Bearer\tadmin-key"), Access::Admin), Ok(None), "one Bearer parser for all");
        assert_eq!(access(Some("Bearer acme-key"), Access::Tenant), Ok(Some("acme".to_owned())));
        assert_eq!(access(Some("Bearer acme-key"), Access::AdminOrTenant), Ok(Some("acme".to_owned())));
        assert_eq!(access(Some("Bearer admin-key"), Access::AdminOrTenant), Ok(None));
        for refused in [None, Some("Bearer "), Some("Basic admin-key"), Some("Bearer admin"), Some("admin-key")] {
            assert_eq!(access(refused, Access::Admin), Err(ApiError::unauthorized()), "{refused:?}");
        }
        assert_eq!(access(Some("Bearer admin-key"), Access::Tenant), Err(ApiError::unauthorized()));
        assert_eq!(access(None, Access::Public), Ok(None));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
