//! Rate limiting: whether a request may enter at all (429 otherwise), and what the limits
//! tell the client.
//!
//! The parts:
//! - [`gcra`]: the token bucket as a theoretical arrival time, the arithmetic of every
//!   bucket (the global one, each client's), with no clock and no lock.
//! - [`client_key`]: the bytes that name a client in a request (`TCPIE_CLIENT_KEY`).
//! - [`client_table`]: each client's bucket, in a bounded, sharded table.
//! - [`quota`]: which limit refused ([`Limit`]), the `RateLimit` fields and the `429`
//!   answers.
//! - [`fleet`]: both kinds of bucket shared by every pod through Redis
//!   (`TCPIE_REDIS_URL`), and each pod's fair share when Redis is out of reach.
//!
//! [`RateLimits`] asks the client's bucket, then the global one, and says which refused
//! and what to report; what a refusal does next (the answer, the metrics) belongs to
//! admission, which also asks the worker pool.

pub(crate) mod client_key;
pub(crate) mod client_table;
pub(crate) mod fleet;
pub(crate) mod gcra;
mod quota;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{ClientKey, Config};
use crate::handler::Request;
use client_key::LastClient;
use client_table::Local;
use client_table::{ClientId, ClientTable};
use fleet::lease::{SharedBucket, Taken as Leased};
use fleet::{ClientAnswer, Fleet};
use gcra::{Gcra, TokenBucket};

pub use quota::Limit;
pub(crate) use quota::{Quota, TooMany};

/// The global bucket and the clients' buckets, as configured.
pub(crate) struct RateLimits {
    /// The pod's own global bucket (without a fleet).
    bucket: Option<TokenBucket>,
    clients: Option<Clients>,
    /// The fleet's shared buckets (`TCPIE_REDIS_URL`): the global one replaces `bucket`,
    /// and `clients`' table becomes a cache of what Redis said.
    fleet: Option<Arc<Fleet>>,
    /// `TCPIE_RATE_LIMIT_DRY_RUN`: decide and count, but refuse nothing.
    pub dry_run: bool,
    /// `RateLimit` fields on every answer, not only on 429.
    headers: bool,
}

/// The per-client limit: how clients are named, and their buckets.
struct Clients {
    key: ClientKey,
    trusted_hops: u32,
    /// Shared with the fleet's lease refills, which outlive the request that starts them.
    table: Arc<ClientTable>,
}

/// What the rate limits said of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Said {
    /// The limit that refused it, and how long until it would not.
    pub refused: Option<(Limit, Duration)>,
    /// What to report: on a refusal, and on every answer with `TCPIE_RATE_LIMIT_HEADERS`.
    pub quota: Option<Quota>,
}

impl RateLimits {
    /// The limits of `config`; clients dropped from the table are counted in `refilled`
    /// and `evicted`.
    pub fn new(
        config: &Config,
        now: Instant,
        refilled: prometheus::IntCounter,
        evicted: prometheus::IntCounter,
        fleet: Option<Arc<Fleet>>,
    ) -> RateLimits {
        let clients = (config.client_key != ClientKey::None).then(|| Clients {
            key: config.client_key.clone(),
            trusted_hops: config.trusted_hops,
            table: Arc::new(ClientTable::new(
                config.client_rate_per_second,
                config.client_burst,
                config.client_table_size,
                now,
                refilled,
                evicted,
            )),
        });
        RateLimits {
            bucket: (config.rate_limited() && fleet.is_none())
                .then(|| TokenBucket::new(config.rate_per_second, config.burst, now)),
            clients,
            fleet,
            dry_run: config.rate_limit_dry_run,
            headers: config.rate_limit_headers,
        }
    }

    /// Tokens in the global bucket now; 0 with rate limiting off, so that dashboards do
    /// not plot a meaningless figure.
    pub fn tokens(&self, now: Instant) -> f64 {
        if let Some(fleet) = &self.fleet {
            return fleet
                .global()
                .map_or(0.0, |g| g.available(now, fleet.shared()));
        }
        self.bucket.as_ref().map_or(0.0, |b| b.available(now))
    }

    /// The fleet's shared limits, when a Redis is configured.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Clients tracked now (0 without a per-client limit).
    pub fn clients_tracked(&self) -> usize {
        self.clients.as_ref().map_or(0, |c| c.table.len())
    }

    /// The size of the client table (0 without a per-client limit).
    pub fn client_table_size(&self) -> usize {
        self.clients.as_ref().map_or(0, |c| c.table.size())
    }

    /// The client that sent `request` over a connection from `peer`, hashed; `None`
    /// without a per-client limit. `last` is the connection's last client.
    pub fn client(
        &self,
        peer: IpAddr,
        request: &Request,
        last: &mut LastClient,
    ) -> Option<ClientId> {
        let clients = self.clients.as_ref()?;
        let identity = client_key::identify(&clients.key, clients.trusted_hops, peer, request)?;
        // A fleet names a client the same in every pod, by a digest worth remembering.
        Some(match &self.fleet {
            Some(fleet) => last.id(&identity, || fleet.client_id(&identity)),
            None => clients.table.id(&identity),
        })
    }

    /// The client's bucket, then the global one (see [`RateLimits::check_local`]); with a
    /// fleet, the shared buckets, which may wait for Redis, within its timeout.
    pub async fn check(&self, now: Instant, client: Option<ClientId>) -> Said {
        match &self.fleet {
            Some(fleet) => self.check_fleet(fleet, now, client).await,
            None => self.check_local(now, client),
        }
    }

    /// The client's bucket, then the global one. A request refused by its own bucket
    /// spends nothing of the global one, and one the global bucket refuses is not
    /// charged to its client: a client pays only for what it is served.
    pub fn check_local(&self, now: Instant, client: Option<ClientId>) -> Said {
        let global_quota = |bucket: &TokenBucket, tat| {
            let (remaining, full_in) = bucket.state(tat, now);
            quota(Limit::Global, bucket.gcra(), remaining, full_in)
        };
        let said = |refused, quota| Said { refused, quota };
        let (Some(clients), Some(id)) = (&self.clients, client) else {
            // The global bucket alone: the path every request took before per-client
            // limits, with nothing more to do unless the fields are wanted.
            let Some(bucket) = &self.bucket else {
                return said(None, None);
            };
            return match bucket.take(now) {
                Ok(tat) => said(None, self.headers.then(|| global_quota(bucket, Some(tat)))),
                Err(wait) => said(
                    Some((Limit::Global, wait)),
                    Some(global_quota(bucket, None)),
                ),
            };
        };
        // The global bucket is asked while the client's state is held, so that a client
        // is charged only when both agree.
        let mut global = None;
        let taken = clients.table.take(id, now, || match &self.bucket {
            None => true,
            Some(bucket) => {
                let result = bucket.take(now);
                let ok = result.is_ok();
                global = Some(result);
                ok
            }
        });
        let gcra = clients.table.gcra();
        match (taken, global) {
            (Err(refused), _) => said(
                Some((Limit::Client, refused.wait)),
                Some(quota(Limit::Client, gcra, 0, refused.full_in)),
            ),
            (Ok(_), Some(Err(wait))) => {
                let bucket = self.bucket.as_ref().map(|b| global_quota(b, None));
                said(Some((Limit::Global, wait)), bucket)
            }
            (Ok(taken), global) => {
                if !self.headers {
                    return said(None, None);
                }
                // Admitted by both: report the one closer to refusing (fewer tokens
                // left; on a tie, the one that takes longer to refill).
                let (remaining, full_in) = taken.map_or((gcra.burst(), Duration::ZERO), |t| {
                    (t.remaining(gcra), t.full_in())
                });
                let client = quota(Limit::Client, gcra, remaining, full_in);
                let global = match (&self.bucket, global) {
                    (Some(bucket), Some(Ok(tat))) => Some(global_quota(bucket, Some(tat))),
                    _ => None,
                };
                match global {
                    Some(g) if (g.remaining, client.full_in) < (client.remaining, g.full_in) => {
                        said(None, Some(g))
                    }
                    _ => said(None, Some(client)),
                }
            }
        }
    }

    /// The fleet's buckets, in the same order and with the same promise as
    /// [`RateLimits::check_local`]: a client refused recently is refused here (no call);
    /// then a token of the global lease (no call); then one call for the client's token,
    /// and the global token goes back if the client's bucket refuses. While Redis is out
    /// of reach, each bucket is the pod's fair share of it.
    async fn check_fleet(
        &self,
        fleet: &Arc<Fleet>,
        now: Instant,
        client: Option<ClientId>,
    ) -> Said {
        let said = |refused, quota| Said { refused, quota };
        let shared = fleet.shared();
        let mut client_shared = shared;
        // One bound for all the request's waits: for its client's lease, then for the
        // global one's.
        let deadline = now + fleet.timeout();
        let clients = self.clients.as_ref().zip(client);
        // The client first, as without a fleet: a token of this pod's lease, a refusal
        // remembered, or a call to make after the global bucket agrees.
        let mut ask = None;
        if let Some((clients, id)) = clients {
            let most = fleet.client_lease_most();
            let (local, in_time) = match clients.table.fleet_local(id, now, most) {
                // Boxed, as every wait for Redis here: the futures are large, and every
                // request's admission would otherwise carry room for them, waiting or not.
                wait @ (Local::Wait | Local::Ask { want: 2.. }) => {
                    Box::pin(client_local(fleet, &clients.table, id, wait, deadline)).await
                }
                decided => (decided, true),
            };
            // Its lease did not come in time: Redis is slow, and this request keeps to
            // the client's fair share.
            client_shared &= in_time;
            match local {
                Local::Refused(refused) => {
                    let gcra = fleet.client_gcra();
                    let quota = quota(Limit::Client, gcra, 0, refused.full_in);
                    return said(Some((Limit::Client, refused.wait)), Some(quota));
                }
                Local::Leased {
                    remaining,
                    full_in,
                    refill,
                } => {
                    if let Some(want) = refill {
                        lease_client(fleet, &clients.table, id, want);
                    }
                    ask = Some(Err((remaining, full_in)));
                }
                Local::Ask { want } => ask = Some(Ok(want)),
                Local::Wait => ask = Some(Ok(1)),
            }
        }
        let global_quota = |bucket: &SharedBucket| {
            let remaining = bucket.remaining(now, fleet.shared());
            quota(Limit::Global, bucket.gcra(), remaining, Duration::ZERO)
        };
        let global = match fleet.global() {
            None => None,
            Some(bucket) => {
                let mut taken = bucket.take(now, shared);
                // Spent, but the fleet's bucket is not: this pod's demand outran its
                // estimate (a quiet pod turned busy, a burst). Wait for refills, a round
                // trip each, up to the Redis timeout, rather than refuse.
                while taken.is_err() && fleet.shared() && bucket.more_in_redis() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    Box::pin(fleet.refill(bucket, left)).await;
                    taken = bucket.take(Instant::now(), fleet.shared());
                }
                match taken {
                    Ok(taken) => {
                        if let Leased::Leased { left } = taken {
                            fleet.spent(left);
                        }
                        Some((bucket, taken))
                    }
                    Err(wait) => {
                        fleet.ran_out();
                        // A client pays only for what it is served: its leased token back.
                        if let (Some((clients, id)), Some(Err(_))) = (clients, ask) {
                            clients.table.unspend_leased(id);
                        }
                        return said(Some((Limit::Global, wait)), Some(global_quota(bucket)));
                    }
                }
            }
        };
        let admitted_global = || global.map(|(bucket, _)| global_quota(bucket));
        let Some((clients, id)) = clients else {
            return said(None, self.headers.then(admitted_global).flatten());
        };
        let give_back = || {
            if let Some((bucket, taken)) = global {
                bucket.give_back(taken, Instant::now());
            }
        };
        let gcra = fleet.client_gcra();
        let want = match ask {
            // Spent from the lease: the client's bucket is not asked.
            Some(Err((remaining, full_in))) => {
                if !self.headers {
                    return said(None, None);
                }
                let client_quota = quota(Limit::Client, gcra, remaining, full_in);
                return match admitted_global() {
                    Some(g) if g.remaining < client_quota.remaining => said(None, Some(g)),
                    _ => said(None, Some(client_quota)),
                };
            }
            Some(Ok(want)) => want,
            None => 1,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = if client_shared && !left.is_zero() {
            Box::pin(fleet.take_client(id, want, left)).await.ok()
        } else {
            None
        };
        let client_quota = match answer {
            Some(ClientAnswer::Admitted {
                granted,
                remaining,
                full_in,
            }) => {
                clients
                    .table
                    .leased(id, now, want, granted.saturating_sub(1), full_in);
                let held = granted.saturating_sub(1);
                quota(Limit::Client, gcra, remaining + held, full_in)
            }
            Some(ClientAnswer::Refused { wait }) => {
                // Refused here, with no call, until the wait is over.
                let ahead = refused_ahead(gcra, wait);
                clients.table.mirror(id, now, ahead);
                give_back();
                let quota = quota(Limit::Client, gcra, 0, ahead);
                return said(Some((Limit::Client, wait)), Some(quota));
            }
            None => {
                let share = fleet.client_fair_share();
                match clients.table.take_in(&share, id, now, || true) {
                    Ok(taken) => {
                        let (remaining, full_in) = taken
                            .map_or((share.burst(), Duration::ZERO), |t| {
                                (t.remaining(&share), t.full_in())
                            });
                        quota(Limit::Client, &share, remaining, full_in)
                    }
                    Err(refused) => {
                        give_back();
                        let quota = quota(Limit::Client, &share, 0, refused.full_in);
                        return said(Some((Limit::Client, refused.wait)), Some(quota));
                    }
                }
            }
        };
        if !self.headers {
            return said(None, None);
        }
        match admitted_global() {
            Some(g) if g.remaining < client_quota.remaining => said(None, Some(g)),
            _ => said(None, Some(client_quota)),
        }
    }
}

/// What the pod can tell of client `id`'s request without a call of its own, after
/// `local` ([`ClientTable::fleet_local`]) said to wait for a lease on its way or to ask
/// for one: having waited for it until `deadline` (asking for it first when it is this
/// request's to ask); `false` when it waited in vain. A lease asked for costs one call
/// for all the requests that wait for it, where each would otherwise have asked for its
/// own token.
async fn client_local(
    fleet: &Arc<Fleet>,
    table: &Arc<ClientTable>,
    id: ClientId,
    mut local: Local,
    deadline: Instant,
) -> (Local, bool) {
    let most = fleet.client_lease_most();
    loop {
        match local {
            _ if !fleet.shared() => {
                return match local {
                    // The fair share decides: no lease while Redis is out of reach.
                    Local::Ask { .. } | Local::Wait => (Local::Ask { want: 1 }, true),
                    decided => (decided, true),
                };
            }
            Local::Ask { want } if want > 1 => lease_client(fleet, table, id, want),
            Local::Wait => {}
            decided => return (decided, true),
        }
        // Told of every lease of the clients that share this `Notify`: registered before
        // the look that decides to wait, so that a lease coming between is not missed.
        let leased = fleet.client_leased(id).notified();
        tokio::pin!(leased);
        leased.as_mut().enable();
        local = table.fleet_local(id, Instant::now(), most);
        if !matches!(local, Local::Wait) {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, leased).await.is_err() {
            return (Local::Ask { want: 1 }, false);
        }
        local = table.fleet_local(id, Instant::now(), most);
    }
}

/// Asks the fleet for `want` of client `id`'s tokens in the background (a request that
/// goes away does not strand the lease) and tells the requests waiting for it. A refusal
/// is remembered, so that they are refused without a call.
fn lease_client(fleet: &Arc<Fleet>, table: &Arc<ClientTable>, id: ClientId, want: u32) {
    let (fleet, table) = (fleet.clone(), table.clone());
    tokio::spawn(async move {
        let answer = fleet.take_client(id, want, fleet.timeout()).await;
        let now = Instant::now();
        match answer {
            Ok(ClientAnswer::Admitted {
                granted, full_in, ..
            }) => table.leased(id, now, want, granted, full_in),
            Ok(ClientAnswer::Refused { wait }) => {
                table.mirror(id, now, refused_ahead(fleet.client_gcra(), wait));
                table.lease_failed(id);
            }
            Err(_) => table.lease_failed(id),
        }
        fleet.client_leased(id).notify_waiters();
    });
}

/// How far ahead of now a client's TAT is when the fleet's bucket refused it for `wait`.
fn refused_ahead(gcra: &Gcra, wait: Duration) -> Duration {
    let interval = Duration::from_nanos(gcra.interval_ns());
    (wait + gcra.window()).saturating_sub(interval)
}

fn quota(limit: Limit, gcra: &Gcra, remaining: u32, full_in: Duration) -> Quota {
    Quota {
        limit,
        burst: gcra.burst(),
        window: gcra.window(),
        remaining,
        full_in,
    }
}
