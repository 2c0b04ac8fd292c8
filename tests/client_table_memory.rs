//! What a tracked client costs in memory, measured: the resident set before and after
//! filling a table of `TCPIE_CLIENT_TABLE_SIZE` = 100,000 clients, then again after a
//! million more (which must not grow it). One test in its own binary, so that no other
//! test allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prometheus::IntCounter;
use tcpie::internal::ClientTable;
use tcpie::internal::Identity;
use tokio::time::Instant;

mod common;

/// Resident bytes of this process.
fn rss() -> usize {
    common::rss_of(std::process::id()) as usize
}

#[test]
fn a_tracked_client_costs_at_most_64_bytes_and_the_table_never_grows() {
    const SIZE: usize = 100_000;
    let now = Instant::now();
    let counter = |n| IntCounter::new(n, "test").unwrap();
    let before = rss();
    // A rate so low that no bucket refills: every client stays in debt and is kept.
    let table = ClientTable::new(1e-3, 1, SIZE, now, counter("r"), counter("e"));
    for i in 0..SIZE as u64 {
        let id = table.id(&Identity::Bytes(&i.to_le_bytes()));
        assert!(table.take(id, now, || true).unwrap().is_some());
    }
    // Each of the 64 shards holds a 64th of the size: random ids fill some shards before
    // others, so a few clients were evicted before the table as a whole was full.
    let tracked = table.len();
    assert!((SIZE * 95 / 100..=SIZE).contains(&tracked), "{tracked}");
    let full = rss();
    let per_client = (full - before) as f64 / tracked as f64;
    assert!(per_client <= 64.0, "{per_client:.1} bytes per client");
    // A million more distinct clients: the least recently seen are evicted, the table
    // stays at its size, and memory does not move (beyond a page or two of noise).
    for i in SIZE as u64..SIZE as u64 + 1_000_000 {
        let id = table.id(&Identity::Bytes(&i.to_le_bytes()));
        assert!(table.take(id, now, || true).unwrap().is_some());
    }
    assert!(table.len() <= SIZE);
    assert!(table.len() >= SIZE * 99 / 100, "{}", table.len());
    let after = rss();
    // Printed only now: the captured output's buffer would otherwise be counted as growth.
    println!(
        "{per_client:.1} bytes per tracked client ({} KiB for {tracked}); after a million \
         more: {} KiB more",
        (full - before) / 1024,
        (after as i64 - full as i64) / 1024
    );
    assert!(after <= full + 64 * 1024, "grew from {full} to {after}");
}
