//! How a request ends. One type, [`End`], names every way (its outcome label, its status,
//! its answer), and one function, [`finish`], counts it, closes its span and logs it, so
//! that metrics, traces and logs can never disagree about a request.
//!
//! The answers of every refusal are built once at start ([`Answers`]): a refusal costs no
//! formatting.

use std::borrow::Cow;

use tokio::time::Instant;

use super::Core;
use crate::admission::Refusal;
use crate::http::{Answer, Reject};
use crate::metrics::Outcome;
use crate::ratelimit::{Limit, TooMany};
use crate::telemetry::request_span::RequestSpan;

/// Every way a request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Processed and answered with the handler's status (500 if it panicked).
    Processed { status: u16 },
    /// Processed, but the answer could not be written in time.
    WriteError { status: u16 },
    /// 429: no token in the global bucket, or in the client's own.
    RateLimited { limit: Limit, retry_after: u64 },
    /// 503: no permit and no place in the queue.
    QueueFull,
    /// 408: the head did not arrive in time.
    HeadTimeout,
    /// 408: the head did, the body did not.
    BodyTimeout,
    /// Refused before admission (400, 413, 414, 431, 501).
    Refused(Reject),
    /// 503: still unanswered at the drain deadline.
    ShuttingDown,
    /// 503: waited in the queue past `TCPIE_QUEUE_TIMEOUT_MS`.
    QueueTimeout,
    /// 502: the upstream failed before its response head.
    UpstreamError,
    /// 504: no response head from the upstream in time.
    UpstreamTimeout,
    /// A streamed answer (`status`) that broke off part way: its body failed (an upstream
    /// dying mid-body, when `upstream`), or a write did not finish.
    Truncated { status: u16, upstream: bool },
}

impl From<Refusal> for End {
    fn from(refusal: Refusal) -> End {
        match refusal {
            Refusal::RateLimited { limit, retry_after } => End::RateLimited { limit, retry_after },
            Refusal::QueueFull => End::QueueFull,
            Refusal::ShuttingDown => End::ShuttingDown,
        }
    }
}

impl End {
    pub fn outcome(self) -> Outcome {
        match self {
            End::Processed { .. } => Outcome::Processed,
            End::WriteError { .. } => Outcome::WriteError,
            End::RateLimited {
                limit: Limit::Global,
                ..
            } => Outcome::RateLimited,
            End::RateLimited {
                limit: Limit::Client,
                ..
            } => Outcome::ClientRateLimited,
            End::QueueFull => Outcome::QueueFull,
            End::HeadTimeout | End::BodyTimeout => Outcome::ReadTimeout,
            End::Refused(Reject::UriTooLong | Reject::HeaderTooLarge) => Outcome::HeaderTooLarge,
            End::Refused(_) => Outcome::BadRequest,
            End::ShuttingDown => Outcome::ShuttingDown,
            End::QueueTimeout => Outcome::QueueTimeout,
            End::UpstreamError | End::Truncated { upstream: true, .. } => Outcome::UpstreamError,
            End::Truncated { .. } => Outcome::WriteError,
            End::UpstreamTimeout => Outcome::UpstreamTimeout,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            End::Processed { status }
            | End::WriteError { status }
            | End::Truncated { status, .. } => status,
            End::UpstreamError => 502,
            End::UpstreamTimeout => 504,
            End::RateLimited { .. } => 429,
            End::QueueFull | End::ShuttingDown | End::QueueTimeout => 503,
            End::HeadTimeout | End::BodyTimeout => 408,
            End::Refused(reject) => reject.status(),
        }
    }

    /// The prebuilt answer of a refusal; `None` for the ends whose answer the handler
    /// made (or that were never answered).
    pub fn answer(self, answers: &Answers) -> Option<Cow<'_, Answer>> {
        let a = answers;
        let answer = match self {
            End::Processed { .. } | End::WriteError { .. } | End::Truncated { .. } => return None,
            End::RateLimited { limit, retry_after } => {
                return Some(a.too_many.answer(limit, retry_after))
            }
            End::QueueFull => &a.queue_full,
            End::ShuttingDown => &a.shutting_down,
            End::QueueTimeout => &a.queue_timeout,
            End::HeadTimeout => &a.head_timeout,
            End::BodyTimeout => &a.body_timeout,
            End::Refused(Reject::BadRequest) => &a.bad_request,
            End::Refused(Reject::PayloadTooLarge) => &a.payload_too_large,
            End::Refused(Reject::UriTooLong) => &a.uri_too_long,
            End::Refused(Reject::HeaderTooLarge) => &a.header_too_large,
            End::Refused(Reject::UnknownCoding) => &a.unknown_coding,
            End::Refused(Reject::Connect) => &a.connect,
            End::Refused(Reject::VersionNotSupported) => &a.version_not_supported,
            End::UpstreamError => &a.upstream_error,
            End::UpstreamTimeout => &a.upstream_timeout,
        };
        Some(Cow::Borrowed(answer))
    }
}

/// The answers of every refusal, built once.
pub(crate) struct Answers {
    too_many: TooMany,
    queue_full: Answer,
    queue_timeout: Answer,
    shutting_down: Answer,
    head_timeout: Answer,
    body_timeout: Answer,
    bad_request: Answer,
    payload_too_large: Answer,
    uri_too_long: Answer,
    header_too_large: Answer,
    unknown_coding: Answer,
    connect: Answer,
    version_not_supported: Answer,
    upstream_error: Answer,
    upstream_timeout: Answer,
    /// The answer to a request whose handler panicked.
    pub internal_error: Answer,
}

impl Answers {
    pub fn new() -> Answers {
        Answers {
            too_many: TooMany::new(),
            queue_full: Answer::prebuilt(503, Some(1), "queue full\n"),
            queue_timeout: Answer::prebuilt(503, Some(1), "waited too long in the queue\n"),
            shutting_down: Answer::prebuilt(503, Some(1), "shutting down\n"),
            head_timeout: Answer::prebuilt(408, None, "request head not received in time\n"),
            body_timeout: Answer::prebuilt(408, None, "request body not received in time\n"),
            bad_request: Answer::prebuilt(400, None, "malformed request\n"),
            payload_too_large: Answer::prebuilt(413, None, "request body too large\n"),
            uri_too_long: Answer::prebuilt(414, None, "request target too long\n"),
            header_too_large: Answer::prebuilt(431, None, "request head too large\n"),
            unknown_coding: Answer::prebuilt(
                501,
                None,
                "transfer coding not implemented: send chunked or Content-Length\n",
            ),
            connect: Answer::prebuilt(
                501,
                None,
                "CONNECT is not implemented: TCPie is not a proxy\n",
            ),
            version_not_supported: Answer::prebuilt(
                505,
                None,
                "HTTP version not supported: TCPie speaks HTTP/1.1\n",
            ),
            upstream_error: Answer::prebuilt(502, None, "the upstream failed to answer\n"),
            upstream_timeout: Answer::prebuilt(504, None, "the upstream did not answer in time\n"),
            internal_error: Answer::prebuilt(500, None, "internal error\n"),
        }
    }
}

/// Counts a request's end, records it on its span and logs it (at debug, inside the
/// span): the one place every request ends.
pub(crate) fn finish(core: &Core, span: &RequestSpan, end: End, started: Instant) {
    let outcome = end.outcome();
    match outcome {
        Outcome::Processed => core
            .metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64()),
        // What shedding costs a client: the refusal's answer is written by now.
        Outcome::RateLimited | Outcome::ClientRateLimited | Outcome::QueueFull => core
            .metrics
            .rejection_duration
            .observe(started.elapsed().as_secs_f64()),
        _ => {}
    }
    core.metrics.record(outcome);
    span.finish(outcome, Some(end.status()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_outcome() {
        let answers = Answers::new();
        for (end, status, outcome) in [
            (
                End::RateLimited {
                    limit: Limit::Global,
                    retry_after: 3,
                },
                429,
                "rate_limited",
            ),
            (
                End::RateLimited {
                    limit: Limit::Global,
                    retry_after: 600,
                },
                429,
                "rate_limited",
            ),
            (
                End::RateLimited {
                    limit: Limit::Client,
                    retry_after: 2,
                },
                429,
                "client_rate_limited",
            ),
            (
                End::RateLimited {
                    limit: Limit::Client,
                    retry_after: 61,
                },
                429,
                "client_rate_limited",
            ),
            (End::QueueFull, 503, "queue_full"),
            (End::ShuttingDown, 503, "shutting_down"),
            (End::QueueTimeout, 503, "queue_timeout"),
            (End::HeadTimeout, 408, "read_timeout"),
            (End::UpstreamError, 502, "upstream_error"),
            (End::UpstreamTimeout, 504, "upstream_timeout"),
            (End::BodyTimeout, 408, "read_timeout"),
            (End::Refused(Reject::BadRequest), 400, "bad_request"),
            (End::Refused(Reject::PayloadTooLarge), 413, "bad_request"),
            (End::Refused(Reject::UnknownCoding), 501, "bad_request"),
            (End::Refused(Reject::Connect), 501, "bad_request"),
            (
                End::Refused(Reject::VersionNotSupported),
                505,
                "bad_request",
            ),
            (End::Refused(Reject::UriTooLong), 414, "header_too_large"),
            (
                End::Refused(Reject::HeaderTooLarge),
                431,
                "header_too_large",
            ),
        ] {
            assert_eq!(end.status(), status, "{end:?}");
            assert_eq!(end.outcome().as_str(), outcome, "{end:?}");
            let answer = end.answer(&answers).expect("a prebuilt answer");
            let (status_line, rest) = answer.parts(false);
            assert!(
                status_line.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
                "{end:?}"
            );
            if let End::RateLimited { retry_after, .. } = end {
                let header = format!("Retry-After: {retry_after}\r\n");
                assert!(rest.windows(header.len()).any(|w| w == header.as_bytes()));
            }
        }
        assert!(End::Processed { status: 200 }.answer(&answers).is_none());
        assert_eq!(
            End::WriteError { status: 200 }.outcome().as_str(),
            "write_error"
        );
    }
}
