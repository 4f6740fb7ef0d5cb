"""The alone-on-the-best-chain lower bound (petalgym.bounds): exact against brute force, equal to a
request's realised time when nothing waits on the best chain, and below every decider on every seed."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import RandomFeasibleDecider, small_scenarios

from petalgym.bounds import alone_bound, best_chain_time
from petalgym.deciders import make_decider
from petalgym.errors import SolverError
from petalgym.scenario import load_scenario
from petalgym.simulator import Simulator, simulate


def brute_force(fixed, per_block, caps, L):
    best = math.inf
    n = len(fixed)
    for counts in itertools.product(*[range(min(c, L) + 1) for c in caps]):
        if sum(counts) == L:
            best = min(best, sum(fixed[j] + per_block[j] * counts[j] for j in range(n) if counts[j]))
    return best


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 2.0), st.integers(0, 4)), min_size=1, max_size=5
    ),
    L=st.integers(1, 8),
)
def test_best_chain_time_is_the_brute_force_optimum(data, L):
    fixed, per_block, caps = zip(*data, strict=True)
    expected = brute_force(fixed, per_block, caps, L)
    got = best_chain_time(fixed, per_block, caps, L)
    assert got == pytest.approx(expected) if math.isfinite(expected) else got == math.inf


def test_each_server_is_used_once():
    # one fast server that holds 2 of 4 blocks and a slow one that holds all: the fast one cannot be reused
    assert best_chain_time([1.0, 10.0], [0.0, 1.0], [2, 4], 4) == pytest.approx(1.0 + 10.0 + 2.0)


def test_the_bound_is_reached_where_nothing_waits():
    """On clustered-9 every request of GBP-CR + GCA + JFFC runs alone-fast on the best possible chain."""
    sc = load_scenario("clustered-9", {"workload.num_requests": 40})
    bound = alone_bound(sc, 100)
    summary = simulate(sc, make_decider("gbp-cr-jffc"), 100).summary()
    assert summary["failed"] == 0
    assert summary["per_token_s"] == pytest.approx(bound.per_token_s, rel=1e-9)
    assert summary["response_s"] == pytest.approx(bound.response_s, rel=1e-9)


SETTINGS = [
    ("clustered-9", {"workload.num_requests": 60, "workload.arrival_rate": 2.0}),
    ("bellcanada-26", {"workload.num_requests": 60}),
    ("bellcanada-26-churn", {"workload.horizon_s": 600.0}),
    ("llama7b-mig-ripe", {"workload.trace.duration_s": 60.0}),
    (
        "llama7b-mig-ripe",
        {"workload.trace.duration_s": 60.0, "contention": "fifo", "workload.warmup_s": 10.0},
    ),
]
DECIDERS = ["petals", "cg-bp-ws-rr", "cg-bprr", "gbp-cr-jffc", "gbp-cr-sed", "parallax", "shortest", "random"]


@pytest.mark.parametrize("name,overrides", SETTINGS)
def test_the_bound_is_below_every_decider_on_validation_seeds(name, overrides):
    sc = load_scenario(name, overrides)
    compared = 0
    for seed in (100, 101):
        bound = alone_bound(sc, seed)
        for decider in DECIDERS:
            try:
                summary = simulate(sc, make_decider(decider), seed).summary()
            except SolverError:  # a decider that cannot plan this load (GBP-CR: lambda >= its chains' rate)
                continue
            if summary["failed"] == 0 and summary["completed"] > 0:
                assert bound.per_token_s <= summary["per_token_s"] + 1e-9, (name, seed, decider)
                assert bound.response_s <= summary["response_s"] + 1e-9, (name, seed, decider)
                compared += 1
    assert compared >= 8  # most deciders complete every request here


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=small_scenarios(), seed=st.integers(0, 2**31 - 1))
def test_no_request_beats_its_own_bound(sc, seed):
    sim = Simulator(sc, seed)
    sim.run(RandomFeasibleDecider())
    bound = alone_bound(sc, seed)
    assert len(bound.time_s) == len(sim.requests)
    for r in sim.requests:
        if math.isfinite(r.finish) and r.failure_reason == "":
            assert r.finish - r.arrival >= bound.time_s[r.id] - 1e-9
