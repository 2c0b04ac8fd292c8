//! The admission decision under arbitrary sequences of arrivals, time steps, finished
//! requests and waits given up: the bucket never admits more than `burst + rate ×
//! elapsed`, the pool never holds more than `workers` permits and `queue_size` waiting,
//! hands permits out in FIFO order, never idles a permit while someone waits, and leaks
//! nothing. The
//! harness lives in admission_check.rs, which the regression tests replay too.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod admission_check;

fuzz_target!(|data: &[u8]| admission_check::check(data));
