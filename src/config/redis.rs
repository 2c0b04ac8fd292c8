//! The value of `TCPIE_REDIS_URL`: the Redis that holds the fleet's shared limits, or
//! none (each pod's limits are its own).

use std::fmt;

use serde::Deserialize;

use super::Shown;

/// The setting: `None` (empty, the default) keeps every limit in the pod's memory.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct RedisUrl(pub Option<String>);

impl RedisUrl {
    /// What `TCPIE_REDIS_URL` accepts, for error messages.
    pub const EXPECTED: &'static str = "empty (limits kept in each pod), or \
        redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://… (TLS), such as \
        redis://redis.default.svc:6379";
}

impl TryFrom<String> for RedisUrl {
    type Error = String;

    fn try_from(value: String) -> Result<RedisUrl, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(RedisUrl(None));
        }
        let bad = |why: &str| format!("{why}; expected {}", RedisUrl::EXPECTED);
        if !(value.starts_with("redis://") || value.starts_with("rediss://")) {
            return Err(bad("not a redis:// or rediss:// URL"));
        }
        // The client's own parser decides, so that what is accepted here connects there.
        redis::Client::open(value).map_err(|e| bad(&format!("not a Redis URL ({e})")))?;
        Ok(RedisUrl(Some(value.to_string())))
    }
}

/// The URL with its password hidden: it is logged at start and shown in errors.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(url) = &self.0 else {
            return Ok(());
        };
        let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
        match rest.split_once('@') {
            Some((_, host)) => write!(f, "{scheme}://***@{host}"),
            None => f.write_str(url),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

impl Shown for RedisUrl {
    fn shown(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Option<String>, String> {
        RedisUrl::try_from(v.to_string()).map(|s| s.0)
    }

    #[test]
    fn a_redis_url_is_redis_or_rediss() {
        assert_eq!(parse("").unwrap(), None);
        for good in [
            "redis://127.0.0.1:6379",
            "redis://redis.default.svc",
            "redis://:secret@redis:6379/2",
            "rediss://redis.example:6380",
        ] {
            assert_eq!(parse(good).unwrap().as_deref(), Some(good));
        }
        for bad in [
            "127.0.0.1:6379",
            "http://redis:6379",
            "redis://",
            "redis://h:x",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("expected empty"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let url = RedisUrl::try_from("redis://:hunter2@redis:6379".to_string()).unwrap();
        assert_eq!(url.to_string(), "redis://***@redis:6379");
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
