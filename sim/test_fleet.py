"""Tests of the fleet simulation (sim/fleet.py), small enough to run in seconds."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fleet  # noqa: E402


def run(**kw) -> fleet.Result:
    base = dict(pods=4, duration=60.0, warmup=10.0)
    base.update(kw)
    return fleet.simulate(fleet.Settings(**base))


@pytest.mark.parametrize("policy", fleet.POLICIES)
def test_every_request_ends_once_and_no_pod_overfills(policy):
    r = run(policy=policy, load=3.0)
    assert r.offered > 1000
    assert r.ended == r.offered
    assert r.max_busy <= 2 and r.max_queue <= 5


@pytest.mark.parametrize("policy", fleet.POLICIES)
def test_at_half_capacity_every_policy_serves_everything(policy):
    r = run(policy=policy, load=0.5)
    assert r.succeeded >= 0.99 * r.offered
    assert r.refusals == 0 and r.unready_share == 0.0
    assert 0.45 <= r.goodput_ratio <= 0.55


def test_failing_readiness_on_saturation_empties_a_small_fleet_under_global_overload():
    # Two pods, three times their capacity: both fail readiness at once at times, the
    # Service has no endpoint, and clients get connection refused instead of a 503.
    saturation = run(policy="saturation", load=3.0, pods=2, duration=90.0)
    never = run(policy="never", load=3.0, pods=2, duration=90.0)
    assert saturation.refusals > 0
    assert never.refusals == 0
    # And capacity is lost: pods out of the Service sit partly idle.
    assert saturation.goodput_ratio < 0.8 < 0.95 <= never.goodput_ratio


def test_a_capped_policy_keeps_most_of_the_fleet_in():
    capped = run(policy="capped", load=5.0, pods=10, cap_every=4)
    saturation = run(policy="saturation", load=5.0, pods=10)
    assert 0.0 < capped.unready_share <= 1 / 4 + 0.05 < saturation.unready_share
    assert capped.goodput_ratio > saturation.goodput_ratio


def test_retries_after_503_route_around_slow_pods_without_readiness():
    # Two of ten pods four times slower, the fleet at 80 % of what it can really do: the
    # slow pods are saturated, their 503s are retried on other pods, and nothing is lost
    # by leaving them in the Service.
    saturation = run(policy="saturation", load=0.8, pods=10, slow_pods=2, slow_factor=4.0)
    never = run(policy="never", load=0.8, pods=10, slow_pods=2, slow_factor=4.0)
    assert saturation.unready_share > 0.0 == never.unready_share
    assert never.succeeded >= 0.99 * never.offered
    assert never.goodput_ratio >= saturation.goodput_ratio - 0.01


def test_sustained_saturation_takes_pods_out_later_than_momentary():
    momentary = run(policy="saturation", load=3.0, pods=10)
    sustained = run(policy="sustained", load=3.0, pods=10, sustain=10.0)
    assert sustained.unready_share < momentary.unready_share
    assert sustained.goodput_ratio > momentary.goodput_ratio


def test_the_same_seed_gives_the_same_run():
    a, b = run(load=2.0, seed=7), run(load=2.0, seed=7)
    assert (a.succeeded, a.rejected, a.refusals) == (b.succeeded, b.rejected, b.refusals)
    c = run(load=2.0, seed=8)
    assert (a.succeeded, a.rejected) != (c.succeeded, c.rejected)


def test_the_sweep_covers_every_policy_and_fleet():
    import sweep

    jobs = sweep.grid(pods=(2, 5), loads=(1.0,), slow_loads=(0.8,), duration=20.0, warmup=5.0)
    rows = sweep.run(jobs, processes=1)
    assert len(rows) == len(fleet.POLICIES) * 3
    text = sweep.tables(rows)
    for policy in fleet.POLICIES:
        assert text.count(f"| {policy} | 2 |") == 3  # one row in each of the three tables
    assert "slow pods" in text
