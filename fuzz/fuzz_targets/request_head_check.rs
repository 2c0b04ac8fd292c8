// The request-head harness: shared by the fuzz target and the regression tests.

use tcpie::http::{parse_head, Parsed, MAX_BODY_BYTES};

pub fn check(data: &[u8]) {
    // The first two bytes choose the head limit, so small limits get exercised too.
    let (limit, buf) = match data {
        [a, b, rest @ ..] => (64 + (usize::from(*a) << 8 | usize::from(*b)) % 8192, rest),
        _ => (8192, data),
    };
    match parse_head(buf, limit) {
        Ok(Parsed::Complete(head)) => {
            assert!(head.len <= buf.len() && head.len <= limit);
            assert!(head.method.start <= head.method.end && head.method.end <= head.len);
            assert!(head.path.start <= head.path.end && head.path.end <= head.len);
            assert!(std::str::from_utf8(&buf[head.method.clone()]).is_ok());
            assert!(head.content_length <= MAX_BODY_BYTES);
            assert!(head.minor_version <= 1);
        }
        Ok(Parsed::Partial) => assert!(buf.len() < limit),
        Err(_) => {}
    }
}
