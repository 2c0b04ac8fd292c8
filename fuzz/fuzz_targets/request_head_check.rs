// The request-head harness: shared by the fuzz target and the regression tests. It
// parses a head and, when the head announces a chunked body, decodes what follows it
// twice (whole, and in pieces the input chooses): both must agree exactly.

use tcpie::internal::Decoder;
use tcpie::internal::{parse_head, Body, Parsed, MAX_BODY_BYTES};

pub fn check(data: &[u8]) {
    // The first two bytes choose the head limit, so small limits get exercised too; the
    // third how the body is cut into reads.
    let (limit, step, buf) = match data {
        [a, b, c, rest @ ..] => (
            64 + (usize::from(*a) << 8 | usize::from(*b)) % 8192,
            1 + usize::from(*c),
            rest,
        ),
        _ => (8192, 1, data),
    };
    match parse_head(buf, limit) {
        Ok(Parsed::Complete(head)) => {
            assert!(head.len <= buf.len() && head.len <= limit);
            assert!(head.method.start <= head.method.end && head.method.end <= head.len);
            assert!(head.path.start <= head.path.end && head.path.end <= head.len);
            assert!(std::str::from_utf8(&buf[head.method.clone()]).is_ok());
            assert!(head.minor_version <= 1);
            if let Some(at) = head.later_minor_at {
                assert!(at < head.len && (b'2'..=b'9').contains(&buf[at]));
            }
            match head.body {
                Body::Length(n) => assert!(n > 0 && n <= MAX_BODY_BYTES),
                Body::Chunked => decode_both_ways(&buf[head.len..], step),
                Body::Empty => {}
            }
        }
        Ok(Parsed::Partial) => assert!(buf.len() < limit),
        Err(_) => {}
    }
}

/// The same bytes fed whole and in reads of `step` bytes give the same verdict.
fn decode_both_ways(body: &[u8], step: usize) {
    let whole = Decoder::default().feed(body);
    let mut d = Decoder::default();
    let mut consumed = 0;
    let mut pieces = Ok((0, false));
    while consumed < body.len() && !d.done() {
        let piece = &body[consumed..(consumed + step).min(body.len())];
        match d.feed(piece) {
            Ok((n, done)) => {
                // A read that does not end the body is consumed whole.
                assert!(n <= piece.len() && (done || n == piece.len()));
                consumed += n;
                pieces = Ok((consumed, done));
            }
            Err(e) => {
                pieces = Err(e);
                break;
            }
        }
    }
    match (whole, pieces) {
        (Ok((n, done)), Ok((m, done2))) => {
            assert_eq!(done, done2);
            if done {
                assert_eq!(n, m);
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("whole {a:?} but in pieces {b:?}"),
    }
}
