//! Each client's own token bucket, in a table of bounded size (`TCPIE_CLIENT_TABLE_SIZE`).
//!
//! A client is stored as the 64-bit hash of its identity ([`super::client_key`]) under a
//! key drawn at random when the process starts (SipHash, std's `RandomState`): a client
//! cannot choose identities that collide, and the table never holds a raw header value.
//! Two distinct clients share a bucket only if their hashes collide by chance (about
//! one pair in 3 × 10^9 with a full table of 100,000).
//!
//! What a client costs: its hash and its bucket's TAT (the same GCRA arithmetic as the
//! global bucket, [`super::gcra::Gcra`]), 16 bytes, the tokens its pod holds of it in a
//! fleet, 8 bytes, its two neighbours in a least-recently-seen list, 8 bytes, plus 2 to 4
//! buckets of 8 bytes in the index: 48 to 64 bytes (54 at the default size, measured by
//! `tests/client_table_memory.rs`). Both are allocated once at start and never grow.
//!
//! Dropping a client whose bucket is full again loses nothing: a client not in the table
//! starts with a full bucket, the very state it had. So the table makes room by dropping
//! such clients (`refilled`); only when the clients it could drop are all in debt does it
//! drop the least recently seen one (`evicted`), which then starts again with a full
//! bucket: that client gains up to a burst. The table is split into up to 64 shards,
//! each with its own lock and its own least-recently-seen order, so two connections
//! contend only when their clients share a shard.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::time::Instant;

use super::client_key::Identity;
use super::gcra::{nanos_since, Gcra};

/// No neighbour.
const NIL: u32 = u32::MAX;
/// A table is split in shards of at least this many clients (so a small table keeps an
/// exact least-recently-seen order), and in at most [`MAX_SHARDS`].
const MIN_SHARD: usize = 1024;
const MAX_SHARDS: usize = 64;
/// Clients looked at from the least recently seen end for one whose bucket is full,
/// before one in debt is evicted.
const SCAN: usize = 8;

/// A client's hashed identity.
pub type ClientId = u64;

/// Why a client left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its bucket was full again: nothing was lost.
    Refilled,
    /// The table was full of clients in debt; it was the least recently seen.
    Evicted,
}

/// A client's bucket's state (after a token was taken): computed into figures only when
/// they are wanted (the `RateLimit` fields), off the common path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    tat: u64,
    now_ns: u64,
}

impl Taken {
    /// Whole tokens left.
    pub fn remaining(&self, gcra: &Gcra) -> u32 {
        gcra.available(self.tat, self.now_ns).floor() as u32
    }

    /// Time until the bucket is full again.
    pub fn full_in(&self) -> Duration {
        Gcra::full_in(self.tat, self.now_ns)
    }
}

/// A client's bucket was empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Time until its next token.
    pub wait: Duration,
    /// Time until the bucket is full again.
    pub full_in: Duration,
}

/// The table of clients' buckets.
pub struct ClientTable {
    gcra: Gcra,
    origin: Instant,
    seed: RandomState,
    shards: Box<[Padded]>,
    size: usize,
    dropped_refilled: IntCounter,
    dropped_evicted: IntCounter,
}

/// A shard's lock and state on cache lines of their own: two threads working on
/// neighbouring shards must not invalidate each other's lines.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// One client.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: ClientId,
    /// Its bucket's theoretical arrival time, ns since the table's origin.
    tat: u64,
    /// With a fleet: the tokens of the client's shared bucket this pod holds.
    lease: Lease,
}

/// Tokens of a client's bucket in the fleet that one pod took ahead of need (see
/// [`ClientTable::fleet_local`]). They were taken from the shared bucket when leased, so
/// spending them here admits nothing the fleet's bucket did not grant; unspent, they
/// lapse, and the client loses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lease {
    /// Tokens still held.
    left: u16,
    /// The last lease asked for 2^`size_log2` tokens (or the most allowed, if fewer).
    size_log2: u8,
    /// A lease is being asked for: a request of the client that finds none left meanwhile
    /// waits for it, so that concurrent requests neither each lease a batch nor each
    /// make a call.
    asking: bool,
    /// When the lease was granted (or asked for, while `asking`), ms since the table's
    /// origin (wrapping).
    at_ms: u32,
}

/// The largest lease, whatever the burst: 2^15 tokens.
const LEASE_MOST_LOG2: u8 = 15;

/// The tokens a lease of 2^`size_log2` asks for when a pod may hold at most `most`.
fn lease_tokens(size_log2: u8, most: u32) -> u32 {
    (1u32 << size_log2).min(most.max(1))
}

/// How long a client's lease may be spent.
const LEASE_LIFE_MS: u32 = 100;
/// A lease spent within this is too small: the next asks twice as much.
const LEASE_FAST_MS: u32 = 50;

/// What the pod can tell of a fleet client's request without asking Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A token of the pod's lease: admitted; the bucket's state as last told, with the
    /// lease's tokens counted in. With `refill`, the lease fell to half: ask for
    /// that many more, without making this request wait.
    Leased {
        remaining: u32,
        full_in: Duration,
        refill: Option<u32>,
    },
    /// Refused recently, and still so until its wait is over.
    Refused(Refused),
    /// Redis decides: ask for this many tokens (one for this request, the rest to hold).
    /// More than one is a lease: the caller asks for it in the background and waits for
    /// it as in [`Local::Wait`].
    Ask { want: u32 },
    /// The lease is spent and the next is on its way: wait for it (it comes in one round
    /// trip) and look again, rather than make a call of its own.
    Wait,
}

/// A client's neighbours in the least-recently-seen list (towards the most recent, and
/// away). Kept apart from the slots: moving a client to the front touches its
/// neighbours' links, and 8-byte links of a whole shard stay in cache where 24-byte
/// slots would not.
#[derive(Debug, Clone, Copy)]
struct Links {
    newer: u32,
    older: u32,
}

const UNLINKED: Links = Links {
    newer: NIL,
    older: NIL,
};

/// Where a client's slot is, found by its id: open addressing with linear probing over
/// twice (to four times) as many buckets as the shard holds clients, with deletion by
/// backward shift, so that no tombstone ever accumulates and the index never grows or
/// rehashes. A bucket is one word: the slot (plus one; 0 is an empty bucket, so the
/// index starts as zeroed pages the kernel maps only when they are first written) and the
/// id's low 32 bits, which give the bucket the id belongs in and rule out most
/// mismatches without reading the slot.
struct Index {
    buckets: Box<[u64]>,
    mask: usize,
}

fn bucket(slot: u32, low: u32) -> u64 {
    (u64::from(slot) + 1) << 32 | u64::from(low)
}

/// The slot of a full bucket.
fn slot_of(bucket: u64) -> u32 {
    ((bucket >> 32) - 1) as u32
}

impl Index {
    fn new(capacity: usize) -> Index {
        let buckets = (capacity * 2).next_power_of_two().max(2);
        Index {
            buckets: vec![0; buckets].into_boxed_slice(),
            mask: buckets - 1,
        }
    }

    /// The bucket holding `id`, and its slot.
    fn find(&self, id: ClientId, slots: &[Slot]) -> Option<(usize, u32)> {
        let low = id as u32;
        let mut at = low as usize & self.mask;
        loop {
            let b = self.buckets[at];
            if b == 0 {
                return None;
            }
            if b as u32 == low && slots[slot_of(b) as usize].id == id {
                return Some((at, slot_of(b)));
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Records `id` (not present) in `slot`.
    fn insert(&mut self, id: ClientId, slot: u32) {
        let low = id as u32;
        let mut at = low as usize & self.mask;
        while self.buckets[at] != 0 {
            at = (at + 1) & self.mask;
        }
        self.buckets[at] = bucket(slot, low);
    }

    /// Empties bucket `at`, moving back the entries after it that belong before it.
    fn remove(&mut self, mut at: usize) {
        let mut next = at;
        loop {
            next = (next + 1) & self.mask;
            let b = self.buckets[next];
            if b == 0 {
                break;
            }
            let home = b as u32 as usize & self.mask;
            // The entry may move to the hole if its home is not between the hole
            // (exclusive) and where it sits (inclusive), cyclically.
            if (next.wrapping_sub(home) & self.mask) >= (next.wrapping_sub(at) & self.mask) {
                self.buckets[at] = b;
                at = next;
            }
        }
        self.buckets[at] = 0;
    }
}

struct Shard {
    index: Index,
    slots: Vec<Slot>,
    links: Vec<Links>,
    len: usize,
    capacity: usize,
    /// Slots given back, linked through `older`.
    free: u32,
    newest: u32,
    oldest: u32,
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        Shard {
            index: Index::new(capacity),
            slots: Vec::with_capacity(capacity),
            links: Vec::with_capacity(capacity),
            len: 0,
            capacity,
            free: NIL,
            newest: NIL,
            oldest: NIL,
        }
    }

    fn unlink(&mut self, i: u32) {
        let Links { newer, older } = self.links[i as usize];
        match newer {
            NIL => self.newest = older,
            n => self.links[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.links[o as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        self.links[i as usize] = Links {
            newer: NIL,
            older: old_newest,
        };
        match old_newest {
            NIL => self.oldest = i,
            n => self.links[n as usize].newer = i,
        }
        self.newest = i;
    }

    fn touch(&mut self, i: u32) {
        if self.newest != i {
            self.unlink(i);
            self.push_newest(i);
        }
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        if let Some((at, _)) = self.index.find(self.slots[i as usize].id, &self.slots) {
            self.index.remove(at);
        }
        self.links[i as usize].older = self.free;
        self.free = i;
        self.len -= 1;
    }

    /// Makes room for one more client when the shard is full: a client whose bucket is
    /// full among the least recently seen, else the least recently seen.
    fn make_room(&mut self, now_ns: u64) -> Option<Dropped> {
        if self.len < self.capacity {
            return None;
        }
        let mut at = self.oldest;
        for _ in 0..SCAN {
            if at == NIL {
                break;
            }
            if self.slots[at as usize].tat <= now_ns {
                self.remove(at);
                return Some(Dropped::Refilled);
            }
            at = self.links[at as usize].newer;
        }
        let oldest = self.oldest;
        if oldest == NIL {
            return None; // a shard of capacity 0 cannot happen (see ClientTable::new)
        }
        self.remove(oldest);
        Some(Dropped::Evicted)
    }

    fn insert(&mut self, id: ClientId, tat: u64) -> u32 {
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.links[i as usize].older;
            self.slots[i as usize] = Slot {
                id,
                tat,
                lease: Lease::default(),
            };
            i
        } else {
            self.slots.push(Slot {
                id,
                tat,
                lease: Lease::default(),
            });
            self.links.push(UNLINKED);
            (self.slots.len() - 1) as u32
        };
        self.index.insert(id, i);
        self.len += 1;
        self.push_newest(i);
        i
    }
}

impl ClientTable {
    /// A table of at most `size` clients (at least 1), each with a bucket of `burst`
    /// refilled at `rate_per_second`. Drops are counted in `dropped_refilled` and
    /// `dropped_evicted`.
    pub fn new(
        rate_per_second: f64,
        burst: u32,
        size: usize,
        now: Instant,
        dropped_refilled: IntCounter,
        dropped_evicted: IntCounter,
    ) -> ClientTable {
        let size = size.clamp(1, u32::MAX as usize / 2);
        let mut shards = 1;
        while shards * 2 <= MAX_SHARDS && size / (shards * 2) >= MIN_SHARD {
            shards *= 2;
        }
        let shards: Box<[Padded]> = (0..shards)
            .map(|i| {
                Padded(Mutex::new(Shard::new(
                    size / shards + usize::from(i < size % shards),
                )))
            })
            .collect();
        ClientTable {
            gcra: Gcra::new(rate_per_second, burst),
            origin: now,
            seed: RandomState::new(),
            shards,
            size,
            dropped_refilled,
            dropped_evicted,
        }
    }

    /// The hashed identity of a client, under this process's random key.
    pub fn id(&self, identity: &Identity<'_>) -> ClientId {
        self.seed.hash_one(identity)
    }

    fn shard(&self, id: ClientId) -> MutexGuard<'_, Shard> {
        // The index places a client by the low bits of its id: the shard is chosen from
        // higher bits, so that both stay random.
        let shard = &self.shards[(id >> 32) as usize & (self.shards.len() - 1)].0;
        // A panic never happens while a shard is locked; if one did, its state is still
        // consistent between operations.
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, dropped: Option<Dropped>) {
        match dropped {
            Some(Dropped::Refilled) => self.dropped_refilled.inc(),
            Some(Dropped::Evicted) => self.dropped_evicted.inc(),
            None => {}
        }
    }

    /// Takes a token from client `id`'s bucket if it has one and `then` (the next check,
    /// run while the client's state is held) agrees. `Ok(Some)`: taken, and the bucket's
    /// state after; `Ok(None)`: `then` refused, nothing taken; `Err(wait)`: the bucket is
    /// empty, and `then` was not asked.
    pub fn take(
        &self,
        id: ClientId,
        now: Instant,
        then: impl FnOnce() -> bool,
    ) -> Result<Option<Taken>, Refused> {
        self.take_in(&self.gcra, id, now, then)
    }

    /// [`ClientTable::take`] with another bucket's arithmetic: a client's fair share of
    /// the fleet's bucket while Redis is out of reach.
    pub fn take_in(
        &self,
        gcra: &Gcra,
        id: ClientId,
        now: Instant,
        then: impl FnOnce() -> bool,
    ) -> Result<Option<Taken>, Refused> {
        let now_ns = nanos_since(self.origin, now);
        let mut shard = self.shard(id);
        let taken = |tat| Taken { tat, now_ns };
        if let Some((_, i)) = shard.index.find(id, &shard.slots) {
            shard.touch(i);
            let tat = shard.slots[i as usize].tat;
            let next = gcra.take(tat, now_ns).map_err(|wait| Refused {
                wait,
                full_in: Gcra::full_in(tat, now_ns),
            })?;
            if !then() {
                return Ok(None);
            }
            shard.slots[i as usize].tat = next;
            return Ok(Some(taken(next)));
        }
        // Not in the table: a full bucket, which always has a token.
        let next = gcra.take(0, now_ns).map_err(|wait| Refused {
            wait,
            full_in: Duration::ZERO,
        })?;
        if !then() {
            return Ok(None); // still a full bucket: nothing to remember
        }
        let dropped = shard.make_room(now_ns);
        shard.insert(id, next);
        drop(shard);
        self.count(dropped);
        Ok(Some(taken(next)))
    }

    /// Sets client `id`'s bucket to what Redis said: its TAT `ahead` of now (inserted if
    /// the client is new here).
    pub fn mirror(&self, id: ClientId, now: Instant, ahead: Duration) {
        let now_ns = nanos_since(self.origin, now);
        let tat = now_ns.saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX));
        let mut shard = self.shard(id);
        if let Some((_, i)) = shard.index.find(id, &shard.slots) {
            shard.touch(i);
            shard.slots[i as usize].tat = tat;
            return;
        }
        let dropped = shard.make_room(now_ns);
        shard.insert(id, tat);
        drop(shard);
        self.count(dropped);
    }

    /// What this pod can decide of a fleet client's request by itself, under one look at
    /// the client: a token of its lease (a client this pod serves often), a refusal it
    /// remembers (as Envoy's over-limit cache does), or what to ask Redis for. A lease
    /// grows by doubling while each is spent within half its life (50 ms), up to `most` tokens, and
    /// shrinks by half when one lapses unspent: a client seen once asks for one token, as
    /// without leases.
    pub fn fleet_local(&self, id: ClientId, now: Instant, most: u32) -> Local {
        let now_ns = nanos_since(self.origin, now);
        let now_ms = (now_ns / 1_000_000) as u32;
        let mut shard = self.shard(id);
        let Some((_, i)) = shard.index.find(id, &shard.slots) else {
            return Local::Ask { want: 1 };
        };
        shard.touch(i);
        let slot = &mut shard.slots[i as usize];
        let age = now_ms.wrapping_sub(slot.lease.at_ms);
        let lease = &mut slot.lease;
        if lease.left > 0 && age < LEASE_LIFE_MS {
            lease.left -= 1;
            // At half left, the next lease is asked for ahead of need (as the global
            // bucket's is), so the client's requests go on being decided here meanwhile.
            let size = lease_tokens(lease.size_log2, most);
            let refill =
                (size >= 8 && !lease.asking && u32::from(lease.left) == size / 2).then(|| {
                    if age < LEASE_FAST_MS / 2 {
                        lease.size_log2 = (lease.size_log2 + 1).min(LEASE_MOST_LOG2);
                    }
                    lease.asking = true;
                    lease_tokens(lease.size_log2, most)
                });
            let state = Taken {
                tat: slot.tat,
                now_ns,
            };
            let remaining = state.remaining(&self.gcra) + u32::from(lease.left);
            return Local::Leased {
                remaining,
                full_in: state.full_in(),
                refill,
            };
        }
        if let Err(wait) = self.gcra.take(slot.tat, now_ns) {
            return Local::Refused(Refused {
                wait,
                full_in: Gcra::full_in(slot.tat, now_ns),
            });
        }
        if lease.asking && age < LEASE_LIFE_MS {
            // Another request's lease is on its way: this one waits for it.
            return Local::Wait;
        }
        let last = lease.size_log2;
        let size_log2 = if lease.left > 0 {
            // Lapsed unspent: too large for this client here.
            last.saturating_sub(1)
        } else if age < LEASE_FAST_MS {
            (last + 1).min(LEASE_MOST_LOG2)
        } else {
            last
        };
        let want = lease_tokens(size_log2, most);
        if want > 1 {
            *lease = Lease {
                left: 0,
                size_log2,
                asking: true,
                at_ms: now_ms,
            };
        }
        Local::Ask { want }
    }

    /// A lease asked for did not come (Redis refused or failed): the next request asks.
    pub fn lease_failed(&self, id: ClientId) {
        let mut shard = self.shard(id);
        if let Some((_, i)) = shard.index.find(id, &shard.slots) {
            shard.slots[i as usize].lease.asking = false;
        }
    }

    /// Gives back a token of client `id`'s lease that [`ClientTable::fleet_local`] took for
    /// a request another limit then refused.
    pub fn unspend_leased(&self, id: ClientId) {
        let mut shard = self.shard(id);
        if let Some((_, i)) = shard.index.find(id, &shard.slots) {
            let lease = &mut shard.slots[i as usize].lease;
            lease.left = lease.left.saturating_add(1);
        }
    }

    /// Records what the fleet's bucket granted client `id` after it asked for `want`: `held`
    /// tokens to keep (a lease's whole grant; for a request's own token, none), and its
    /// TAT `ahead` of now.
    pub fn leased(&self, id: ClientId, now: Instant, want: u32, held: u32, ahead: Duration) {
        let now_ns = nanos_since(self.origin, now);
        let tat = now_ns.saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX));
        let now_ms = (now_ns / 1_000_000) as u32;
        let held = u16::try_from(held).unwrap_or(u16::MAX);
        let mut shard = self.shard(id);
        let mut dropped = None;
        let i = match shard.index.find(id, &shard.slots) {
            Some((_, i)) => {
                shard.touch(i);
                i
            }
            None => {
                dropped = shard.make_room(now_ns);
                shard.insert(id, tat)
            }
        };
        let slot = &mut shard.slots[i as usize];
        slot.tat = tat;
        let lease = &mut slot.lease;
        let fresh = now_ms.wrapping_sub(lease.at_ms) < LEASE_LIFE_MS;
        if want > 1 {
            // The lease this client's request asked for: held, with what is left of one
            // granted meanwhile.
            let kept = if fresh { lease.left } else { 0 };
            *lease = Lease {
                left: kept.saturating_add(held),
                size_log2: lease.size_log2,
                asking: false,
                at_ms: now_ms,
            };
        } else if fresh {
            // A request's own token (a client seen once, or whose lease shrank to one):
            // nothing to hold, and the lease's state stays.
            lease.left = lease.left.saturating_add(held);
        } else {
            *lease = Lease {
                left: held,
                size_log2: 0,
                asking: false,
                at_ms: now_ms,
            };
        }
        drop(shard);
        self.count(dropped);
    }

    /// The state of client `id`'s bucket now, without taking anything.
    pub fn peek(&self, id: ClientId, now: Instant) -> Taken {
        let now_ns = nanos_since(self.origin, now);
        let shard = self.shard(id);
        let tat = shard
            .index
            .find(id, &shard.slots)
            .map_or(0, |(_, i)| shard.slots[i as usize].tat);
        Taken { tat, now_ns }
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).len)
            .sum()
    }

    /// Whether no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most clients the table holds (`TCPIE_CLIENT_TABLE_SIZE`).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The buckets' arithmetic.
    pub fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    /// Shards, for tests of the least-recently-seen order (exact within one shard).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, pause};

    fn counter(name: &str) -> IntCounter {
        IntCounter::new(name, "test").unwrap()
    }

    fn table(rate: f64, burst: u32, size: usize) -> ClientTable {
        ClientTable::new(
            rate,
            burst,
            size,
            Instant::now(),
            counter("r"),
            counter("e"),
        )
    }

    fn admit(t: &ClientTable, id: ClientId) -> bool {
        matches!(t.take(id, Instant::now(), || true), Ok(Some(_)))
    }

    /// A fleet client served often by one pod: leases that double while they go fast,
    /// spent without asking, the next asked for at half left, one at a time, lapsing
    /// after 100 ms and then halved; a refusal remembered.
    #[tokio::test]
    async fn a_fleet_clients_leases_grow_lapse_and_shrink() {
        pause();
        let t = table(1000.0, 8000, 100);
        let most = 100;
        let now = Instant::now;
        // `n` requests of client 7, each answered at once by Redis with all it asks: a
        // request that asks for a lease spends from it when it comes.
        let serve = |t: &ClientTable, n: usize, asked: &mut Vec<u32>| {
            for _ in 0..n {
                loop {
                    match t.fleet_local(7, now(), most) {
                        Local::Ask { want: 1 } => {
                            asked.push(1);
                            t.leased(7, now(), 1, 0, Duration::from_millis(1));
                        }
                        Local::Ask { want } => {
                            asked.push(want);
                            t.leased(7, now(), want, want, Duration::from_millis(1));
                            continue;
                        }
                        Local::Leased {
                            refill: Some(want), ..
                        } => {
                            asked.push(want);
                            t.leased(7, now(), want, want, Duration::from_millis(1));
                        }
                        Local::Leased { refill: None, .. } => {}
                        Local::Refused(r) => panic!("refused: {r:?}"),
                        Local::Wait => panic!("waits for a lease no one asked for"),
                    }
                    break;
                }
            }
        };
        // Unknown here: one token, as without leases; then twice as many each time while
        // they go fast, up to the most; from 8 on, the next asked for at half left,
        // so no request asks again.
        let mut asked = Vec::new();
        serve(&t, 600, &mut asked);
        assert_eq!(&asked[..8], [1, 2, 4, 8, 16, 32, 64, 100]);
        assert!(asked[8..].iter().all(|w| *w == 100), "{asked:?}");
        assert!(
            asked.len() <= 7 + 600 / 100,
            "{} calls for 600 requests",
            asked.len()
        );
        // While a lease is asked for, a request that finds none left waits for it (no
        // call of its own), and spends from it when it comes.
        let t = table(1000.0, 8000, 100);
        t.leased(7, now(), 1, 0, Duration::from_millis(1));
        let Local::Ask { want } = t.fleet_local(7, now(), most) else {
            panic!("asks");
        };
        assert_eq!(want, 2);
        assert_eq!(t.fleet_local(7, now(), most), Local::Wait);
        assert_eq!(t.fleet_local(7, now(), most), Local::Wait);
        t.leased(7, now(), want, 9, Duration::from_millis(1));
        let spent = (0..20)
            .take_while(|_| matches!(t.fleet_local(7, now(), most), Local::Leased { .. }))
            .count();
        assert_eq!(spent, 9);
        // A lease asked for and never answered (its asker gone) is waited for no longer
        // than its life.
        let t = table(1000.0, 8000, 100);
        t.leased(7, now(), 1, 0, Duration::from_millis(1));
        assert_eq!(t.fleet_local(7, now(), most), Local::Ask { want: 2 });
        advance(Duration::from_millis(99)).await;
        assert_eq!(t.fleet_local(7, now(), most), Local::Wait);
        advance(Duration::from_millis(1)).await;
        assert!(matches!(t.fleet_local(7, now(), most), Local::Ask { .. }));
        // A lease left unspent lapses after 100 ms, and the next asks for half as many.
        let t = table(1000.0, 8000, 100);
        let most = 1000;
        let mut asked = Vec::new();
        t.leased(7, now(), 1, 0, Duration::from_millis(1));
        for _ in 0..4 {
            let Local::Ask { want } = t.fleet_local(7, now(), most) else {
                panic!("asks");
            };
            asked.push(want);
            t.leased(7, now(), want, want - 1, Duration::from_millis(1));
            advance(Duration::from_millis(101)).await;
        }
        // Lapsed unspent: half as many; then nothing held, asked again slowly: the same.
        assert_eq!(asked, [2, 1, 1, 1]);
        // A token taken for a request another limit refused goes back to the lease.
        t.leased(7, now(), 4, 1, Duration::from_millis(1));
        assert!(matches!(
            t.fleet_local(7, now(), most),
            Local::Leased { .. }
        ));
        t.unspend_leased(7);
        assert!(matches!(
            t.fleet_local(7, now(), most),
            Local::Leased { .. }
        ));
        // A lease Redis did not give: the next request asks again at once.
        advance(Duration::from_millis(30)).await;
        let Local::Ask { want } = t.fleet_local(7, now(), most) else {
            panic!("asks");
        };
        assert!(want >= 1);
        t.lease_failed(7);
        assert!(matches!(t.fleet_local(7, now(), most), Local::Ask { .. }));
        // Refused by Redis: refused here until the wait is over, without asking (the
        // lease this pod holds is spent first).
        t.leased(7, now(), 4, 3, Duration::from_millis(1));
        t.mirror(7, now(), Duration::from_millis(8300));
        for _ in 0..3 {
            assert!(matches!(
                t.fleet_local(7, now(), most),
                Local::Leased { .. }
            ));
        }
        let Local::Refused(refused) = t.fleet_local(7, now(), most) else {
            panic!("a refusal is remembered");
        };
        // Its TAT 8300 ms ahead, 8000 ms of tolerance, a token a millisecond.
        assert_eq!(refused.wait, Duration::from_millis(301));
        advance(Duration::from_millis(300)).await;
        assert!(matches!(t.fleet_local(7, now(), most), Local::Refused(_)));
        advance(Duration::from_millis(1)).await;
        assert!(matches!(t.fleet_local(7, now(), most), Local::Ask { .. }));
    }

    #[tokio::test]
    async fn each_client_has_its_own_exact_bucket() {
        pause();
        let t = table(2.0, 3, 100);
        // Client 1 floods: exactly its burst, then nothing until a token refills.
        assert_eq!((0..10).filter(|_| admit(&t, 1)).count(), 3);
        let refused = t.take(1, Instant::now(), || true).unwrap_err();
        assert_eq!(refused.wait, Duration::from_millis(500));
        assert_eq!(refused.full_in, Duration::from_millis(1500));
        // Client 2 is untouched by it.
        assert_eq!((0..10).filter(|_| admit(&t, 2)).count(), 3);
        advance(Duration::from_millis(500)).await;
        assert!(admit(&t, 1));
        assert!(!admit(&t, 1));
        // Fractions accumulate: 250 ms is half a token.
        advance(Duration::from_millis(250)).await;
        assert_eq!(t.peek(1, Instant::now()).remaining(t.gcra()), 0);
        advance(Duration::from_millis(250)).await;
        assert_eq!(t.peek(1, Instant::now()).remaining(t.gcra()), 1);
        assert_eq!(t.len(), 2);
    }

    #[tokio::test]
    async fn a_refusal_after_the_client_bucket_spends_nothing_of_it() {
        pause();
        let t = table(1.0, 2, 10);
        assert_eq!(t.take(7, Instant::now(), || false), Ok(None));
        assert_eq!(t.len(), 0, "a full bucket is not stored");
        assert!(admit(&t, 7));
        assert_eq!(t.take(7, Instant::now(), || false), Ok(None));
        assert!(admit(&t, 7), "the refused attempt took nothing");
        // An empty bucket does not ask the next check.
        let asked = std::cell::Cell::new(false);
        assert!(t
            .take(7, Instant::now(), || {
                asked.set(true);
                true
            })
            .is_err());
        assert!(!asked.get());
    }

    #[tokio::test]
    async fn clients_with_full_buckets_make_room_first() {
        pause();
        let t = table(10.0, 2, 4);
        assert_eq!(t.shards(), 1);
        // Four clients in debt; 1 and 2 spend a whole burst, 3 and 4 one token.
        for id in [1, 1, 2, 2, 3, 4] {
            assert!(admit(&t, id));
        }
        // 100 ms refills one token: 3 and 4 are full again, 1 and 2 are not.
        advance(Duration::from_millis(100)).await;
        assert!(admit(&t, 5)); // drops 3, a full bucket, although 1 was seen before it
        assert!(admit(&t, 6)); // drops 4
        assert_eq!(t.dropped_refilled.get(), 2);
        assert_eq!(t.dropped_evicted.get(), 0);
        assert_eq!(t.len(), 4);
        // 1 and 2 kept their debt: one token each.
        assert!(admit(&t, 1));
        assert!(!admit(&t, 1));
    }

    #[tokio::test]
    async fn a_table_full_of_clients_in_debt_evicts_the_least_recently_seen() {
        pause();
        let t = table(1.0, 1, 3);
        for id in [1, 2, 3] {
            assert!(admit(&t, id));
        }
        assert!(!admit(&t, 1)); // seen again (refused): now the most recent
        assert!(admit(&t, 4)); // evicts 2, the least recently seen
        assert_eq!(t.dropped_evicted.get(), 1);
        assert!(admit(&t, 2), "an evicted client starts with a full bucket");
        // That evicted 3; 1 and 4 are still in debt.
        assert!(!admit(&t, 1));
        assert!(!admit(&t, 4));
        assert_eq!(t.dropped_evicted.get(), 2);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn the_size_is_split_exactly_over_the_shards() {
        for size in [1, 5, 1023, 1024, 2048, 100_000, 123_457] {
            let t = table(1.0, 1, size);
            let total: usize = t.shards.iter().map(|s| s.0.lock().unwrap().capacity).sum();
            assert_eq!(total, size);
            assert!(t.shards().is_power_of_two() && t.shards() <= MAX_SHARDS);
        }
        assert_eq!(table(1.0, 1, 100_000).shards(), 64);
        assert_eq!(table(1.0, 1, 2047).shards(), 1);
    }

    #[test]
    fn never_more_clients_than_the_size() {
        let now = Instant::now();
        let t = table(1.0, 1, 5_000);
        for id in 0..50_000u64 {
            let id = t.id(&Identity::Bytes(&id.to_le_bytes()));
            assert!(t.take(id, now, || true).is_ok());
        }
        assert_eq!(t.len(), 5_000);
        assert_eq!(t.dropped_evicted.get(), 45_000);
    }

    #[test]
    fn identities_hash_apart_and_with_a_per_process_key() {
        let a = table(1.0, 1, 10);
        let b = table(1.0, 1, 10);
        let header = Identity::Bytes(&[10, 0, 0, 1]);
        let v4 = Identity::V4([10, 0, 0, 1]);
        assert_ne!(a.id(&header), a.id(&v4));
        assert_eq!(a.id(&v4), a.id(&Identity::V4([10, 0, 0, 1])));
        assert_ne!(a.id(&v4), b.id(&v4), "each table has its own key");
    }
}
