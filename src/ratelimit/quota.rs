//! What a rate limit says of a request, to the client: which limit, the bucket's state
//! (the `RateLimit-Policy` and `RateLimit` fields), and the `429` answers with their
//! `Retry-After`, prebuilt once.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use crate::http::Answer;

/// Which rate limit refused a request (the `limit` label of the metrics, the policy of
/// the `RateLimit` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The one bucket every request passes (`TCPIE_RATE_PER_SECOND`, `TCPIE_BURST`).
    Global,
    /// The client's own bucket (`TCPIE_CLIENT_RATE_PER_SECOND`, `TCPIE_CLIENT_BURST`).
    Client,
}

impl Limit {
    pub const ALL: [Limit; 2] = [Limit::Global, Limit::Client];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Global => "global",
            Limit::Client => "client",
        }
    }
}

/// What a rate limit says of a request: its policy and its state (the `RateLimit-Policy`
/// and `RateLimit` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub limit: Limit,
    /// The bucket's capacity, and the time it takes to refill from empty.
    pub burst: u32,
    pub window: Duration,
    /// Whole tokens left, and the time until the bucket is full again.
    pub remaining: u32,
    pub full_in: Duration,
}

impl Quota {
    /// Its `RateLimit-Policy` and `RateLimit` header lines.
    pub fn fields(&self) -> RateLimitFields {
        RateLimitFields::new(
            self.limit.as_str(),
            self.burst,
            self.window,
            self.remaining,
            self.full_in,
        )
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields (IETF draft "RateLimit header fields for
/// HTTP", draft-ietf-httpapi-ratelimit-headers-09) of one token bucket, formatted on the
/// stack: the policy named `policy` allows `burst` requests per `window` (the time the
/// bucket takes to refill from empty), with `remaining` whole tokens left now and the
/// bucket full again in `full_in`. Seconds are rounded up, and a window is at least 1 s.
pub(crate) struct RateLimitFields {
    buf: [u8; 192],
    len: usize,
}

impl RateLimitFields {
    pub fn new(
        policy: &str,
        burst: u32,
        window: std::time::Duration,
        remaining: u32,
        full_in: std::time::Duration,
    ) -> RateLimitFields {
        let secs =
            |d: std::time::Duration| d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        let mut fields = RateLimitFields {
            buf: [0; 192],
            len: 0,
        };
        let mut cursor = &mut fields.buf[..];
        // 192 bytes hold both lines with the longest numbers: a write cannot fail.
        let _ = write!(
            cursor,
            "RateLimit-Policy: \"{policy}\";q={burst};w={}\r\n\
             RateLimit: \"{policy}\";r={remaining};t={}\r\n",
            secs(window).max(1),
            secs(full_in)
        );
        let left = cursor.len();
        fields.len = fields.buf.len() - left;
        fields
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `429` answers prebuilt for these `Retry-After` values; larger ones are formatted.
const PREBUILT_RETRY_AFTER: u64 = 60;

const RATE_LIMITED: &str = "rate limited\n";
const CLIENT_RATE_LIMITED: &str = "rate limited: this client's own limit\n";

/// The `429` answers of both limits, prebuilt for the common `Retry-After` values.
pub(crate) struct TooMany {
    global: Vec<Answer>,
    client: Vec<Answer>,
}

impl TooMany {
    pub fn new() -> TooMany {
        let prebuilt = |body: &str| {
            (1..=PREBUILT_RETRY_AFTER)
                .map(|s| Answer::prebuilt(429, Some(s), body))
                .collect()
        };
        TooMany {
            global: prebuilt(RATE_LIMITED),
            client: prebuilt(CLIENT_RATE_LIMITED),
        }
    }

    /// The `429` of `limit`, asking to retry in `retry_after` seconds.
    pub fn answer(&self, limit: Limit, retry_after: u64) -> Cow<'_, Answer> {
        let (prebuilt, body) = match limit {
            Limit::Global => (&self.global, RATE_LIMITED),
            Limit::Client => (&self.client, CLIENT_RATE_LIMITED),
        };
        match prebuilt.get(retry_after.saturating_sub(1) as usize) {
            Some(r) => Cow::Borrowed(r),
            None => Cow::Owned(Answer::prebuilt(429, Some(retry_after), body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_fields_follow_the_draft() {
        let f = RateLimitFields::new(
            "client",
            5,
            Duration::from_millis(2500),
            0,
            Duration::from_millis(1001),
        );
        assert_eq!(
            f.as_bytes(),
            b"RateLimit-Policy: \"client\";q=5;w=3\r\nRateLimit: \"client\";r=0;t=2\r\n"
        );
        let f = RateLimitFields::new("global", u32::MAX, Duration::MAX, u32::MAX, Duration::MAX);
        assert!(f.as_bytes().ends_with(b"\r\n"), "{:?}", f.as_bytes());
        let f = RateLimitFields::new("global", 1, Duration::from_millis(1), 1, Duration::ZERO);
        assert_eq!(
            f.as_bytes(),
            b"RateLimit-Policy: \"global\";q=1;w=1\r\nRateLimit: \"global\";r=1;t=0\r\n"
        );
    }
}
