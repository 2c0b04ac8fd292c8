//! The request-head parser on arbitrary bytes: it must never panic, and a complete head
//! must point inside the buffer and respect the limits. The harness lives in
//! request_head_check.rs, which the regression tests replay too.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod request_head_check;

fuzz_target!(|data: &[u8]| request_head_check::check(data));
