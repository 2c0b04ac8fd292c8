"""A discrete-event simulation of a fleet of TCPie pods behind a Kubernetes Service, to
compare readiness policies under global overload (issue 14, part 3).

The model: N pods, each with W workers and Q queue places, serving requests that take an
exponentially distributed time with mean S. The kubelet probes each pod's /readyz every
`period` seconds (each pod at its own phase); `failure_threshold` failures in a row take
the pod out of the Service's endpoints and `success_threshold` successes put it back, and
kube-proxy learns of it `endpoint_delay` seconds later. kube-proxy picks uniformly among
the endpoints it knows to be ready, and refuses the connection when there are none.
Clients arrive as a Poisson stream; a refused connection or a 503 is retried after
`retry_after` seconds, at most `max_retries` times; a client gives up `timeout` seconds
after its first attempt (the pod still does the work of a request it gave up on).

A readiness policy decides what /readyz answers, from what a pod can know of itself:
its queue, how long it has been saturated, and when it last failed readiness. A pod
cannot see its peers, so no policy can know how many of them would stay ready.

    python3 sim/fleet.py            # a small table of every policy at a few loads
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

# Readiness policies, by name.
#   saturation: fail while the queue is full (the chart's setting until now:
#               TCPIE_READY_QUEUE_THRESHOLD=1.0).
#   never:      saturation never fails readiness (TCPIE_READY_QUEUE_THRESHOLD=0).
#   sustained:  fail only when the queue was full at this probe and at every probe of the
#               last `sustain` seconds (a pod remembers its last probes' answers).
#   capped:     fail while saturated, but only within a window of failure_threshold
#               probes that may start once every `cap_every` windows: at most about
#               1/cap_every of a saturated fleet is out at once.
POLICIES = ("saturation", "never", "sustained", "capped")


@dataclass
class Settings:
    pods: int = 10
    workers: int = 2
    queue: int = 5
    service_s: float = 0.1
    service_fixed: bool = False  # every request takes service_s (as TCPIE_SIMULATED_WORK_MS)
    load: float = 1.0  # offered load, as a multiple of the fleet's capacity
    # A fleet that is not uniform: the first `slow_pods` pods take `slow_factor` times as
    # long per request (a noisy neighbour, a slower node). This is the case readiness on
    # saturation was meant for: a pod that is overloaded while its peers are not.
    slow_pods: int = 0
    slow_factor: float = 3.0
    policy: str = "saturation"
    period: float = 5.0  # the chart's readiness probe
    failure_threshold: int = 2
    success_threshold: int = 1
    endpoint_delay: float = 1.0
    sustain: float = 30.0
    cap_every: int = 4
    retry_after: float = 1.0
    max_retries: int = 3
    timeout: float = 10.0
    duration: float = 120.0
    warmup: float = 20.0
    seed: int = 1

    @property
    def capacity(self) -> float:
        """Requests per second the whole fleet can serve (slow pods counted as they are)."""
        normal = self.pods - self.slow_pods + self.slow_pods / self.slow_factor
        return normal * self.workers / self.service_s


@dataclass
class Pod:
    index: int
    busy: int = 0
    queue: list = field(default_factory=list)  # request ids, oldest first
    ready: bool = True  # as the kubelet sees it
    in_endpoints: bool = True  # as kube-proxy sees it
    failures: int = 0
    successes: int = 0
    saturated_probes: int = 0  # probes in a row that found the queue full
    last_failed: float = -math.inf

    def saturated(self, s: Settings) -> bool:
        return len(self.queue) >= s.queue and self.busy >= s.workers


@dataclass
class Result:
    settings: Settings
    offered: int = 0
    succeeded: int = 0
    timed_out: int = 0
    refused: int = 0  # gave up after connection refusals (no endpoint)
    rejected: int = 0  # gave up after 503s
    wasted: int = 0  # served after the client gave up
    latencies: list = field(default_factory=list)
    unready_share_samples: list = field(default_factory=list)
    refusals: int = 0  # every refused connection, retried or not
    max_busy: int = 0
    max_queue: int = 0

    @property
    def measured_s(self) -> float:
        return self.settings.duration - self.settings.warmup

    @property
    def goodput_ratio(self) -> float:
        """Successful answers per second, as a share of the fleet's capacity."""
        return self.succeeded / self.measured_s / self.settings.capacity

    @property
    def ended(self) -> int:
        return self.succeeded + self.timed_out + self.refused + self.rejected

    def p99(self) -> float:
        if not self.latencies:
            return math.nan
        v = sorted(self.latencies)
        return v[min(len(v) - 1, int(0.99 * len(v)))]

    @property
    def unready_share(self) -> float:
        s = self.unready_share_samples
        return sum(s) / len(s) if s else 0.0


def policy_ready(pod: Pod, s: Settings, now: float) -> bool:
    """What /readyz answers at `now`, under the policy."""
    saturated = pod.saturated(s)
    if s.policy == "never":
        return True
    if s.policy == "saturation":
        return not saturated
    if s.policy == "sustained":
        pod.saturated_probes = pod.saturated_probes + 1 if saturated else 0
        return pod.saturated_probes * s.period <= s.sustain
    if s.policy == "capped":
        # A failing window lasts long enough for the kubelet to act on it
        # (failure_threshold probes); a new one may start only cap_every windows after
        # the last began, so a pod spends at most about 1/cap_every of a long overload out.
        window = s.failure_threshold * s.period
        if saturated and now - pod.last_failed >= s.cap_every * window:
            pod.last_failed = now
        return not (saturated and now - pod.last_failed < window)
    raise ValueError(f"unknown policy {s.policy}")


def simulate(s: Settings) -> Result:
    rng = random.Random(s.seed)
    result = Result(s)
    pods = [Pod(i) for i in range(s.pods)]
    # The endpoints kube-proxy knows, kept as a list so that a pick is O(1) on big fleets.
    endpoints = list(pods)
    events: list = []
    seq = 0

    def service(pod: int) -> float:
        mean = s.service_s * (s.slow_factor if pod < s.slow_pods else 1.0)
        return mean if s.service_fixed else rng.expovariate(1 / mean)

    def push(t: float, kind: str, *data) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, data))

    # Request state: id -> [first attempt time, retries left, measured?, done?]
    requests: dict[int, list] = {}
    rate = s.load * s.capacity
    push(rng.expovariate(rate), "arrive")
    for pod in pods:
        push(rng.uniform(0, s.period), "probe", pod.index)
    push(s.warmup, "sample")
    next_id = 0

    def finish(rid: int, how: str, now: float) -> None:
        req = requests.pop(rid)
        if not req[2]:
            return
        if how == "served":
            if now - req[0] <= s.timeout:
                result.succeeded += 1
                result.latencies.append(now - req[0])
            else:
                result.timed_out += 1
                result.wasted += 1
        else:
            setattr(result, how, getattr(result, how) + 1)

    def attempt(rid: int, now: float) -> None:
        req = requests[rid]
        if now - req[0] > s.timeout:
            finish(rid, "timed_out", now)
            return
        if not endpoints:
            result.refusals += 1
            retry(rid, now, "refused")
            return
        pod = endpoints[int(rng.random() * len(endpoints))]
        if pod.busy < s.workers:
            pod.busy += 1
            push(now + service(pod.index), "done", pod.index, rid)
        elif len(pod.queue) < s.queue:
            pod.queue.append(rid)
        else:
            retry(rid, now, "rejected")
            return
        result.max_busy = max(result.max_busy, pod.busy)
        result.max_queue = max(result.max_queue, len(pod.queue))

    def retry(rid: int, now: float, why: str) -> None:
        req = requests[rid]
        if req[1] > 0 and now + s.retry_after - req[0] <= s.timeout:
            req[1] -= 1
            push(now + s.retry_after, "retry", rid)
        else:
            finish(rid, why, now)

    while events:
        now, _, kind, data = heapq.heappop(events)
        if now > s.duration:
            break
        if kind == "arrive":
            rid = next_id
            next_id += 1
            measured = now >= s.warmup
            result.offered += measured
            requests[rid] = [now, s.max_retries, measured]
            attempt(rid, now)
            push(now + rng.expovariate(rate), "arrive")
        elif kind == "retry":
            (rid,) = data
            if rid in requests:
                attempt(rid, now)
        elif kind == "done":
            index, rid = data
            pod = pods[index]
            finish(rid, "served", now)
            if pod.queue:
                nxt = pod.queue.pop(0)
                push(now + service(index), "done", index, nxt)
            else:
                pod.busy -= 1
        elif kind == "probe":
            (index,) = data
            pod = pods[index]
            ok = policy_ready(pod, s, now)
            pod.failures = 0 if ok else pod.failures + 1
            pod.successes = pod.successes + 1 if ok else 0
            if pod.ready and pod.failures >= s.failure_threshold:
                pod.ready = False
                push(now + s.endpoint_delay, "endpoints", index, False)
            elif not pod.ready and pod.successes >= s.success_threshold:
                pod.ready = True
                push(now + s.endpoint_delay, "endpoints", index, True)
            push(now + s.period, "probe", index)
        elif kind == "endpoints":
            index, ready = data
            pods[index].in_endpoints = ready
            endpoints[:] = [p for p in pods if p.in_endpoints]
        elif kind == "sample":
            result.unready_share_samples.append(sum(not p.in_endpoints for p in pods) / len(pods))
            push(now + 0.5, "sample")
    # Requests still in flight at the end are not counted either way.
    for rid, req in requests.items():
        if req[2]:
            result.offered -= 1
    return result


def table(loads=(0.5, 1.0, 2.0, 3.0, 5.0), pods=10, duration=120.0) -> str:
    lines = [
        f"{pods} pods × 2 workers × 100 ms, queue 5; probes every 5 s, 2 failures out, 1 success in",
        "| policy | load | goodput / capacity | refused (gave up) | refused connections | 503 (gave up) | timed out | unready share | p99 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        for load in loads:
            r = simulate(Settings(policy=policy, load=load, pods=pods, duration=duration))
            o = max(r.offered, 1)
            lines.append(
                f"| {policy} | {load}× | {r.goodput_ratio:.2f} | {r.refused / o:.1%} | {r.refusals} | "
                f"{r.rejected / o:.1%} | {r.timed_out / o:.1%} | {r.unready_share:.0%} | {r.p99():.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
