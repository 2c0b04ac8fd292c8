//! The admission decision under arbitrary sequences of arrivals, time steps and worker
//! progress: the bucket never admits more than `burst + rate × elapsed`, and the queue
//! never holds more than `workers + queue_size` nor loses or reorders an item. The
//! harness lives in admission_check.rs, which the regression tests replay too.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod admission_check;

fuzz_target!(|data: &[u8]| admission_check::check(data));
