//! The admission decision under arbitrary sequences of arrivals (from 16 clients, each
//! with its own bucket in a small table), time steps, finished requests and waits given
//! up: no client is admitted beyond its `burst + rate × elapsed` while its state is kept,
//! one refused by its own bucket spends nothing of the global one, the table never
//! outgrows its size, the global bucket never admits more than `burst + rate ×
//! elapsed`, the pool never holds more than `workers` permits and `queue_size` waiting,
//! hands permits out in FIFO order, never idles a permit while someone waits, and leaks
//! nothing. The
//! harness lives in admission_check.rs, which the regression tests replay too.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod admission_check;

fuzz_target!(|data: &[u8]| admission_check::check(data));
